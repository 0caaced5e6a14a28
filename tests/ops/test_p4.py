"""robustops.ops.p4_filter: the p4 filter transform equals robustops.reference.p4
exactly (it is a gather) over devices, dtypes, input rotations, kernel sizes and
channel counts; its adjoint (the filter gradient) against the reference's autograd;
gradcheck and gradgradcheck; opcheck of the op and its adjoint; torch.compile; empty
and non-contiguous weights; bad input. The fallback: tests/ops/test_contract.py."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from robustops.ops import p4_filter
from robustops.reference import p4 as ref
from tests.common import DEVICES, FLOAT_DTYPES, tolerances


def _weight(o, i, s, k, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(o, i, s, k, k, generator=g, dtype=torch.float64).to(dtype).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("s", [1, 4])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8])  # the CPU kernel fixes k = 1-5 and 7 at compile time
def test_against_reference(k, s, dtype, device):
    # (40, 48) with s = 4 has more blocks than the CPU kernel's grain: they run in parallel
    for o, i in ((1, 1), (2, 3), (5, 2)) + (((40, 48),) if k == 3 and s == 4 else ()):
        w = _weight(o, i, s, k, dtype, device, seed=o * 10 + i)
        out = p4_filter(w)
        assert out.shape == (o * 4, i * s, k, k) and out.dtype == dtype and out.device == w.device
        assert out.is_contiguous()
        # a gather: every element is a copy of one element of the weight
        assert torch.equal(out, ref.p4_filter(w)), (o, i)

        # the adjoint: each weight element collects 4 values of the upstream gradient;
        # against the float64 reference on the same (dtype-representable) gradient
        grad = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        wg = w.clone().requires_grad_()
        (got,) = torch.autograd.grad(p4_filter(wg), wg, grad.to(device))
        w64 = w.double().cpu().requires_grad_()
        (want,) = torch.autograd.grad(ref.p4_filter(w64), w64, grad.double())
        assert got.shape == w.shape and got.dtype == dtype
        # one rounding of the sum of 4 terms, relative to the terms' magnitude
        (scale,) = torch.autograd.grad(ref.p4_filter(w64), w64, grad.double().abs())
        tol = tolerances(dtype)
        err = (got.double().cpu() - want).abs()
        assert (err <= tol["atol"] + tol["rtol"] * scale).all(), (o, i, err.max().item())


def test_hand_computed():
    # k = 2, s = 1: output rotation r holds rot90(W, r) (counter-clockwise)
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 1, 2, 2)
    out = p4_filter(w)
    expected = torch.tensor([[[1.0, 2.0], [3.0, 4.0]],
                             [[2.0, 4.0], [1.0, 3.0]],
                             [[4.0, 3.0], [2.0, 1.0]],
                             [[3.0, 1.0], [4.0, 2.0]]]).view(4, 1, 2, 2)
    assert torch.equal(out, expected)
    # k = 1, s = 4: the input rotation slot t of output rotation r reads W[(t - r) mod 4]
    w = torch.arange(4.0).view(1, 1, 4, 1, 1)
    out = p4_filter(w).view(4, 4)
    assert torch.equal(out, torch.tensor([[(t - r) % 4 for t in range(4)] for r in range(4)], dtype=torch.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("s", [1, 4])
def test_gradcheck_gradgradcheck(s, device):
    w = _weight(2, 2, s, 3, device=device).requires_grad_()
    assert torch.autograd.gradcheck(p4_filter, (w,))
    assert torch.autograd.gradgradcheck(p4_filter, (_weight(1, 2, s, 2, device=device).requires_grad_(),))
    # the adjoint's own gradient is the transform
    grad = torch.randn(8, 2 * s, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: torch.ops.robustops._p4_filter_backward(g, s), (grad,))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_and_compile(device):
    for s, k in ((1, 3), (4, 2)):
        w = _weight(2, 3, s, k, device=device)
        torch.library.opcheck(torch.ops.robustops.p4_filter.default, (w,))
        torch.library.opcheck(torch.ops.robustops.p4_filter.default, (w.clone().requires_grad_(),))
        grad = torch.randn(8, 3 * s, k, k, dtype=torch.float64, device=device)
        torch.library.opcheck(torch.ops.robustops._p4_filter_backward.default, (grad, s))
        torch.library.opcheck(torch.ops.robustops._p4_filter_backward.default, (grad.requires_grad_(), s))

    x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64, device=device)
    w = _weight(2, 3, 4, 3, device=device)

    def f(x, w):
        return torch.nn.functional.conv2d(x.flatten(1, 2), p4_filter(w), padding=1)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert_close(compiled(x, w), f(x, w), rtol=0, atol=0)
    # and its backward through the compiled graph
    wg = w.clone().requires_grad_()
    (got,) = torch.autograd.grad(compiled(x, wg).sum(), wg)
    w64 = w.clone().requires_grad_()
    (want,) = torch.autograd.grad(torch.nn.functional.conv2d(x.flatten(1, 2), ref.p4_filter(w64), padding=1).sum(),
                                  w64)
    assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 3, 4, 3), (2, 0, 4, 3), (0, 0, 1, 5), (2, 0, 1, 2)], ids=str)
def test_empty(shape, device):
    o, i, s, k = shape
    w = torch.zeros(o, i, s, k, k, dtype=torch.float64, device=device, requires_grad=True)
    out = p4_filter(w)
    assert out.shape == (o * 4, i * s, k, k)
    assert torch.equal(out, ref.p4_filter(w))
    (g,) = torch.autograd.grad(out.sum(), w)
    assert g.shape == w.shape


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_weight(device):
    w = _weight(3, 4, 4, 5, device=device)
    views = {
        "transposed": w.transpose(3, 4).contiguous().transpose(3, 4),  # same values, other strides
        "permuted": w.permute(1, 0, 2, 3, 4).contiguous().permute(1, 0, 2, 3, 4),
        "sliced": w[:, 1:3],
        "strided": w[::2, :, :, :, :],
        "expanded": w[:1, :1].expand(3, 2, 4, 5, 5),
        "channels-last-3d": w.contiguous(memory_format=torch.channels_last_3d),
    }
    for name, v in views.items():
        assert torch.equal(p4_filter(v), ref.p4_filter(v)), name
        vg = v.detach().requires_grad_()
        grad = torch.randn(v.shape[0] * 4, v.shape[1] * 4, 5, 5, dtype=torch.float64, device=device)
        (got,) = torch.autograd.grad(p4_filter(vg), vg, grad)
        (want,) = torch.autograd.grad(ref.p4_filter(vg), vg, grad)
        assert_close(got, want, rtol=1e-12, atol=1e-14, msg=lambda m: f"{name}: {m}")
    # a non-contiguous upstream gradient for the adjoint
    grad = torch.randn(12 * 4, 16, 5, 5, dtype=torch.float64, device=device).transpose(2, 3)
    got = torch.ops.robustops._p4_filter_backward(grad, 4)
    assert_close(got, torch.ops.robustops._p4_filter_backward(grad.contiguous(), 4), rtol=0, atol=0)


def test_bad_input():
    w = _weight(2, 3, 4, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="argument 'weight' must have shape"):
        p4_filter(w[0])
    with pytest.raises(ValueError, match="argument 'weight' must have shape"):
        p4_filter(w.unsqueeze(0))
    with pytest.raises(ValueError, match="argument 'weight' must have shape .* s = 1 or 4"):
        p4_filter(w[:, :, :2])
    with pytest.raises(ValueError, match="argument 'weight' must have shape .* square kernel"):
        p4_filter(w[..., :2])
    with pytest.raises(TypeError, match="argument 'weight' must be a floating-point tensor"):
        p4_filter(w.int())
    with pytest.raises(TypeError, match="argument 'weight' must be a Tensor"):
        p4_filter(w.tolist())
    # the op itself checks too, naming the argument
    with pytest.raises(RuntimeError, match="robustops::p4_filter: argument 'weight' must have shape"):
        torch.ops.robustops.p4_filter(w[0])
    with pytest.raises(RuntimeError, match="robustops::p4_filter: argument 'weight' must have s = 1"):
        torch.ops.robustops.p4_filter(w[:, :, :3])
    with pytest.raises(RuntimeError, match="robustops::p4_filter: argument 'weight' must have a square kernel"):
        torch.ops.robustops.p4_filter(w[..., 1:])
    with pytest.raises(TypeError, match="robustops::p4_filter: argument 'weight' must be a floating-point tensor"):
        torch.ops.robustops.p4_filter(w.int())
    grad = torch.randn(8, 12, 3, 3)
    with pytest.raises(RuntimeError, match="_p4_filter_backward: argument 'in_rotations' must be 1 or 4, got 3"):
        torch.ops.robustops._p4_filter_backward(grad, 3)
    with pytest.raises(RuntimeError, match="_p4_filter_backward: argument 'grad' must have shape"):
        torch.ops.robustops._p4_filter_backward(grad[:6], 4)
    with pytest.raises(RuntimeError, match="_p4_filter_backward: argument 'grad' must have shape"):
        torch.ops.robustops._p4_filter_backward(grad[:, :10], 4)
    with pytest.raises(RuntimeError, match="_p4_filter_backward: argument 'grad' must have shape"):
        torch.ops.robustops._p4_filter_backward(grad[..., :2], 1)
