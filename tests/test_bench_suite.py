"""The benchmark suite (bench/) and the experiment that runs it (robustops.experiments.bench):
the experiment runs the suite as a subprocess in the checkout, and the suite's modules
render the committed results as they were written (bench/results/cpu.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from robustops import experiments
from robustops.experiments import bench as bench_experiment
from robustops.experiments.common import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _fake_suite(monkeypatch, code=0, record=None):
    """Replace the suite's subprocess: record how it is started, write ``record`` (if any)
    where the suite would, and exit with ``code``."""
    calls = []

    def run(command, **kwargs):
        calls.append((command, kwargs))
        if record is not None:
            out = Path(command[command.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "cpu.json").write_text(json.dumps(record))
        return subprocess.CompletedProcess(command, code)

    monkeypatch.setattr(bench_experiment.subprocess, "run", run)
    return calls


def _record(errors=()):
    target = {"op": "spp_max", "metric": "forward speedup", "dtype": "float32", "size": "2^16", "value": 2.0,
              "target": ">= 1.00", "hit": True}
    return {"targets": [target], "metadata": {"device": "cpu"}, "warnings": [], "errors": list(errors)}


def test_the_experiment_runs_the_suite_as_a_subprocess_in_the_checkout(tmp_path, monkeypatch):
    calls = _fake_suite(monkeypatch, record=_record())
    monkeypatch.chdir(tmp_path)  # a relative --out is the caller's, not the checkout's
    path = list(sys.path)
    result = experiments.run("bench", Settings(scale="tiny", out="out", threads=1, progress=False))
    assert sys.path == path  # the checkout is not put on sys.path
    [(command, kwargs)] = calls
    assert command[:3] == [sys.executable, "-m", "bench.run"]
    assert command[3:-4] == bench_experiment.SCALE["tiny"]
    assert command[-4:] == ["--out", str(tmp_path / "out" / "bench"), "--device", "cpu"]
    assert Path(kwargs["cwd"]) == ROOT and kwargs["env"]["OMP_NUM_THREADS"] == "1"
    assert result.holds and result.data["hits"] == 1 and "1 of 1 measured targets hit" in result.table


def test_a_failing_suite_fails_the_experiment(tmp_path, monkeypatch):
    _fake_suite(monkeypatch, code=1, record=_record(errors=["spp.spp_max: the forward disagrees"]))
    with pytest.raises(RuntimeError, match="failed its correctness checks: .*the forward disagrees"):
        experiments.run("bench", Settings(scale="tiny", out=str(tmp_path), progress=False))
    _fake_suite(monkeypatch, code=2)  # e.g. a bad option: no record, the stale one is gone
    with pytest.raises(RuntimeError, match="bench.run .* exited with status 2"):
        experiments.run("bench", Settings(scale="tiny", out=str(tmp_path), progress=False))


def test_the_suite_lists_its_families(capsys):
    from bench import run

    assert run.main(["--list"]) == 0
    families = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert families == list(run.FAMILIES)


def _structure(markdown: str) -> list[str]:
    """Headings and table header rows: what a report is made of, without the numbers."""
    lines = markdown.splitlines()
    return [line for i, line in enumerate(lines) if line.startswith("#")
            or (line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|(-+:?\|)+", lines[i + 1]))]


def test_the_report_renders_the_committed_results_as_they_were_written():
    from bench.report import markdown_report

    record = json.loads((RESULTS / "cpu.json").read_text())
    written = (RESULTS / "cpu.md").read_text()
    rendered = markdown_report(record)
    assert len(rendered.splitlines()) == len(written.splitlines())
    assert _structure(rendered) == _structure(written)
