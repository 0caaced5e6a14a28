"""Benchmarks of BANG (robustops.ops.bang and robustops.bang): the fused
per-sample gradient scaling op, and whole training steps with BANG.

bang_scale
    ``robustops.ops.bang_scale(grad, eps)``, which returns ``(eta_i * grad_i, n_i)``
    with n_i = ||grad_i||_2, against its pure-PyTorch version
    ``robustops.reference.bang.bang_scale(grad, eps_tensor)`` (eps_tensor =
    torch.full((N,), eps, dtype=float64), built once per case), run eagerly and
    through torch.compile(dynamic=False). The gradients have the shapes of the
    gradients w.r.t. every Conv2d and Linear output of the BANG paper's networks,
    Caffe's LeNet (``lenet_caffe``, batch 64, 1x28x28 inputs) and cifar10_quick
    (``cifar10_quick``, batch 100, 3x32x32), without their Dropout layer (the
    reference's per-sample gradients run under vmap, which cannot draw dropout
    masks; the layer costs little beside the convolutions), found by running each
    model once (on the
    meta device) with forward hooks; eps is the model's BANG eps. The suite's
    sizes do not apply. The op is applied to gradients and is not differentiable:
    the cases are forward-only. Bytes moved: the op reads grad twice (a norm pass,
    then a scaling pass: the norms need the whole sample before any output) and
    writes the scaled gradient once, 3 * N * D * itemsize for grad [N, D...] (the N
    norms are negligible); the copy_/clone limits are those of a copy of 1.5 N D
    elements, which moves as many bytes. Dtypes: float32 and, in the full suite,
    bfloat16 (cpu) or float16 and bfloat16 (cuda); float64 is not a training dtype
    here and is skipped. When torch.compile fails on the reference at a dtype
    (tried once per dtype, on a small gradient), the compiled reference is left
    out there, with a note saying why.

bang_step
    Whole training steps (forward, cross-entropy loss, backward, SGD step with
    momentum 0.9; the model in train mode, random inputs and labels from a fixed
    seed) of ``lenet_caffe(dropout=0)`` (batch 64) and ``cifar10_quick(dropout=0)`` (batch
    100), three ways from the same initial weights, each with a model copy and
    optimizer of its own:

      plain       the usual step;
      BANG        ``robustops.bang.BANG(model, eps, beta, ratio)`` with the paper's
                  settings (LeNet: 0.815, 1.0, 1.0; CIFAR-10: 0.855, 0.4, 0.5),
                  ``bang.observe(logits, y)`` before the backward;
      reference   ``robustops.reference.bang.bang_gradients`` (equation (6) from
                  per-sample gradients, torch.func) on every Conv2d and Linear
                  layer, with the misclassified mask of a no-grad forward, the
                  gradients assigned to ``p.grad``, then ``opt.step()``.

    The "plain" kind has no batch norm, which the torch.func reference needs (it
    must not couple samples). Before timing, one BANG step and one reference step
    from the same weights must give the same parameter updates (assert_close,
    float32 tolerances; TF32 off on cuda for the check), and BANG's must differ from
    the plain step's (BANG is active). The check's SGD step has lr 0.01; the timed
    steps have lr 0, the same work on weights that stay put (see TIMED_LR). The
    variants are then timed in alternating slices of about 50 ms
    (bench.timing.time_interleaved), so that the machine's drifting load weighs on
    all of them alike; a ratio to the plain step is the median of the per-cycle
    ratios of adjacent slices. float32 only (skipped when the run's dtypes leave
    float32 out).

    Absolute step times on cpu depend on the process's allocator state: once a
    large block has been freed, glibc's mmap threshold rises and large activations
    stop page-faulting on every step (the CIFAR-10 plain step took 43 ms in a fresh
    process and 36 ms after a 30 MB block was freed, on a 2-core dev machine). The
    check runs first (the reference's per-sample gradients are large blocks), and
    every variant is timed in the same state, so the ratios compare like with like.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import robustops
from robustops.bang import BANG, misclassified
from robustops.models.bang import cifar10_quick, lenet_caffe
from robustops.reference import bang as reference

from bench.cases import COMPILED, EAGER, FORWARD, ROBUSTOPS, Case, Config, StepCase, dtype_name
from bench.checks import CorrectnessError, no_tf32
from bench.targets import Target, speedup_of, step_ratio_of

FAMILY = "bang"
OPS = ("bang_scale", "bang_step")

# bang_scale's dtypes, among the run's (see the module docstring).
DTYPES = {"cpu": (torch.float32, torch.bfloat16),
          "cuda": (torch.float32, torch.float16, torch.bfloat16)}

# assert_close tolerances of the scaled gradient (rounded once to its dtype, from
# float32 or float64) and, at the same settings, of the float32 norms; as in
# tests/ops/test_bang.py.
TOLERANCES = {torch.float32: dict(rtol=2e-6, atol=1e-7),
              torch.float16: dict(rtol=1e-3, atol=1e-5),
              torch.bfloat16: dict(rtol=8e-3, atol=1e-5)}

SEED = 0
# SGD. The check takes one step at LR; the timed steps run at TIMED_LR = 0: SGD
# does the same work (momentum buffer, in-place parameter update), but the weights
# stay as they were, so every timed step of every variant computes on the same
# weights. Trained on its one batch, the plain CIFAR-10 net would memorize it within
# a few hundred steps (its logit margins growing towards float32 exp underflow)
# while the BANG one does not: the variants would time different computations.
LR, TIMED_LR, MOMENTUM = 0.01, 0.0, 0.9
PLAIN, WITH_BANG, REFERENCE = "plain", "BANG", "reference"

# The training-step check: BANG's parameter updates against the reference's, per
# parameter. The two sum the per-sample products in different orders (rtol, and
# atol relative to the largest reference update), and an update is the difference
# of two float32 parameters, exact to about an ulp of the parameters (atol: two
# float32 eps of the largest parameter).
UPDATE_RTOL, UPDATE_ATOL_REL, UPDATE_ATOL_ULPS = 1e-4, 1e-4, 2
# BANG must change some update of the plain step by more than this (relative to
# the parameter's largest plain update): BANG is active. At initialization, with
# random labels, the samples' gradient norms are alike and the eta_i close to 1:
# the change is about 1e-2 for LeNet (0.6 for the CIFAR-10 net, with beta 0.4),
# still far above the check's tolerance.
ACTIVE_REL = 1e-3


@dataclass(frozen=True)
class Net:
    """One of the SAF paper's networks with its batch and BANG settings."""

    name: str
    build: Callable[[], nn.Module]
    batch: int
    input_shape: tuple[int, ...]
    eps: float
    beta: float
    ratio: float

    @property
    def label(self) -> str:
        return f"{self.name} {'x'.join(map(str, (self.batch, *self.input_shape)))}"


