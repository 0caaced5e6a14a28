"""robustops.experiments.certified: the verified-error helpers on a hand-built network,
the tiny run's per-seed record (checkpoints only after the eps ramp), and summarize's
verdict on hand-made seeds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustops import experiments
from robustops.bounds import BoundedModule
from robustops.experiments import certified
from robustops.experiments.common import Settings


def _linear():
    # two pixels, z = (p0 - p1, p1 - p0): class 0 when p0 > p1, margin 2 (p0 - p1), worst case 2 (p0 - p1) - 4 eps
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        m.bias.zero_()
    return nn.Sequential(nn.Flatten(), m)


def test_verified_error_on_a_linear_model():
    x = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]).view(3, 1, 1, 2)
    y = torch.tensor([0, 0, 0])             # the third is misclassified: never verified
    bounded = BoundedModule(_linear())
    # the gaps p0 - p1 are 0.8 and 0.2: verified while 2 eps < the gap (both bounds are exact here)
    assert certified._verified_error(bounded, x, y, 0.0) == pytest.approx(1 / 3)
    assert certified._verified_error(bounded, x, y, 0.05) == pytest.approx(1 / 3)
    assert certified._verified_error(bounded, x, y, 0.15) == pytest.approx(2 / 3)
    assert certified._verified_error(bounded, x, y, 0.5) == 1.0
    v = certified._verified(bounded, x, y, 0.05)
    assert v["either"].tolist() == [True, True, False]
    assert torch.equal(v["either"], v["ibp"] | v["crown"])
    assert certified._standard_error(bounded.eval(), x, y) == pytest.approx(1 / 3)


def test_tiny_run_records_every_method(tmp_path):
    result = experiments.run("certified", Settings(scale="tiny", out=str(tmp_path), progress=False))
    seed = result.data["seeds"]["0"]
    assert list(seed["methods"]) == list(certified.METHODS) == result.data["methods"]
    # the checkpoint is picked only among the epochs that end after the ramp
    assert seed["ramp_end"] <= seed["steps"]
    for name, m in seed["methods"].items():
        assert f"| {name} (eps_train=" in result.table
        assert seed["first_candidate_epoch"] <= m["picked_epoch"] <= seed["epochs"]
        assert len(m["validation_scores"]) == seed["epochs"] - seed["first_candidate_epoch"] + 1
        for e in certified.EPS_EVAL:
            ve = m["verified_error"][str(e)]
            assert 0 <= ve <= min(m["verified_error_ibp"][str(e)], m["verified_error_crown"][str(e)]) <= 1
            assert ve >= m["standard_error"]
    assert len(result.verdict.parts) == sum(e < certified.EPS_TRAIN for e in certified.EPS_EVAL)


def _seed_run(crown, gm):
    """A per-seed dict as certified.run_seed returns it: verified errors at EPS_EVAL."""
    def method(errors):
        return {"standard_error": 0.1, "verified_error": dict(zip(map(str, certified.EPS_EVAL), errors)),
                "picked_epoch": 3, "validation_scores": [0.5, 0.4]}

    methods = {"IBP": method([0.5, 0.7, 0.9, 1.0]), "CROWN-IBP": method(crown), "GM-CROWN-IBP": method(gm),
               "GRT-CROWN-IBP": method([0.3, 0.4, 0.8, 1.0])}
    return {"methods": methods, "epochs": 4, "steps": 40, "ramp_end": 24, "first_candidate_epoch": 3,
            "training_images": 90, "validation_images": 10, "test_images": 50}


def test_summarize_verdicts_from_hand_made_seeds():
    settings = Settings(scale="quick", seeds=3, out="unused")
    # GM lower at 0.05 and 0.1 in every seed, higher at 0.2: partly reproduced, naming 0.2
    runs = [_seed_run([0.3 + s, 0.45, 0.7, 0.99], [0.2, 0.35 + s, 0.75 + s, 1.0]) for s in (0.0, 0.01, 0.02)]
    result = certified.summarize(settings, runs)
    assert [p.holds for p in result.verdict.parts] == [True, True, False]
    assert result.verdict.value == "partly reproduced"
    assert "eps_eval 0.2" in result.verdict.sentence.split("Does not hold:")[1]
    assert "| CROWN-IBP (eps_train=0.3) | 0.1000 ± 0.0000 | 0.3100 ± 0.0100 |" in result.table
    assert "the IBP or the CROWN-IBP (beta = 1)" in result.criterion and "36.19" in result.paper
    runs = [_seed_run([0.3, 0.45, 0.8 + s, 0.99], [0.2 + s, 0.35, 0.75, 1.0]) for s in (0.0, 0.01, 0.02)]
    assert certified.summarize(settings, runs).verdict.value == "reproduced"
    runs = [_seed_run([0.3, 0.45, 0.7, 0.99], [0.3 + s, 0.45 + s, 0.7 + s, 1.0]) for s in (-0.01, 0.0, 0.01)]
    assert certified.summarize(settings, runs).verdict.value == "not reproduced"
