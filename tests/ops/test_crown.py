"""robustops.ops.crown_relax: agreement with robustops.reference.crown.crown_relax
over devices, dtypes and awkward shapes (forward and every gradient), the tie at
A = 0, NaN, empty shapes and bad input. opcheck, gradcheck, torch.compile and the
fallback: tests/ops/test_contract.py."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from robustops.ops import crown_relax
from robustops.reference import crown as ref
from tests.common import DEVICES, FLOAT_DTYPES, tolerances

# (N, S, trailing shape): one element, one row, rows longer than the CPU block
# (512), odd lengths, conv-shaped trailing dimensions
SHAPES = [(1, 1, (1,)), (3, 1, (7,)), (2, 9, (100,)), (4, 3, (1029,)), (2, 9, (5, 7, 3)), (5, 2, (513,))]


def _inputs(n, s, rest, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn((n, s) + rest, generator=g, dtype=torch.float64)
    relax = [torch.randn((n,) + rest, generator=g, dtype=torch.float64) for _ in range(4)]
    return a.to(dtype).to(device), [t.to(dtype).to(device) for t in relax]


def _assert_close_scaled(actual, expected, scale, dtype):
    """actual against a float64 expected whose terms have magnitude sums `scale`:
    the dtype's rounding of the result plus float32 accumulation over the terms."""
    tol = tolerances(dtype)
    assert_close(actual.double().cpu(), expected, rtol=tol["rtol"],
                 atol=tol["atol"] + max(tol["rtol"], 1e-6) * scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_against_reference(shape, dtype, device):
    n, s, rest = shape
    a, relax = _inputs(n, s, rest, dtype, device)
    a64 = a.double().cpu().requires_grad_()
    relax64 = [t.double().cpu().requires_grad_() for t in relax]
    out64, d64 = ref.crown_relax(a64, *relax64)
    # upstream gradients representable in dtype, so that both sides see the same
    ga = torch.randn_like(out64).to(dtype).double()
    gd = torch.randn_like(d64).to(dtype).double()
    grads64 = torch.autograd.grad((out64 * ga).sum() + (d64 * gd).sum(), [a64, *relax64])

    a_ = a.clone().requires_grad_()
    relax_ = [t.clone().requires_grad_() for t in relax]
    out, d = crown_relax(a_, *relax_)
    assert out.shape == a.shape and d.shape == (n, s) and out.dtype == d.dtype == dtype
    grads = torch.autograd.grad((out * ga.to(dtype).to(device)).sum() + (d * gd.to(dtype).to(device)).sum(),
                                [a_, *relax_])
    absa = a64.detach().abs()
    _assert_close_scaled(out, out64.detach(), 0.0, dtype)
    b_scale = (absa * (relax64[1].detach().abs() + relax64[3].detach().abs()).unsqueeze(1)).flatten(2).sum(-1)
    _assert_close_scaled(d, d64.detach(), b_scale.max().item(), dtype)
    r = [t.detach().abs().unsqueeze(1) for t in relax64]
    gd_full = gd.reshape(gd.shape + (1,) * len(rest)).abs()
    _assert_close_scaled(grads[0], grads64[0], (ga.abs() * (r[0] + r[2]) + gd_full * (r[1] + r[3])).max().item(),
                         dtype)
    # the relaxation's gradients are sums over S of G' A and g A
    sum_scale = (absa * (ga.abs() + gd_full)).sum(1).max().item()
    for g, g64 in zip(grads[1:], grads64[1:]):
        _assert_close_scaled(g, g64, sum_scale, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_inputs(device):
    a, relax = _inputs(4, 3, (6, 5), torch.float64, device)
    at = a.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    rt = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in relax]
    out, d = crown_relax(a[:, :2], *relax)
    eo, ed = ref.crown_relax(a[:, :2], *relax)
    assert_close(out, eo, rtol=1e-12, atol=1e-14)
    assert_close(d, ed, rtol=1e-12, atol=1e-14)
    out, d = crown_relax(at, *rt)
    eo, ed = ref.crown_relax(a, *relax)
    assert out.is_contiguous()
    assert_close(out, eo, rtol=1e-12, atol=1e-14)
    assert_close(d, ed, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
def test_tie_at_zero_takes_the_lower_relaxation(device):
    a = torch.tensor([[[0.0, -0.0, 2.0, -3.0]]], dtype=torch.float64, device=device, requires_grad=True)
    al, bl, au, bu = (torch.tensor([[v] * 4], dtype=torch.float64, device=device, requires_grad=True)
                      for v in (0.5, 0.25, 2.0, 4.0))
    out, d = crown_relax(a, al, bl, au, bu)
    assert_close(out.detach(), torch.tensor([[[0.0, 0.0, 1.0, -6.0]]], dtype=torch.float64, device=device))
    assert_close(d.detach(), torch.tensor([[0.5 - 12.0]], dtype=torch.float64, device=device))
    ga = torch.tensor([[[1.0, 1.0, 1.0, 1.0]]], dtype=torch.float64, device=device)
    gd = torch.tensor([[10.0]], dtype=torch.float64, device=device)
    grads = torch.autograd.grad((out * ga).sum() + (d * gd).sum(), [a, al, bl, au, bu])
    # dA = G' a_lo + g b_lo where A >= 0 (both zeros too), G' a_up + g b_up where A < 0
    assert_close(grads[0], torch.tensor([[[3.0, 3.0, 3.0, 42.0]]], dtype=torch.float64, device=device))
    assert_close(grads[1], torch.tensor([[0.0, 0.0, 2.0, 0.0]], dtype=torch.float64, device=device))
    assert_close(grads[2], torch.tensor([[0.0, 0.0, 20.0, 0.0]], dtype=torch.float64, device=device))
    assert_close(grads[3], torch.tensor([[0.0, 0.0, 0.0, -3.0]], dtype=torch.float64, device=device))
    assert_close(grads[4], torch.tensor([[0.0, 0.0, 0.0, -30.0]], dtype=torch.float64, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_nan_propagates(device):
    a, relax = _inputs(2, 3, (8,), torch.float32, device)
    a[1, 2, 5] = float("nan")
    out, d = crown_relax(a, *relax)
    assert out[1, 2, 5].isnan() and d[1, 2].isnan()
    assert not out.isnan().sum() > 1 and d.isnan().sum() == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 3, (4,)), (2, 0, (4,)), (2, 3, (0,)), (2, 3, (4, 0))], ids=str)
def test_empty(shape, device):
    n, s, rest = shape
    a, relax = _inputs(n, s, rest, torch.float64, device)
    a.requires_grad_()
    relax = [t.requires_grad_() for t in relax]
    out, d = crown_relax(a, *relax)
    assert out.shape == a.shape and d.shape == (n, s)
    assert (d == 0).all()  # an empty sum
    grads = torch.autograd.grad(out.sum() + d.sum(), [a, *relax])
    for g, t in zip(grads, [a, *relax]):
        assert g.shape == t.shape and (g == 0).all()


def test_bad_input():
    a, relax = _inputs(2, 3, (4,), torch.float32, "cpu")
    with pytest.raises(ValueError, match="argument 'a' must have shape"):
        crown_relax(a[0], *[t[0] for t in relax])
    with pytest.raises(ValueError, match="argument 'upper_slope' must have shape \\(2, 4\\)"):
        crown_relax(a, relax[0], relax[1], relax[2][:, :3], relax[3])
    with pytest.raises(TypeError, match="argument 'lower_intercept' must have the dtype"):
        crown_relax(a, relax[0], relax[1].double(), relax[2], relax[3])
    with pytest.raises(TypeError, match="argument 'a' must be a floating-point tensor"):
        crown_relax(a.int(), *relax)
    with pytest.raises(TypeError, match="argument 'lower_slope' must be a Tensor"):
        crown_relax(a, 1.0, *relax[1:])
    # the op itself checks too, naming the argument
    with pytest.raises(RuntimeError, match="crown_relax: argument 'upper_intercept' must have shape"):
        torch.ops.robustops.crown_relax(a, relax[0], relax[1], relax[2], relax[3][:1])
    with pytest.raises(RuntimeError, match="argument 'grad_d' must have shape"):
        torch.ops.robustops._crown_relax_backward(a, a[:, :, 0].t(), a, *relax)
