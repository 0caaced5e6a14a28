"""The bang experiment: its evaluation on a model whose attacks are known by hand,
and the structure of a tiny run's record."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustops import experiments
from robustops.experiments import bang
from robustops.experiments.common import Settings


def _linear():
    # 8x8 images; z = (p0 - p1, p1 - p0, -1) of the first two pixels: class 0 when p0 > p1
    m = nn.Linear(64, 3).double()
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0, :2] = torch.tensor([1.0, -1.0])
        m.weight[1, :2] = torch.tensor([-1.0, 1.0])
        m.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    return nn.Sequential(nn.Flatten(), m)


def test_evaluate_on_a_hand_computed_model():
    x = torch.full((3, 1, 8, 8), 0.5, dtype=torch.float64)
    x.view(3, 64)[:, :2] = torch.tensor([[0.7, 0.3], [0.6, 0.5], [0.2, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])  # the third is misclassified: not attacked
    r = bang.evaluate(_linear(), x, y, grid=16, refine=30)
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["fgs_success"] == 1.0 and r["hc1_success"] == 1.0
    # FGS moves (p0, p1) by (-eps, +eps), nothing else: the label flips at eps = (p0 - p1) / 2
    assert r["fgs_eps"] == pytest.approx((0.2 + 0.05) / 2, abs=1e-6)
    assert r["fgs_linf"] == pytest.approx(r["fgs_eps"], abs=1e-9)
    # HC1: the hot class is 1 (z_1 > z_2 for both), the same direction and steps
    assert r["hc1_linf"] == pytest.approx((0.2 + 0.05) / 2, abs=1e-6)
    assert r["hc1_pass"] is None or 0 < r["hc1_pass"] <= 1


def test_tiny_run_records_every_model(tmp_path):
    result = experiments.run("bang", Settings(scale="tiny", out=str(tmp_path), progress=False))
    models = result.data["models"]
    assert list(models) == list(bang.MODELS) and bang.JUDGED in models
    for name, r in models.items():
        assert name in result.table
        assert len(r["history"]["noise_flip"]) == result.data["epochs"]
        for key in ("accuracy", "fgs_success", "hc1_success"):
            assert math.isnan(r[key]) or 0 <= r[key] <= 1
    assert models["regular"]["eps"] is None and models[bang.JUDGED]["eps"] == 0.815


def test_bench_needs_the_source_tree(tmp_path, monkeypatch):
    from robustops.experiments import bench

    monkeypatch.setattr(bench, "_source_root", lambda: None)
    with pytest.raises(RuntimeError, match="ships with the source tree"):
        experiments.run("bench", Settings(scale="tiny", out=str(tmp_path), progress=False))
