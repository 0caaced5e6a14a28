"""robustops.ops.crown_relu (crown_relax through ReLU's relaxation computed in the
kernel from the interval): agreement with robustops.reference.crown.crown_relu over
devices, dtypes and awkward shapes (forward and the gradients of a, lower and
upper), every region of the relaxation (dead, alive, mixed, points, ends on 0), NaN,
empty shapes and bad input. opcheck, gradcheck, torch.compile and the fallback:
tests/ops/test_contract.py."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from robustops.ops import crown_relu
from robustops.reference import crown as ref
from tests.common import DEVICES, FLOAT_DTYPES, tolerances
from tests.ops.test_crown import SHAPES

F64 = torch.float64


def _interval(shape, g, min_width=0.0):
    """[l, u] with every region: dead, alive, mixed (widths >= min_width), and, when
    min_width is 0, points and ends exactly on 0."""
    l = torch.randn(shape, generator=g, dtype=F64) * 2
    u = l + min_width + torch.rand(shape, generator=g, dtype=F64) * 2
    if min_width == 0:
        flat_l, flat_u = l.view(-1), u.view(-1)
        flat_u[::5] = flat_l[::5]            # points
        flat_l[1::7] = 0                     # alive from 0
        flat_u[2::11] = 0                    # dead up to 0
        flat_l[2::11] = torch.minimum(flat_l[2::11], flat_u[2::11])
    return l, u


def _inputs(n, s, rest, dtype, device, seed=0, min_width=0.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn((n, s) + rest, generator=g, dtype=F64)
    l, u = _interval((n,) + rest, g, min_width)
    return [t.to(dtype).to(device) for t in (a, l, u)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_against_reference(shape, dtype, device):
    """Forward on every region; gradients where the relaxation is smooth and well
    conditioned (widths >= 0.1: the slope's derivatives are 1 / w^2)."""
    n, s, rest = shape
    tol = tolerances(dtype)
    a, l, u = _inputs(n, s, rest, dtype, device)
    out, d = crown_relu(a, l, u)
    eo, ed = ref.crown_relu(*(t.double().cpu() for t in (a, l, u)))
    assert out.shape == a.shape and d.shape == (n, s) and out.dtype == d.dtype == dtype
    # the relaxation is computed in the op's compute type: compare with it rounded once
    assert_close(out.double().cpu(), eo, rtol=4 * tol["rtol"], atol=4 * tol["atol"])
    scale = a.double().abs().flatten(2).sum(-1).max().item() * 4  # |b_up| <= u, |l| < 4 here
    assert_close(d.double().cpu(), ed, rtol=tol["rtol"], atol=tol["atol"] + max(tol["rtol"], 1e-6) * scale)

    a, l, u = _inputs(n, s, rest, dtype, device, seed=1, min_width=0.1)
    args64 = [t.double().cpu().requires_grad_() for t in (a, l, u)]
    eo, ed = ref.crown_relu(*args64)
    ga = torch.randn_like(eo).to(dtype).double()
    gd = torch.randn_like(ed).to(dtype).double()
    want = torch.autograd.grad((eo * ga).sum() + (ed * gd).sum(), args64)
    args = [t.clone().requires_grad_() for t in (a, l, u)]
    out, d = crown_relu(*args)
    got = torch.autograd.grad((out * ga.to(dtype).to(device)).sum() + (d * gd.to(dtype).to(device)).sum(), args)
    for g, w in zip(got, want):
        g_scale = (w.abs().max().item() + 1) * max(s, 1) * 100  # sums over S, 1 / w^2 <= 100
        assert_close(g.double().cpu(), w, rtol=4 * tol["rtol"] * max(s, 1),
                     atol=tol["atol"] + max(tol["rtol"], 1e-6) * g_scale)


@pytest.mark.parametrize("device", DEVICES)
def test_every_region_exactly(device):
    """float64: the relaxation the op uses is the reference's, bit for bit, on dead,
    alive, mixed, point and zero-ended intervals (a = 1 reads a_lo, a = -1 reads
    a_up and b_up)."""
    g = torch.Generator().manual_seed(3)
    l, u = _interval((1, 4000), g)
    a = torch.stack([torch.ones_like(l), -torch.ones_like(l)], 1)
    out, d = crown_relu(a.to(device), l.to(device), u.to(device))
    a_lo, _, a_up, b_up = ref.relu_relaxation(l, u)
    assert torch.equal(out[:, 0].cpu(), a_lo) and torch.equal(out[:, 1].cpu(), -a_up)
    assert_close(d[0, 1].cpu(), -b_up.sum(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_vanish_off_the_mixed_elements(device):
    l = torch.tensor([[-2.0, 0.5, 0.0, -1.0, -3.0, -0.0]], dtype=F64, device=device, requires_grad=True)
    u = torch.tensor([[-1.0, 2.0, 1.0, 0.0, 1.0, 0.0]], dtype=F64, device=device, requires_grad=True)
    a = -torch.ones(1, 1, 6, dtype=F64, device=device)
    out, d = crown_relu(a, l, u)
    gl, gu = torch.autograd.grad(out.sum() + d.sum(), [l, u])
    # only element 4 is mixed (l = -3, u = 1, w = 4): a' = -a_up, d = -b_up, with
    # d a_up/dl = u/w^2, d a_up/du = -l/w^2, d b_up/dl = -u^2/w^2, d b_up/du = l^2/w^2
    want_l = torch.zeros_like(gl)
    want_u = torch.zeros_like(gu)
    want_l[0, 4] = -(1 / 16) + 1 / 16
    want_u[0, 4] = -(3 / 16) - 9 / 16
    assert_close(gl, want_l)
    assert_close(gu, want_u)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_propagates(device):
    """A NaN upper end above a negative lower one makes the element's upper lines
    NaN (as the reference's), so a negative coefficient carries it into a' and d;
    the other sample stays finite."""
    a, l, u = _inputs(2, 3, (8,), torch.float32, device, min_width=0.1)
    a[1, :, 5] = -1.0
    l[1, 5] = -0.5
    u[1, 5] = float("nan")
    out, d = crown_relu(a, l, u)
    eo, ed = ref.crown_relu(a.cpu(), l.cpu(), u.cpu())
    assert out[1, :, 5].isnan().all() and d[1].isnan().all()
    assert not out[0].isnan().any() and not d[0].isnan().any()
    assert torch.equal(out.isnan().cpu(), eo.isnan()) and torch.equal(d.isnan().cpu(), ed.isnan())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 3, (4,)), (2, 0, (4,)), (2, 3, (0,)), (2, 3, (4, 0))], ids=str)
