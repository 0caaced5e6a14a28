"""The benchmark runner: ``python -m bench.run [--full] [--device cpu|cuda] [--ops ...]``.

For every case a family yields (an op at one dtype and size), the runner
  1. checks that every implementation's forward and backward agree with the
     reference (an op that fails is reported and not timed, and the run exits 1);
  2. warms up (compiles the torch.compile'd implementations);
  3. times the forward (under torch.no_grad) and the forward+backward of every
     implementation with torch.utils.benchmark's blocked_autorange, on all of
     torch's threads (a case marked ``interleaved``: its implementations in
     alternating slices, as the training steps below);
  4. measures the bytes each implementation saves for backward;
and measures, once per dtype and size, the copy_ and clone bandwidth limits the
forward times are compared with. A forward-only case (an op that is not
differentiable) skips the backward in 1 and 3, and 4.

For every training step a family yields (``steps(config)``: cases.StepCase), the
runner runs its check (the variants agree), warms every variant up, and times the
variants in alternating slices of about 50 ms (timing.time_interleaved), so that
the ratios to the baseline variant are not biased by the drifting load of a
shared machine.

On cpu it then re-runs itself in a subprocess with THP_MEM_ALLOC_ENABLE=1 (read by
PyTorch at process start: large allocations use transparent huge pages) for the
float32 forward cases at N = 2^24 (skipped when no case has that size; bench/thp.py),
and it evaluates the families' targets. Results: bench/results/<device>.json (raw
numbers and metadata), .md (tables, also printed) and .png (bandwidth plot).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional, Sequence

import torch

from bench.cases import (
    FORWARD, FORWARD_BACKWARD, FULL_DTYPES, FULL_LOG2_SIZES, FULL_MIN_RUN_TIME, QUICK_DTYPES,
    QUICK_LOG2_SIZES, QUICK_MIN_RUN_TIME, RESULTS_DIR, ROBUSTOPS, Case, Config, StepCase,
    dtype_name, parse_dtype, size_label,
)
from bench.checks import CorrectnessError, check_correctness, measure_saved
from bench.metadata import CpuLoad, collect_metadata
from bench.report import eprint, markdown_report, plot_report
from bench.thp import THP_ENV, run_thp_child, run_thp_comparison
from bench.timing import (
    INTERLEAVE_SLICE_S, Limits, Timing, interleaved_ratio, time_interleaved, time_stmt,
    timing_record,
)

# The op families, one module bench/<name>.py each (see bench/__init__.py).
FAMILIES: tuple[str, ...] = ("saf", "bang", "interval", "crown", "p4", "spp", "attacks")

# Training steps: every variant runs STEP_TIME * min_run_time seconds of
# interleaved slices: the ratios to the baseline step are small differences of
# large times.
STEP_TIME = 3.0

# Warn when other processes took more than this share of the CPUs during the run.
BUSY_WARNING = 0.05


def load_families() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"bench.{name}") for name in FAMILIES}


# --------------------------------------------------------------------------- command line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmarks of robustops' ops against their pure-PyTorch references.",
    )
    p.add_argument("--full", action="store_true",
                   help="all sizes 2^16..2^26 and more dtypes (default: the quick suite)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda if available, else cpu")
    p.add_argument("--ops", help="comma-separated ops and/or families (default: all), "
                                 "e.g. mrelu,rbf or saf or bang_scale,bang_step")
    p.add_argument("--list", action="store_true", help="list the families and their ops")
    p.add_argument("--out", type=Path, default=RESULTS_DIR,
                   help="directory for <device>.{json,md,png} (default: bench/results)")
    p.add_argument("--no-thp", action="store_true",
                   help=f"skip the {THP_ENV}=1 re-run on cpu")
    dev = p.add_argument_group("development options (override the suite's settings)")
    dev.add_argument("--sizes", help="comma-separated log2 sizes, e.g. 16,18")
    dev.add_argument("--dtypes", help="comma-separated dtypes, e.g. float32,bfloat16")
    dev.add_argument("--min-run-time", type=float,
                     help=f"seconds per measurement (quick {QUICK_MIN_RUN_TIME}, "
                          f"full {FULL_MIN_RUN_TIME})")
    # Internal: the THP re-run writes its measurements to this file.
    p.add_argument("--thp-child", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve_device(name: Optional[str]) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
        raise SystemExit(f"bench.run: --device cuda, but CUDA is not available to torch "
                         f"{torch.__version__} ({build})")
    return torch.device(name)


def build_config(args: argparse.Namespace, device: torch.device) -> tuple[Config, str]:
    """The config and a label for the suite ('quick', 'full', or either with the
    development overrides spelled out)."""
    log2_sizes = FULL_LOG2_SIZES if args.full else QUICK_LOG2_SIZES
    dtypes = (FULL_DTYPES if args.full else QUICK_DTYPES)[device.type]
    min_run_time = FULL_MIN_RUN_TIME if args.full else QUICK_MIN_RUN_TIME
    custom = []
    if args.sizes:
        log2_sizes = tuple(int(s) for s in args.sizes.split(","))
        custom.append(f"sizes 2^{{{args.sizes}}}")
    if args.dtypes:
        dtypes = tuple(parse_dtype(d) for d in args.dtypes.split(","))
        custom.append(f"dtypes {args.dtypes}")
    if args.min_run_time is not None:
        min_run_time = args.min_run_time
        custom.append(f"min_run_time {min_run_time}")
    config = Config(device=device, full=args.full, sizes=tuple(2**k for k in log2_sizes),
                    dtypes=tuple(dtypes), min_run_time=min_run_time)
    label = config.suite + (f" (custom: {', '.join(custom)})" if custom else "")
    return config, label


def resolve_ops(spec: Optional[str], families: dict[str, ModuleType]) -> dict[str, list[str]]:
    """{family: [ops]} selected by ``--ops`` (op or family names)."""
    all_ops = {fam: list(mod.OPS) for fam, mod in families.items()}
    if not spec:
        return all_ops
    chosen: dict[str, list[str]] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in all_ops:
            chosen.setdefault(item, [])
            chosen[item] += [op for op in all_ops[item] if op not in chosen[item]]
            continue
        fam = next((f for f, ops in all_ops.items() if item in ops), None)
        if fam is None:
            known = ", ".join(f"{f}: {', '.join(ops)}" for f, ops in all_ops.items())
            raise SystemExit(f"bench.run: unknown op or family {item!r} (known: {known})")
        if item not in chosen.setdefault(fam, []):
            chosen[fam].append(item)
    return chosen


def select_cases(families: dict[str, ModuleType], selected: dict[str, list[str]],
                 config: Config) -> list[Case]:
    return [case for fam, ops in selected.items()
            for case in families[fam].cases(config) if case.op in ops]


def select_steps(families: dict[str, ModuleType], selected: dict[str, list[str]],
                 config: Config) -> list[StepCase]:
    """The training steps of the selected ops (families without ``steps`` have none)."""
    return [step for fam, ops in selected.items()
            for step in getattr(families[fam], "steps", lambda config: [])(config)
            if step.op in ops]


def progress(cases: Sequence) -> Iterator:
    """The cases, with a tqdm bar when tqdm is installed, else one line each."""
    if not cases:
        return
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(cases, file=sys.stderr, unit="case", dynamic_ncols=True)
        for case in bar:
            bar.set_description(case.title)
            yield case
        return
    start = time.perf_counter()
    for i, case in enumerate(cases, 1):
        eprint(f"[{i}/{len(cases)}, {time.perf_counter() - start:.0f} s] {case.title}")
        yield case


# --------------------------------------------------------------------------- measurement


def _warm_up(case: Case, fwd_ns: dict, bwd_ns: dict, iters: int = 2) -> None:
    for fn in case.impls.values():
        for _ in range(iters):
            with torch.no_grad():
                eval(case.forward_expr, {**fwd_ns, "f": fn})  # noqa: S307
            if not case.forward_only:
                exec(case.backward_stmt, {**bwd_ns, "f": fn})  # noqa: S102


def _time_interleaved_case(case: Case, fwd_ns: dict, bwd_ns: dict, min_run_time: float,
                           label: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """An ``interleaved`` case's timings: per pass, {impl: Timing fields and the
    slices}, and the speedups of robustops from the per-cycle ratios."""
    timed: dict[str, dict] = {}
    speedups: dict[str, dict] = {p: {} for p in case.passes}
    for p in case.passes:
        if p == FORWARD:
            stmts = {name: (case.forward_expr, {**fwd_ns, "f": fn})
                     for name, fn in case.impls.items()}
            with torch.no_grad():
                timed[p] = time_interleaved(stmts, min_run_time, INTERLEAVE_SLICE_S,
                                            label=f"{label} {p}", sub_label=case.size)
        else:
            stmts = {name: (case.backward_stmt, {**bwd_ns, "f": fn})
                     for name, fn in case.impls.items()}
            timed[p] = time_interleaved(stmts, min_run_time, INTERLEAVE_SLICE_S,
                                        label=f"{label} {p}", sub_label=case.size)
        if ROBUSTOPS in case.impls:
            speedups[p] = {f"vs {o}": interleaved_ratio(timed[p], o, ROBUSTOPS)["ratio"]
                           for o in case.impls if o != ROBUSTOPS}
    return timed, speedups


def run_case(case: Case, config: Config, limits: Limits) -> dict:
    """Check, warm up, time and measure one case; its JSON record."""
    inputs = case.make_inputs()
    fwd_ns, bwd_ns = case.namespaces(inputs)
    check_correctness(case, fwd_ns, bwd_ns)
    _warm_up(case, fwd_ns, bwd_ns)

    min_run_time = config.min_run_time if case.min_run_time is None else case.min_run_time
    lim = limits.get(case.dtype, case.limit_numel, min_run_time)
    nbytes = {FORWARD: case.bytes_forward, FORWARD_BACKWARD: case.bytes_forward_backward}
    label = f"{case.family}.{case.op} {dtype_name(case.dtype)}"
    passes: dict[str, dict] = {p: {} for p in case.passes}
    speedups: dict[str, dict] = {p: {} for p in case.passes}
    if case.interleaved:
        timed, speedups = _time_interleaved_case(case, fwd_ns, bwd_ns, min_run_time, label)
        for p in case.passes:
            for name, rec in timed[p].items():
                t = Timing(**{k: rec[k] for k in ("median_s", "iqr_s", "mean_s", "runs",
                                                  "number_per_run")})
                passes[p][name] = {**timing_record(t, nbytes[p], lim),
                                   "slices_s": rec["slices_s"], "autorange": rec["autorange"]}
    else:
        for name, fn in case.impls.items():
            with torch.no_grad():
                t = time_stmt(case.forward_expr, {**fwd_ns, "f": fn}, min_run_time,
                              label=f"{label} {FORWARD}", sub_label=case.size, description=name)
            passes[FORWARD][name] = timing_record(t, nbytes[FORWARD], lim)
            if case.forward_only:
                continue
            t = time_stmt(case.backward_stmt, {**bwd_ns, "f": fn}, min_run_time,
                          label=f"{label} {FORWARD_BACKWARD}", sub_label=case.size,
                          description=name)
            passes[FORWARD_BACKWARD][name] = timing_record(t, nbytes[FORWARD_BACKWARD], lim)
        if ROBUSTOPS in case.impls:
            for p in case.passes:
                mine = passes[p][ROBUSTOPS]["median_s"]
                speedups[p] = {f"vs {o}": passes[p][o]["median_s"] / mine
                               for o in case.impls if o != ROBUSTOPS}

    # A forward-only op saves nothing for a backward: no entry.
    saved = {} if case.forward_only else {
        name: measure_saved(case, fn, bwd_ns, compiled=name in case.compiled)
        for name, fn in case.impls.items()}
    checked = ("the forward of every implementation agrees" if case.forward_only
               else "forward and backward of every implementation agree")
    if case.unchecked:
        checked = checked.replace("every implementation",
                                  "every implementation but " + ", ".join(sorted(case.unchecked)))
    return {
        **_case_header(case),
        "status": "ok",
        "correctness": f"{checked} with the "
                       f"{case.reference} (torch.testing.assert_close"
                       + (f", {case.tolerances}" if case.tolerances else ", default tolerances")
                       + ")",
        "min_run_time_s": min_run_time,
        "timing": "interleaved" if case.interleaved else "blocked_autorange",
        "passes": passes,
        "speedups": speedups,
        "saved": saved,
    }


def _case_header(case: Case) -> dict:
    nbytes = {FORWARD: case.bytes_forward, FORWARD_BACKWARD: case.bytes_forward_backward}
    return {
        "family": case.family, "op": case.op, "dtype": dtype_name(case.dtype),
        "numel": case.numel, "size": case.size, "limit_numel": case.limit_numel,
        "forward_only": case.forward_only,
        "bytes": {p: nbytes[p] for p in case.passes},
        "input_bytes": case.input_bytes, "impls": list(case.impls),
        "unchecked": sorted(case.unchecked), "notes": case.notes,
    }


def _summary(rec: dict) -> str:
    fwd = rec["passes"][FORWARD]
    parts = [f"{FORWARD}: " + ", ".join(
        f"{name} {t['median_s'] * 1e6:,.1f} µs ({t['fraction_of_clone']:.2f} of clone)"
        for name, t in fwd.items())]
    # The forward+backward speedups when there is a backward, else the forward's.
    shown = FORWARD_BACKWARD if FORWARD_BACKWARD in rec["speedups"] else FORWARD
    if rec["speedups"][shown]:
        parts.append(f"{shown} speedup of {ROBUSTOPS}: " + ", ".join(
            f"{k} {v:.2f}" for k, v in rec["speedups"][shown].items()))
    size = rec["size"] if rec["size"] != size_label(rec["numel"]) else f"N={rec['size']}"
    return f"  {rec['op']} {rec['dtype']} {size}: " + "; ".join(parts)


def _cleanup(device: torch.device) -> None:
    torch._dynamo.reset()  # each case compiles afresh: no recompile limits, memory freed
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _failure(e: Exception, title: str) -> str:
    """One line saying why a case or step failed: a correctness error says it all, a
    crash gets the case's title and the exception's type."""
    why = str(e) if isinstance(e, CorrectnessError) else f"{title}: {type(e).__name__}: {e}"
    return "; ".join(line.strip() for line in why.splitlines() if line.strip())


def run_cases(cases: Sequence[Case], config: Config, results: dict) -> None:
    limits = Limits(config.device, config.min_run_time, results["limits"])
    aborted: set[str] = set()
    for case in progress(cases):
        if case.op in aborted:
            results["cases"].append({**_case_header(case),
                                     "status": "skipped: the op failed at an earlier case"})
            continue
        try:
            rec = run_case(case, config, limits)
        except Exception as e:  # noqa: BLE001 (a wrong result, or a crash: the op stops here)
            aborted.add(case.op)
            why = _failure(e, case.title)
            msg = f"{case.family}.{case.op}: not benchmarked further: {why}"
            eprint(f"ERROR {msg}")
            results["errors"].append(msg)
            results["cases"].append({**_case_header(case), "status": f"failed: {why}"})
        else:
            results["cases"].append(rec)
            eprint(_summary(rec))
        finally:
            _cleanup(config.device)


# --------------------------------------------------------------------------- steps


def _step_header(step: StepCase) -> dict:
    return {"family": step.family, "op": step.op, "dtype": dtype_name(step.dtype),
            "size": step.size, **step.info, "baseline": step.baseline, "notes": step.notes,
            "section": step.section}


def run_step(step: StepCase, config: Config) -> dict:
    """Check, warm up and time one training step's variants, interleaved."""
    checked = step.check()
    steps = step.make_steps()
    for fn in steps.values():
        for _ in range(step.warmup):  # allocator, oneDNN/cuDNN primitives, lazy inits
            fn()
    label = f"{step.family}.{step.op} {dtype_name(step.dtype)}"
    run_time = STEP_TIME * config.min_run_time if step.min_run_time is None else step.min_run_time
    timed = time_interleaved({name: ("step()", {"step": fn}) for name, fn in steps.items()},
                             run_time, INTERLEAVE_SLICE_S, label=label, sub_label=step.size)
    return {
        **_step_header(step),
        "status": "ok",
        "correctness": checked,
        "warmup": step.warmup,
        "min_run_time_s": run_time,
        "slice_s": INTERLEAVE_SLICE_S,
        "variants": timed,
        "ratios": {name: interleaved_ratio(timed, name, step.baseline)
                   for name in steps if name != step.baseline},
    }