NETS = (
    Net("lenet_caffe", lambda: lenet_caffe(dropout=0), 64, (1, 28, 28), eps=0.815, beta=1.0, ratio=1.0),
    Net("cifar10_quick", lambda: cifar10_quick(dropout=0), 100, (3, 32, 32), eps=0.855, beta=0.4, ratio=0.5),
)

LAYER_TYPES = (nn.Conv2d, nn.Linear)


def bang_layers(model: nn.Module) -> list[str]:
    """The names of the model's Conv2d and Linear layers, in order."""
    return [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def layer_shapes(net: Net) -> list[tuple[str, tuple[int, ...]]]:
    """(conv1, conv2, ..., fc1, ...; the output shape at the net's batch) of every
    Conv2d and Linear layer, from one forward on the meta device with hooks."""
    model = net.build().to("meta")
    shapes: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: shapes.append((mod, tuple(out.shape))))
             for m in model.modules() if isinstance(m, LAYER_TYPES)]
    try:
        with torch.no_grad():
            model(torch.empty((net.batch, *net.input_shape), device="meta"))
    finally:
        for h in hooks:
            h.remove()
    counts = {nn.Conv2d: 0, nn.Linear: 0}
    out = []
    for mod, shape in shapes:
        kind = nn.Conv2d if isinstance(mod, nn.Conv2d) else nn.Linear
        counts[kind] += 1
        out.append((f"{'conv' if kind is nn.Conv2d else 'fc'}{counts[kind]}", shape))
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _scale_label(net: Net, layer: str, shape: tuple[int, ...]) -> str:
    return f"{net.name} {layer} {'x'.join(map(str, shape))}"


LAYERS = {net.name: layer_shapes(net) for net in NETS}


# --------------------------------------------------------------------------- targets

