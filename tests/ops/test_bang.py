"""robustops.ops.per_sample_norm, bang_eta and bang_scale against their reference
(robustops.reference.bang) over devices, dtypes and layouts; special norms, opcheck,
gradcheck and bad input."""

from __future__ import annotations


import pytest
import torch
from torch.testing import assert_close

import robustops
from robustops.reference import bang as ref
from tests.common import DEVICES, FLOAT_DTYPES

ops = robustops.ops


def _tol(dtype):
    """The scaled gradient is rounded to its dtype once (from float32 or float64)."""
    return {torch.float64: dict(rtol=1e-12, atol=1e-14), torch.float32: dict(rtol=2e-6, atol=1e-7),
            torch.float16: dict(rtol=1e-3, atol=1e-5), torch.bfloat16: dict(rtol=8e-3, atol=1e-5)}[dtype]


def _norm_tol(dtype):
    return dict(rtol=1e-12, atol=0) if dtype == torch.float64 else dict(rtol=2e-6, atol=0)


def _grads(device, dtype):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, 5, 6, 7, generator=g, dtype=torch.float64)
    return [
        ("contiguous", base),
        ("channels-last", base.contiguous(memory_format=torch.channels_last)),
        ("permuted", base.permute(1, 0, 2, 3)),
        ("strided", base[:, :, ::2, 1:]),
        ("2-d", torch.randn(64, 500, generator=g, dtype=torch.float64)),
        ("1-d", torch.randn(9, generator=g, dtype=torch.float64)),
        ("one sample", torch.randn(1, 300, generator=g, dtype=torch.float64)),
        ("empty batch", torch.randn(0, 4, dtype=torch.float64)),
        ("empty samples", torch.randn(3, 0, dtype=torch.float64)),
        ("large", torch.randn(3, 70001, generator=g, dtype=torch.float64)),
    ], dtype, device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_against_reference_over_layouts(dtype, device):
    cases, dtype, device = _grads(device, dtype)
    for label, g64 in cases:
        g = g64.to(device=device, dtype=dtype)
        n = g.shape[0]
        eps = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
        norms = ops.per_sample_norm(g)
        assert norms.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        # Norms of the values as stored, accumulated in float64.
        assert_close(norms.double(), ref.per_sample_norm(g.double()).double(), **_norm_tol(dtype),
                     msg=lambda m: f"{label}: {m}")
        scaled, norms2 = ops.bang_scale(g, eps)
        assert_close(norms2, norms, **_norm_tol(dtype))  # the same sums, maybe contracted differently
        expected, _ = ref.bang_scale(g, eps)
        assert scaled.shape == g.shape and scaled.dtype == dtype
        assert_close(scaled, expected, **_tol(dtype), msg=lambda m: f"{label}: {m}")
        assert_close(ops.bang_eta(norms, eps), ref.bang_eta(norms, eps), **_norm_tol(dtype))


def test_eta_formula_by_hand():
    norms = torch.tensor([1.0, 2.0, 4.0, 0.0], dtype=torch.float64)
    eta = ops.bang_eta(norms, 0.5)
    # m = 4; rho = 0.5 (1 - n / 4); eta = (4 / n)^rho; a zero norm keeps eta = 1.
    expected = [4 ** (0.5 * 0.75), 2 ** (0.5 * 0.5), 1.0, 1.0]
    assert eta.tolist() == pytest.approx(expected, rel=1e-14)
    # misclassified samples use ratio * eps
    mis = torch.tensor([True, False, False, False])
    eta = ops.bang_eta(norms, 0.5, misclassified=mis, ratio=0.2)
    assert eta[0].item() == pytest.approx(4 ** (0.1 * 0.75), rel=1e-14)
    # a larger max from elsewhere (the global batch) is used; a smaller one is not
    assert ops.bang_eta(norms, 0.5, max_norm=8.0)[2].item() == pytest.approx(2 ** (0.5 * 0.5), rel=1e-14)
    assert_close(ops.bang_eta(norms, 0.5, max_norm=1.0), ops.bang_eta(norms, 0.5))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_special_norms(dtype, device):
    """A zero-gradient sample, all-equal norms, very large and very small norms."""
    kw = dict(device=device, dtype=dtype)
    g = torch.randn(4, 50, **kw)
    g[2] = 0
    scaled, norms = ops.bang_scale(g, 0.9)
    assert norms[2] == 0 and (scaled[2] == 0).all() and torch.isfinite(scaled).all()
    # all-equal norms: m / n_i = 1, eta = 1
    e = torch.ones(5, 40, **kw)
    scaled, _ = ops.bang_scale(e, 0.9)
    assert_close(scaled, e, rtol=0, atol=0)
    # batch of one: its own max, eta = 1
    one = torch.randn(1, 33, **kw)
    assert_close(ops.bang_scale(one, 0.9)[0], one, rtol=0, atol=0)
    # every sample zero: unchanged, no NaN
    z = torch.zeros(3, 10, **kw)
    assert_close(ops.bang_scale(z, 0.9)[0], z, rtol=0, atol=0)
    # tiny and huge entries (squares beyond the dtype's range): norms accumulated in
    # float64, which holds the square of any float32, float16 or bfloat16 value; float64
    # gradients are exact between about 1e-154 and 1e154 (documented).
    big = 1e150 if dtype == torch.float64 else torch.finfo(dtype).max / 8
    tiny = 1e-150 if dtype == torch.float64 else torch.finfo(dtype).tiny * 4
    g = torch.stack([torch.full((16,), v, dtype=torch.float64) for v in (big, tiny, 1.0)]).to(**kw)
    norms = ops.per_sample_norm(g)
    expected = torch.tensor([big * 4, tiny * 4, 4.0], dtype=torch.float64)
    assert_close(norms.double().cpu(), expected, rtol=1e-6, atol=0)
    eta = ops.bang_eta(norms.double(), 0.5)
    assert torch.isfinite(eta[1:]).all() and (eta >= 1).all()


