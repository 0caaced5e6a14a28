"""Benchmarks of interval bound propagation (robustops.ops.interval_* and
robustops.bounds): the interval layers and activations, and IBP certified training
of two small CNNs (their CROWN-IBP training step: bench/crown.py, on the same nets).

The networks (``mnist_cnn``, ``cifar_cnn``; batch 256, inputs uniform in [0, 1],
labels uniform in 0..9, weights from torch's default initialization with a fixed
seed):

    mnist_cnn  the CROWN-IBP paper's small MNIST CNN on 1x28x28, eps = 0.1:
               Conv2d(1, 16, 4, stride=2, padding=1), ReLU, Conv2d(16, 32, 4,
               stride=1, padding=1), ReLU, Flatten, Linear(5408, 100), ReLU,
               Linear(100, 10)
    cifar_cnn  the CIFAR "DM-small" CNN on 3x32x32, eps = 8/255: the same without
               padding, Linear(4608, 100)

Their layer input and output shapes come from one forward on the meta device with
forward hooks; the intervals the op cases start from are those IBP propagates
through the net (robustops.bounds.input_interval of the batch at the net's eps,
then robustops.bounds.interval_through layer by layer): realistic centers and
radii at every layer's input.

interval_linear, interval_conv2d
    ``robustops.ops.interval_linear(c, r, W, b)`` / ``interval_conv2d(c, r, W, b,
    stride, padding, dilation, groups)`` at every Linear / Conv2d layer of the two
    nets, against the plain layer of the same shape (``F.linear(c, W, b)`` /
    ``F.conv2d(c, W, b, ...)``, the center only: what the model's forward does;
    timed for comparison, not checked) and the reference
    (robustops.reference.interval: (W c + b, |W| r) from F.linear / F.conv2d and
    autograd). The interval layer is two matrix products (convolutions) and |W|:
    about 2x the plain layer is the limit, the target is <= 2.2x in the forward.
    forward+backward: the gradients of c, r, W and b from output gradients
    (standard normal); the plain layer's of c, W and b. The implementations are
    timed in alternation (timing.time_interleaved, slices of about 50 ms), so that
    the ratio to the plain layer is not biased by the drifting load of a shared
    machine. The ops are compute-bound: their "bandwidth" (the least bytes: read
    c, r, W, b, write the two outputs; the backward also reads the output
    gradients, c, r and W and writes the four input gradients) is only indicative.
    The last layer (fc2) is among the cases, though IBP does not run interval_linear
    there: robustops.bounds folds the specification into it (a bmm).

interval_relu, interval_mrelu, interval_rbf
    The fused interval activations against the reference chain
    (robustops.reference.interval: l = c - r, u = c + r, f(l), f(u), selects,
    (hi +- lo) / 2, and autograd), at the input intervals of every ReLU layer of
    the two nets (the IBP pre-activation intervals, used for all three activations;
    the 256x100 shape of both nets' third ReLU once) and at N = 2^20 (centers
    standard normal, radii uniform in [0, 0.5)). Memory-bound: a forward reads c and
    r and writes two outputs (4 N itemsize bytes, a copy of 2 N elements); a
    forward+backward also reads the two output gradients, c and r and writes the
    two input gradients (10 N itemsize). Target: >= 2x the eager reference's speed
    in the forward. The compiled reference (torch.compile(dynamic=False)) is in
    the full suite only: compiling every case would take most of the quick suite's
    time.

    Dtypes of the op cases: float32 and, in the full suite, bfloat16 (cpu) or
    float16 and bfloat16 (cuda).

Model-level records, float32, timed as StepCases (variants in alternating slices
of about 50 ms, timing.time_interleaved; the ratio to the baseline is the median of
the per-cycle ratios):

ibp_forward
    ``bounded.ibp_margins(x, y, eps)`` (robustops.bounds.BoundedModule, the
    specification folded into the last layer) and the reference
    ``robustops.reference.bounds.ibp_margins(layers, l, u, y)`` (lower/upper form;
    l and u the clipped ball, computed in the step), against the plain forward
    ``model(x)``, all under torch.no_grad. Target: IBP <= 2.2x the plain forward
    (issue 16; 2x before). The reference builds its specification matrix in a
    Python loop over the batch (N (K - 1) small ops), part of its time. Checked first: the margins equal the
    reference's (float64, rtol = atol = 1e-10; and the timed float32 margins the
    float64 reference's within float32 rounding).
ibp_step
    One training step with ``certified_loss(bounded, x, y, eps, n=1, kappa=0,
    method="ibp")`` (the issue's step: bounds, robust loss, backward, SGD with
    momentum 0.9; kappa = 0 skips the clean pass) against the plain step
    (cross-entropy, backward, SGD). Target <= 2.1x (issue 16; 1.8x before).
    Checked: one step's parameter updates equal those of a step on the same loss
    with the margins of the reference IBP (float64).
gm_loss
    The GM loss with N = 1, 4, 8 sub-perturbations: a training step with
    ``certified_loss(..., n=N, weights="gm", method="ibp")`` (all radii
    i eps / N stacked on the batch, one pass) against the same loss from N
    separate passes (``bounded.ibp_margins`` at each radius, robust cross-entropy,
    weighted sum). Target (issue 16): the batched pass at least as fast as the N
    separate passes (<= 1x) for N = 4 and 8 on both nets (at N = 1 both are the
    same single pass). Checked (float64): the two losses and one step's updates
    are equal.

    Allocator: glibc mmaps every block of 32 MB or more (its largest dynamic mmap
    threshold), and such blocks are page-faulted afresh on every step. The batched
    N = 8 pass (batch 2048: 44 MB activations for mnist_cnn) and CROWN-IBP (bound
    matrices [256, 9, 32, 13, 13], 50 MB) allocate such blocks, the separate passes
    and the plain step do not: on the 2-core dev machine the batched N = 8 step took
    about 183k minor page faults per step (8.8k for the separate passes) and was
    1.6-2.2x slower than them, and 0.86x with MALLOC_MMAP_THRESHOLD_ raised past
    those sizes. BoundedModule.forward now splits the stacked rows into passes
    whose largest temporary stays under 16 MB (robustops.bounds.ibp._CHUNK_BYTES,
    from the layer widths seen on the first call), so neither allocates such
    blocks any more. The suite runs with the allocator as it comes.

    The training steps time SGD at lr 0 (the same work, the weights stay put: every
    timed step computes on the same weights; the checks take one step at lr 0.01),
    as bench/bang.py does. The checks run on the first CHECK_BATCH samples of the
    batch, in float64, with robustops on the run's device and the reference on the
    cpu (robustops.reference.bounds.ibp_margins builds its specification on the
    cpu).

Timing budget (quick suite, min_run_time 1 s): each op case measures for
OP_TIME x min_run_time seconds per implementation and pass (its limits too, when
first measured here), and the model-level records run fewer slices than bang_step
(STEP_TIMES x min_run_time seconds per variant instead of run.STEP_TIME x, fewer
warm-up calls, WARMUPS): their targets (2.2x, 2.1x, 1x) are coarse next to
bang_step's 1.05x, and an N = 8 step takes most of a second on a 2-core machine.
The nets, their batches, the plain step and the checks' data serve bench/crown.py's
crown_ibp_step too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import robustops
from robustops.bounds import (BoundedModule, certified_loss, input_interval, interval_through,
                              robust_cross_entropy, subperturbation_weights)
from robustops.reference import bounds as reference_bounds
from robustops.reference import interval as reference

from bench.cases import (
    COMPILED, EAGER, FORWARD, ROBUSTOPS, Case, Config, StepCase, dtype_name, randn,
)
from bench.checks import CorrectnessError, no_tf32
from bench.targets import Target, speedup_of, step_ratio_of, time_ratio_to

FAMILY = "interval"
LAYER_OPS = ("interval_linear", "interval_conv2d")
ACTIVATION_OPS = ("interval_relu", "interval_mrelu", "interval_rbf")
STEP_OPS = ("ibp_forward", "ibp_step", "gm_loss")
OPS = LAYER_OPS + ACTIVATION_OPS + STEP_OPS

# The op cases' dtypes, among the run's.
DTYPES = {"cpu": (torch.float32, torch.bfloat16),
          "cuda": (torch.float32, torch.float16, torch.bfloat16)}

PLAIN_LAYER = "plain layer"  # the op cases' unchecked comparison
UPCAST = "float32 reference"  # the activations' oracle at float16 / bfloat16

# The extra activation size (elements).
ACTIVATION_NUMEL = 2**20

# Seconds per measurement of an op case, as a multiple of the run's min_run_time.
OP_TIME = 0.4
# Seconds of interleaved slices per variant of the model-level records, as a
# multiple of the run's min_run_time, and the warm-up calls of every variant.
STEP_TIMES = {"ibp_forward": 1.0, "ibp_step": 1.0, "gm_loss": 1.0}
WARMUPS = {"ibp_forward": 2, "ibp_step": 2, "gm_loss": 1}

# The certified losses. The ibp_step record (and bench/crown.py's crown_ibp_step)
# times the step, "bounds, robust loss, backward": kappa = 0, no clean pass
# (STEP_KAPPA); the gm_loss record compares whole losses with the clean term (KAPPA)
# both ways.
KAPPA = 0.5
STEP_KAPPA = 0.0
GM_NS = (1, 4, 8)

SEED = 0
# SGD: the checks take one step at LR, the timed steps run at TIMED_LR = 0 (see
# bench/bang.py: the same work, on weights that stay put).
LR, TIMED_LR, MOMENTUM = 0.01, 0.0, 0.9

# The model-level checks: float64, on the first CHECK_BATCH samples.
CHECK_BATCH = 64
F64 = dict(rtol=1e-10, atol=1e-10)

# Variants of the model-level records.
PLAIN_FORWARD, IBP, REFERENCE_IBP = "plain forward", "robustops IBP", "reference IBP"
PLAIN, IBP_STEP = "plain", "IBP"
SEPARATE, BATCHED = "N separate passes", "one batched pass"


# --------------------------------------------------------------------------- networks


def _cnn(in_channels: int, size: int, padding: int) -> nn.Sequential:
    s1 = (size + 2 * padding - 4) // 2 + 1
    s2 = s1 + 2 * padding - 4 + 1
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 4, stride=2, padding=padding), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=1, padding=padding), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * s2 * s2, 100), nn.ReLU(), nn.Linear(100, 10))


def mnist_cnn() -> nn.Sequential:
    """The CROWN-IBP paper's small MNIST CNN (1x28x28)."""
    return _cnn(1, 28, padding=1)