# cpu, float32: the fused op at every layer size, and the BANG training step.
TARGETS = [
    Target("bang_scale", f"{FORWARD} speedup vs {EAGER}", speedup_of(FORWARD, EAGER), 1.5,
           numel=_numel(shape), size=_scale_label(net, layer, shape))
    for net in NETS for layer, shape in LAYERS[net.name]
] + [
    Target("bang_step", f"step time {WITH_BANG} / {PLAIN}", step_ratio_of(WITH_BANG), 1.05,
           at_least=False, numel=None, size=net.label)
    for net in NETS
]


# --------------------------------------------------------------------------- bang_scale


def _gradient(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Callable[[], dict]:
    def make() -> dict:
        # Standard normal values, every sample scaled by its own factor in
        # [0.05, 2.05): the norms spread, and so do the eta_i.
        gen = torch.Generator(device=device).manual_seed(3)
        g = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        scale = torch.rand(shape[0], generator=gen, device=device, dtype=torch.float32) * 2 + 0.05
        g = g * scale.reshape((-1,) + (1,) * (len(shape) - 1))
        return {"x": g.to(dtype)}
    return make


def _scale_impls(eps: float, n: int, device: torch.device, compile: bool) -> dict[str, Callable]:
    eps_tensor = torch.full((n,), eps, dtype=torch.float64, device=device)
    impls = {
        ROBUSTOPS: lambda g: robustops.ops.bang_scale(g, eps),
        EAGER: lambda g: reference.bang_scale(g, eps_tensor),
    }
    if compile:
        compiled = torch.compile(reference.bang_scale, dynamic=False)  # compiled on first call
        impls[COMPILED] = lambda g: compiled(g, eps_tensor)
    return impls


def _compile_fails(dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """Why torch.compile cannot run the reference bang_scale at this dtype and
    device (tried on a small gradient), or None when it can."""
    g = _gradient((4, 3, 5, 5), dtype, device)()["x"]
    eps = torch.full((4,), 0.8, dtype=torch.float64, device=device)
    try:
        torch.testing.assert_close(torch.compile(reference.bang_scale, dynamic=False)(g, eps),
                                   reference.bang_scale(g, eps), **TOLERANCES[dtype])
    except Exception as e:  # noqa: BLE001 (any failure: leave the compiled reference out)
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        torch._dynamo.reset()
    return None


def cases(config: Config) -> Iterator[Case]:
    """bang_scale at every layer output shape of the two nets, in the run's dtypes
    that BANG trains in (see DTYPES)."""
    notes = []
    if config.device.type not in robustops.extension_info()["ops"].get("bang_scale", []):
        notes.append(f"robustops.ops.bang_scale has no compiled {config.device.type} kernel in "
                     "this build: the 'robustops' numbers are the reference fallback's")
    for dtype in config.dtypes:
        if dtype not in DTYPES.get(config.device.type, ()):
            continue
        itemsize = torch.empty((), dtype=dtype).element_size()
        why = _compile_fails(dtype, config.device)
        dtype_notes = notes + ([f"no {COMPILED} at {dtype_name(dtype)}: torch.compile of the "
                                f"reference fails ({why})"] if why else [])
        for net in NETS:
            for layer, shape in LAYERS[net.name]:
                numel = _numel(shape)
                yield Case(
                    family=FAMILY,
                    op="bang_scale",
                    dtype=dtype,
                    device=config.device,
                    numel=numel,
                    label=_scale_label(net, layer, shape),
                    impls=_scale_impls(net.eps, shape[0], config.device, compile=why is None),
                    make_inputs=_gradient(shape, dtype, config.device),
                    # Read grad twice, write the scaled gradient once.
                    bytes_forward=3 * numel * itemsize,
                    bytes_forward_backward=None,
                    input_bytes=numel * itemsize,
                    limit_numel=3 * numel // 2,
                    forward_only=True,
                    tolerances=TOLERANCES[dtype],
                    notes=list(dtype_notes),
                )


# --------------------------------------------------------------------------- bang_step


def _initial(net: Net, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    """The net with its seeded initial weights, in train mode, and a random batch."""
    with torch.random.fork_rng(devices=[]):  # the global CPU generator is left as it was
        torch.manual_seed(SEED)
        model = net.build()
    gen = torch.Generator(device=device).manual_seed(SEED + 1)
    x = torch.randn((net.batch, *net.input_shape), generator=gen, device=device)
    y = torch.randint(0, 10, (net.batch,), generator=gen, device=device)
    return model.to(device).train(), x, y


def _optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)


def _plain_step(net: Net, model: nn.Module, x: Tensor, y: Tensor, lr: float) -> Callable[[], None]:
    opt = _optimizer(model, lr)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def _bang_step(net: Net, model: nn.Module, x: Tensor, y: Tensor, lr: float) -> Callable[[], None]:
    bang = BANG(model, eps=net.eps, beta=net.beta, ratio=net.ratio)
    opt = _optimizer(model, lr)

    def step() -> None:
        logits = model(x)
        bang.observe(logits, y)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step.bang = bang  # type: ignore[attr-defined]  (kept with the step)
    return step


def _reference_step(net: Net, model: nn.Module, x: Tensor, y: Tensor,
                    lr: float) -> Callable[[], None]:
    layers = bang_layers(model)
    params = dict(model.named_parameters())
    opt = _optimizer(model, lr)

    def step() -> None:
        with torch.no_grad():
            mask = misclassified(model(x), y)
        grads = reference.bang_gradients(model, x, y, F.cross_entropy, layers, eps=net.eps,
                                         beta=net.beta, ratio=net.ratio, misclassified=mask)
        for name, p in params.items():
            p.grad = grads[name]
        opt.step()
    return step


VARIANTS = {PLAIN: _plain_step, WITH_BANG: _bang_step, REFERENCE: _reference_step}


def _make_steps(net: Net, device: torch.device) -> Callable[[], dict[str, Callable[[], None]]]:
    def make() -> dict[str, Callable[[], None]]:
        model, x, y = _initial(net, device)
        return {name: build(net, copy.deepcopy(model), x, y, TIMED_LR)
                for name, build in VARIANTS.items()}
    return make


def _check(net: Net, device: torch.device) -> Callable[[], str]:
    def check() -> str:
        with no_tf32(device):
            model, x, y = _initial(net, device)
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            ulp = torch.finfo(torch.float32).eps
            updates = {}
            for name, build in VARIANTS.items():
                copied = copy.deepcopy(model)
                build(net, copied, x, y, LR)()
                updates[name] = {n: p.detach() - before[n] for n, p in copied.named_parameters()}
        for pname, expected in updates[REFERENCE].items():
            actual = updates[WITH_BANG][pname]
            atol = (UPDATE_ATOL_REL * expected.abs().max().item()
                    + UPDATE_ATOL_ULPS * ulp * before[pname].abs().max().item())
            try:
                torch.testing.assert_close(actual, expected, rtol=UPDATE_RTOL, atol=atol)
            except AssertionError as e:
                raise CorrectnessError(
                    f"bang_step {net.label}: the {WITH_BANG} step's update of {pname} disagrees "
                    f"with the {REFERENCE}'s: {e}") from e
        change = max((updates[WITH_BANG][n] - u).abs().max().item()
                     / max(u.abs().max().item(), torch.finfo(torch.float32).tiny)
                     for n, u in updates[PLAIN].items())
        if not change > ACTIVE_REL:
            raise CorrectnessError(
                f"bang_step {net.label}: the {WITH_BANG} step's updates are the {PLAIN} step's "
                f"(largest relative change {change:.1e}): BANG is not active")
        return (f"{net.label}: one {WITH_BANG} step and one {REFERENCE} step from the same "
                f"weights give the same parameter updates (assert_close per parameter, "
                f"rtol={UPDATE_RTOL}, atol={UPDATE_ATOL_REL} x its largest update + "
                f"{UPDATE_ATOL_ULPS} float32 eps x its largest value"
                + (", TF32 off" if device.type == "cuda" else "")
                + f"); BANG's differ from the {PLAIN} step's by up to {change:.1e} x the "
                "parameter's largest plain update")
    return check


def steps(config: Config) -> list[StepCase]:
    """bang_step for both nets, in float32 (none when the run leaves float32 out)."""
    if torch.float32 not in config.dtypes:
        return []
    out = []
    for net in NETS:
        out.append(StepCase(
            family=FAMILY,
            op="bang_step",
            dtype=torch.float32,
            device=config.device,
            label=net.label,
            make_steps=_make_steps(net, config.device),
            check=_check(net, config.device),
            baseline=PLAIN,
            info={"model": f"{net.name}('plain')", "batch": net.batch,
                  "input_shape": list(net.input_shape),
                  "bang": {"eps": net.eps, "beta": net.beta, "ratio": net.ratio},
                  "layers": bang_layers(net.build()),
                  "optimizer": f"SGD(lr={TIMED_LR}, momentum={MOMENTUM}) timed, "
                               f"lr={LR} in the check",
                  "loss": "cross_entropy"},
        ))
    return out
