"""robustops.experiments.symmetry: the tiny run's per-seed record (the symmetric
model's invariance to quarter turns, the checkpoint picked on the validation split)
and summarize's verdict on hand-made seeds."""

from __future__ import annotations

import pytest

from robustops import experiments
from robustops.experiments import symmetry
from robustops.experiments.common import Settings


def test_tiny_run_records_both_models(tmp_path):
    result = experiments.run("symmetry", Settings(scale="tiny", out=str(tmp_path), progress=False))
    assert result.data["rows"] == [symmetry.STANDARD, symmetry.SYMMETRIC]
    seed = result.data["seeds"]["0"]
    sym = seed["models"][symmetry.SYMMETRIC]
    # quarter turns: the symmetric model's accuracy is its upright accuracy, by construction
    assert sym["rotated_p4"] == sym["test"]
    by_angle = dict(zip(result.data["angles"], sym["by_angle"]))
    assert by_angle[0] == by_angle[90] == by_angle[180] == by_angle[270] == sym["test"]
    for name, m in seed["models"].items():
        assert f"| {name} |" in result.table
        assert len(m["history"]["test"]) == len(m["history"]["validation"]) == result.data["epochs"]
        assert 1 <= m["picked_epoch"] <= result.data["epochs"]
        # the kept checkpoint is the picked epoch's: its test accuracy is that epoch's
        assert m["test"] == m["history"]["test"][m["picked_epoch"] - 1]
    assert "by construction" in result.table


def _seed_run(standard, symmetric):
    """A per-seed dict as symmetry.run_seed returns it: (test, rotated) accuracies."""
    def model(test, rot, params):
        return {"history": {"epoch": [1, 2], "validation": [0.5, 0.6], "test": [0.5, test], "rotated": [0.2, rot]},
                "picked_epoch": 2, "test": test, "rotated": rot, "rotated_p4": test, "by_angle": [test] * 24,
                "parameters": params}

    return {"models": {symmetry.STANDARD: model(*standard, 1000), symmetry.SYMMETRIC: model(*symmetric, 100)},
            "epochs": 2, "width": 16, "angles": symmetry.ANGLES, "training_images": 90, "validation_images": 10,
            "test_images": 50}


def test_summarize_verdicts_from_hand_made_seeds():
    settings = Settings(scale="quick", seeds=3, out="unused")
    # more accurate rotated, 0.5 points lower upright: reproduced
    runs = [_seed_run((0.98, 0.30 + s), (0.975 + s / 5, 0.55)) for s in (0.0, 0.01, 0.02)]
    result = symmetry.summarize(settings, runs)
    assert result.verdict.value == "reproduced"
    assert result.verdict.parts[1].differences == pytest.approx([-0.005, -0.003, -0.001])
    assert "| symmetry-enforced CNN | 100 | 0.9770 ± 0.0020 | 0.5500 ± 0.0000 |" in result.table
    # 3 points lower upright: partly reproduced, naming the upright part
    runs = [_seed_run((0.98, 0.30 + s), (0.95 + s / 10, 0.55)) for s in (0.0, 0.01, 0.02)]
    result = symmetry.summarize(settings, runs)
    assert result.verdict.value == "partly reproduced"
    assert [p.holds for p in result.verdict.parts] == [True, False]
    # less accurate rotated and upright: not reproduced
    runs = [_seed_run((0.98, 0.50 + s), (0.9, 0.45)) for s in (0.0, 0.01, 0.02)]
    assert symmetry.summarize(settings, runs).verdict.value == "not reproduced"