def cifar_cnn() -> nn.Sequential:
    """The CIFAR "DM-small" CNN (3x32x32)."""
    return _cnn(3, 32, padding=0)


@dataclass(frozen=True)
class Net:
    name: str
    build: Callable[[], nn.Sequential]
    input_shape: tuple[int, ...]
    eps: float
    batch: int = 256

    @property
    def label(self) -> str:
        return f"{self.name} {'x'.join(map(str, (self.batch, *self.input_shape)))}"


NETS = (
    Net("mnist_cnn", mnist_cnn, (1, 28, 28), eps=0.1),
    Net("cifar_cnn", cifar_cnn, (3, 32, 32), eps=8 / 255),
)


@dataclass(frozen=True)
class Layer:
    """One layer of a net: its name (conv1, relu2, fc1, ...), position in the
    Sequential, and input and output shapes at the net's batch."""

    name: str
    index: int
    kind: type
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


_KIND_NAMES = {nn.Conv2d: "conv", nn.Linear: "fc", nn.ReLU: "relu", nn.Flatten: "flatten"}


def layers_of(net: Net) -> list[Layer]:
    """Every layer of the net with its shapes, from one forward on the meta device
    with forward hooks."""
    model = net.build().to("meta")
    seen: dict[int, tuple] = {}
    hooks = [m.register_forward_hook(
        lambda mod, args, out, i=i: seen.__setitem__(i, (tuple(args[0].shape), tuple(out.shape))))
        for i, m in enumerate(model)]
    try:
        with torch.no_grad():
            model(torch.empty((net.batch, *net.input_shape), device="meta"))
    finally:
        for h in hooks:
            h.remove()
    counts: dict[type, int] = {}
    out = []
    for i, m in enumerate(model):
        kind = type(m)
        counts[kind] = counts.get(kind, 0) + 1
        name = _KIND_NAMES.get(kind, kind.__name__.lower())
        out.append(Layer(f"{name}{counts[kind]}" if kind is not nn.Flatten else name, i, kind,
                         *seen[i]))
    return out


