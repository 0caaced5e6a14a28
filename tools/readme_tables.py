"""Copy the committed result tables into the README, so that no number in it is
typed in by hand:

- each experiment's report (experiments/results/NAME.md: the paper's numbers, what
  the run did, the criterion, the verdict computed from the seeds and the table of
  mean +- sd) between the markers <!-- experiment:NAME --> and <!-- /experiment:NAME -->;
- the benchmark targets of a device (bench/results/DEVICE.json), summarized: one row per
  op and metric with how many of its sizes hit the target and the range measured, the
  missed ones listed, with the machine and the share of the CPU other processes took
  during the run, between <!-- bench:DEVICE:summary --> and <!-- /bench:DEVICE:summary -->
  (every table stays in bench/results/DEVICE.md); and the first table under the heading
  of bench/results/DEVICE.md that starts with "## SECTION" between
  <!-- bench:DEVICE:SECTION --> and <!-- /bench:DEVICE:SECTION -->.

    python tools/readme_tables.py           # rewrite README.md
    python tools/readme_tables.py --check   # exit 1 if README.md is stale

tests/test_readme.py runs the check.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "experiments" / "results"
BENCH = ROOT / "bench" / "results"
BLOCK = re.compile(r"(<!-- (experiment|bench):(\S+) -->\n)(.*?)(<!-- /\2:\3 -->)", re.S)


def _table(lines, start: int = 0) -> str:
    """The first markdown table at or after line ``start``."""
    i = next(k for k in range(start, len(lines)) if lines[k].startswith("|"))
    j = i
    while j < len(lines) and lines[j].startswith("|"):
        j += 1
    return "\n".join(lines[i:j])


def experiment(name: str) -> str:
    """experiments/results/NAME.md from the line after its claim up to its settings
    line (a bench report: its table and its direction line), and where it came from."""
    lines = (RESULTS / f"{name}.md").read_text().splitlines()
    record = json.loads((RESULTS / f"{name}.json").read_text())
    if record.get("verdict") is None and not record.get("paper"):  # the benchmark suite's report
        direction = next(line for line in lines if line.startswith("Direction:"))
        return f"{_table(lines)}\n\n{direction} (`experiments/results/{name}.md`)\n"
    start = next(k for k, line in enumerate(lines) if line.startswith("Claim:")) + 1
    end = next(k for k, line in enumerate(lines) if line.startswith("Settings:"))
    body = "\n".join(lines[start:end]).strip()
    settings = record["settings"]
    return (f"{body}\n\nFrom `experiments/results/{name}.md`: `--{settings['scale']}`, "
            f"{len(settings['seed_list'])} seeds, {settings['threads']} "
            f"thread{'s' if settings['threads'] > 1 else ''} per seed, "
            f"{record['seconds']:.0f} s on this 2-core CPU.\n")


def _value(t: dict, value: float) -> str:
    """Two decimals, or three where two would show a missed target as its threshold."""
    text = f"{value:.2f}"
    return f"{value:.3f}" if float(text) == t["threshold"] and value != t["threshold"] else text


def _range(ts) -> str:
    """min-max of the values measured against one target (one value: itself)."""
    lo, hi = min(ts, key=lambda t: t["value"]), max(ts, key=lambda t: t["value"])
    a, b = _value(lo, lo["value"]), _value(hi, hi["value"])
    return a if a == b else f"{a}-{b}"


def summary(device: str) -> str:
    """The targets of bench/results/DEVICE.json, one row per op and metric (how many of
    its sizes and dtypes hit, the range measured), then the missed ones one by one."""
    record = json.loads((BENCH / f"{device}.json").read_text())
    meta, targets = record["metadata"], record["targets"]
    share = (meta.get("cpu_load") or {}).get("other_processes_share")
    busy = "" if share is None else f"; other processes used {100 * share:.1f}% of the CPU during the run"
    groups: dict = {}
    for t in targets:
        groups.setdefault((t["op"], t["metric"], t["target"]), []).append(t)
    rows = ["| op | metric | target | hit | measured |", "|---|---|---:|---:|---:|"]
    for (op, metric, target), ts in groups.items():
        hits = sum(t["hit"] for t in ts)
        rows.append(f"| {op} | {metric} | {target} | {hits} of {len(ts)} | {_range(ts)} |")
    hits = sum(t["hit"] for t in targets)
    lines = [f"Measured by `make bench` ({meta['suite']} suite) on {meta['cpu_model']}, {meta['num_threads']} "
             f"threads, torch {meta['torch_version']}{busy}: {hits} of {len(targets)} targets hit. The targets "
             f"size by size, and every other table, are in `bench/results/{device}.md`.", "", *rows, ""]
    return "\n".join(lines)


def bench(spec: str) -> str:
    """DEVICE:summary: the summary of the targets of bench/results/DEVICE.json;
    DEVICE:SECTION: the first table under the heading "## SECTION..." of
    bench/results/DEVICE.md."""
    device, section = spec.split(":", 1)
    if section == "summary":
        return summary(device)
    lines = (BENCH / f"{device}.md").read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(f"## {section}"))
    return _table(lines, start) + "\n"


def render(readme: str) -> str:
    def body(m) -> str:
        kind, name = m.group(2), m.group(3)
        return m.group(1) + (experiment(name) if kind == "experiment" else bench(name)) + m.group(5)

    return BLOCK.sub(body, readme)


def main(argv) -> int:
    current = README.read_text()
    new = render(current)
    if "--check" in argv:
        if new != current:
            print("README.md: its tables differ from experiments/results/*.md or bench/results/*.md; "
                  "run python tools/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