def _step_summary(rec: dict) -> str:
    times = ", ".join(f"{n} {t['median_s'] * 1e3:,.2f} ms" for n, t in rec["variants"].items())
    ratios = ", ".join(f"{n} / {rec['baseline']} {r['ratio']:.3f}"
                       for n, r in rec["ratios"].items())
    return f"  {rec['op']} {rec['dtype']} {rec['size']}: {times}; {ratios}"


def run_steps(steps: Sequence[StepCase], config: Config, results: dict) -> None:
    for step in progress(steps):
        try:
            rec = run_step(step, config)
        except Exception as e:  # noqa: BLE001 (a disagreement or a crash: report, go on)
            why = _failure(e, step.title)
            msg = f"{step.family}.{step.op}: {step.size} not benchmarked: {why}"
            eprint(f"ERROR {msg}")
            results["errors"].append(msg)
            results["steps"].append({**_step_header(step), "status": f"failed: {why}"})
        else:
            results["steps"].append(rec)
            eprint(_step_summary(rec))
        finally:
            _cleanup(config.device)


# --------------------------------------------------------------------------- main


def _json_default(obj):
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    families = load_families()
    if args.list:
        for fam, mod in families.items():
            print(f"{fam}: {', '.join(mod.OPS)}")
        return 0
    device = resolve_device(args.device)
    config, suite_label = build_config(args, device)
    selected = resolve_ops(args.ops, families)
    cases = select_cases(families, selected, config)

    if args.thp_child is not None:
        return run_thp_child(cases, config, args.thp_child)
    steps = select_steps(families, selected, config)

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load = CpuLoad()
    busy = load.others_now()
    if busy is not None and busy > BUSY_WARNING:
        eprint(f"WARNING other processes are using {busy:.0%} of the CPUs: timings will be "
               "perturbed")
    results: dict = {"metadata": collect_metadata(config), "limits": [], "cases": [],
                     "steps": [], "thp": None, "targets": [], "errors": [], "warnings": []}
    results["metadata"]["suite"] = suite_label
    eprint(f"bench.run: {len(cases)} cases and {len(steps)} training steps on {device.type} "
           f"({suite_label}), {torch.get_num_threads()} threads")
    run_cases(cases, config, results)
    run_steps(steps, config, results)

    if device.type == "cpu" and not args.no_thp:
        results["thp"] = run_thp_comparison(results, config, args.out)

    for fam, ops in selected.items():
        for target in getattr(families[fam], "TARGETS", []):
            if target.op in ops:
                results["targets"].append(
                    target.evaluate(results["cases"] + results["steps"], device.type))

    results["metadata"]["wall_time_s"] = round(time.perf_counter() - start, 1)
    results["metadata"]["cpu_load"] = load.summary()
    share = results["metadata"]["cpu_load"].get("other_processes_share")
    if share is not None and share > BUSY_WARNING:
        results["warnings"].append(
            f"other processes used {share:.0%} of the machine's CPU time during the run: "
            "the timings are perturbed (run the suite on an otherwise idle machine)")
    base = args.out / device.type
    base.with_suffix(".json").write_text(json.dumps(results, indent=1, default=_json_default))
    report = markdown_report(results)
    base.with_suffix(".md").write_text(report)
    why_not = plot_report(results, base.with_suffix(".png"))
    print(report)
    written = [base.with_suffix(".json"), base.with_suffix(".md")]
    if why_not is None:
        written.append(base.with_suffix(".png"))
    else:
        eprint(f"bench.run: no plot: {why_not}")
    for w in results["warnings"]:
        eprint(f"WARNING {w}")
    eprint(f"bench.run: {results['metadata']['wall_time_s']} s; wrote "
           + ", ".join(str(p) for p in written))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