LAYERS = {net.name: layers_of(net) for net in NETS}


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _layer_label(net: Net, layer: Layer) -> str:
    return f"{net.name} {layer.name} {_shape(layer.out_shape)}"


def _gm_label(net: Net, n: int) -> str:
    return f"{net.label} N={n}"


def _activation_sites() -> list[tuple[str, Net, Layer]]:
    """(label, net, ReLU layer) of every distinct ReLU input shape of the nets: the
    label names every net that has the shape."""
    sites: dict[tuple[int, ...], list[tuple[Net, Layer]]] = {}
    for net in NETS:
        for layer in LAYERS[net.name]:
            if layer.kind is nn.ReLU:
                sites.setdefault(layer.in_shape, []).append((net, layer))
    out = []
    for shape, where in sites.items():
        names = "/".join(dict.fromkeys(f"{n.name}" for n, _ in where))
        layer_names = "/".join(dict.fromkeys(l.name for _, l in where))
        out.append((f"{names} {layer_names} {_shape(shape)}", where[0][0], where[0][1]))
    return out


ACTIVATION_SITES = _activation_sites()
ACTIVATION_LABEL_2_20 = "2^20"


# --------------------------------------------------------------------------- targets

# cpu, float32.
TARGETS = [
    Target(op, f"{FORWARD} time / {PLAIN_LAYER}'s", time_ratio_to(FORWARD, PLAIN_LAYER), 2.2,
           at_least=False, numel=_numel(layer.out_shape), size=_layer_label(net, layer))
    for op, kind in (("interval_conv2d", nn.Conv2d), ("interval_linear", nn.Linear))
    for net in NETS for layer in LAYERS[net.name] if layer.kind is kind
] + [
    Target(op, f"{FORWARD} speedup vs {EAGER}", speedup_of(FORWARD, EAGER), 2.0,
           numel=_numel(layer.in_shape), size=label)
    for op in ACTIVATION_OPS for label, _, layer in ACTIVATION_SITES
] + [
    Target(op, f"{FORWARD} speedup vs {EAGER}", speedup_of(FORWARD, EAGER), 2.0,
           numel=ACTIVATION_NUMEL, size=ACTIVATION_LABEL_2_20)
    for op in ACTIVATION_OPS
] + [
    Target("ibp_forward", f"time {IBP} / {PLAIN_FORWARD}", step_ratio_of(IBP), 2.2,
           at_least=False, numel=None, size=net.label)
    for net in NETS
] + [
    Target("ibp_step", f"step time {IBP_STEP} / {PLAIN}", step_ratio_of(IBP_STEP), 2.1,
           at_least=False, numel=None, size=net.label)
    for net in NETS
] + [
    # N = 1: one pass either way, the same work (the ratio is 1 up to noise): no target
    Target("gm_loss", f"step time {BATCHED} / {SEPARATE}", step_ratio_of(BATCHED), 1.0,
           at_least=False, numel=None, size=_gm_label(net, n))
    for net in NETS for n in GM_NS if n > 1
]


