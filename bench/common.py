"""What every op family of the benchmark suite shares.

A family (bench/<family>.py) describes its benchmarks as ``Case`` objects: one op,
dtype, device and size, the implementations to compare, how to make the inputs,
and the timed statements. The runner (bench/run.py) does the rest with the helpers
here: correctness check, timing with ``torch.utils.benchmark``, the copy_/clone
bandwidth limits, saved-for-backward memory, targets, metadata and the reports
(markdown tables and a bandwidth plot). A case can be forward-only (an op that is
not differentiable): then only its forward is checked, timed and reported. It can
also time, unchecked, an implementation of something else for comparison (the
plain layer next to an interval layer), and time its implementations in
alternation when a target compares them closely.

Whole training steps of a model do not fit that elementwise model (no bandwidth
limit applies): a family describes them as ``StepCase`` objects, variants of one
step timed in alternation against a baseline variant (``time_interleaved``), and
they get their own records (``results["steps"]``) and report sections. The same
serves model-level passes that are not training steps (a no-grad forward).

Units: times in seconds in the JSON (microseconds in the tables), bandwidths in
GB/s (1e9 bytes per second), sizes as element counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.benchmark import Timer

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


class CorrectnessError(RuntimeError):
    """An implementation disagrees with the reference: its op is not timed."""


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


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """The statistics of one ``blocked_autorange`` measurement, in seconds."""

    median_s: float
    iqr_s: float
    mean_s: float
    runs: int  # blocks measured
    number_per_run: int  # statements per block

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def time_stmt(
    stmt: str,
    globals: dict,
    min_run_time: float,
    *,
    label: str = "",
    sub_label: str = "",
    description: str = "",
) -> Timing:
    """Time ``stmt`` with torch.utils.benchmark.Timer.blocked_autorange, on all of
    torch's threads. Grad mode is the caller's (the statement runs in this thread)."""
    timer = Timer(
        stmt=stmt,
        globals=globals,
        num_threads=torch.get_num_threads(),
        label=label,
        sub_label=sub_label,
        description=description,
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(
        median_s=m.median,
        iqr_s=m.iqr,
        mean_s=m.mean,
        runs=len(m.times),
        number_per_run=m.number_per_run,
    )


# time_interleaved: the length of one slice (one Timer.timeit of a statement).
INTERLEAVE_SLICE_S = 0.05


def _quantile(values: Sequence[float], q: float) -> float:
    return torch.tensor(values, dtype=torch.float64).quantile(q).item()


def time_interleaved(
    stmts: Mapping[str, tuple[str, dict]],
    min_run_time: float,
    slice_s: float = INTERLEAVE_SLICE_S,
    *,
    label: str = "",
    sub_label: str = "",
) -> dict[str, dict]:
    """Time several statements in alternation, finely enough that the load of a
    shared machine (which comes and goes over tenths of seconds to seconds) weighs
    on all of them alike. ``stmts`` maps names to (statement, globals).

    First a blocked_autorange(min_run_time=4 * slice_s) of each statement (a
    warm-up, and the calibration: how many runs make a slice of about ``slice_s``
    seconds, at least one). Then cycles: in each, every statement runs one slice
    (torch.utils.benchmark Timer.timeit of that many runs) in turn, the order
    reversed every other cycle, until each has run ``min_run_time`` seconds of
    slices; one that is done sits the remaining cycles out.

    Returns {name: {**Timing over the slices (median, IQR, mean of the per-run
    time of each slice; runs = slices), "slices_s": [the per-run time of the
    slice of every cycle, None where it sat out], "autorange": the calibration's
    Timing}}; ``interleaved_ratio`` compares two of them slice by slice."""
    names = list(stmts)
    timers = {n: Timer(stmt=stmt, globals=globals, num_threads=torch.get_num_threads(),
                       label=label, sub_label=sub_label, description=n)
              for n, (stmt, globals) in stmts.items()}
    number: dict[str, int] = {}
    autorange: dict[str, dict] = {}
    for n, timer in timers.items():
        m = timer.blocked_autorange(min_run_time=4 * slice_s)
        number[n] = max(1, round(slice_s / m.median))
        autorange[n] = Timing(median_s=m.median, iqr_s=m.iqr, mean_s=m.mean, runs=len(m.times),
                              number_per_run=m.number_per_run).to_json()
    slices: dict[str, list[Optional[float]]] = {n: [] for n in names}
    spent = {n: 0.0 for n in names}
    cycle = 0
    while any(spent[n] < min_run_time for n in names):
        for n in (names if cycle % 2 == 0 else names[::-1]):
            if spent[n] >= min_run_time:
                slices[n].append(None)
                continue
            m = timers[n].timeit(number[n])
            slices[n].append(m.median)
            spent[n] += m.median * number[n]
        cycle += 1
    out: dict[str, dict] = {}
    for n in names:
        times = [t for t in slices[n] if t is not None]
        t = Timing(median_s=_quantile(times, 0.5),
                   iqr_s=_quantile(times, 0.75) - _quantile(times, 0.25),
                   mean_s=statistics.fmean(times), runs=len(times), number_per_run=number[n])
        out[n] = {**t.to_json(), "slices_s": slices[n], "autorange": autorange[n]}
    return out


def interleaved_ratio(timed: Mapping[str, dict], name: str, baseline: str) -> dict:
    """t_name / t_baseline from ``time_interleaved``, slice by slice: the ratio of
    each cycle's two slices (run within a fraction of a second of each other),
    over the cycles both ran in. "ratio" is their median, with their quartiles;
    "ratio_of_sums" the sum of the one's slices over the other's."""
    pairs = [(a, b) for a, b in zip(timed[name]["slices_s"], timed[baseline]["slices_s"])
             if a is not None and b is not None]
    ratios = [a / b for a, b in pairs]
    return {"ratio": _quantile(ratios, 0.5), "q25": _quantile(ratios, 0.25),
            "q75": _quantile(ratios, 0.75), "pairs": len(pairs),
            "ratio_of_sums": sum(a for a, _ in pairs) / sum(b for _, b in pairs)}


def measure_limits(
    dtype: torch.dtype, numel: int, device: torch.device, min_run_time: float
) -> dict[str, Timing]:
    """The two bandwidth limits for ``numel`` elements: ``y.copy_(x)`` into a
    preallocated ``y``, and ``x.clone()`` into a fresh tensor. Each moves
    2 * numel * itemsize bytes."""
    x = randn(numel, dtype, device, seed=0)
    y = torch.empty_like(x)
    label = f"limits {dtype_name(dtype)}"
    with torch.no_grad():
        copy = time_stmt("y.copy_(x)", {"x": x, "y": y}, min_run_time,
                         label=label, sub_label=size_label(numel), description=COPY)
        clone = time_stmt("x.clone()", {"x": x}, min_run_time,
                          label=label, sub_label=size_label(numel), description=CLONE)
    return {COPY: copy, CLONE: clone}


def limit_bytes(dtype: torch.dtype, numel: int) -> int:
    return 2 * numel * torch.empty((), dtype=dtype).element_size()


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


# --------------------------------------------------------------------------- checks


def _forward(case: Case, fn: Callable, ns: dict) -> Any:
    with torch.no_grad():
        return eval(case.forward_expr, {**ns, "f": fn})  # noqa: S307 (our own expression)


def _forward_backward(case: Case, fn: Callable, ns: dict) -> list[Optional[Tensor]]:
    exec(case.backward_stmt, {**ns, "f": fn})  # noqa: S102 (our own statement)
    return [ns[k].grad for k in case.differentiable]


def check_correctness(case: Case, fwd_ns: dict, bwd_ns: dict) -> None:
    """Every implementation's forward output and input gradients agree with the
    reference's (torch.testing.assert_close, with the case's tolerances). Raises
    CorrectnessError naming the op, implementation, pass, dtype and size. A
    forward-only case checks the forward only."""
    ref_fn = case.impls[case.reference]
    ref_out = _forward(case, ref_fn, fwd_ns)
    ref_grads = None
    if not case.forward_only:
        ref_grads = _forward_backward(case, ref_fn, bwd_ns)
        if any(g is None for g in ref_grads):
            raise CorrectnessError(f"{case.title}: the {case.reference} gives no input gradient")
    for name, fn in case.impls.items():
        if name == case.reference or name in case.unchecked:
            continue
        checks = [(FORWARD, lambda: _forward(case, fn, fwd_ns), ref_out)]
        if not case.forward_only:
            checks.append(("backward", lambda: _forward_backward(case, fn, bwd_ns), ref_grads))
        for what, get, expected in checks:
            try:
                actual = get()
                torch.testing.assert_close(actual, expected, **case.tolerances)
            except Exception as e:  # a wrong result or a crash: either way, no timing
                raise CorrectnessError(
                    f"{case.title}: the {what} of '{name}' disagrees with the "
                    f"{case.reference}: {type(e).__name__}: {e}"
                ) from e


def measure_saved(case: Case, fn: Callable, bwd_ns: dict, compiled: bool) -> dict:
    """Bytes of the tensors the forward saves for backward, seen through
    torch.autograd.graph.saved_tensors_hooks and deduplicated by storage (a saved
    view keeps its whole storage alive). For a compiled implementation the hooks
    see what the compiled autograd function saves; when they see nothing the
    number is reported as not measurable rather than as zero."""
    storages: dict[int, int] = {}
    count = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal count
        count += 1
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    graphs_before = _compiled_graph_count()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = eval(case.forward_expr, {**bwd_ns, "f": fn})  # noqa: S307
        del out
    except Exception as e:  # noqa: BLE001 (report, do not guess)
        return {"bytes": None, "tensors": None, "relative_to_input": None,
                "note": f"n/a: {type(e).__name__}: {e}"}
    result: dict[str, Any] = {"tensors": count}
    if compiled and count == 0:
        result.update(bytes=None, relative_to_input=None,
                      note="n/a: the hooks see no tensor saved by the compiled graph")
        return result
    nbytes = sum(storages.values())
    result.update(bytes=nbytes, relative_to_input=nbytes / case.input_bytes)
    if compiled and _compiled_graph_count() != graphs_before:
        result["note"] = "measured on a graph recompiled under the hooks"
    return result


def _compiled_graph_count() -> int:
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 (a private API: best effort)
        return -1


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A goal for one op: ``value(record)`` compared with ``threshold``, at one
    dtype and size, on the device benchmarked. The record is a case's or, for a
    training step, a step's; it is found by op, dtype and element count, or by its
    size label when ``size`` is given (layer shapes, models)."""

    op: str
    metric: str
    value: Callable[[dict], Optional[float]]
    threshold: float
    at_least: bool = True  # value >= threshold; else value <= threshold
    dtype: torch.dtype = torch.float32
    numel: Optional[int] = 2**24
    size: Optional[str] = None  # match the record's "size" instead of its "numel"

    @property
    def goal(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.threshold:.2f}"

    def matches(self, rec: dict) -> bool:
        return (rec["op"] == self.op and rec["dtype"] == dtype_name(self.dtype)
                and rec.get("status") == "ok"
                and (rec.get("size") == self.size if self.size is not None
                     else rec.get("numel") == self.numel))

    def evaluate(self, records: Iterable[dict], device: str) -> dict:
        rec = next((r for r in records if self.matches(r)), None)
        value = None
        if rec is not None:
            try:
                value = self.value(rec)
            except (KeyError, TypeError):
                value = None
        hit = None if value is None else (value >= self.threshold if self.at_least
                                          else value <= self.threshold)
        return {
            "op": self.op, "metric": self.metric, "device": device,
            "dtype": dtype_name(self.dtype), "numel": self.numel,
            "size": self.size if self.size is not None else size_label(self.numel),
            "value": value, "target": self.goal, "threshold": self.threshold,
            "at_least": self.at_least, "hit": hit,
        }