def test_empty(shape, device):
    n, s, rest = shape
    args = [t.requires_grad_() for t in _inputs(n, s, rest, F64, device)]
    out, d = crown_relu(*args)
    assert out.shape == args[0].shape and d.shape == (n, s)
    assert (d == 0).all()
    grads = torch.autograd.grad(out.sum() + d.sum(), args)
    for g, t in zip(grads, args):
        assert g.shape == t.shape and (g == 0).all()


def test_bad_input():
    a, l, u = _inputs(2, 3, (4,), torch.float32, "cpu")
    with pytest.raises(ValueError, match="crown_relu: argument 'a' must have shape"):
        crown_relu(a[0], l[0], u[0])
    with pytest.raises(ValueError, match="argument 'upper' must have shape \\(2, 4\\)"):
        crown_relu(a, l, u[:, :3])
    with pytest.raises(TypeError, match="argument 'lower' must have the dtype"):
        crown_relu(a, l.double(), u)
    with pytest.raises(TypeError, match="argument 'a' must be a floating-point tensor"):
        crown_relu(a.int(), l, u)
    with pytest.raises(TypeError, match="argument 'upper' must be a Tensor"):
        crown_relu(a, l, 1.0)
    with pytest.raises(RuntimeError, match="crown_relu: argument 'upper' must have shape"):
        torch.ops.robustops.crown_relu(a, l, u[:1])
    with pytest.raises(RuntimeError, match="_crown_relu_backward: argument 'grad_d' must have shape"):
        torch.ops.robustops._crown_relu_backward(a, a[:, :, 0].t(), a, l, u)