# --------------------------------------------------------------------------- inputs

# assert_close tolerances of the op cases. The interval layers against the
# reference: the same products (bit-identical on the dev machine's cpu), room left
# for the backward, where robustops calls convolution_backward / mm with other
# output masks than autograd (cuDNN and cuBLAS may pick other algorithms) and sums
# the weight gradient's two terms in another order. The activations against the
# reference: l = c - r and u = c + r are rounded first, so the error is relative
# to the inputs (atol), not to the cancelling outputs (the dev machine's worst
# float32 error was under a tenth of these).
LAYER_TOLERANCES = {torch.float32: dict(rtol=1e-5, atol=1e-5),
                    torch.float16: dict(rtol=2e-3, atol=1e-3),
                    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2)}
ACTIVATION_TOLERANCES = {torch.float32: dict(rtol=2e-6, atol=4e-6),
                         torch.float16: dict(rtol=1e-3, atol=4e-3),
                         torch.bfloat16: dict(rtol=8e-3, atol=3e-2)}


def _initial(net: Net, device: torch.device, batch: Optional[int] = None
             ) -> tuple[nn.Sequential, Tensor, Tensor]:
    """The net with its seeded initial weights, in train mode, and its batch (the
    first ``batch`` samples of it when given)."""
    with torch.random.fork_rng(devices=[]):  # the global CPU generator is left as it was
        torch.manual_seed(SEED)
        model = net.build()
    gen = torch.Generator(device=device).manual_seed(SEED + 1)
    x = torch.rand((net.batch, *net.input_shape), generator=gen, device=device)
    y = torch.randint(0, 10, (net.batch,), generator=gen, device=device)
    if batch is not None:
        x, y = x[:batch], y[:batch]
    return model.to(device).train(), x, y


def _intervals(net: Net, dtype: torch.dtype, device: torch.device
               ) -> tuple[nn.Sequential, list[tuple[Tensor, Tensor]]]:
    """The net in ``dtype`` and the IBP interval (center, radius) at every layer's
    input, for the net's batch and eps."""
    model, x, _ = _initial(net, device)
    model = model.to(dtype)
    with torch.no_grad():
        c, r = input_interval(x.to(dtype), net.eps)
        out = []
        for layer in model:
            out.append((c, r))
            c, r = interval_through(layer, c, r)
    return model, out


def _layer_inputs(net: Net, layer: Layer, dtype: torch.dtype,
                  device: torch.device) -> Callable[[], dict]:
    def make() -> dict:
        model, intervals = _intervals(net, dtype, device)
        c, r = intervals[layer.index]
        module = model[layer.index]
        gen = torch.Generator(device=device).manual_seed(SEED + 2)
        gc, gr = (torch.randn(layer.out_shape, generator=gen, device=device).to(dtype)
                  for _ in range(2))
        return {"c": c, "r": r, "w": module.weight.detach(), "b": module.bias.detach(),
                "gc": gc, "gr": gr}
    return make