def fraction_of(pass_: str, impl: str, limit: str) -> Callable[[dict], Optional[float]]:
    """Target value: the bandwidth of ``impl`` in ``pass_`` as a fraction of a limit's."""
    return lambda rec: rec["passes"][pass_][impl][f"fraction_of_{limit}"]


def speedup_of(pass_: str, other: str) -> Callable[[dict], Optional[float]]:
    """Target value: t_other / t_robustops in ``pass_`` (> 1: robustops is faster)."""
    return lambda rec: rec["speedups"][pass_][f"vs {other}"]


def time_ratio_to(pass_: str, other: str) -> Callable[[dict], Optional[float]]:
    """Target value: t_robustops / t_other in ``pass_`` (< 1: robustops is faster),
    the inverse of ``speedup_of``."""
    return lambda rec: 1.0 / rec["speedups"][pass_][f"vs {other}"]


def saved_ratio_of(impl: str) -> Callable[[dict], Optional[float]]:
    """Target value: bytes saved for backward by ``impl`` / bytes of the input."""
    return lambda rec: rec["saved"][impl]["relative_to_input"]


def step_ratio_of(variant: str) -> Callable[[dict], Optional[float]]:
    """Target value (a step record): t_variant / t_baseline, the interleaved ratio."""
    return lambda rec: rec["ratios"][variant]["ratio"]


