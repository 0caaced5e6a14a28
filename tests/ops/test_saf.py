"""robustops.ops.mrelu and robustops.ops.rbf against their reference
(robustops.reference.saf) over devices, dtypes and layouts; autograd, opcheck,
torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import robustops
from robustops.reference import saf as ref
from tests.common import DEVICES, FLOAT_DTYPES, tolerances

OPS = {
    "mrelu": (robustops.ops.mrelu, ref.mrelu, ref.mrelu_backward),
    "rbf": (robustops.ops.rbf, ref.rbf, ref.rbf_backward),
}
OP_NAMES = sorted(OPS)


def _upcast_reference(name, x, grad=None):
    """The reference computed in float64 and rounded to x's dtype."""
    _, fwd, bwd = OPS[name]
    if grad is None:
        return fwd(x.double()).to(x.dtype)
    return bwd(grad.double(), x.double()).to(x.dtype)


def _inputs(device, dtype, shape, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)


def _layouts(device, dtype):
    """(label, tensor) pairs: every layout an elementwise op must handle."""
    base = _inputs(device, dtype, (6, 5, 4, 3))
    col = _inputs(device, dtype, (5, 1), seed=1)
    return [
        ("contiguous", base),
        ("empty", base[:0]),
        ("empty-middle", torch.empty(3, 0, 2, device=device, dtype=dtype)),
        ("0-d", _inputs(device, dtype, ())),
        ("transposed", base.transpose(0, 3)),
        ("strided-slice", base[:, ::2, :, 1:]),
        ("offset-unaligned", base.flatten()[1:]),
        ("channels-last", base.contiguous(memory_format=torch.channels_last)),
        ("broadcast", col.expand(5, 7)),
        ("odd-length", _inputs(device, dtype, (1003,))),
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_forward_and_backward_match_reference_over_layouts(name, dtype, device):
    op = OPS[name][0]
    for label, x in _layouts(device, dtype):
        out = op(x)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device, label
        assert_close(out, _upcast_reference(name, x), **tolerances(dtype), msg=lambda m: f"{label}: {m}")
        # Same dtype reference (which computes half types in float32): equal results.
        assert_close(out, OPS[name][1](x), **tolerances(dtype), msg=lambda m: f"{label}: {m}")
        grad = _inputs(device, dtype, x.shape, seed=3)
        xg = x.detach().clone().requires_grad_()
        # The gradient's layout follows grad's own strides in autograd: try a permuted one.
        (gx,) = torch.autograd.grad(op(xg), xg, grad)
        assert_close(gx, _upcast_reference(name, x, grad), **tolerances(dtype),
                     msg=lambda m: f"{label} backward: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_dense_layouts_are_preserved(name, device):
    op = OPS[name][0]
    x = _inputs(device, torch.float32, (2, 3, 4, 5)).contiguous(memory_format=torch.channels_last)
    assert op(x).stride() == x.stride()
    xt = _inputs(device, torch.float32, (7, 9)).t()
    assert op(xt).stride() == xt.stride()
    # A non-dense view gives the layout torch.empty_like would (what the fake kernel says).
    xs = _inputs(device, torch.float32, (8, 9))[:, ::2]
    assert op(xs).stride() == torch.empty_like(xs).stride()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_kinks_and_special_values(name, dtype, device):
    """Values at and around the kinks -1, 0, 1, NaN and +-inf follow the reference's
    documented policy exactly (forward and backward)."""
    eps = torch.finfo(dtype).eps
    vals = [-1 - 2 * eps, -1.0, -1 + eps, -eps, -0.0, 0.0, eps, 1 - eps, 1.0, 1 + 2 * eps,
            float("nan"), float("inf"), float("-inf"), -2.5, 2.5, 1e-30, 30.0, -30.0]
    x = torch.tensor(vals, dtype=torch.float64).to(device=device, dtype=dtype)
    op, fwd, bwd = OPS[name]
    assert_close(op(x), fwd(x), equal_nan=True, **tolerances(dtype))
    assert_close(op(x), _upcast_reference(name, x), equal_nan=True, **tolerances(dtype))
    for g in (torch.ones_like(x), torch.full_like(x, float("inf")), -torch.ones_like(x)):
        xg = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(op(xg), xg, g)
        assert_close(gx, bwd(g, x), equal_nan=True, **tolerances(dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_documented_values(device):
    """The definitions, checked on exact values rather than against the reference."""
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, float("nan"), float("inf")], device=device)
    assert_close(robustops.ops.mrelu(x),
                 torch.tensor([0, 0, 0.5, 1, 0.5, 0, 0, float("nan"), 0], device=device), equal_nan=True)
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(robustops.ops.mrelu(xg).sum(), xg)
    assert g.tolist() == [0, 0, 1, 0, -1, 0, 0, 0, 0]
    r = torch.tensor([0.0, 1.0, -1.0, float("inf"), float("-inf"), float("nan")], device=device)
    e = torch.exp(torch.tensor(-1.0)).item()
    assert_close(robustops.ops.rbf(r), torch.tensor([1, e, e, 0, 0, float("nan")], device=device),
                 equal_nan=True)
    rg = r.clone().requires_grad_()
    (g,) = torch.autograd.grad(robustops.ops.rbf(rg).sum(), rg)
    assert_close(g, torch.tensor([0, -2 * e, 2 * e, 0, 0, float("nan")], device=device), equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_large_input(name, device):
    """2^24 + 3 elements: every chunk of the parallel loop and the vector tail."""
    n = (1 << 24) + 3
    x = _inputs(device, torch.float32, (n,), scale=3.0, seed=7)
    op = OPS[name][0]
    assert_close(op(x), OPS[name][1](x), **tolerances(torch.float32))
    grad = torch.ones_like(x)
    assert_close(getattr(torch.ops.robustops, f"_{name}_backward")(grad, x),
                 OPS[name][2](grad, x), **tolerances(torch.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_saves_only_the_input(name, device):
    saved = []
    x = _inputs(device, torch.float32, (64, 64)).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        OPS[name][0](x)
    assert len(saved) == 1 and saved[0] is x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", OP_NAMES)
def test_opcheck(name, dtype, device):
    fwd = getattr(torch.ops.robustops, name).default
    bwd = getattr(torch.ops.robustops, f"_{name}_backward").default
    for _, x in _layouts(device, dtype):
        torch.library.opcheck(fwd, (x,))
        torch.library.opcheck(fwd, (x.detach().clone().requires_grad_(),))
        torch.library.opcheck(bwd, (torch.randn_like(x), x))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_module(device):
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), robustops.nn.MReLU(), torch.nn.Linear(16, 4), robustops.nn.RBF()
    ).to(device)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(5, 8, device=device)
    expected = model(x)
    expected.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = compiled(x)
    out.sum().backward()
    assert_close(out, expected)
    for p, g in zip(model.parameters(), grads):
        assert_close(p.grad, g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
def test_non_floating_input_is_a_type_error(name, dtype, device):
    x = torch.zeros(3, device=device).to(dtype)
    with pytest.raises(TypeError, match=rf"{name}.*{str(dtype).split('.')[-1]}"):
        OPS[name][0](x)
    # The op itself, past the Python face, says the same (a C++ TypeError).
    with pytest.raises(TypeError, match=rf"robustops::{name}: argument 'x'"):
        getattr(torch.ops.robustops, name)(x)


@pytest.mark.parametrize("name", OP_NAMES)
def test_bad_arguments(name):
    with pytest.raises(TypeError, match=f"robustops.ops.{name}: argument 'x' must be a Tensor"):
        OPS[name][0]([1.0, 2.0])
    backward = getattr(torch.ops.robustops, f"_{name}_backward")
    x = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match=r"argument 'grad' has shape \[4, 3\]"):
        backward(torch.randn(4, 3), x)
    with pytest.raises(TypeError, match="argument 'grad' has dtype Double"):
        backward(torch.randn(3, 4, dtype=torch.float64), x)


@pytest.mark.cuda
@pytest.mark.parametrize("name", OP_NAMES)
def test_cuda_matches_cpu(name):
    x = _inputs("cpu", torch.float32, (1 << 20) + 5, scale=3.0)
    op = OPS[name][0]
    assert_close(op(x.cuda()).cpu(), op(x), **tolerances(torch.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_half_and_bfloat16_value(dtype, device):
    """All 65536 bit patterns: the kernels' own conversions between the storage type
    and float (branch-free, for the vectorizer) agree exactly with torch's."""
    x = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype).to(device)
    for name in OP_NAMES:
        assert_close(OPS[name][0](x), OPS[name][1](x), rtol=0, atol=0, equal_nan=True)
    # mReLU's backward at x = -0.5 returns grad itself, at x = 0.5 its negation: every
    # value, subnormals, infinities and NaN included, goes through load and store.
    for xv, sign in ((-0.5, 1), (0.5, -1)):
        out = torch.ops.robustops._mrelu_backward(x, torch.full_like(x, xv))
        assert_close(out, sign * x, rtol=0, atol=0, equal_nan=True)