def _activation_inputs(net: Optional[Net], layer: Optional[Layer], dtype: torch.dtype,
                       device: torch.device) -> Callable[[], dict]:
    """The IBP interval at ``layer``'s input, or (net None) 2^20 standard normal
    centers and radii uniform in [0, 0.5); standard normal output gradients."""
    def make() -> dict:
        if net is None:
            c = randn(ACTIVATION_NUMEL, dtype, device, seed=3)
            gen = torch.Generator(device=device).manual_seed(SEED + 4)
            r = (torch.rand(ACTIVATION_NUMEL, generator=gen, device=device) * 0.5).to(dtype)
        else:
            _, intervals = _intervals(net, dtype, device)
            c, r = intervals[layer.index]
        gc = randn(c.numel(), dtype, device, seed=5).reshape(c.shape)
        gr = randn(c.numel(), dtype, device, seed=6).reshape(c.shape)
        return {"c": c, "r": r, "gc": gc, "gr": gr}
    return make


def _backward(outputs: tuple, grads: tuple) -> None:
    """Backward from the outputs an implementation returns (the plain layer returns
    one: the center) with their output gradients."""
    torch.autograd.backward(outputs, grads[:len(outputs)])


# --------------------------------------------------------------------------- op cases


def _layer_impls(layer: nn.Module) -> dict[str, Callable]:
    if isinstance(layer, nn.Linear):
        return {
            ROBUSTOPS: robustops.ops.interval_linear,
            PLAIN_LAYER: lambda c, r, w, b: (F.linear(c, w, b),),
            EAGER: reference.interval_linear,
        }
    args = (layer.stride, layer.padding, layer.dilation, layer.groups)
    return {
        ROBUSTOPS: lambda c, r, w, b: robustops.ops.interval_conv2d(c, r, w, b, *args),
        PLAIN_LAYER: lambda c, r, w, b: (F.conv2d(c, w, b, *args),),
        EAGER: lambda c, r, w, b: reference.interval_conv2d(c, r, w, b, *args),
    }


def _layer_cases(config: Config, dtype: torch.dtype, min_run_time: float) -> Iterator[Case]:
    itemsize = torch.empty((), dtype=dtype).element_size()
    for op, kind in (("interval_conv2d", nn.Conv2d), ("interval_linear", nn.Linear)):
        notes = [f"The implementations were timed in alternation (slices of about 50 ms, "
                 f"{min_run_time:g} s of them per implementation and pass); "
                 f"{PLAIN_LAYER}: F.{'conv2d' if kind is nn.Conv2d else 'linear'} on the center "
                 "only (timed for comparison, not checked); forward+backward: the gradients of "
                 f"c, r, W, b ({PLAIN_LAYER}: c, W, b). Compute-bound: the bandwidth columns "
                 "are only indicative."]
        if config.device.type not in robustops.extension_info()["ops"].get(op, []):
            notes.append(f"robustops.ops.{op} has no {config.device.type} kernel in this build: "
                         "the 'robustops' numbers are the reference fallback's")
        for net in NETS:
            module_of = net.build()  # the layers' hyperparameters
            for layer in LAYERS[net.name]:
                if layer.kind is not kind:
                    continue
                module = module_of[layer.index]
                n_in, n_out = _numel(layer.in_shape), _numel(layer.out_shape)
                n_w = module.weight.numel() + module.bias.numel()
                fwd = (2 * n_in + 2 * n_out + n_w) * itemsize
                bwd = (2 * n_out + 2 * n_in + module.weight.numel() + 2 * n_in + n_w) * itemsize
                yield Case(
                    family=FAMILY, op=op, dtype=dtype, device=config.device,
                    numel=n_out, label=_layer_label(net, layer),
                    impls=_layer_impls(module),
                    unchecked=frozenset({PLAIN_LAYER}),
                    make_inputs=_layer_inputs(net, layer, dtype, config.device),
                    forward_expr="f(c, r, w, b)",
                    backward_stmt="c.grad = r.grad = w.grad = b.grad = None; "
                                  "backward(f(c, r, w, b), (gc, gr))",
                    differentiable=("c", "r", "w", "b"),
                    env={"backward": _backward},
                    bytes_forward=fwd, bytes_forward_backward=fwd + bwd,
                    input_bytes=(2 * n_in + n_w) * itemsize,
                    limit_numel=fwd // (2 * itemsize),
                    tolerances=LAYER_TOLERANCES[dtype],
                    min_run_time=min_run_time, interleaved=True,
                    notes=list(notes),
                )


