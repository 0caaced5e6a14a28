"""The reports of a run: the markdown tables (``markdown_report``, one function per
section), the bandwidth plot (``plot_report``) and the runner's lines on stderr
(``eprint``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from bench.cases import CLONE, COPY, FORWARD, FORWARD_BACKWARD, LIMITS, PASSES, ROBUSTOPS, size_label


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


def _notes(recs: list[dict]) -> list[str]:
    """The notes of a group's records, once each, after a blank line; none: nothing."""
    notes = sorted({n for r in recs for n in r.get("notes", [])})
    return [""] + [f"Note: {n}" for n in notes] if notes else []


def _header(meta: dict) -> list[str]:
    """The title, the machine and versions, and how to read the tables."""
    dev = meta["device"]
    hw = meta.get("gpu") or meta["cpu_model"]
    return [
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


def _targets_section(targets: list[dict], dev: str) -> list[str]:
    """The targets table: every target's measured value and whether it is hit."""
    if not targets:
        return []
    return ["", f"## Targets ({dev})", "", md_table(
        ["op", "metric", "dtype", "size", "measured", "target", "result"],
        [[t["op"], t["metric"], t["dtype"], t.get("size") or size_label(t["numel"]),
          "not measured" if t["value"] is None else f"{t['value']:.2f}", t["target"],
          "—" if t["hit"] is None else ("hit" if t["hit"] else "MISS")]
         for t in targets])]


def _op_section(results: dict, op: str, dt: str, recs: list[dict]) -> list[str]:
    """One op at one dtype: its forward times next to the limits, its bandwidth
    fractions, and its forward+backward times and speedups (a forward-only op: its
    forward speedups)."""
    impls = list(recs[0]["passes"][FORWARD])
    forward_only = FORWARD_BACKWARD not in recs[0]["passes"]
    others = [i for i in impls if i != ROBUSTOPS]
    out = ["", f"## {op} ({dt}{', forward only' if forward_only else ''})", "",
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
    return out + _notes(recs)


def _step_section(op: str, dt: str, recs: list[dict], dev: str) -> list[str]:
    """One training step (or model-level pass) at one dtype: each variant's time
    and its ratio to the baseline (with the quartiles of the per-cycle ratios), how
    they were timed, what was checked."""
    variants = list(recs[0]["variants"])
    baseline = recs[0]["baseline"]
    others = [v for v in variants if v != baseline]
    out = ["", f"## {op} ({dt}): {recs[0].get('section', 'whole training steps')} ({dev})",
           "", md_table(
        ["step"] + [f"{v} µs" for v in variants] + [f"{o} / {baseline}" for o in others],
        [[r["size"]] + [_t(r["variants"][v]) for v in variants]
         + [_step_ratio(r["ratios"][o]) for o in others] for r in recs])]
    rec = recs[0]
    out += ["", "Interleaved timing (bench.timing.time_interleaved): after a "
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
    return out + _notes(recs)


def _saved_section(cases: list[dict]) -> list[str]:
    """Bytes saved for backward relative to the input's, per op, dtype and
    implementation (a range when it varies with the size)."""
    saved_rows = []
    for op, dt, recs in _groups(cases):
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
    if not saved_rows:
        return []
    headers = ["op", "dtype"] + saved_rows[0][0]
    return ["", "## Saved for backward (bytes / input bytes, all sizes)", "",
            md_table(headers, [r for _, r in saved_rows])]


def _thp_section(thp: Optional[dict], dev: str) -> list[str]:
    """The THP_MEM_ALLOC_ENABLE=1 re-run (bench/thp.py) side by side with this run."""
    if not thp:
        return []
    out = ["", f"## THP_MEM_ALLOC_ENABLE=1 vs default ({dev}, {thp['dtype']}, "
           f"N={size_label(thp['numel'])}, {FORWARD})", ""]
    if thp.get("error"):
        return out + [f"Not measured: {thp['error']}"]
    clone_d = thp["rows"][CLONE]["default"]["median_s"]
    clone_t = thp["rows"][CLONE]["thp"]["median_s"]
    out.append(md_table(
        ["", "default µs", "THP=1 µs", "default / THP=1", "default vs default clone",
         "THP=1 vs THP=1 clone"],
        [[name, _t(r["default"]), _t(r["thp"]),
          _ratio(r["default"]["median_s"] / r["thp"]["median_s"]),
          _ratio(clone_d / r["default"]["median_s"]), _ratio(clone_t / r["thp"]["median_s"])]
         for name, r in thp["rows"].items()]))
    return out + ["", f"default: THP_MEM_ALLOC_ENABLE={thp['default_env'] or 'unset'} (this "
                  "process); THP=1: a subprocess. The last two columns are bandwidth fractions "
                  "of the clone limit under the same setting."]


def _limits_section(limits: list[dict]) -> list[str]:
    """The copy_ and clone limits measured, per dtype and size."""
    if not limits:
        return []
    return ["", "## Bandwidth limits", "", md_table(
        ["dtype", "N", "MiB moved", f"{COPY} µs", f"{COPY} GB/s", f"{CLONE} µs", f"{CLONE} GB/s"],
        [[l["dtype"], size_label(l["numel"]), f"{l['bytes'] / 2**20:,.2f}",
          _t(l[COPY]), f"{l[COPY]['bandwidth_GBps']:.1f}",
          _t(l[CLONE]), f"{l[CLONE]['bandwidth_GBps']:.1f}"]
         for l in limits])]


def _list_section(title: str, items: Optional[list[str]]) -> list[str]:
    """A heading and a bullet per item (the warnings, the errors); none: nothing."""
    return ["", f"## {title}", ""] + [f"- {i}" for i in items] if items else []


def markdown_report(results: dict) -> str:
    """All the tables of a run, as markdown: the header, the targets, per op and
    dtype the cases, per op and dtype the training steps, the saved-for-backward
    memory, the THP comparison, the bandwidth limits, the warnings and errors."""
    dev = results["metadata"]["device"]
    out = _header(results["metadata"])
    out += _targets_section(results.get("targets"), dev)
    for op, dt, recs in _groups(results["cases"]):
        out += _op_section(results, op, dt, recs)
    for op, dt, recs in _step_groups(results.get("steps") or []):
        out += _step_section(op, dt, recs, dev)
    out += _saved_section(results["cases"])
    out += _thp_section(results.get("thp"), dev)
    out += _limits_section(results["limits"])
    out += _list_section("Warnings", results.get("warnings"))
    out += _list_section("Errors", results.get("errors"))
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