@contextlib.contextmanager
def no_tf32(device: torch.device) -> Iterator[None]:
    """float32 convolutions and matmuls in full precision on cuda (cuDNN allows
    TF32 by default), so that float32 tolerances apply (checks of training steps)."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


# --------------------------------------------------------------------------- metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _compile_flags(info: dict) -> dict:
    """The extension's compiler flags. extension_info() records the CUDA archs and
    version it was built with; the extra compiler flags come from setup.py (the
    file the build used, read again here)."""
    flags: dict[str, Any] = {
        "cuda_archs": info.get("cuda_archs"),
        "cuda_version": info.get("cuda_version"),
        "torch_version_built": info.get("torch_version_built"),
    }
    try:
        spec = importlib.util.spec_from_file_location("robustops_setup", ROOT / "setup.py")
        setup = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(setup)  # setup() itself only runs under __main__
        flags["cxx"] = setup.cxx_flags()
        flags["nvcc"] = setup.nvcc_flags()
        flags["flags_source"] = "setup.py cxx_flags()/nvcc_flags() (extra to torch's own)"
    except Exception as e:  # noqa: BLE001
        flags["flags_source"] = f"unavailable: {type(e).__name__}: {e}"
    return flags


def _git_commit() -> Optional[str]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


class CpuLoad:
    """How busy the machine was with other processes while we ran: from
    /proc/stat (all CPUs) minus this process's own CPU time and its waited-for
    children's. Benchmarks on a shared machine are only as good as this is small."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> Optional[tuple[float, float, float]]:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle, iowait
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, own

    def others_now(self, seconds: float = 1.0) -> Optional[float]:
        """The share of the CPUs other processes use over the next ``seconds``."""
        a = self._sample()
        time.sleep(seconds)
        b = self._sample()
        if a is None or b is None:
            return None
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / ((b[0] - a[0]) * (os.cpu_count() or 1))

    def summary(self) -> dict:
        end = self._sample()
        out: dict[str, Any] = {"loadavg_end": _read("/proc/loadavg")}
        if self._start is None or end is None:
            return out
        wall = end[0] - self._start[0]
        others = max(0.0, (end[1] - self._start[1]) - (end[2] - self._start[2]))
        cpus = os.cpu_count() or 1
        out.update(wall_s=round(wall, 1), other_processes_cpu_s=round(others, 1),
                   other_processes_share=round(others / (wall * cpus), 3) if wall > 0 else None)
        return out