def _upcast(ref: Callable, dtype: torch.dtype) -> Callable:
    """The reference computed in float32, its outputs (and so the input gradients)
    rounded to ``dtype``."""
    def f(c: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        return tuple(o.to(dtype) for o in ref(c.float(), r.float()))
    return f


def _activation_cases(config: Config, dtype: torch.dtype, min_run_time: float) -> Iterator[Case]:
    itemsize = torch.empty((), dtype=dtype).element_size()
    sites = [(label, net, layer, _numel(layer.in_shape)) for label, net, layer in ACTIVATION_SITES]
    sites.append((ACTIVATION_LABEL_2_20, None, None, ACTIVATION_NUMEL))
    for op in ACTIVATION_OPS:
        notes = [f"Inputs: the IBP intervals at the ReLU inputs of the nets (batch 256) and, "
                 "at 2^20, standard normal centers and radii uniform in [0, 0.5). Timed with "
                 f"blocked_autorange(min_run_time={min_run_time:g}) (OP_TIME x the run's)."]
        if config.device.type not in robustops.extension_info()["ops"].get(op, []):
            notes.append(f"robustops.ops.{op} has no compiled {config.device.type} kernel in "
                         "this build: the 'robustops' numbers are the reference fallback's")
        ref = getattr(reference, op)
        half = torch.finfo(dtype).bits < 32
        if half:
            notes.append(f"{UPCAST} (the check's oracle at {dtype_name(dtype)}): the reference "
                         "computed in float32 from the upcast inputs, its outputs and input "
                         f"gradients rounded to {dtype_name(dtype)}, as the kernels do; the "
                         f"{EAGER} (and {COMPILED}) at {dtype_name(dtype)} are timed, not "
                         f"checked: where f(l) and f(u) round to the same {dtype_name(dtype)} "
                         "value they may send the gradient through the other endpoint")
        for label, net, layer, numel in sites:
            impls = {ROBUSTOPS: getattr(robustops.ops, op), EAGER: ref}
            if half:
                impls[UPCAST] = _upcast(ref, dtype)
            if config.full:  # compiled lazily, on the first call (the correctness check)
                impls[COMPILED] = torch.compile(ref, dynamic=False)
            yield Case(
                family=FAMILY, op=op, dtype=dtype, device=config.device,
                numel=numel, label=label,
                impls=impls,
                make_inputs=_activation_inputs(net, layer, dtype, config.device),
                forward_expr="f(c, r)",
                backward_stmt="c.grad = r.grad = None; backward(f(c, r), (gc, gr))",
                differentiable=("c", "r"),
                env={"backward": _backward},
                bytes_forward=4 * numel * itemsize,
                bytes_forward_backward=10 * numel * itemsize,
                input_bytes=2 * numel * itemsize,
                limit_numel=2 * numel,
                tolerances=ACTIVATION_TOLERANCES[dtype],
                reference=UPCAST if half else EAGER,
                unchecked=frozenset(set(impls) - {ROBUSTOPS, UPCAST}) if half else frozenset(),
                min_run_time=min_run_time,
                notes=list(notes),
            )


def cases(config: Config) -> Iterator[Case]:
    """The interval layers at every Linear / Conv2d layer of the nets and the
    activations at every ReLU input shape and 2^20, in the run's dtypes among
    DTYPES."""
    min_run_time = OP_TIME * config.min_run_time
    for dtype in config.dtypes:
        if dtype not in DTYPES.get(config.device.type, ()):
            continue
        yield from _layer_cases(config, dtype, min_run_time)
        yield from _activation_cases(config, dtype, min_run_time)


# --------------------------------------------------------------------------- model level


def _optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)


def _ball(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The L-inf ball of radius eps around x clipped to [0, 1], as (l, u)."""
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def _reference_margins(model: nn.Sequential, x: Tensor, y: Tensor, eps: float) -> Tensor:
    l, u = _ball(x, eps)
    return reference_bounds.ibp_margins(list(model), l, u, y)


def _separate_loss(bounded: BoundedModule, x: Tensor, y: Tensor, eps: float, n: int) -> Tensor:
    """The GM loss with n sub-perturbations from n separate IBP passes."""
    c = subperturbation_weights(n, "gm", device=x.device).to(x.dtype)
    clean = F.cross_entropy(bounded(x), y)
    per_radius = torch.stack([robust_cross_entropy(bounded.ibp_margins(x, y, (i + 1) * eps / n))
                              for i in range(n)])
    return KAPPA * clean + (1 - KAPPA) * (c * per_radius).sum()


def _train_step(model: nn.Module, lr: float, loss: Callable[[], Tensor]) -> Callable[[], None]:
    opt = _optimizer(model, lr)

    def step() -> None:
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    return step


# Training-step variants: (net, model, x, y, lr, **settings) -> step.
def _plain_step(net, model, x, y, lr, **_):
    return _train_step(model, lr, lambda: F.cross_entropy(model(x), y))


def _ibp_step(net, model, x, y, lr, **_):
    bounded = BoundedModule(model)
    return _train_step(model, lr, lambda: certified_loss(
        bounded, x, y, net.eps, n=1, kappa=STEP_KAPPA, method="ibp").loss)


def _batched_step(net, model, x, y, lr, n=1):
    bounded = BoundedModule(model)
    return _train_step(model, lr, lambda: certified_loss(
        bounded, x, y, net.eps, n=n, weights="gm", kappa=KAPPA, method="ibp").loss)


def _separate_step(net, model, x, y, lr, n=1):
    bounded = BoundedModule(model)
    return _train_step(model, lr, lambda: _separate_loss(bounded, x, y, net.eps, n))


def _reference_ibp_step(net, model, x, y, lr, **_):
    """The IBP step's loss with the reference IBP margins (the check's oracle; it
    runs where the reference does: on the cpu)."""
    def loss() -> Tensor:
        robust = robust_cross_entropy(_reference_margins(model, x, y, net.eps))
        return robust if STEP_KAPPA == 0 else STEP_KAPPA * F.cross_entropy(model(x), y) + (1 - STEP_KAPPA) * robust
    return _train_step(model, lr, loss)


def _updates(build, net: Net, model: nn.Module, x: Tensor, y: Tensor, **settings) -> dict:
    """The parameter updates of one step at LR from the model's weights (on a copy)."""
    model = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    build(net, model, x, y, LR, **settings)()
    return {n: (p.detach() - before[n]).cpu() for n, p in model.named_parameters()}


