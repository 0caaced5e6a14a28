"""bench: the microbenchmark suite (``python -m bench.run``, what ``make bench`` runs)
as an experiment, so that one command runs everything: every op against its
pure-PyTorch reference and the training steps against plain ones, with the suite's
speed targets.

The suite lives in the source tree (``bench/``, next to the ``robustops`` package),
not in the installed package: it ships with the source checkout only. This
experiment runs it as ``make bench`` does, ``python -m bench.run`` in a subprocess
(this interpreter) whose working directory is the checkout: the working directory,
or the checkout robustops was installed from in editable mode. The suite's output
goes to this process's stdout and stderr as it runs; torch's intra-op threads are
the experiments' --threads (OMP_NUM_THREADS), as they were when it ran in process.
Outside a checkout the experiment says so and runs nothing (``robustops bench`` is
an error there, ``robustops all`` skips it).

Its own report goes to OUT/bench/<device>.{md,json,png}; NAME.md here is the
targets table, NAME.json the targets and the run's metadata, NAME.png the suite's
plot. ``--tiny`` times one op (spp_max) briefly (the tests), ``--quick`` is the
quick suite (``make bench``, about 6 minutes on a 2-core CPU), ``--full`` all sizes
and dtypes.

Claim: each op meets the speed target its issue set against the pure-PyTorch
reference. Judged: every target that was measured is hit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from robustops.experiments.common import ExperimentResult, Settings

CLAIM = "every op meets the speed target its issue set against the pure-PyTorch reference"

NO_CHECKOUT = ("robustops.experiments.bench: the benchmark suite (bench/) ships with the source tree only (a "
               "checkout of robustops), not with the installed package; run this in a checkout (or `make bench` "
               "there)")

# scale -> the suite's command-line options
SCALE = {"tiny": ["--ops", "spp_max", "--dtypes", "float32", "--min-run-time", "0.01", "--no-thp"],
         "quick": [], "full": ["--full"]}


def _source_root() -> Optional[Path]:
    """The source checkout holding bench/run.py: the working directory, or the
    directory above an editable install of robustops."""
    import robustops

    for root in (Path.cwd(), Path(robustops.__file__).resolve().parent.parent):
        if (root / "bench" / "run.py").is_file() and (root / "bench" / "__init__.py").is_file():
            return root
    return None


def _suite_command(settings: Settings, out: Path) -> List[str]:
    """``python -m bench.run`` with the options of the scale, the output directory
    (absolute: the suite runs in the checkout) and the device."""
    return [sys.executable, "-m", "bench.run", *SCALE[settings.scale], "--out", str(out.resolve()),
            "--device", settings.device]


def _run_suite(root: Path, command: List[str], threads: int) -> int:
    """Run the suite in ``root``, its output on this process's stdout and stderr, on
    ``threads`` intra-op threads; its exit status (not 0: a check failed, or the suite
    could not run)."""
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run(command, cwd=root, env=env).returncode


def _targets_table(targets: List[dict]) -> str:
    rows = ["| op | metric | dtype | size | measured | target | result |", "|---|---|---|---|---:|---|---|"]
    for t in targets:
        measured = "not measured" if t["value"] is None else f"{t['value']:.2f}"
        result = {True: "hit", False: "missed", None: "-"}[t["hit"]]
        rows.append(f"| {t['op']} | {t['metric']} | {t['dtype']} | {t['size']} | {measured} | {t['target']} | "
                    f"{result} |")
    if not targets:
        rows.append("| (no target among the ops run) | | | | | | |")
    return "\n".join(rows)


def run(settings: Settings) -> ExperimentResult:
    root = _source_root()
    if root is None:
        raise RuntimeError(NO_CHECKOUT)
    out = Path(settings.out) / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report = out / f"{settings.device}.json"
    report.unlink(missing_ok=True)  # a failed run must not leave an earlier run's record to read
    command = _suite_command(settings, out)
    code = _run_suite(root, command, settings.threads)
    record = json.loads(report.read_text()) if report.is_file() else None
    if code != 0:
        if record is not None and record.get("errors"):
            raise RuntimeError(f"robustops.experiments.bench: the suite failed its correctness checks: "
                               f"{record['errors']}")
        raise RuntimeError(f"robustops.experiments.bench: `python {' '.join(command[1:])}` in {root} exited with "
                           f"status {code} (its output above says why)")
    if record is None:
        raise RuntimeError(f"robustops.experiments.bench: the suite wrote no {report}")
    targets = record["targets"]
    measured = [t for t in targets if t["hit"] is not None]
    hits = sum(bool(t["hit"]) for t in measured)
    holds = bool(measured) and hits == len(measured)
    table = (f"{hits} of {len(measured)} measured targets hit ({settings.scale} suite on {settings.device}; the "
             f"suite's full report: {out.name}/{settings.device}.md).\n\n" + _targets_table(targets))
    png = out / f"{settings.device}.png"

    def plot(path: Path) -> None:
        if png.is_file():
            shutil.copyfile(png, path)
        else:  # the suite draws no plot without forward cases: an empty figure says so
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 2))
            ax.text(0.5, 0.5, "the suite drew no plot for these ops", ha="center", va="center")
            ax.axis("off")
            fig.savefig(path, dpi=100)
            plt.close(fig)

    return ExperimentResult("bench", CLAIM, table,
                            {"targets": targets, "hits": hits, "measured": len(measured),
                             "metadata": record["metadata"], "warnings": record.get("warnings", []),
                             "report": str(out / f"{settings.device}.md")}, holds, plot)
