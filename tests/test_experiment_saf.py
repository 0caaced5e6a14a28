"""robustops.experiments.saf: the tiny run records every network of the paper's
variants over its strengths; the attack direction against FGSMaxL1; the verdict on
hand-made per-seed results."""

from __future__ import annotations

import math

import pytest
import torch

from robustops import experiments
from robustops.attacks import FGSMaxL1
from robustops.curves import eq10_direction
from robustops.experiments import saf
from robustops.experiments.common import Settings
from robustops.nn import HybridLoss


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("saf")
    return experiments.run("saf", Settings(scale="tiny", out=str(out), progress=False)), out


def test_the_paper_variants():
    assert saf.units(Settings()) == saf.MODELS and len(saf.MODELS) == 15
    for activation in ("plain", "RBF", "mReLU"):
        for tricks in ("", "-r", "-m", "-r-m", "-a"):
            assert f"{activation}{tricks}" in saf.MODELS
    assert saf.HEADLINE == ("plain", "mReLU-r-m")
    assert len(saf.PAPER["mnist"]["betas"]) == 12 and saf.PAPER["mnist"]["betas"][-1] == 0.5
    for what in ("adversarial", "noisy"):  # clean + one per strength
        assert all(len(row) == 13 for row in saf.PAPER["mnist"][what].values())


def test_tiny_run_records_every_network(tiny):
    result, out = tiny
    betas = saf.PAPER["mnist"]["betas"]
    run = result.data["seeds"]["0"]
    assert list(run) == saf.MODELS
    for name, d in run.items():
        assert f"| {name} |" in result.table
        for what in ("adversarial", "noisy", "adversarial_rejected", "noisy_rejected"):
            assert len(d[what]) == len(betas) and all(0.0 <= e <= 1.0 for e in d[what]), (name, what)
        assert len(d["nonsense"]) == len(betas) + 1 and all(0.0 <= e <= 1.0 for e in d["nonsense"])
        if "m" not in d["tricks"].split("-"):  # only mean-trained networks have a class to reject into
            assert d["clean_rejected"] == 0.0 and not any(d["adversarial_rejected"] + d["noisy_rejected"])
        noisy = d["noisy_psnr"]
        assert all(a > b for a, b in zip(noisy, noisy[1:])), (name, noisy)
        assert 1 <= d["best_epoch"] <= len(d["validation_error"])
    # the PSNR row pins sigma = beta: about 20 dB at 0.1, higher where the clamp at 0 and 1 bites
    assert 19.0 < run["plain"]["noisy_psnr"][betas.index(0.1)] < 24.0
    assert result.verdict is not None and len(result.verdict.parts) == 6
    assert "smoke test" in (out / "saf.md").read_text()
    assert (out / "saf.png").stat().st_size > 0


def _digit_like(n=6, side=16, seed=0):
    """Images with exact 0 and 1 pixels (where the attack's clamp bites) and values between."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g)
    x[:, :, : side // 2] = (x[:, :, : side // 2] > 0.5).float()
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("kind,outputs", [("plain", 10), ("rbf", 10), ("mrelu", 11)])
def test_direction_gives_the_attack_at_every_beta(kind, outputs):
    """One direction per image gives FGSMaxL1 at every beta; a mean-trained network (11
    outputs) is attacked towards the ten meaningful classes only."""
    torch.manual_seed(0)
    model = saf._build(kind, (1, 16, 16), outputs)
    loss_fn = None if kind == "plain" else HybridLoss(reduction="none")
    x, y = _digit_like()
    meaningful = list(range(10))
    direction, zero = eq10_direction(model, x, y, loss_fn, meaningful)
    assert set(direction.unique().tolist()) <= {-1.0, 0.0, 1.0} and zero.shape == (len(x),)
    for beta in (0.1, 0.3):
        expected = FGSMaxL1(model, beta, loss_fn=loss_fn, targets=meaningful)(x, y)
        assert torch.equal((x + beta * direction).clamp(0, 1), expected)
    result = FGSMaxL1(model, 0.1, loss_fn=loss_fn, targets=meaningful).evaluate(x, y)
    assert int(result.extra["target"].max()) < 10


def _unit(clean, adv, noisy, nonsense):
    betas = saf.PAPER["mnist"]["betas"]
    return {"clean": clean, "clean_rejected": 0.0, "adversarial": [adv] * len(betas),
            "noisy": [noisy] * len(betas), "nonsense": [nonsense] * (len(betas) + 1),
            "adversarial_rejected": [0.0] * len(betas), "noisy_rejected": [0.0] * len(betas),
            "noisy_psnr": [20.0] * len(betas), "best_epoch": 3}


def test_verdict_on_hand_made_seeds():
    settings = Settings(scale="quick")
    like_paper = [{"plain": _unit(0.01, 0.6 + d, 0.3 + d, 0.98), "mReLU-r-m": _unit(0.012, 0.05 + d, 0.03, 0.0)}
                  for d in (0.0, 0.02, -0.01)]
    v = saf.summarize(settings, like_paper).verdict
    assert v.value == "reproduced", v.sentence
    # symmetric and plain equally good on noise, but a far worse clean error: partly
    partly = [{"plain": _unit(0.01, 0.6 + d, 0.03, 0.98), "mReLU-r-m": _unit(0.2 + d, 0.05, 0.03 + d, 0.0)}
              for d in (0.0, 0.02, -0.01)]
    v = saf.summarize(settings, partly).verdict
    assert v.value == "partly reproduced"
    assert [p.holds for p in v.parts] == [True, True, False, True, True, False]
    assert "Does not hold: mReLU-r-m vs plain: noisy error at beta 0.3 lower" in v.sentence
    table = saf.summarize(settings, like_paper).table
    assert "| adversarial | plain (paper) | 0.009 | 0.013 |" in table
    assert "| adversarial | mReLU-r-m (ours) | 0.012 ± 0.000 | 0.053 ± 0.015 |" in table
    assert not math.isnan(v.parts[0].interval[0])