def _assert_updates(what: str, actual: dict, expected: dict) -> None:
    for name, e in expected.items():
        try:
            torch.testing.assert_close(actual[name], e, rtol=1e-9,
                                       atol=1e-9 * max(e.abs().max().item(), 1e-30))
        except AssertionError as err:
            raise CorrectnessError(f"{what}: the update of {name} disagrees: {err}") from err


def _check_data(net: Net, device: torch.device) -> tuple[nn.Sequential, Tensor, Tensor]:
    """The check's float64 net and first CHECK_BATCH samples, on the device."""
    model, x, y = _initial(net, device, batch=CHECK_BATCH)
    return model.double(), x.double(), y


def _forward_steps(net: Net, device: torch.device) -> Callable[[], dict]:
    def make() -> dict:
        model, x, y = _initial(net, device)
        model.eval()
        bounded = BoundedModule(model)
        layers = list(model)

        def plain() -> None:
            with torch.no_grad():
                model(x)

        def ibp() -> None:
            with torch.no_grad():
                bounded.ibp_margins(x, y, net.eps)

        def ref() -> None:
            with torch.no_grad():
                l, u = _ball(x, net.eps)
                reference_bounds.ibp_margins(layers, l, u, y)
        steps = {PLAIN_FORWARD: plain, IBP: ibp}
        if device.type == "cpu":  # the reference builds its specification on the cpu
            steps[REFERENCE_IBP] = ref
        return steps
    return make


def _forward_check(net: Net, device: torch.device) -> Callable[[], str]:
    def check() -> str:
        with no_tf32(device), torch.no_grad():
            model, x, y = _check_data(net, device)
            expected = _reference_margins(copy.deepcopy(model).cpu(), x.cpu(), y.cpu(), net.eps)
            actual = BoundedModule(model).ibp_margins(x, y, net.eps).cpu()
            m32 = BoundedModule(model.float()).ibp_margins(x.float(), y, net.eps).cpu()
        scale = expected.abs().max().item()
        tol32 = dict(rtol=1e-4, atol=1e-5 * scale)
        try:
            torch.testing.assert_close(actual, expected, **F64)
            torch.testing.assert_close(m32.double(), expected, **tol32)
        except AssertionError as e:
            raise CorrectnessError(f"ibp_forward {net.label}: the IBP margins disagree with the "
                                   f"reference's: {e}") from e
        return (f"{net.label}: bounded.ibp_margins equals robustops.reference.bounds.ibp_margins "
                f"on the first {CHECK_BATCH} samples in float64 (assert_close, rtol=atol=1e-10), "
                f"and in float32 within rtol=1e-4, atol=1e-5 x the largest margin "
                f"({scale:.3g})")
    return check


def _net_info(net: Net) -> dict:
    """What a model-level record of the net says about it (its JSON info)."""
    return {"model": net.name, "batch": net.batch, "input_shape": list(net.input_shape),
            "eps": net.eps, "layers": [f"{l.name} {_shape(l.out_shape)}" for l in LAYERS[net.name]]}


def _train_info() -> dict:
    """What a training-step record says about the training (its JSON info, after the
    net's)."""
    return {"optimizer": f"SGD(lr={TIMED_LR}, momentum={MOMENTUM}) timed, lr={LR} in the check",
            "kappa": STEP_KAPPA}


