"""robustops.experiments: every experiment runs in its tiny configuration (a few
batches) and writes its table, JSON and plot; the command line and bad names."""

from __future__ import annotations

import json

import pytest

from robustops import experiments
from robustops.experiments.__main__ import main
from robustops.experiments.common import Settings


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_every_experiment_runs_tiny(name, tmp_path):
    result = experiments.run(name, Settings(scale="tiny", out=str(tmp_path), progress=False))
    assert (tmp_path / f"{name}.md").read_text().startswith(f"# {name}")
    assert result.table in (tmp_path / f"{name}.md").read_text()
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["settings"]["scale"] == "tiny" and record["settings"]["seed"] == 0
    assert record["results"] and record["claim"] == result.claim
    assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_symmetry_records_invariance(tmp_path):
    result = experiments.run("symmetry", Settings(scale="tiny", out=str(tmp_path), progress=False))
    sym = result.data["models"]["symmetry-enforced CNN"]
    # exact invariance to quarter turns: the same accuracy on the 90-degree rotated set, and
    # at 0, 90, 180 and 270 degrees
    assert sym["rotated_p4"] == sym["test"]
    by_angle = dict(zip(result.data["angles"], sym["by_angle"]))
    assert by_angle[0] == by_angle[90] == by_angle[180] == by_angle[270] == sym["test"]
    assert len(sym["history"]["test"]) == result.data["epochs"]


def test_command_line(tmp_path, capsys):
    assert main(["symmetry", "--tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "| model |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["nonsense"])
    with pytest.raises(ValueError, match="unknown experiment 'nonsense'"):
        experiments.run("nonsense")