def collect_metadata(config: Config) -> dict:
    import robustops

    info = robustops.extension_info()
    dev = config.device
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "suite": config.suite,
        "device": dev.type,
        "sizes": list(config.sizes),
        "dtypes": [dtype_name(d) for d in config.dtypes],
        "min_run_time_s": config.min_run_time,
        "torch_version": torch.__version__,
        "robustops_version": robustops.__version__,
        "robustops_commit": _git_commit(),
        "extension_info": info,
        "compile_flags": _compile_flags(info),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "num_threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS",
                                               "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
        "loadavg_start": _read("/proc/loadavg"),
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
    }
    if dev.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(dev)
        meta["cuda_runtime"] = torch.version.cuda
    return meta


# --------------------------------------------------------------------------- reports


def _us(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    us = seconds * 1e6
    return f"{us:,.1f}" if us < 1e4 else f"{us:,.0f}"


NOISY_IQR = 0.10  # tables mark medians whose IQR exceeds this fraction of them


def _t(rec: dict) -> str:
    """A timing record's median in µs, marked † when its IQR is over NOISY_IQR of it."""
    noisy = rec["iqr_s"] > NOISY_IQR * rec["median_s"]
    return _us(rec["median_s"]) + (" †" if noisy else "")


def _ratio(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.2f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _groups(cases: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(op, dtype, records sorted by size) in first-seen order, successful cases."""
    keys: list[tuple[str, str]] = []
    for c in cases:
        if c.get("status") == "ok" and (c["op"], c["dtype"]) not in keys:
            keys.append((c["op"], c["dtype"]))
    return [(op, dt, sorted((c for c in cases if c["op"] == op and c["dtype"] == dt
                             and c.get("status") == "ok"), key=lambda c: c["numel"]))
            for op, dt in keys]


def _limit(results: dict, dtype: str, numel: int) -> Optional[dict]:
    return next((l for l in results["limits"] if l["dtype"] == dtype and l["numel"] == numel), None)


def _size(rec: dict) -> str:
    """A record's size as shown: its label, else its element count."""
    return rec.get("size") or size_label(rec["numel"])


def _step_groups(steps: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(op, dtype, successful step records in run order) in first-seen order."""
    keys: list[tuple[str, str]] = []
    for s in steps:
        if s.get("status") == "ok" and (s["op"], s["dtype"]) not in keys:
            keys.append((s["op"], s["dtype"]))
    return [(op, dt, [s for s in steps if s["op"] == op and s["dtype"] == dt
                      and s.get("status") == "ok"]) for op, dt in keys]


def _step_ratio(r: dict) -> str:
    """An interleaved ratio and, in parentheses, the quartiles of its per-cycle ratios."""
    return f"{r['ratio']:.3f} ({r['q25']:.3f}–{r['q75']:.3f})"


def _steps_report(steps: list[dict], dev: str) -> list[str]:
    """The training-step sections: per op and dtype, each variant's time and its
    ratio to the baseline (with the quartiles of the per-cycle ratios)."""
    out: list[str] = []
    for op, dt, recs in _step_groups(steps):
        variants = list(recs[0]["variants"])
        baseline = recs[0]["baseline"]
        others = [v for v in variants if v != baseline]
        out += ["", f"## {op} ({dt}): {recs[0].get('section', 'whole training steps')} ({dev})",
                "", md_table(
            ["step"] + [f"{v} µs" for v in variants] + [f"{o} / {baseline}" for o in others],
            [[r["size"]] + [_t(r["variants"][v]) for v in variants]
             + [_step_ratio(r["ratios"][o]) for o in others] for r in recs])]
        rec = recs[0]
        out += ["", "Interleaved timing (bench.common.time_interleaved): after a "
                "blocked_autorange of each variant (warm-up and calibration), cycles in which "
                f"every variant runs one slice of about {rec['slice_s'] * 1e3:g} ms (a "
                "torch.utils.benchmark Timer.timeit of one or more steps) in turn, the order "
                "reversed every other cycle, until each has run "
                f"{rec['min_run_time_s']:g} s; so the drifting load of a shared machine weighs "
                "on all variants alike. Times: the median over a variant's slices of the time "
                "per step (µs). Ratios: the median over the cycles of the ratio of the two "
                "variants' slices in that cycle (run within a fraction of a second of each "
                "other), in parentheses the quartiles of those per-cycle ratios."]
        checks = sorted({r["correctness"] for r in recs})
        out += [""] + [f"Checked: {c}" for c in checks]
        notes = sorted({n for r in recs for n in r.get("notes", [])})
        out += [""] + [f"Note: {n}" for n in notes] if notes else []
    return out


def markdown_report(results: dict) -> str:
    """All the tables of a run, as markdown."""
    meta = results["metadata"]
    dev = meta["device"]
    hw = meta.get("gpu") or meta["cpu_model"]
    out = [
        f"# robustops benchmarks: {dev} ({meta['suite']} suite)",
        "",
        f"{meta['date']} · {hw} · {meta['num_threads']} threads"
        + (f" · CPU capability {meta['cpu_capability']}" if dev == "cpu" else "")
        + f" · torch {meta['torch_version']} · robustops {meta['robustops_version']}"
        + (f" ({meta['robustops_commit']})" if meta.get("robustops_commit") else ""),
        "",
        f"Extension: loaded={meta['extension_info']['loaded']}, "
        f"cpu_kernels={meta['extension_info']['cpu_kernels']}, "
        f"cuda_kernels={meta['extension_info']['cuda_kernels']}; extra flags "
        f"cxx={meta['compile_flags'].get('cxx')} nvcc={meta['compile_flags'].get('nvcc')}. "
        f"Medians of torch.utils.benchmark blocked_autorange(min_run_time="
        f"{meta['min_run_time_s']}); times in µs. Bandwidth fraction = effective bandwidth of "
        "the op (the least bytes it must move / its time) / bandwidth of the limit, which is "
        "t_limit / t_op when both move the same bytes; speedup = t_other / t_robustops "
        f"(> 1: robustops is faster). † marks a median whose interquartile range is over "
        f"{NOISY_IQR:.0%} of it.",
    ]
    if results.get("targets"):
        out += ["", f"## Targets ({dev})", "", md_table(
            ["op", "metric", "dtype", "size", "measured", "target", "result"],
            [[t["op"], t["metric"], t["dtype"], t.get("size") or size_label(t["numel"]),
              "not measured" if t["value"] is None else f"{t['value']:.2f}", t["target"],
              "—" if t["hit"] is None else ("hit" if t["hit"] else "MISS")]
             for t in results["targets"]])]

    for op, dt, recs in _groups(results["cases"]):
        impls = list(recs[0]["passes"][FORWARD])
        forward_only = FORWARD_BACKWARD not in recs[0]["passes"]
        out += ["", f"## {op} ({dt}{', forward only' if forward_only else ''})", "",
                f"### {FORWARD}: time (µs)", "", md_table(
            ["N", COPY, CLONE] + impls,
            [[_size(r), *(_t(_limit(results, dt, r["limit_numel"])[lim]) for lim in LIMITS)]
             + [_t(r["passes"][FORWARD][i]) for i in impls] for r in recs])]
        out += ["", f"### {FORWARD}: bandwidth as a fraction of the {COPY} / {CLONE} limits",
                "", md_table(
            ["N"] + [f"{i} vs {lim}" for i in impls for lim in LIMITS],
            [[_size(r)]
             + [_ratio(r["passes"][FORWARD][i][f"fraction_of_{lim}"]) for i in impls for lim in LIMITS]
             for r in recs])]
        others = [i for i in impls if i != ROBUSTOPS]
        if forward_only:
            if ROBUSTOPS in impls and others:
                out += ["", f"### {FORWARD}: speedup of {ROBUSTOPS}", "", md_table(
                    ["N"] + [f"vs {o}" for o in others],
                    [[_size(r)] + [_ratio(r["speedups"][FORWARD].get(f"vs {o}")) for o in others]
                     for r in recs])]
        else:
            out += ["", f"### {FORWARD_BACKWARD}: time (µs) and speedup of {ROBUSTOPS}", "",
                    md_table(
                ["N"] + impls + [f"vs {o}" for o in others],
                [[_size(r)] + [_t(r["passes"][FORWARD_BACKWARD][i]) for i in impls]
                 + [_ratio(r["speedups"][FORWARD_BACKWARD].get(f"vs {o}")) for o in others]
                 for r in recs])]
            if ROBUSTOPS in impls and others:
                out += ["", f"{FORWARD} speedup of {ROBUSTOPS}: " + "; ".join(
                    f"{_size(r)}: " + ", ".join(
                        f"vs {o} {_ratio(r['speedups'][FORWARD].get(f'vs {o}'))}" for o in others)
                    for r in recs) + "."]
        notes = sorted({n for r in recs for n in r.get("notes", [])})
        out += [""] + [f"Note: {n}" for n in notes] if notes else []

    out += _steps_report(results.get("steps") or [], dev)

    saved_rows = []
    for op, dt, recs in _groups(results["cases"]):
        impls = list(recs[0]["saved"])
        if not impls:  # forward-only: nothing is saved for a backward
            continue
        row = [op, dt]
        for i in impls:
            vals = {None if r["saved"][i]["relative_to_input"] is None
                    else round(r["saved"][i]["relative_to_input"], 3) for r in recs}
            if vals == {None}:
                row.append("n/a")
            elif len(vals) == 1:
                row.append(f"{vals.pop():.2f}")
            else:
                row.append(" – ".join(f"{v:.2f}" for v in sorted(v for v in vals if v is not None)))
        saved_rows.append((impls, row))
    if saved_rows:
        headers = ["op", "dtype"] + saved_rows[0][0]
        out += ["", "## Saved for backward (bytes / input bytes, all sizes)", "",
                md_table(headers, [r for _, r in saved_rows])]

    thp = results.get("thp")
    if thp:
        out += ["", f"## THP_MEM_ALLOC_ENABLE=1 vs default ({dev}, {thp['dtype']}, "
                f"N={size_label(thp['numel'])}, {FORWARD})", ""]
        if thp.get("error"):
            out.append(f"Not measured: {thp['error']}")
        else:
            clone_d = thp["rows"][CLONE]["default"]["median_s"]
            clone_t = thp["rows"][CLONE]["thp"]["median_s"]
            out.append(md_table(
                ["", "default µs", "THP=1 µs", "default / THP=1", "default vs default clone",
                 "THP=1 vs THP=1 clone"],
                [[name, _t(r["default"]), _t(r["thp"]),
                  _ratio(r["default"]["median_s"] / r["thp"]["median_s"]),
                  _ratio(clone_d / r["default"]["median_s"]), _ratio(clone_t / r["thp"]["median_s"])]
                 for name, r in thp["rows"].items()]))
            out += ["", f"default: THP_MEM_ALLOC_ENABLE={thp['default_env'] or 'unset'} (this "
                    "process); THP=1: a subprocess. The last two columns are bandwidth fractions "
                    "of the clone limit under the same setting."]

    if results["limits"]:
        out += ["", "## Bandwidth limits", "", md_table(
            ["dtype", "N", "MiB moved", f"{COPY} µs", f"{COPY} GB/s", f"{CLONE} µs", f"{CLONE} GB/s"],
            [[l["dtype"], size_label(l["numel"]), f"{l['bytes'] / 2**20:,.2f}",
              _t(l[COPY]), f"{l[COPY]['bandwidth_GBps']:.1f}",
              _t(l[CLONE]), f"{l[CLONE]['bandwidth_GBps']:.1f}"]
             for l in results["limits"]])]
    if results.get("warnings"):
        out += ["", "## Warnings", ""] + [f"- {w}" for w in results["warnings"]]
    if results.get("errors"):
        out += ["", "## Errors", ""] + [f"- {e}" for e in results["errors"]]
    return "\n".join(out) + "\n"


def plot_report(results: dict, path: Path) -> Optional[str]:
    """Effective bandwidth vs size, one panel per (op, dtype) and pass, a line per
    implementation plus the copy_ and clone limits (a forward-only op's
    forward+backward panel says so). The training steps are not plotted (no
    bandwidth applies; their table is in the markdown). Returns why not when it
    cannot plot (matplotlib missing, nothing measured), None when it wrote
    ``path``."""
    groups = _groups(results["cases"])
    if not groups:
        return "nothing to plot"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("matplotlib is not installed: `pip install matplotlib` (or `make install`) "
                "for the plot")
    fig, axes = plt.subplots(len(groups), len(PASSES), figsize=(6 * len(PASSES), 3.6 * len(groups)),
                             squeeze=False)
    dev = results["metadata"]["device"]
    for row, (op, dt, recs) in enumerate(groups):
        xs = [math.log2(r["numel"]) for r in recs]
        for col, pass_ in enumerate(PASSES):
            ax = axes[row][col]
            if pass_ not in recs[0]["passes"]:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{op}: {FORWARD} only (not differentiable)", ha="center",
                        va="center", transform=ax.transAxes)
                continue
            for impl in recs[0]["passes"][pass_]:
                ax.plot(xs, [r["passes"][pass_][impl]["bandwidth_GBps"] for r in recs],
                        marker="o", label=impl)
            for lim, style in ((COPY, ":"), (CLONE, "--")):
                ys = [(_limit(results, dt, r["limit_numel"]) or {}).get(lim, {}).get("bandwidth_GBps")
                      for r in recs]
                ax.plot(xs, [math.nan if y is None else y for y in ys], style, color="gray"
                        if lim == CLONE else "black", label=f"{lim} limit")
            ax.set_title(f"{op} · {pass_} · {dt} · {dev}")
            ax.set_xlabel("log2(N), N = elements")
            ax.set_ylabel("effective GB/s (log scale)")
            whole = all(x == int(x) for x in xs)  # 2^k sizes; else e.g. layer shapes
            ax.set_xticks(xs, [f"{x:.3g}" for x in xs], fontsize=7,
                          rotation=0 if whole else 60)
            ax.set_yscale("log")  # caches make small sizes several times faster
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.suptitle(f"robustops {results['metadata']['suite']} suite: effective bandwidth = "
                 "least bytes moved / median time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