def _training_steps(net: Net, device: torch.device, variants: dict,
                    settings: Optional[dict] = None) -> Callable[[], dict]:
    def make() -> dict:
        model, x, y = _initial(net, device)
        return {name: build(net, copy.deepcopy(model), x, y, TIMED_LR, **(settings or {}))
                for name, build in variants.items()}
    return make


def _ibp_step_check(net: Net, device: torch.device) -> Callable[[], str]:
    def check() -> str:
        with no_tf32(device):
            model, x, y = _check_data(net, device)
            actual = _updates(_ibp_step, net, model, x, y)
            expected = _updates(_reference_ibp_step, net, copy.deepcopy(model).cpu(), x.cpu(),
                                y.cpu())
        _assert_updates(f"ibp_step {net.label}: the {IBP_STEP} step against the reference IBP's",
                        actual, expected)
        return (f"{net.label}: one {IBP_STEP} step (lr {LR}) from the same float64 weights on "
                f"the first {CHECK_BATCH} samples updates the parameters as a step on the same "
                "loss with the margins of robustops.reference.bounds.ibp_margins does "
                "(assert_close per parameter, rtol=1e-9, atol=1e-9 x its largest update)")
    return check


def _gm_check(net: Net, device: torch.device, n: int) -> Callable[[], str]:
    def check() -> str:
        with no_tf32(device):
            model, x, y = _check_data(net, device)
            bounded = BoundedModule(model)
            with torch.no_grad():
                batched = certified_loss(bounded, x, y, net.eps, n=n, weights="gm", kappa=KAPPA,
                                         method="ibp").loss
                separate = _separate_loss(bounded, x, y, net.eps, n)
            try:
                torch.testing.assert_close(batched, separate, **F64)
            except AssertionError as e:
                raise CorrectnessError(f"gm_loss {net.label} N={n}: the batched loss is not the "
                                       f"separate passes' loss: {e}") from e
            actual = _updates(_batched_step, net, model, x, y, n=n)
            expected = _updates(_separate_step, net, model, x, y, n=n)
        _assert_updates(f"gm_loss {net.label} N={n}: the batched step against the separate "
                        "passes'", actual, expected)
        return (f"{net.label}, float64, the first {CHECK_BATCH} samples: the GM loss of one "
                f"batched pass equals that of N separate passes (assert_close, rtol=atol=1e-10), "
                "and so do one step's parameter updates (rtol=1e-9, atol=1e-9 x the largest)")
    return check


def steps(config: Config) -> list[StepCase]:
    """The model-level records of both nets, in float32 (none when the run leaves
    float32 out)."""
    if torch.float32 not in config.dtypes:
        return []
    dev = config.device
    out: list[StepCase] = []

    def run_time(op: str) -> float:
        return STEP_TIMES[op] * config.min_run_time

    for net in NETS:
        info, train = _net_info(net), _train_info()
        fwd_notes = [] if dev.type == "cpu" else [
            f"no {REFERENCE_IBP} on {dev.type}: robustops.reference.bounds.ibp_margins builds "
            "its specification on the cpu"]
        out.append(StepCase(
            family=FAMILY, op="ibp_forward", dtype=torch.float32, device=dev, label=net.label,
            make_steps=_forward_steps(net, dev), check=_forward_check(net, dev),
            baseline=PLAIN_FORWARD, info=info, notes=fwd_notes,
            section="forward passes under torch.no_grad",
            min_run_time=run_time("ibp_forward"), warmup=WARMUPS["ibp_forward"]))
        out.append(StepCase(
            family=FAMILY, op="ibp_step", dtype=torch.float32, device=dev, label=net.label,
            make_steps=_training_steps(net, dev, {PLAIN: _plain_step, IBP_STEP: _ibp_step}),
            check=_ibp_step_check(net, dev), baseline=PLAIN,
            info={**info, **train, "loss": "certified_loss(n=1, method='ibp')"},
            min_run_time=run_time("ibp_step"), warmup=WARMUPS["ibp_step"]))
    for net in NETS:
        for n in GM_NS:
            out.append(StepCase(
                family=FAMILY, op="gm_loss", dtype=torch.float32, device=dev,
                label=_gm_label(net, n),
                make_steps=_training_steps(net, dev, {SEPARATE: _separate_step,
                                                      BATCHED: _batched_step}, {"n": n}),
                check=_gm_check(net, dev, n), baseline=SEPARATE,
                info={"model": net.name, "batch": net.batch, "eps": net.eps, "n": n,
                      "optimizer": f"SGD(lr={TIMED_LR}, momentum={MOMENTUM}) timed, lr={LR} in "
                                   "the check", "kappa": KAPPA,
                      "loss": f"certified_loss(n={n}, weights='gm', method='ibp') vs the sum "
                              "over N separate ibp_margins passes"},
                min_run_time=run_time("gm_loss"), warmup=WARMUPS["gm_loss"]))
    return out
