"""The contract every op of robustops keeps, checked the same way for each: one
table, one entry per public dispatcher op (robustops::<op>), and each private
robustops::_<op>_backward reached through its public op's autograd.

For every entry, on every device:
- torch.library.opcheck of the op (detached, and with requires_grad inputs where it
  is differentiable) and of the backward ops its autograd calls, with the arguments
  autograd gives them;
- torch.autograd.gradcheck of the public op in float64 away from kinks (and
  gradgradcheck where second-order gradients are supported); a non-differentiable
  op says so when differentiated;
- torch.compile(fullgraph=True, backend="aot_eager") of a call to the public op
  gives the eager result and gradients;
- with its kernels switched off (robustops._extension.kernels_disabled), the public
  op warns robustops.FallbackWarning once (a second call is silent) and gives the
  kernels' numbers and gradients.
And bad input: an int tensor is a TypeError naming the argument; a wrong rank a
ValueError or RuntimeError naming it where the op has a rank requirement; tensors on
two devices raise (with CUDA only).

A new op needs an entry here: test_table_covers_every_op fails without one. The
family tests (tests/ops/test_<family>.py) keep what is particular to each op:
agreement with the reference over dtypes and layouts, kinks, ties, NaN.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Callable, Optional, Tuple

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

import robustops
from robustops import _extension
from robustops.ops import crown as crown_ops
from tests.common import DEVICES, requires_cuda

F64 = torch.float64
ops = robustops.ops


# ---------------------------------------------------------------------------------
# small valid float64 inputs, away from each op's kinks


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=F64)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=_gen(seed), dtype=F64)


def _away(x, points, gap):
    """x with the values within `gap` of each point moved to point + gap (finite
    differences across a kink are meaningless)."""
    for p in points:
        x = torch.where((x - p).abs() < gap, p + gap, x)
    return x


def _on(device, **inputs):
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}


def _saf_inputs(device):
    # mrelu's kinks at 0 and +-1 (rbf is smooth: the same inputs do)
    return _on(device, x=_away(_rand(4, 6) * 4 - 2, (-1.0, 0.0, 1.0), 0.05))


def _interval_inputs(device):
    # away from the points where the image switches endpoint: an end at -1, 0 or 1,
    # or the center at 0 (mReLU's and the RBF's peak)
    c = _rand(40, seed=1) * 6 - 3
    r = _rand(40, seed=2) * 0.5 + 0.01
    keep = (c.abs() > 0.02)
    for end in (c - r, c + r):
        for k in (-1.0, 0.0, 1.0):
            keep &= (end - k).abs() > 0.02
    return _on(device, center=c[keep], radius=r[keep])


def _interval_linear_inputs(device):
    # |W| r: the kink at W = 0
    return _on(device, center=_randn(3, 5, seed=3), radius=_rand(3, 5, seed=4) * 0.3,
               weight=_away(_randn(4, 5, seed=5), (0.0,), 0.05), bias=_randn(4, seed=6))


def _interval_conv2d_inputs(device):
    return _on(device, center=_randn(2, 2, 4, 4, seed=7), radius=_rand(2, 2, 4, 4, seed=8) * 0.3,
               weight=_away(_randn(3, 2, 3, 3, seed=9), (0.0,), 0.05), bias=_randn(3, seed=10), stride=1,
               padding=1)


def _crown_a():
    a = _randn(3, 2, 4, 5, seed=11)
    return a + torch.where(a >= 0, 0.1, -0.1)  # away from the kink at A = 0


def _crown_relax_inputs(device):
    return _on(device, a=_crown_a(), **{name: _randn(3, 4, 5, seed=12 + i) for i, name in enumerate(crown_ops._RELAX)})


def _crown_relu_inputs(device):
    # mixed intervals at least 0.3 wide (the slope's derivatives are 1 / w^2), their
    # ends away from 0 (where an element changes region)
    lower = _randn(3, 4, 5, seed=16) * 2
    upper = lower + 0.3 + _rand(3, 4, 5, seed=17) * 2
    lower = torch.where(lower.abs() < 0.05, lower - 0.1, lower)
    upper = torch.where(upper.abs() < 0.05, upper + 0.1, upper)
    return _on(device, a=_crown_a(), lower=lower, upper=upper)


def _spp_max_inputs(device):
    # distinct values 1 / numel apart: finite differences keep every bin's argmax
    x = torch.randperm(2 * 3 * 7 * 5, generator=_gen(18)).to(F64) / (2 * 3 * 7 * 5)
    return _on(device, x=x.view(2, 3, 7, 5), levels=(1, 2, 4))


def _bang_eps(n):
    return torch.linspace(0.1, 0.9, n, dtype=F64)


# ---------------------------------------------------------------------------------
# the table


@dataclasses.dataclass(frozen=True)
class Entry:
    op: str                      # robustops::<op>
    call: Callable               # the public op in robustops.ops, called with the inputs as keywords
    inputs: Callable             # device -> {argument name: small valid float64 input}
    op_args: Callable            # the inputs as keywords -> the arguments the public op passes robustops::<op>
    grad: Tuple[str, ...] = ()   # the differentiable inputs (none: the op says it is not differentiable)
    second_order: bool = False   # gradgradcheck too
    backward: Optional[str] = None  # the private backward op its autograd calls
    typed: Tuple[str, ...] = ()  # the tensor arguments an int tensor must be a TypeError for
    rank: Optional[Tuple[str, Callable]] = None  # (argument, inputs -> inputs with it of a wrong rank)
    same_device: Tuple[str, ...] = ()  # tensor arguments that must share the first one's device


def _saf(op):
    return Entry(op, getattr(ops, op), _saf_inputs, lambda x: (x,), grad=("x",), second_order=True,
                 backward=f"_{op}_backward", typed=("x",))


def _interval(op):
    return Entry(op, getattr(ops, op), _interval_inputs, lambda center, radius: (center, radius),
                 grad=("center", "radius"), backward=f"_{op}_backward", typed=("center", "radius"),
                 same_device=("center", "radius"))


def _pair(v):
    return [v, v]


def _spp(mode, inputs):
    return Entry(f"spp_{mode}", functools.partial(ops.spatial_pyramid_pool, mode=mode), inputs,
                 lambda x, levels: (x, list(levels)), grad=("x",), second_order=True,
                 backward=f"_spp_{mode}_backward", typed=("x",),
                 rank=("x", lambda kw: {**kw, "x": kw["x"][0]}))


TABLE = [
    _saf("mrelu"),
    _saf("rbf"),
    Entry("per_sample_norm", ops.per_sample_norm, lambda d: _on(d, x=_randn(5, 3, 4, seed=20)), lambda x: (x,),
          grad=("x",), second_order=True, typed=("x",),
          rank=("x", lambda kw: {**kw, "x": kw["x"].reshape(-1)[0]})),
    Entry("bang_eta", ops.bang_eta,
          lambda d: _on(d, norms=_rand(6, seed=21) + 0.5, eps=_bang_eps(6), max_norm=torch.tensor(2.0, dtype=F64)),
          lambda norms, eps, max_norm: (norms, eps, max_norm), typed=("norms", "eps"),
          rank=("norms", lambda kw: {**kw, "norms": kw["norms"].unsqueeze(1)})),
    Entry("bang_scale", ops.bang_scale,
          lambda d: _on(d, grad=_randn(6, 3, 4, seed=22), eps=_bang_eps(6), max_norm=torch.tensor(50.0, dtype=F64)),
          lambda grad, eps, max_norm: (grad, eps, max_norm), typed=("grad", "eps"),
          rank=("grad", lambda kw: {**kw, "grad": kw["grad"].reshape(-1)[0]})),
    _interval("interval_relu"),
    _interval("interval_mrelu"),
    _interval("interval_rbf"),
    Entry("interval_linear", ops.interval_linear, _interval_linear_inputs,
          lambda center, radius, weight, bias: (center, radius, weight, bias),
          grad=("center", "radius", "weight", "bias"), typed=("center", "radius", "weight", "bias"),
          rank=("weight", lambda kw: {**kw, "weight": kw["weight"][0]}),
          same_device=("center", "radius", "weight", "bias")),
    Entry("interval_conv2d", ops.interval_conv2d, _interval_conv2d_inputs,
          lambda center, radius, weight, bias, stride, padding: (center, radius, weight, bias, _pair(stride),
                                                                 _pair(padding), [1, 1], 1),
          grad=("center", "radius", "weight", "bias"), typed=("center", "radius", "weight", "bias"),
          rank=("center", lambda kw: {**kw, "center": kw["center"][0], "radius": kw["radius"][0]}),
          same_device=("center", "radius", "weight", "bias")),
    Entry("crown_relax", ops.crown_relax, _crown_relax_inputs, lambda a, **relax: (a, *relax.values()),
          grad=("a",) + crown_ops._RELAX, backward="_crown_relax_backward", typed=("a",) + crown_ops._RELAX,
          rank=("a", lambda kw: {**kw, "a": kw["a"][0, 0]}), same_device=("a",) + crown_ops._RELAX),
    Entry("crown_relu", ops.crown_relu, _crown_relu_inputs, lambda a, lower, upper: (a, lower, upper),
          grad=("a", "lower", "upper"), backward="_crown_relu_backward", typed=("a", "lower", "upper"),
          rank=("a", lambda kw: {**kw, "a": kw["a"][0, 0]}), same_device=("a", "lower", "upper")),
    Entry("p4_filter", ops.p4_filter, lambda d: _on(d, weight=_randn(2, 2, 4, 3, 3, seed=23)), lambda weight: (weight,),
          grad=("weight",), second_order=True, backward="_p4_filter_backward", typed=("weight",),
          rank=("weight", lambda kw: {**kw, "weight": kw["weight"][0]})),
    _spp("max", _spp_max_inputs),
    _spp("mean", lambda d: _on(d, x=_randn(2, 3, 7, 5, seed=24), levels=(3, 1))),
]
BY_OP = {e.op: e for e in TABLE}
OPS = sorted(BY_OP)


def _cases(field):
    """(op, argument) pairs for the entries' `field` (a tuple of argument names)."""
    return [(e.op, name) for e in TABLE for name in getattr(e, field)]


