"""What a run of the benchmark suite is made of: the names, the suite settings, the
``Config`` a run hands the families, and the ``Case`` and ``StepCase`` objects they
describe their benchmarks with.

A family (bench/<family>.py) describes its benchmarks as ``Case`` objects: one op,
dtype, device and size, the implementations to compare, how to make the inputs,
and the timed statements. The runner (bench/run.py) does the rest: correctness
check (bench/checks.py), timing with ``torch.utils.benchmark`` and the copy_/clone
bandwidth limits (bench/timing.py), saved-for-backward memory (bench/checks.py),
targets (bench/targets.py), metadata (bench/metadata.py) and the reports (markdown
tables and a bandwidth plot: bench/report.py). A case can be forward-only (an op
that is not differentiable): then only its forward is checked, timed and reported.
It can also time, unchecked, an implementation of something else for comparison
(the plain layer next to an interval layer), and time its implementations in
alternation when a target compares them closely.

Whole training steps of a model do not fit that elementwise model (no bandwidth
limit applies): a family describes them as ``StepCase`` objects, variants of one
step timed in alternation against a baseline variant (bench.timing.time_interleaved),
and they get their own records (``results["steps"]``) and report sections. The same
serves model-level passes that are not training steps (a no-grad forward).

Units: times in seconds in the JSON (microseconds in the tables), bandwidths in
GB/s (1e9 bytes per second), sizes as element counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Implementation names, in display order.
ROBUSTOPS = "robustops"
EAGER = "eager reference"
COMPILED = "compiled reference"
# The textbook PyTorch expression of an op (torch's own autograd), torch.compile'd:
# what a user would write without robustops. Not an oracle: its derivative may
# differ from the documented one at special values (kinks, infinities).
COMPILED_COMPOSITE = "compiled composite"

# Passes.
FORWARD = "forward"
FORWARD_BACKWARD = "forward+backward"
PASSES = (FORWARD, FORWARD_BACKWARD)

# Bandwidth limits: a copy into a preallocated tensor and into a fresh one.
COPY = "copy_"
CLONE = "clone"
LIMITS = (COPY, CLONE)

# The sizes (log2 of the element count) and dtypes of the two suites.
QUICK_LOG2_SIZES = (16, 20, 24)
FULL_LOG2_SIZES = (16, 18, 20, 22, 24, 26)
QUICK_DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32,)}
FULL_DTYPES = {
    "cpu": (torch.float32, torch.float64, torch.bfloat16),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
}
QUICK_MIN_RUN_TIME = 0.6  # keeps `make bench` under 5 minutes on the 2-core CI machine
FULL_MIN_RUN_TIME = 1.0


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    """What to run: the families turn it into cases."""

    device: torch.device
    full: bool
    sizes: tuple[int, ...]  # element counts
    dtypes: tuple[torch.dtype, ...]
    min_run_time: float  # seconds, per blocked_autorange

    @property
    def suite(self) -> str:
        return "full" if self.full else "quick"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def parse_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.strip(), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"not a floating-point dtype: {name!r}")
    return dtype


def size_label(numel: int) -> str:
    """2^k for powers of two, the number otherwise."""
    k = int(math.log2(numel)) if numel > 0 else 0
    return f"2^{k}" if numel > 0 and 2**k == numel else str(numel)


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One op at one dtype, device and size, with the implementations to compare.

    ``make_inputs`` returns the named tensors the statements use (the inputs and
    the gradients of the outputs). ``forward_expr`` is evaluated with the
    implementation bound to ``f``, under torch.no_grad, for the forward pass;
    ``backward_stmt`` runs the forward and backward with the ``differentiable``
    inputs requiring grad and must reset their ``.grad`` itself (it is the timed
    statement). The same expressions serve the correctness check, so what is
    checked is what is timed.

    ``forward_only`` cases (ops that are not differentiable) have no
    forward+backward pass: no backward check, timing or saved-for-backward memory,
    and ``bytes_forward_backward`` is None. ``label`` names the size in titles and
    tables when the element count alone says too little (a layer's output shape);
    by default it is the element count (2^k).

    ``unchecked`` names implementations of something else, timed for comparison
    only (the plain layer an interval layer is set against): they are not checked
    against the reference and may return fewer outputs (the statements must allow
    for that). ``env`` holds other names the statements use (helper functions),
    passed as they are. ``min_run_time`` overrides the config's seconds per
    measurement for this case (its limits included, when they are measured
    first here). ``interleaved`` times the implementations of each pass in
    alternation (``time_interleaved``) rather than one after the other, and takes
    the speedups slice by slice (``interleaved_ratio``): for ratios between
    implementations that a target compares closely.
    """

    family: str
    op: str
    dtype: torch.dtype
    device: torch.device
    numel: int  # the size axis of the tables and plots
    impls: dict[str, Callable[..., Any]]  # display order; includes ``reference``
    make_inputs: Callable[[], dict[str, Tensor]]
    bytes_forward: int  # least bytes a forward must move (read inputs, write outputs)
    bytes_forward_backward: Optional[int]  # same for forward + backward; None if forward_only
    input_bytes: int  # the denominator of the saved-memory ratio
    reference: str = EAGER
    compiled: frozenset[str] = frozenset({COMPILED, COMPILED_COMPOSITE})  # need a warm-up compile
    forward_expr: str = "f(x)"
    backward_stmt: str = "x.grad = None; f(x).backward(g)"
    differentiable: tuple[str, ...] = ("x",)
    tolerances: dict[str, float] = field(default_factory=dict)  # for assert_close
    notes: list[str] = field(default_factory=list)
    limit_numel: Optional[int] = None  # a copy of this many elements moves bytes_forward
    forward_only: bool = False  # not differentiable: the forward pass only
    label: Optional[str] = None  # the size as shown; default size_label(numel)
    unchecked: frozenset[str] = frozenset()  # timed for comparison, not checked
    env: dict[str, Any] = field(default_factory=dict)  # other names the statements use
    min_run_time: Optional[float] = None  # seconds per measurement; default the config's
    interleaved: bool = False  # time the implementations in alternation

    def __post_init__(self) -> None:
        if self.reference not in self.impls:
            raise ValueError(f"{self.op}: reference {self.reference!r} is not among the impls")
        if self.reference in self.unchecked or not self.unchecked <= set(self.impls):
            raise ValueError(f"{self.op}: unchecked {set(self.unchecked)} must be impls other than "
                             "the reference")
        if not self.forward_only and self.bytes_forward_backward is None:
            raise ValueError(f"{self.op}: bytes_forward_backward is required unless forward_only")
        if self.limit_numel is None:
            self.limit_numel = self.numel

    @property
    def passes(self) -> tuple[str, ...]:
        """The passes measured: (forward,) for a forward-only case, else both."""
        return (FORWARD,) if self.forward_only else PASSES

    @property
    def size(self) -> str:
        return self.label or size_label(self.numel)

    @property
    def title(self) -> str:
        return f"{self.op} {dtype_name(self.dtype)} " + (
            self.label if self.label else f"N={size_label(self.numel)}")

    def namespaces(self, inputs: Mapping[str, Tensor]) -> tuple[dict, dict]:
        """(forward namespace, forward+backward namespace) without ``f``: plain
        tensors for the forward, leaves that require grad for the backward."""
        fwd = {k: v.detach() for k, v in inputs.items()}
        bwd = {
            k: (v.detach().requires_grad_() if k in self.differentiable else v.detach())
            for k, v in inputs.items()
        }
        return {**self.env, **fwd}, {**self.env, **bwd}


