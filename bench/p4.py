"""Benchmarks of the p4 group convolutions (robustops.nn.P4ConvZ2 and .P4ConvP4) and
of their filter transform (robustops.ops.p4_filter and its adjoint).

The layers (3x3, padding 1, stride 1, with bias; weights from the module's own
initialization with a fixed seed, inputs and output gradients standard normal):

    p4cnn  the size of P4CNN's layers (Cohen & Welling 2016; robustops.models.p4cnn):
           batch 128, 10 p4 channels, 28x28: P4ConvZ2 [128, 1, 28, 28] -> [128, 10,
           4, 28, 28], P4ConvP4 [128, 10, 4, 28, 28] -> [128, 10, 4, 28, 28] (P4CNN's
           own layers have no padding; here the plane stays 28x28)
    cifar  a CIFAR-sized layer (robustops.models.symmetric_cnn's first block at width
           32): batch 64, 32 p4 channels, 32x32: P4ConvZ2 [64, 3, 32, 32] -> [64, 32,
           4, 32, 32], P4ConvP4 [64, 32, 4, 32, 32] -> [64, 32, 4, 32, 32]; and the
           same layers at batch 1 and 8, where the filter transform's share of the
           layer's time grows

p4_conv_z2, p4_conv_p4
    The layer ``robustops.nn.P4ConvZ2`` / ``P4ConvP4`` (the module in train mode:
    the filter is transformed by robustops.ops.p4_filter on every call, one
    gather, then F.conv2d), against
      eager reference   ``robustops.reference.p4.p4_conv(x, weight, bias, 1, 1, 1)``
                        with the same weights: the filter through the reference
                        rot90 / roll / stack / reshape chain, then F.conv2d;
      plain conv        ``nn.Conv2d(C s, C' 4, 3, padding=1)`` (s = 1 for P4ConvZ2,
                        4 for P4ConvP4) on the input seen as [B, C s, H, W] (a view),
                        its weight the transformed filter and its bias the layer's
                        repeated 4 times: the same function without the transform,
                        the layer's limit (timed for comparison; checked as said
                        below, not by the generic check, whose gradients it does
                        not have);
    and, in the full suite only (it would add about a third to the quick suite's
    layer cases), ``robustops eval (cached filter)``: the module in eval mode, whose
    transformed filter is cached until the weight changes (under torch.no_grad the
    forward skips the transform; with grad the cached filter's backward is the
    transform's adjoint; no target). forward: the output
    under torch.no_grad; forward+backward: the gradients of the input, the weight
    and the bias (the plain conv: of the input and its own weight and bias) from
    the output gradient. The modules are called with the timed weight and bias
    bound in place of their parameters (the module's ``_parameters`` entries set
    once to the statement's leaves; no reparametrization per call). The
    implementations are timed in alternation (timing.time_interleaved, slices of
    about 50 ms), so that the ratios to the plain conv are not biased by the
    drifting load of a shared machine. Targets: the layer's time <= 1.05 x the
    plain conv's, forward and forward+backward, at every size, and no slower than
    the reference (speedup >= 1). Compute-bound: the bandwidth columns (the least
    bytes: read x, weight, bias, write y; the backward also reads the output
    gradient, x and the weight and writes the three gradients) are only indicative.

    Checked before timing (a case that fails is not timed): in float64, on the
    first CHECK_BATCH samples, the module's output and its input, weight and bias
    gradients, in train and in eval mode, equal the reference's (assert_close, rtol
    = atol = 1e-10), and a plain nn.Conv2d with the transformed filter
    (robustops.reference.p4.p4_filter) and the repeated bias computes the same
    output and input gradient, its weight gradient mapped through the reference
    transform's adjoint (autograd) is the layer's weight gradient and its bias
    gradient summed over the 4 rotations the layer's bias gradient; then, on the
    timed data at the run's dtype, the timed plain conv's output is the layer's,
    and the generic check compares the forward and the three gradients of robustops
    (and of the eval-mode module) with the reference's (assert_close, rtol
    LAYER_RTOL, atol LAYER_ATOL_EPS x eps x sqrt(B H W): the weight gradients are
    sums of terms of that order, added in another order).

p4_filter
    ``robustops.ops.p4_filter(weight)`` ([C', C, s, 3, 3] -> [4 C', C s, 3, 3]) on
    the weights of those layers (s = 1 and 4; the cifar filters are those of every
    batch), against the reference ``robustops.reference.p4.p4_filter`` (the rot90
    / roll / stack / reshape chain) run eagerly and, in the full suite only,
    through torch.compile(dynamic=False). forward+backward: the weight's gradient
    from the transformed filter's (standard normal), through autograd (robustops:
    its registered backward, the adjoint kernel). Target: forward >= 3x the eager
    reference's speed. Bytes: read the weight, write 4 copies (5 n_w itemsize
    bytes; the backward also reads 4 n_w and writes n_w).
p4_filter_adjoint
    The adjoint on its own: ``torch.ops.robustops._p4_filter_backward(grad, s)``
    (a gather of 4 values per weight, summed in a fixed order) against autograd's
    backward through the reference chain (``torch.autograd.grad(T, W, grad,
    retain_graph=True)`` on a graph built once: what the reference's filter
    gradient costs), under torch.no_grad, forward-only. Target: >= 3x the eager
    reference's speed. Bytes: read 4 n_w, write n_w.

    Checked before timing, in float64: the transform equals the reference's
    exactly (a permutation-gather), its autograd gradient and the adjoint kernel's
    equal the reference's (rtol = atol = 1e-12), and <T(W), G> = <W, T*(G)>; then
    the generic check at the run's dtype (FILTER_TOLERANCES).

Dtypes of all cases: float32 and, in the full suite, bfloat16 (cpu) or float16 and
bfloat16 (cuda).

Timing budget (quick suite, min_run_time 0.6 s): the filter cases run with
blocked_autorange(min_run_time = FILTER_TIME x the run's), the layer cases run
LAYER_TIME x the run's seconds of interleaved slices per implementation and pass
(after time_interleaved's calibration, 0.2 s per implementation and pass): the
quick suite's p4 and spp families take about a minute on a 2-core machine, half of
it in the layer cases. A forward+backward of the cifar P4ConvP4 at batch 64 takes
a few tenths of a second there (and every slice of it runs the statement three
times: torch.utils.benchmark's Timer.timeit warms up with two runs), so that case's
forward+backward ratios rest on one or two slices per implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

import robustops
from robustops.nn import P4ConvP4, P4ConvZ2
from robustops.reference import p4 as reference

from bench.cases import (
    COMPILED, EAGER, FORWARD, FORWARD_BACKWARD, ROBUSTOPS, Case, Config, dtype_name,
)
from bench.checks import CorrectnessError, no_tf32
from bench.targets import Target, speedup_of, time_ratio_to

FAMILY = "p4"
LAYER_OPS = ("p4_conv_z2", "p4_conv_p4")
FILTER_OPS = ("p4_filter", "p4_filter_adjoint")
OPS = LAYER_OPS + FILTER_OPS

# The cases' dtypes, among the run's.
DTYPES = {"cpu": (torch.float32, torch.bfloat16),
          "cuda": (torch.float32, torch.float16, torch.bfloat16)}

PLAIN_CONV = "plain conv"  # the layer cases' limit: nn.Conv2d with the expanded channels
CACHED = "robustops eval (cached filter)"  # the module in eval mode

# Seconds per measurement, as multiples of the run's min_run_time: of interleaved
# slices per implementation and pass (layers), of blocked_autorange (filters).
LAYER_TIME = 0.3
FILTER_TIME = 0.15

SEED = 0
# The float64 layer check runs on the first CHECK_BATCH samples.
CHECK_BATCH = 2
F64 = dict(rtol=1e-10, atol=1e-10)
F64_FILTER = dict(rtol=1e-12, atol=1e-12)

# assert_close tolerances. The layers: robustops and the reference run the same
# convolution on the same (bit-identical) filter; the weight gradients differ in
# the order the 4 copies of a weight's gradient are summed (the adjoint kernel: r =
# 0..3, in float32 for half types; autograd: as its graph accumulates), copies of
# the order of sqrt(B H W) for standard normal data (sums over the batch and the
# plane), so atol = LAYER_ATOL_EPS x eps x sqrt(B H W) (float32, batch 8, 32x32: the
# dev machine's largest difference was 2 eps sqrt(B H W)); on cuda cuDNN's backward
# may differ between calls too. The filters: the forward is a permutation (exact);
# the adjoint sums 4 values (standard normal: below about 8 in magnitude), the
# kernel in float32 rounding once, autograd rounding at every addition: atol about
# 8 eps (one ulp at 8).
LAYER_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
LAYER_ATOL_EPS = 16
FILTER_TOLERANCES = {torch.float32: dict(rtol=1e-6, atol=1e-6),
                     torch.float16: dict(rtol=1e-3, atol=8e-3),
                     torch.bfloat16: dict(rtol=8e-3, atol=6.25e-2)}


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class Layer:
    """One p4 layer at one size: 3x3, padding 1."""

    setting: str  # "p4cnn" or "cifar"
    cls: type  # P4ConvZ2 or P4ConvP4
    batch: int
    in_channels: int
    out_channels: int
    size: int  # H = W
    kernel_size: int = 3
    padding: int = 1

    @property
    def op(self) -> str:
        return "p4_conv_z2" if self.cls is P4ConvZ2 else "p4_conv_p4"

    @property
    def rotations(self) -> int:
        """s: the input's rotations (1 for the lifting layer)."""
        return self.cls.in_rotations

    @property
    def in_shape(self) -> tuple[int, ...]:
        rot = () if self.rotations == 1 else (4,)
        return (self.batch, self.in_channels, *rot, self.size, self.size)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, 4, self.size, self.size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        k = self.kernel_size
        return (self.out_channels, self.in_channels, self.rotations, k, k)

    @property
    def label(self) -> str:
        return f"{self.setting} {_shape(self.in_shape)} -> {_shape(self.out_shape)}"

    def tolerances(self, dtype: torch.dtype) -> dict:
        """assert_close tolerances at ``dtype`` (see LAYER_RTOL)."""
        scale = (self.batch * self.size * self.size) ** 0.5
        return dict(rtol=LAYER_RTOL[dtype], atol=LAYER_ATOL_EPS * torch.finfo(dtype).eps * scale)

    def module(self, dtype: torch.dtype, device: torch.device) -> nn.Module:
        """The layer with its seeded initial weights (the global generator is left as
        it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            m = self.cls(self.in_channels, self.out_channels, self.kernel_size,
                         padding=self.padding)
        return m.to(device=device, dtype=dtype)


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


LAYERS = tuple(
    [Layer("p4cnn", P4ConvZ2, 128, 1, 10, 28), Layer("p4cnn", P4ConvP4, 128, 10, 10, 28)]
    + [Layer("cifar", cls, batch, c_in, 32, 32)
       for cls, c_in in ((P4ConvZ2, 3), (P4ConvP4, 32)) for batch in (1, 8, 64)]
)


@dataclass(frozen=True)
class Filter:
    """The weight of a layer (the same at every batch)."""

    setting: str
    layer: str  # the class name
    shape: tuple[int, ...]  # [C', C, s, k, k]

    @property
    def rotations(self) -> int:
        return self.shape[2]

    @property
    def out_shape(self) -> tuple[int, ...]:
        o, i, s, k, _ = self.shape
        return (o * 4, i * s, k, k)

    @property
    def label(self) -> str:
        return f"{self.setting} {self.layer} {_shape(self.shape)}"


FILTERS = tuple(dict.fromkeys(Filter(l.setting, l.cls.__name__, l.weight_shape) for l in LAYERS))


# --------------------------------------------------------------------------- targets

# cpu, float32.
TARGETS = [
    target
    for op in LAYER_OPS
    for layer in LAYERS if layer.op == op
    for pass_ in (FORWARD, FORWARD_BACKWARD)
    for target in (
        Target(op, f"{pass_} time / {PLAIN_CONV}'s", time_ratio_to(pass_, PLAIN_CONV), 1.05,
               at_least=False, numel=_numel(layer.out_shape), size=layer.label),
        Target(op, f"{pass_} speedup vs {EAGER}", speedup_of(pass_, EAGER), 1.0,
               numel=_numel(layer.out_shape), size=layer.label),
    )
] + [
    Target(op, f"{FORWARD} speedup vs {EAGER}", speedup_of(FORWARD, EAGER), 3.0,
           numel=_numel(f.out_shape), size=f.label)
    for op in FILTER_OPS for f in FILTERS
]


# --------------------------------------------------------------------------- layer cases


def _bound(module: nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``module(x)`` with the statement's weight and bias as its parameters: the
    ``_parameters`` entries are set to them when they change (once per namespace),
    so the timed call is the module's own."""
    params = module._parameters

    def f(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        if params["weight"] is not w:
            params["weight"], params["bias"] = w, b
        return module(x)
    return f


def _plain_conv(layer: Layer, weight: Tensor, bias: Tensor) -> nn.Conv2d:
    """nn.Conv2d with the expanded channels, the transformed filter and the repeated
    bias: the layer's function without the transform (built without its random
    initialization: the global generators are left as they were)."""
    conv = torch.nn.utils.skip_init(
        nn.Conv2d, layer.in_channels * layer.rotations, layer.out_channels * 4,
        layer.kernel_size, padding=layer.padding, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(reference.p4_filter(weight))
        conv.bias.copy_(bias.repeat_interleave(4))
    return conv


def _plain_impl(layer: Layer, conv: nn.Conv2d) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    if layer.rotations == 1:
        return lambda x, w, b: conv(x)
    return lambda x, w, b: conv(x.flatten(1, 2))  # [B, C, 4, H, W] seen as [B, 4 C, H, W]


def _backward(y: Tensor, g: Tensor) -> None:
    """Backward from an output (the plain conv's is [B, 4 C', H, W]) with the output
    gradient [B, C', 4, H, W] seen in its shape."""
    y.backward(g.view(y.shape))


def _layer_data(layer: Layer, dtype: torch.dtype, device: torch.device,
                batch: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Standard normal input and output gradient (the first ``batch`` samples)."""
    gen = torch.Generator(device=device).manual_seed(SEED + 1)
    x = torch.randn(layer.in_shape, generator=gen, device=device).to(dtype)
    g = torch.randn(layer.out_shape, generator=gen, device=device).to(dtype)
    return (x, g) if batch is None else (x[:batch], g[:batch])


def _assert(what: str, actual, expected, tolerances: dict) -> None:
    try:
        torch.testing.assert_close(actual, expected, **tolerances)
    except AssertionError as e:
        raise CorrectnessError(f"{what}: {e}") from e


def _check_layer(layer: Layer, device: torch.device) -> None:
    """The float64 check of the module (train and eval) against the reference and the
    plain conv with the transformed filter (see the module docstring)."""
    what = f"{layer.op} {layer.label}"
    with no_tf32(device):
        module = layer.module(torch.float64, device)
        w, b = module.weight.detach(), module.bias.detach()
        x, g = _layer_data(layer, torch.float64, device, CHECK_BATCH)

        def run(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> list[Tensor]:
            xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
            y = fn(xs, ws, bs)
            _backward(y, g)
            return [y.detach().view(g.shape), xs.grad, ws.grad, bs.grad]

        expected = run(lambda x_, w_, b_: reference.p4_conv(x_, w_, b_, 1, layer.padding, 1))
        names = ("output", "input gradient", "weight gradient", "bias gradient")
        for mode in ("train", "eval"):
            m = layer.module(torch.float64, device).train(mode == "train")
            for name, a, e in zip(names, run(_bound(m)), expected):
                _assert(f"{what}: float64, the module in {mode} mode: its {name} disagrees with "
                        "the reference's", a, e, F64)
        conv = _plain_conv(layer, w, b)
        y, gx = run(_plain_impl(layer, conv))[:2]
        # the plain conv's parameter gradients mapped back to the layer's parameters
        wt = w.clone().requires_grad_()
        gw = torch.autograd.grad(reference.p4_filter(wt), wt, conv.weight.grad)[0]
        gb = conv.bias.grad.view(layer.out_channels, 4).sum(1)
        for name, a, e in zip(names, (y, gx, gw, gb), expected):
            _assert(f"{what}: float64, the {PLAIN_CONV} with the transformed filter: its {name} "
                    "disagrees with the layer's", a, e, F64)


def _layer_inputs(layer: Layer, dtype: torch.dtype, device: torch.device, module: nn.Module,
                  conv: nn.Conv2d) -> Callable[[], dict]:
    def make() -> dict:
        _check_layer(layer, device)  # raises CorrectnessError: the case is not timed
        x, g = _layer_data(layer, dtype, device)
        w, b = module.weight.detach(), module.bias.detach()
        with torch.no_grad():
            plain = _plain_impl(layer, conv)(x, w, b)
            mine = _bound(layer.module(dtype, device))(x, w, b)
        _assert(f"{layer.op} {layer.label} {dtype_name(dtype)}: the timed {PLAIN_CONV}'s output "
                "is not the layer's", plain.view(mine.shape), mine, layer.tolerances(dtype))
        return {"x": x, "w": w, "b": b, "g": g}
    return make


def _layer_cases(config: Config, dtype: torch.dtype) -> Iterator[Case]:
    min_run_time = LAYER_TIME * config.min_run_time
    itemsize = torch.empty((), dtype=dtype).element_size()
    dev = config.device
    kernels = robustops.extension_info()["ops"]
    for layer in LAYERS:
        notes = [f"The implementations were timed in alternation (slices of about 50 ms, "
                 f"{min_run_time:g} s of them per implementation and pass); {PLAIN_CONV}: "
                 f"nn.Conv2d({layer.in_channels * layer.rotations}, {layer.out_channels * 4}, "
                 f"{layer.kernel_size}, padding={layer.padding}) with the transformed filter "
                 "(timed for comparison; checked separately: same output, and its gradients "
                 "mapped back are the layer's); forward+backward: the gradients of x, weight, "
                 "bias. Also checked before timing: in float64 the module (train and eval) "
                 "equals the reference (rtol=atol=1e-10). Compute-bound: the bandwidth "
                 "columns are only indicative."]
        if dev.type not in kernels.get("p4_filter", []):
            notes.append(f"robustops.ops.p4_filter has no compiled {dev.type} kernel in this "
                         "build: the 'robustops' numbers use the reference transform")
        module = layer.module(dtype, dev)
        w, b = module.weight.detach(), module.bias.detach()
        conv = _plain_conv(layer, w, b)
        impls = {ROBUSTOPS: _bound(module.train()),
                 EAGER: lambda x, w, b, p=layer.padding: reference.p4_conv(x, w, b, 1, p, 1),
                 PLAIN_CONV: _plain_impl(layer, conv)}
        if config.full:
            impls[CACHED] = _bound(layer.module(dtype, dev).eval())
        n_in, n_out = _numel(layer.in_shape), _numel(layer.out_shape)
        n_w, n_b = _numel(layer.weight_shape), layer.out_channels
        fwd = (n_in + n_w + n_b + n_out) * itemsize
        bwd = (n_out + n_in + n_w + n_in + n_w + n_b) * itemsize
        yield Case(
            family=FAMILY, op=layer.op, dtype=dtype, device=dev,
            numel=n_out, label=layer.label,
            impls=impls,
            unchecked=frozenset({PLAIN_CONV}),
            make_inputs=_layer_inputs(layer, dtype, dev, module, conv),
            forward_expr="f(x, w, b)",
            backward_stmt="x.grad = w.grad = b.grad = plain.weight.grad = plain.bias.grad = None; "
                          "backward(f(x, w, b), g)",
            differentiable=("x", "w", "b"),
            env={"backward": _backward, "plain": conv},
            bytes_forward=fwd, bytes_forward_backward=fwd + bwd,
            input_bytes=(n_in + n_w + n_b) * itemsize,
            limit_numel=fwd // (2 * itemsize),
            tolerances=layer.tolerances(dtype),
            min_run_time=min_run_time, interleaved=True,
            notes=notes,
        )


# --------------------------------------------------------------------------- filter cases


def _has_kernel(op: str, device: torch.device) -> bool:
    return device.type in robustops.extension_info()["ops"].get(op, [])


def _adjoint(f: Filter, device: torch.device) -> Callable[[Tensor], Tensor]:
    """robustops' adjoint: the kernel, or (no kernel for the device) autograd through
    robustops.ops.p4_filter (the fallback)."""
    s = f.rotations
    if _has_kernel("_p4_filter_backward", device):
        op = torch.ops.robustops._p4_filter_backward.default
        return lambda g: op(g, s)
    return _autograd_adjoint(robustops.ops.p4_filter, f, device)


def _autograd_adjoint(transform: Callable[[Tensor], Tensor], f: Filter,
                      device: torch.device) -> Callable[[Tensor], Tensor]:
    """The adjoint of ``transform`` by autograd, on a graph built once (at the first
    call's dtype): torch.autograd.grad(T, W, grad, retain_graph=True)."""
    graphs: dict[torch.dtype, tuple[Tensor, Tensor]] = {}

    def adjoint(g: Tensor) -> Tensor:
        if g.dtype not in graphs:
            with torch.enable_grad():
                w = torch.zeros(f.shape, dtype=g.dtype, device=device, requires_grad=True)
                graphs[g.dtype] = (transform(w), w)
        t, w = graphs[g.dtype]
        return torch.autograd.grad(t, w, g, retain_graph=True)[0]
    return adjoint


def _check_filter(f: Filter, device: torch.device) -> None:
    """The float64 check of the transform and its adjoint (see the module docstring)."""
    what = f"p4_filter {f.label}: float64"
    gen = torch.Generator(device=device).manual_seed(SEED + 2)
    w = torch.randn(f.shape, generator=gen, device=device, dtype=torch.float64,
                    requires_grad=True)
    g = torch.randn(f.out_shape, generator=gen, device=device, dtype=torch.float64)
    t, t_ref = robustops.ops.p4_filter(w), reference.p4_filter(w)
    if not torch.equal(t.detach(), t_ref.detach()):
        raise CorrectnessError(f"{what}: the transform differs from the reference's (max "
                               f"difference {(t - t_ref).abs().max().item():.3g})")
    expected = torch.autograd.grad(t_ref, w, g)[0]
    _assert(f"{what}: the gradient through robustops.ops.p4_filter disagrees with the "
            "reference's", torch.autograd.grad(t, w, g)[0], expected, F64_FILTER)
    adjoint = _adjoint(f, device)(g)
    _assert(f"{what}: the adjoint disagrees with the reference's", adjoint, expected, F64_FILTER)
    _assert(f"{what}: <T(W), G> != <W, T*(G)>", (w.detach() * adjoint).sum(),
            (t.detach() * g).sum(), F64_FILTER)


def _filter_inputs(f: Filter, dtype: torch.dtype, device: torch.device,
                   adjoint: bool) -> Callable[[], dict]:
    """The weight (x) and the transformed filter's gradient (g), standard normal; for
    the adjoint, that gradient as x."""
    def make() -> dict:
        _check_filter(f, device)  # raises CorrectnessError: the case is not timed
        gen = torch.Generator(device=device).manual_seed(SEED + 3)
        w = torch.randn(f.shape, generator=gen, device=device).to(dtype)
        g = torch.randn(f.out_shape, generator=gen, device=device).to(dtype)
        return {"x": g} if adjoint else {"x": w, "g": g}
    return make


def _filter_cases(config: Config, dtype: torch.dtype) -> Iterator[Case]:
    min_run_time = FILTER_TIME * config.min_run_time
    itemsize = torch.empty((), dtype=dtype).element_size()
    dev = config.device
    timing = (f"Timed with blocked_autorange(min_run_time={min_run_time:g}) (FILTER_TIME x "
              "the run's). Also checked before timing, in float64: the transform equals the "
              "reference exactly, its gradient and the adjoint kernel's equal the reference's "
              "(rtol=atol=1e-12), and <T(W), G> = <W, T*(G)>.")
    filter_notes = [timing]
    adjoint_notes = [timing + f" {EAGER}: torch.autograd.grad through the reference chain on "
                     "a graph built once (retain_graph=True); robustops: "
                     "torch.ops.robustops._p4_filter_backward."]
    if not _has_kernel("p4_filter", dev):
        filter_notes.append(f"robustops.ops.p4_filter has no compiled {dev.type} kernel in "
                            "this build: the 'robustops' numbers are the reference fallback's")
    if not _has_kernel("_p4_filter_backward", dev):
        adjoint_notes.append(f"no compiled {dev.type} kernel of the adjoint in this build: "
                             "the 'robustops' numbers are autograd through "
                             "robustops.ops.p4_filter (the reference fallback)")
    for f in FILTERS:
        n_w = _numel(f.shape)
        common = dict(family=FAMILY, dtype=dtype, device=dev, numel=4 * n_w, label=f.label,
                      bytes_forward=5 * n_w * itemsize, input_bytes=n_w * itemsize,
                      limit_numel=5 * n_w // 2, tolerances=FILTER_TOLERANCES[dtype],
                      min_run_time=min_run_time)
        impls = {ROBUSTOPS: robustops.ops.p4_filter, EAGER: reference.p4_filter}
        if config.full:  # compiled lazily, on the first call (the correctness check)
            impls[COMPILED] = torch.compile(reference.p4_filter, dynamic=False)
        yield Case(
            op="p4_filter", impls=impls,
            make_inputs=_filter_inputs(f, dtype, dev, adjoint=False),
            bytes_forward_backward=10 * n_w * itemsize,
            notes=list(filter_notes), **common)
        yield Case(
            op="p4_filter_adjoint",
            impls={ROBUSTOPS: _adjoint(f, dev),
                   EAGER: _autograd_adjoint(reference.p4_filter, f, dev)},
            make_inputs=_filter_inputs(f, dtype, dev, adjoint=True),
            bytes_forward_backward=None, forward_only=True,
            notes=list(adjoint_notes), **common)


def cases(config: Config) -> Iterator[Case]:
    """The layers at every size of LAYERS, the transform and its adjoint on their
    weights, in the run's dtypes among DTYPES."""
    for dtype in config.dtypes:
        if dtype not in DTYPES.get(config.device.type, ()):
            continue
        yield from _layer_cases(config, dtype)
        yield from _filter_cases(config, dtype)
