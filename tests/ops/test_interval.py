"""robustops.ops.interval_relu / interval_mrelu / interval_rbf: exact interval images
(checked against dense sampling), agreement with robustops.reference.interval over
devices, dtypes and layouts, gradients, opcheck, torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import robustops
from robustops.reference import interval as ref
from robustops.reference import saf
from tests.common import DEVICES, FLOAT_DTYPES, tolerances

OPS = ["interval_relu", "interval_mrelu", "interval_rbf"]
FUNCS = {"interval_relu": torch.relu, "interval_mrelu": saf.mrelu, "interval_rbf": saf.rbf}


def _intervals():
    """Intervals left of, around and right of each kink (-1, 0, 1) and the peak at 0,
    touching them, and degenerate ones."""
    ends = []
    for k in (-1.0, 0.0, 1.0):
        for lo, hi in ((-0.7, -0.2), (-0.3, 0.3), (0.2, 0.7), (-0.5, 0.0), (0.0, 0.5), (0.0, 0.0)):
            ends.append((k + lo, k + hi))
    ends += [(-3.0, -2.0), (2.0, 3.0), (-2.5, 2.5), (-0.2, 1.7), (-1.7, 0.2), (-4.0, 0.5), (0.3, 0.3)]
    l = torch.tensor([e[0] for e in ends], dtype=torch.float64)
    u = torch.tensor([e[1] for e in ends], dtype=torch.float64)
    return (l + u) / 2, (u - l) / 2


@pytest.mark.parametrize("name", OPS)
def test_images_are_exact(name):
    c, r = _intervals()
    oc, orr = getattr(robustops.ops, name)(c, r)
    lo, hi = oc - orr, oc + orr
    # dense samples of each interval, with its endpoints and 0 when inside
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    xs = (c - r)[:, None] + 2 * r[:, None] * t[None, :]
    xs = torch.cat([xs, torch.where((c - r <= 0) & (c + r >= 0), 0.0, c)[:, None]], 1)
    ys = FUNCS[name](xs)
    # sound: every sample inside; tight: the extremes are attained (up to rounding)
    assert (ys >= lo[:, None] - 1e-12).all() and (ys <= hi[:, None] + 1e-12).all()
    assert_close(lo, ys.amin(1), rtol=0, atol=1e-12)
    assert_close(hi, ys.amax(1), rtol=0, atol=1e-12)
    assert (orr >= 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", OPS)
def test_against_reference(name, dtype, device):
    g = torch.Generator().manual_seed(0)
    c64 = torch.randn(6, 5, 4, 3, generator=g, dtype=torch.float64) * 2
    r64 = torch.rand(6, 5, 4, 3, generator=g, dtype=torch.float64)
    layouts = [
        ("contiguous", c64, r64),
        ("channels-last", c64.contiguous(memory_format=torch.channels_last), r64),
        ("transposed", c64.transpose(0, 3), r64.transpose(0, 3)),
        ("strided", c64[:, ::2], r64[:, ::2]),
        ("empty", c64[:0], r64[:0]),
        ("0-d", c64[0, 0, 0, 0], r64[0, 0, 0, 0]),
        ("large", torch.randn(70001, generator=g, dtype=torch.float64),
         torch.rand(70001, generator=g, dtype=torch.float64)),
    ]
    op = getattr(robustops.ops, name)
    for label, c, r in layouts:
        c, r = c.to(device=device, dtype=dtype), r.to(device=device, dtype=dtype)
        oc, orr = op(c, r)
        ec, er = getattr(ref, name)(c.double(), r.double())
        assert oc.shape == c.shape and oc.dtype == dtype
        # l = c - r and u = c + r are rounded to the compute precision first, so the
        # error is relative to the inputs' magnitude, not to the (cancelling) outputs.
        tol = dict(tolerances(dtype))
        if c.numel():
            scale = (c.abs().max() + r.max()).item()
            eps = torch.finfo(torch.float32 if dtype != torch.float64 else dtype).eps
            tol["atol"] = max(tol["atol"], 4 * eps * scale)
        assert_close(oc, ec.to(dtype), **tol, msg=lambda m: f"{label}: {m}")
        assert_close(orr, er.to(dtype), **tol, msg=lambda m: f"{label}: {m}")
        # gradients, against the reference's autograd
        gc, gr = torch.randn_like(c), torch.randn_like(c)
        cg, rg = c.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
        got = torch.autograd.grad(op(cg, rg), (cg, rg), (gc, gr))
        c2, r2 = c.double().requires_grad_(), r.double().requires_grad_()
        want = torch.autograd.grad(getattr(ref, name)(c2, r2), (c2, r2), (gc.double(), gr.double()))
        for a, b in zip(got, want):
            assert_close(a, b.to(dtype), **tol, msg=lambda m: f"{label} backward: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPS)
def test_gradcheck_opcheck_compile(name, device):
    g = torch.Generator().manual_seed(1)
    c = (torch.rand(30, generator=g, dtype=torch.float64) * 6 - 3).to(device)
    r = (torch.rand(30, generator=g, dtype=torch.float64) * 0.5 + 0.01).to(device)
    # away from the points where the image switches endpoint (finite differences)
    keep = ((c - r).abs() > 0.02) & ((c + r).abs() > 0.02) & ((c - r - 1).abs() > 0.02) & \
           ((c + r + 1).abs() > 0.02) & ((c + r - 1).abs() > 0.02) & ((c - r + 1).abs() > 0.02) & \
           (c.abs() > 0.02)
    c, r = c[keep].requires_grad_(), r[keep].requires_grad_()
    op = getattr(robustops.ops, name)
    assert torch.autograd.gradcheck(op, (c, r))
    fwd = getattr(torch.ops.robustops, name).default
    bwd = getattr(torch.ops.robustops, f"_{name}_backward").default
    torch.library.opcheck(fwd, (c, r))
    torch.library.opcheck(fwd, (c.detach(), r.detach()))
    torch.library.opcheck(bwd, (torch.randn_like(c), torch.randn_like(c), c.detach(), r.detach()))
    compiled = torch.compile(lambda a, b: op(*op(a, b)), fullgraph=True)
    assert_close(compiled(c.detach(), r.detach()), op(*op(c.detach(), r.detach())))


@pytest.mark.parametrize("name", OPS)
def test_bad_input(name):
    op = getattr(robustops.ops, name)
    with pytest.raises(ValueError, match="same shape"):
        op(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="floating-point"):
        op(torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="same dtype"):
        op(torch.zeros(3), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=f"robustops::{name}: argument 'radius' has shape"):
        getattr(torch.ops.robustops, name)(torch.zeros(3), torch.zeros(2))


def _layer_cases(device, dtype):
    g = torch.Generator().manual_seed(2)
    kw = dict(dtype=torch.float64)
    lin = [
        (torch.randn(8, 20, generator=g, **kw), torch.randn(7, 20, generator=g, **kw),
         torch.randn(7, generator=g, **kw), {}),
        (torch.randn(3, 4, 20, generator=g, **kw), torch.randn(7, 20, generator=g, **kw), None, {}),
    ]
    conv = [
        (torch.randn(4, 6, 9, 9, generator=g, **kw), torch.randn(8, 6, 3, 3, generator=g, **kw),
         torch.randn(8, generator=g, **kw), dict(stride=1, padding=1)),
        (torch.randn(4, 6, 9, 9, generator=g, **kw), torch.randn(8, 3, 4, 4, generator=g, **kw), None,
         dict(stride=2, padding=(1, 0), dilation=(1, 2), groups=2)),
    ]
    move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    return ([("linear", move(x), move(w), move(b), k) for x, w, b, k in lin]
            + [("conv2d", move(x), move(w), move(b), k) for x, w, b, k in conv])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interval_layers_against_reference_and_sound(dtype, device):
    for kind, c, w, b, kw in _layer_cases(device, dtype):
        r = torch.rand_like(c) * 0.3
        op = getattr(robustops.ops, f"interval_{kind}")
        oc, orr = op(c, r, w, b, **kw)
        ec, er = getattr(ref, f"interval_{kind}")(c, r, w, b, **kw)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        assert_close(oc, ec, **tol)
        assert_close(orr, er, **tol)
        # every point of the box maps inside the output interval
        layer = (lambda x: torch.nn.functional.linear(x, w, b)) if kind == "linear" else \
            (lambda x: torch.nn.functional.conv2d(x, w, b, **kw))
        for _ in range(20):
            corner = c + r * torch.randint(0, 2, c.shape, device=device).to(dtype).mul(2).sub(1)
            for x in (corner, c + r * (torch.rand_like(c) * 2 - 1)):
                y = layer(x)
                slack = 1e-4 if dtype == torch.float32 else 1e-10
                assert ((y >= oc - orr - slack) & (y <= oc + orr + slack)).all()


@pytest.mark.parametrize("device", DEVICES)
def test_interval_layers_gradcheck_and_opcheck(device):
    g = torch.Generator().manual_seed(5)  # the radii too: the same inputs whatever ran before
    for kind, c, w, b, kw in _layer_cases(device, torch.float64):
        r = torch.rand(c.shape, generator=g, dtype=c.dtype).to(c.device) * 0.3
        args = [t.detach().requires_grad_() if t is not None else None for t in (c, r, w, b)]
        op = getattr(robustops.ops, f"interval_{kind}")
        assert torch.autograd.gradcheck(lambda *a: op(*a, **kw), tuple(args))
        schema = getattr(torch.ops.robustops, f"interval_{kind}").default
        if kind == "conv2d":
            pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
            extra = (pair(kw.get("stride", 1)), pair(kw.get("padding", 0)), pair(kw.get("dilation", 1)),
                     kw.get("groups", 1))
        else:
            extra = ()
        torch.library.opcheck(schema, (*args, *extra))


def test_interval_layers_bad_input():
    c, r = torch.randn(2, 5), torch.rand(2, 5)
    with pytest.raises(RuntimeError,
                       match=r"robustops::interval_linear: argument 'weight' must be \[out_features, 5\]"):
        robustops.ops.interval_linear(c, r, torch.randn(3, 4))
    with pytest.raises(ValueError, match="same shape"):
        robustops.ops.interval_linear(c, r[:, :4], torch.randn(3, 5))
    with pytest.raises(ValueError, match="'padding' must be an int or two ints"):
        robustops.ops.interval_conv2d(torch.randn(1, 2, 5, 5), torch.rand(1, 2, 5, 5), torch.randn(3, 2, 3, 3),
                                      padding="same")


def _nan_cases(dtype, device):
    nan, inf = float("nan"), float("inf")
    c = torch.tensor([nan, 0.5, nan, -0.5, 2.0, 0.0, 0.3, -2.0, 0.0], dtype=dtype, device=device)
    r = torch.tensor([0.1, nan, nan, 0.5, 0.1, inf, 0.0, 0.5, 0.2], dtype=dtype, device=device)
    return c, r


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", OPS)
def test_nan_propagates(name, dtype, device):
    """NaN in, NaN out: an interval with a NaN center or radius has a NaN image, in
    the kernels and the reference (interval_relu(NaN, NaN) was (0, 0))."""
    c, r = _nan_cases(dtype, device)
    for impl in (getattr(robustops.ops, name), getattr(ref, name)):
        oc, orr = impl(c, r)
        assert torch.isnan(oc[:3]).all() and torch.isnan(orr[:3]).all(), impl
        assert not torch.isnan(oc[3:]).any(), impl  # the finite intervals keep their images
    # the interval ops of the layers: NaN spreads through the products
    w = torch.ones(2, 9, dtype=dtype, device=device)
    oc, orr = robustops.ops.interval_linear(c.nan_to_num(0.0), r.nan_to_num(0.0).clamp(max=1), w)
    assert not torch.isnan(oc).any()
    oc, orr = robustops.ops.interval_linear(c, r.nan_to_num(0.0).clamp(max=1), w)
    assert torch.isnan(oc).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPS + ["interval_linear", "interval_conv2d"])
def test_negative_radius(name, device):
    """A negative radius is a ValueError at every public interval op; with
    validate_args=False (the bounds' own calls) the activations map it to NaN."""
    c = torch.rand(2, 3, 4, 4, device=device)
    r = torch.rand_like(c)
    r[1, 2, 3, 0] = -1e-3
    extra = {"interval_linear": (torch.randn(5, 4, device=device),),
             "interval_conv2d": (torch.randn(2, 3, 3, 3, device=device),)}.get(name, ())
    op = getattr(robustops.ops, name)
    with pytest.raises(ValueError, match=rf"{name}: argument 'radius' must be >= 0.*minimum of -0.001"):
        op(c, r, *extra)
    if name in OPS:
        oc, orr = op(c, r, validate_args=False)
        assert torch.isnan(oc[1, 2, 3, 0]) and torch.isnan(orr[1, 2, 3, 0])
        assert torch.isnan(oc).sum() == 1
        oc, orr = getattr(ref, name)(c, r)
        assert torch.isnan(oc[1, 2, 3, 0]) and torch.isnan(oc).sum() == 1