def randn(numel: int, dtype: torch.dtype, device: torch.device, seed: int) -> Tensor:
    """Reproducible standard-normal values (drawn in float32, then cast)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(numel, generator=gen, device=device, dtype=torch.float32).to(dtype)


@dataclass
class StepCase:
    """One whole training step of a model (forward, backward, optimizer step) in
    several variants, timed against the ``baseline`` variant.

    ``make_steps()`` returns {variant: step}, in display order, where ``step()``
    runs one training step; every variant owns its model copy, optimizer and batch,
    so that the variants can be timed in alternation. ``check()`` runs before any
    timing: it compares the variants' results (from the same initial weights) and
    returns a sentence saying what it checked, or raises CorrectnessError. The
    runner times the variants in alternation (``time_interleaved``) and reports each
    variant's time and its ratio to the baseline's; ``info`` holds facts about the
    step for the JSON record (model, batch, settings).

    A "step" may also be a model-level pass that is not a training step (a forward
    under torch.no_grad): ``section`` names what is timed in the report's section
    title. ``min_run_time`` overrides the seconds of interleaved slices every
    variant runs (default: the runner's STEP_TIME x the config's min_run_time), and
    ``warmup`` the calls of every variant before the timing (for steps of seconds).
    """

    family: str
    op: str
    dtype: torch.dtype
    device: torch.device
    label: str  # what is stepped, e.g. "lenet_saf 64x1x28x28": the size column
    make_steps: Callable[[], dict[str, Callable[[], Any]]]
    check: Callable[[], str]
    baseline: str
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    section: str = "whole training steps"
    min_run_time: Optional[float] = None  # seconds of slices per variant; default the runner's
    warmup: int = 3  # calls of every variant before the timing

    @property
    def size(self) -> str:
        return self.label

    @property
    def title(self) -> str:
        return f"{self.op} {dtype_name(self.dtype)} {self.label}"