def _names(entry):
    """A pattern for the error messages' prefix: the public op (robustops.ops.<name>)
    or the op itself (robustops::<op>)."""
    public = getattr(entry.call, "func", entry.call).__name__
    return rf"robustops(\.ops\.{public}|::{entry.op})"


def _device_mix_cases():
    return [(e.op, name) for e in TABLE for name in e.same_device[1:]]


# ---------------------------------------------------------------------------------
# helpers


def _outputs(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def _loss(out):
    """A scalar of every floating-point output, with a different upstream gradient
    for every element (sin: not a plain sum)."""
    return sum(o.sin().sum() for o in _outputs(out) if o.is_floating_point())


def _fresh(inputs, grad=()):
    """A copy of the inputs (tensors cloned), those named in `grad` requiring grad."""
    return {k: (v.detach().clone().requires_grad_(k in grad) if isinstance(v, Tensor) else v)
            for k, v in inputs.items()}


def _grads(entry, inputs):
    out = entry.call(**inputs)
    return out, torch.autograd.grad(_loss(out), [inputs[k] for k in entry.grad])


class _RecordRobustopsCalls(TorchDispatchMode):
    """Records every robustops::* call below autograd, with detached copies of its
    arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "robustops":
            copy = tree_map(lambda t: t.detach().clone() if isinstance(t, Tensor) else t, (args, kwargs))
            self.calls.append((func, *copy))
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------------
# the table covers every op


def test_table_covers_every_op():
    """Every robustops:: op (robustops.extension_info()) is an entry or an entry's
    backward, every public op in robustops.ops is called by an entry, and every entry
    is declared by its op module (an _extension.Op, which kernels_disabled knows): a
    new op without an entry fails here."""
    assert robustops.extension_info()["loaded"]
    registered = set(robustops.extension_info()["ops"])
    covered = set(BY_OP) | {e.backward for e in TABLE if e.backward}
    assert covered == registered, (f"ops without a contract entry: {sorted(registered - covered)}; "
                                   f"entries without an op: {sorted(covered - registered)}")
    assert all(not e.op.startswith("_") for e in TABLE)
    called = {getattr(e.call, "func", e.call) for e in TABLE}
    public = {getattr(ops, name) for name in ops.__all__}
    assert public <= called, f"public ops without a contract entry: {public - called}"
    for e in TABLE:
        with _extension.kernels_disabled(e.op):  # a ValueError for an op no module declared
            pass


# ---------------------------------------------------------------------------------
# opcheck


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, device):
    entry = BY_OP[op]
    schema = getattr(torch.ops.robustops, op).default
    inputs = entry.inputs(device)
    torch.library.opcheck(schema, entry.op_args(**_fresh(inputs)))
    if entry.grad:
        torch.library.opcheck(schema, entry.op_args(**_fresh(inputs, entry.grad)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", [e.op for e in TABLE if e.backward])
def test_opcheck_backward_through_autograd(op, device):
    """The private backward op, with the arguments the public op's autograd gives it
    (requiring grad too where it has second-order gradients)."""
    entry = BY_OP[op]
    inputs = _fresh(entry.inputs(device), entry.grad)
    out = entry.call(**inputs)
    with _RecordRobustopsCalls() as record:
        torch.autograd.grad(_loss(out), [inputs[k] for k in entry.grad])
    calls = [c for c in record.calls if c[0]._schema.name == f"robustops::{entry.backward}"]
    assert calls, f"the autograd of robustops::{op} did not call robustops::{entry.backward}: {record.calls}"
    for func, args, kwargs in calls:
        torch.library.opcheck(func, args, kwargs)
        if entry.second_order:
            args = tree_map(lambda t: t.clone().requires_grad_() if isinstance(t, Tensor) and t.is_floating_point()
                            else t, args)
            torch.library.opcheck(func, args, kwargs)


# ---------------------------------------------------------------------------------
# gradcheck


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck(op, device):
    entry = BY_OP[op]
    inputs = entry.inputs(device)
    if not entry.grad:
        first = next(k for k, v in inputs.items() if isinstance(v, Tensor))
        inputs = _fresh(inputs, (first,))
        with pytest.raises(RuntimeError, match=f"robustops::{op} is not differentiable"):
            _loss(entry.call(**inputs)).backward()
        return
    inputs = _fresh(inputs, entry.grad)

    def f(*tensors):
        return entry.call(**{**inputs, **dict(zip(entry.grad, tensors))})

    tensors = tuple(inputs[k] for k in entry.grad)
    assert torch.autograd.gradcheck(f, tensors)
    if entry.second_order:
        assert torch.autograd.gradgradcheck(f, tensors)


# ---------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_compile_gives_the_eager_result(op, device):
    torch._dynamo.reset()  # one function traced per test: no recompilation limit across entries
    entry = BY_OP[op]

    def f(**kw):
        return entry.call(**kw)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    inputs = entry.inputs(device)
    assert_close(compiled(**_fresh(inputs)), f(**_fresh(inputs)), rtol=0, atol=0)
    if entry.grad:
        want_out, want = _grads(entry, _fresh(inputs, entry.grad))
        got_out, got = _grads(dataclasses.replace(entry, call=compiled), _fresh(inputs, entry.grad))
        assert_close(got_out, want_out, rtol=0, atol=0)
        assert_close(got, want, rtol=0, atol=0)


# ---------------------------------------------------------------------------------
# the fallback


# Public ops whose fallback is not differentiable although the op is: a known gap,
# the gradient part of the fallback case is an expected failure until it is closed
# (and a failure once it is, so that the entry leaves this table).
FALLBACK_WITHOUT_GRADIENTS: dict = {}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_fallback_warns_once_and_gives_the_kernels_numbers(op, device):
    entry = BY_OP[op]
    inputs = entry.inputs(device)
    want_out = entry.call(**_fresh(inputs))
    if entry.grad:
        _, want = _grads(entry, _fresh(inputs, entry.grad))

    with _extension.kernels_disabled(op):
        with pytest.warns(robustops.FallbackWarning, match=rf"robustops\.ops\.{op}: no compiled kernel") as record:
            out = entry.call(**_fresh(inputs))
        fallbacks = [w for w in record if issubclass(w.category, robustops.FallbackWarning)]
        assert len(fallbacks) == 1, [str(w.message) for w in fallbacks]
        assert_close(out, want_out)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the second call, and its backward, are silent
            assert_close(entry.call(**_fresh(inputs)), want_out)
            if not entry.grad:
                return
            grad_inputs = _fresh(inputs, entry.grad)
            out = entry.call(**grad_inputs)
            differentiable = _outputs(out)[0].requires_grad
            if op in FALLBACK_WITHOUT_GRADIENTS:
                assert not differentiable, f"{op}'s fallback is differentiable now: take it out of the table above"
                pytest.xfail(f"{op}'s fallback is not differentiable: {FALLBACK_WITHOUT_GRADIENTS[op]}")
            got = torch.autograd.grad(_loss(out), [grad_inputs[k] for k in entry.grad])
    assert_close(got, want)


# ---------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("op, arg", _cases("typed"), ids=lambda v: v)
def test_int_tensor_is_a_type_error_naming_the_argument(op, arg):
    entry = BY_OP[op]
    inputs = entry.inputs("cpu")
    inputs[arg] = torch.ones(inputs[arg].shape, dtype=torch.int64)
    with pytest.raises(TypeError, match=rf"{_names(entry)}: argument '{arg}'"):
        entry.call(**inputs)


@pytest.mark.parametrize("op", [e.op for e in TABLE if e.rank])
def test_wrong_rank_names_the_argument(op):
    entry = BY_OP[op]
    arg, bad = entry.rank
    with pytest.raises((ValueError, RuntimeError), match=rf"{_names(entry)}: .*'{arg}'"):
        entry.call(**bad(entry.inputs("cpu")))


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("op, arg", _device_mix_cases(), ids=lambda v: v)
def test_tensors_on_two_devices_raise(op, arg):
    entry = BY_OP[op]
    inputs = entry.inputs("cpu")
    inputs[arg] = inputs[arg].to("cuda")
    with pytest.raises((TypeError, ValueError, RuntimeError), match=f"'{arg}'"):
        entry.call(**inputs)
