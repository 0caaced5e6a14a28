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
    # 12x12 images (PASS's SSIM window needs 11x11); z = (p0 - p1, p1 - p0, -1) of the first
    # two pixels: class 0 when p0 > p1
    m = nn.Linear(144, 3).double()
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0, :2] = torch.tensor([1.0, -1.0])
        m.weight[1, :2] = torch.tensor([-1.0, 1.0])
        m.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    return nn.Sequential(nn.Flatten(), m)


def test_evaluate_on_a_hand_computed_model():
    x = torch.full((3, 1, 12, 12), 0.5, dtype=torch.float64)
    x.view(3, 144)[:, :2] = torch.tensor([[0.7, 0.3], [0.6, 0.5], [0.2, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])  # the third is misclassified: not attacked
    r = bang.evaluate(_linear(), x, y, grid=16, refine=30)
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["fgs_success"] == 1.0 and r["hc1_success"] == 1.0
    # FGS moves (p0, p1) by (-eps, +eps), nothing else: the label flips at eps = (p0 - p1) / 2
    assert r["fgs_linf"] == pytest.approx((0.2 + 0.05) / 2, abs=1e-6)
    # the gradient is never blank here; the top-2 logit gaps of the three images: 0.8, 0.2, 0.4
    assert r["fgs_blank_gradient"] == 0.0
    assert r["top2_gap_quantiles"][2] == pytest.approx(0.4)
    assert 0 < r["fgs_pass"] <= 1 or r["fgs_pass"] is None
    # HC1: the hot class is 1 (z_1 > z_2 for both), the same direction and steps
    assert r["hc1_linf"] == pytest.approx((0.2 + 0.05) / 2, abs=1e-6)
    assert r["hc1_pass"] is None or 0 < r["hc1_pass"] <= 1


def test_tiny_run_records_every_row(tmp_path):
    result = experiments.run("bang", Settings(scale="tiny", out=str(tmp_path), progress=False))
    runs = result.data["seeds"]
    assert list(runs) == ["0"]
    rows = runs["0"]["rows"]
    assert list(rows) == ["R0", "B1"] and result.data["judged"] == "B1"
    assert rows["R0"]["eps"] is None and (rows["B1"]["eps"], rows["B1"]["beta"]) == (0.815, 1.0)
    for name, r in rows.items():
        assert f"| {name} |" in result.table
        assert len(r["history"]["noise_flip"]) == len(runs["0"]["checkpoints"])
        assert len(r["noise_flip"]) == len(runs["0"]["sigmas"])
        for key in ("accuracy", "fgs_success", "hc1_success", "fgs_blank_gradient"):
            assert math.isnan(r[key]) or 0 <= r[key] <= 1
    assert result.verdict is not None and len(result.verdict.parts) == 5  # computed, but a tiny run shows none
    assert "smoke test" in (tmp_path / "bang.md").read_text()


def test_quick_and_full_follow_the_paper():
    """--full is the paper's schedule (10,000 iterations, Table 1's rows); --quick the same
    schedule shortened ten times, with the paper's headline rows; CIFAR-10 its own."""
    from robustops.experiments.common import Settings as S

    assert round(bang.CONFIG["mnist"]["iterations"] * bang.SCALE["full"][0]) == 10000
    assert round(bang.CONFIG["mnist"]["iterations"] * bang.SCALE["quick"][0]) == 1000
    assert list(bang._rows(S(scale="full"))) == ["R0", "B0", "B1", "B4"]
    assert list(bang._rows(S(scale="quick"))) == ["R0", "B1", "B4"]
    assert bang.CONFIG["mnist"]["rows"]["B1"] == (0.815, 1.0)
    assert bang._config(S(data="cifar10"))["rows"]["B0"] == (0.855, 0.4)
    assert bang._config(S(data="cifar10"))["ratio"] == 0.5 and bang._config(S())["ratio"] == 1.0
    assert bang._sigmas(S(scale="full"))[-1] == pytest.approx(100 / 255)
    assert bang._sigmas(S(scale="full", data="cifar10"))[-1] == pytest.approx(40 / 255)


def _run(r0: dict, b1: dict) -> dict:
    keys = ("accuracy", "fgs_success", "hc1_linf", "hc1_pass")
    return {"rows": {"R0": {"eps": None, "beta": None, **dict(zip(keys, r0[:4])), "noise_flip": [r0[4]],
                            **_rest()},
                     "B1": {"eps": 0.815, "beta": 1.0, **dict(zip(keys, b1[:4])), "noise_flip": [b1[4]], **_rest()}},
            "sigmas": [100 / 255], "iterations": 10, "checkpoints": [10], "attacked_images": 5, "noise_images": 5,
            "noise_draws": 2}


def _rest() -> dict:
    return {"fgs_pass": 0.5, "fgs_linf": 0.1, "fgs_blank_gradient": 0.0, "hc1_success": 1.0,
            "top2_gap_quantiles": [1, 2, 3, 4, 5], "history": {"accuracy": [0.9], "noise_flip": [[0.1]]}}


def test_verdict_on_hand_made_seeds():
    """The paper's five parts, computed from per-seed results made by hand."""
    settings = Settings(scale="quick")
    # BANG as the paper: FGS rate falls, HC1 L-inf rises, PASS falls, fewer flips, same accuracy
    paper_like = [_run((0.99, 0.9 + d, 0.48, 0.75, 0.2), (0.99 + d / 10, 0.02 + d, 0.79 - d, 0.49, 0.03))
                  for d in (0.0, 0.01, -0.01)]
    v = bang.summarize(settings, paper_like).verdict
    assert v.value == "reproduced", v.sentence
    # nothing changes but a lower FGS rate: partly, and the sentence names the part that holds
    fgs_only = [_run((0.99, 0.9 + d, 0.48, 0.75, 0.2), (0.99, 0.5 + d, 0.48, 0.75, 0.2)) for d in (0.0, 0.01, -0.01)]
    v = bang.summarize(settings, fgs_only).verdict
    assert v.value == "partly reproduced" and "holds: FGS succeeds less often" in v.sentence
    assert [p.holds for p in v.parts] == [True, False, False, False, True]
    # BANG loses 5 points of accuracy and helps nothing: not reproduced
    worse = [_run((0.99, 0.9, 0.48, 0.75, 0.2), (0.94 + d, 0.95 + d, 0.40, 0.80, 0.3)) for d in (0.0, 0.01, 0.02)]
    assert bang.summarize(settings, worse).verdict.value == "not reproduced"


def test_bench_needs_the_source_tree(tmp_path, monkeypatch):
    from robustops.experiments import bench

    monkeypatch.setattr(bench, "_source_root", lambda: None)
    with pytest.raises(RuntimeError, match="ships with the source tree"):
        experiments.run("bench", Settings(scale="tiny", out=str(tmp_path), progress=False))