@pytest.mark.parametrize("device", DEVICES)
def test_nan_stays_in_its_sample(device):
    g = torch.randn(3, 8, device=device)
    g[1, 3] = float("nan")
    scaled, norms = ops.bang_scale(g, 0.8)
    assert torch.isnan(norms[1]) and torch.isnan(scaled[1]).any()
    assert torch.isfinite(scaled[[0, 2]]).all()
    assert_close(scaled[[0, 2]], ref.bang_scale(g[[0, 2]], torch.full((2,), 0.8, dtype=torch.float64))[0])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_and_gradcheck(device):
    kw = dict(device=device, dtype=torch.float64)
    g = torch.randn(6, 3, 4, 5, **kw)
    eps = torch.full((6,), 0.8, **kw)
    for x in (g, g.contiguous(memory_format=torch.channels_last), g.transpose(0, 1), g[:, :, ::2]):
        e = torch.full((x.shape[0],), 0.8, **kw)
        torch.library.opcheck(torch.ops.robustops.bang_scale.default, (x, e, None))
        torch.library.opcheck(torch.ops.robustops.bang_scale.default, (x, e, torch.tensor(50.0, **kw)))
        torch.library.opcheck(torch.ops.robustops.per_sample_norm.default, (x,))
        torch.library.opcheck(torch.ops.robustops.per_sample_norm.default, (x.clone().requires_grad_(),))
    norms = ops.per_sample_norm(g)
    torch.library.opcheck(torch.ops.robustops.bang_eta.default, (norms, eps, None))
    x = torch.randn(5, 7, **kw, requires_grad=True)
    assert torch.autograd.gradcheck(ops.per_sample_norm, (x,))
    assert torch.autograd.gradgradcheck(ops.per_sample_norm, (x,))
    with pytest.raises(RuntimeError, match="bang_scale is not differentiable"):
        ops.bang_scale(x, 0.5)[0].sum().backward()


@pytest.mark.parametrize("device", DEVICES)
def test_compile(device):
    f = torch.compile(lambda g, e: ops.bang_scale(g, e)[0] * 2, fullgraph=True)
    g = torch.randn(8, 30, device=device)
    e = torch.full((8,), 0.8, dtype=torch.float64, device=device)
    assert_close(f(g, e), ops.bang_scale(g, e)[0] * 2)


def test_bad_input():
    g = torch.randn(4, 3)
    with pytest.raises(ValueError, match="'eps' must be >= 0"):
        ops.bang_scale(g, -0.1)
    with pytest.raises(ValueError, match="'eps' must be >= 0"):
        ops.bang_scale(g, torch.tensor([0.1, -0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"'eps' must be a number or have shape \(4,\)"):
        ops.bang_scale(g, torch.ones(3))
    with pytest.raises(ValueError, match="'ratio' must be >= 0"):
        ops.bang_scale(g, 0.5, ratio=-1)
    with pytest.raises(ValueError, match=r"'misclassified' must have shape \(4,\)"):
        ops.bang_scale(g, 0.5, misclassified=torch.ones(5, dtype=torch.bool))
    with pytest.raises(TypeError, match="'misclassified' must be a bool tensor"):
        ops.bang_scale(g, 0.5, misclassified=torch.ones(4))
    with pytest.raises(ValueError, match="batch dimension"):
        ops.per_sample_norm(torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating-point"):
        ops.per_sample_norm(torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="'max_norm' must hold one value"):
        ops.bang_scale(g, 0.5, max_norm=torch.ones(2))
    # past the Python face, the kernels check too
    with pytest.raises(RuntimeError, match=r"robustops::bang_scale: argument 'eps' must have shape \[4\]"):
        torch.ops.robustops.bang_scale(g, torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="robustops::per_sample_norm: argument 'x'"):
        torch.ops.robustops.per_sample_norm(torch.ones(3, 2, dtype=torch.int32))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_matches_cpu(dtype):
    g = torch.randn(100, 32, 32, 32).to(dtype)
    eps = torch.full((100,), 0.855, dtype=torch.float64)
    s_cpu, n_cpu = ops.bang_scale(g, eps)
    s_gpu, n_gpu = ops.bang_scale(g.cuda(), eps.cuda())
    assert_close(n_gpu.cpu(), n_cpu, rtol=1e-6, atol=0)
    assert_close(s_gpu.cpu(), s_cpu, **_tol(dtype))


def test_reference_norm_gradient_matches_the_kernels_with_a_zero_sample():
    """The fallback of per_sample_norm is differentiable like the op: x_i / ||x_i||,
    and 0 (not NaN) for a zero sample."""
    from robustops.reference import bang as ref_bang
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    x[1] = 0
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ga,) = torch.autograd.grad(ref_bang.per_sample_norm(a).sum(), a)
    (gb,) = torch.autograd.grad(robustops.ops.per_sample_norm(b).sum(), b)
    assert torch.isfinite(ga).all() and (ga[1] == 0).all()
    torch.testing.assert_close(ga, gb)
