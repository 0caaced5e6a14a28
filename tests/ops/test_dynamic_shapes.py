"""Shape-like schema arguments are SymInt, and torch.compile(dynamic=True) traces the
ops once for many shapes.

An op whose schema takes a shape-like argument as `int` makes dynamo specialize on its
value: spatial pyramid pooling's backward takes the input's height and width, so
every new image size was a recompilation (three sizes, three frames, under the old
`int` schema). With SymInt (as ATen's and torchvision's schemas), the fake kernels and
autograd formulas carry the symbols through, and one frame serves every size.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.testing import assert_close

import robustops  # noqa: F401  (loads robustops._C)
from robustops import ops
from tests.common import DEVICES

F64 = torch.float64

# every int-like argument of every robustops schema, by op
SHAPE_ARGS = {
    "interval_conv2d": ("stride", "padding", "dilation", "groups"),
    "spp_max": ("levels",),
    "_spp_max_backward": ("levels", "height", "width"),
    "spp_mean": ("levels",),
    "_spp_mean_backward": ("levels", "height", "width"),
    "_p4_filter_backward": ("in_rotations",),
}


def _schemas():
    names = [n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("robustops::")]
    assert names, "no robustops op is registered"
    return {name.split(".")[0]: getattr(torch.ops.robustops, name.split(".")[0]).default._schema for name in names}


def test_every_int_argument_of_every_schema_is_symint():
    # the schema's text (the Python binding of an argument's type shows SymInt as int)
    found = {}
    for name, schema in _schemas().items():
        text = str(schema)
        plain = re.findall(r"(?<![A-Za-z])int(?:\[\d*\])?\??\s+(\w+)", text)
        assert not plain, f"robustops::{name}: arguments {plain} are int, not SymInt: {text}"
        symbolic = re.findall(r"SymInt(?:\[\d*\])?\??\s+(\w+)", text)
        if symbolic:
            found[name] = tuple(symbolic)
    assert found == SHAPE_ARGS


def _compile(f):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    return torch.compile(f, backend=counter, dynamic=True, fullgraph=True), counter


def _value_and_grads(f, *args):
    leaves = [a.detach().requires_grad_() for a in args if isinstance(a, torch.Tensor)]
    it = iter(leaves)
    call = [next(it) if isinstance(a, torch.Tensor) else a for a in args]
    out = f(*call)
    out = out if isinstance(out, tuple) else (out,)
    weights = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o) for o in out]
    grads = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), leaves)
    return [o.detach() for o in out], grads


def _check_one_frame(f, cases):
    compiled, counter = _compile(f)
    for args in cases:
        want_out, want_grads = _value_and_grads(f, *args)
        got_out, got_grads = _value_and_grads(compiled, *args)
        assert_close(got_out, want_out, rtol=0, atol=0)
        assert_close(got_grads, want_grads, rtol=0, atol=0)
    assert counter.frame_count == 1, f"{counter.frame_count} frames compiled for {len(cases)} shapes"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_spp_one_frame_for_every_image_size(mode, device):
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(b, 3, h, w, generator=g, dtype=F64).to(device),) for b, h, w in
             [(2, 5, 6), (3, 7, 9), (4, 11, 8)]]
    _check_one_frame(lambda x: ops.spatial_pyramid_pool(x, (1, 2, 4), mode), cases)


@pytest.mark.parametrize("device", DEVICES)
def test_spp_levels_may_be_symbolic(device):
    # levels passed as ints of the compiled function are SymInts under dynamic=True
    x = torch.randn(2, 3, 9, 9, dtype=F64, device=device)
    compiled, counter = _compile(lambda x, n: ops.spatial_pyramid_pool(x, (2, n), "max"))
    for n in (3, 4, 5):
        assert_close(compiled(x, n), ops.spatial_pyramid_pool(x, (2, n), "max"), rtol=0, atol=0)
    assert counter.frame_count == 1


@pytest.mark.parametrize("device", DEVICES)
def test_interval_conv2d_one_frame_for_every_size_and_stride(device):
    g = torch.Generator().manual_seed(1)

    def case(b, c, h, stride, padding):
        x = torch.randn(b, c, h, h, generator=g, dtype=F64)
        r = torch.rand(b, c, h, h, generator=g, dtype=F64)
        w = torch.randn(6, c, 3, 3, generator=g, dtype=F64)
        return tuple(t.to(device) for t in (x, r, w)) + (stride, padding)

    def f(center, radius, weight, stride, padding):
        return ops.interval_conv2d(center, radius, weight, None, stride, padding)

    # first sizes all distinct (dynamo's duck sizing would tie equal ones together)
    _check_one_frame(f, [case(2, 5, 11, 4, 7), case(3, 7, 14, 2, 5), case(4, 2, 17, 5, 8)])


@pytest.mark.parametrize("device", DEVICES)
def test_p4_filter_one_frame_for_every_filter_size(device):
    g = torch.Generator().manual_seed(2)
    cases = [(torch.randn(o, i, 4, k, k, generator=g, dtype=F64).to(device),)
             for o, i, k in [(2, 5, 3), (3, 6, 5), (5, 2, 7)]]
    _check_one_frame(ops.p4_filter, cases)
