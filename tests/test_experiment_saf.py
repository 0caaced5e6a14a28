"""robustops.experiments.saf: the tiny run records every network's errors and PSNRs in
the Table 2 layout; its evaluation helpers against the attack and the curves they
stand for, and on stub networks whose errors are known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustops import experiments
from robustops.attacks import FGSMaxL1
from robustops.curves import nonsense_rate
from robustops.experiments import saf
from robustops.experiments.common import Settings
from robustops.nn import HybridLoss


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("saf")
    return experiments.run("saf", Settings(scale="tiny", out=str(out), progress=False)), out


def test_tiny_run_records_every_network(tiny):
    result, out = tiny
    keys = [f"{b:g}" for b in saf.BETAS]
    models = result.data["models"]
    assert list(models) == list(saf.MODELS) and len(models) == 9
    for name, d in models.items():
        assert f"| {name} |" in result.table
        errors = [d["clean"], d["nonsense"]] + [d[w][k] for w in ("adversarial", "noisy", "adversarial_rejected",
                                                                  "noisy_rejected") for k in keys]
        assert all(0.0 <= e <= 1.0 for e in errors), (name, errors)
        if d["training"] != "mean":  # only the mean-trained networks have a nonsense class to reject into
            assert all(d[w][k] == 0.0 for w in ("adversarial_rejected", "noisy_rejected") for k in keys)
        adv = [d["adversarial_psnr"][k] for k in keys]
        if adv[0] is not None:  # None: the attack changed no image
            assert all(math.isfinite(p) for p in adv) and adv[0] > adv[1] > adv[2], (name, adv)
    noisy = [result.data["noisy_psnr"][k] for k in keys]
    assert all(math.isfinite(p) for p in noisy) and noisy[0] > noisy[1] > noisy[2]
    assert "PSNR" in result.table and f"{noisy[0]:.1f} dB" in result.table
    assert isinstance(result.holds, bool)
    best = result.data["comparisons"]["best symmetric network"]
    assert best in ("RBF", "mReLU")
    assert (out / "saf.png").stat().st_size > 0


def _digit_like(n=6, side=16, seed=0):
    """Images with exact 0 and 1 pixels (where the attack's clamp bites) and values between."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g)
    x[:, :, : side // 2] = (x[:, :, : side // 2] > 0.5).float()
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("kind", ["plain", "rbf"])
def test_adversarial_direction_gives_the_attack_at_every_beta(kind):
    torch.manual_seed(0)
    model = saf._build(kind, (1, 16, 16), 10)
    loss_fn = None if kind == "plain" else HybridLoss(reduction="none")
    x, y = _digit_like()
    direction, zero = saf._adversarial_direction(model, x, y, loss_fn)
    assert set(direction.unique().tolist()) <= {-1.0, 0.0, 1.0} and zero.shape == (len(x),)
    for beta in (0.1, 0.3):
        expected = FGSMaxL1(model, beta, loss_fn=loss_fn)(x, y)
        assert torch.equal((x + beta * direction).clamp(0, 1), expected)


class _Constant(nn.Module):
    """Outputs the same vector for every input (plus 0 * x, so that it has a gradient)."""

    def __init__(self, values):
        super().__init__()
        self.register_buffer("values", torch.tensor(values))

    def forward(self, x):
        return self.values.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]


def test_nonsense_error_of_stub_networks():
    shape = (1, 8, 8)
    sure = _Constant([1.0, 0.0, 0.0])  # RBF-style outputs: confidence 1 on every input
    assert saf._nonsense_error(sure, shape, 50, "identity") == 1.0
    # the same outputs, but class 0 is the nonsense class: everything is rejected
    assert saf._nonsense_error(sure, shape, 50, "identity", nonsense_class=0) == 0.0
    unsure = _Constant([0.4, 0.3, 0.2])  # top confidence 0.4 < 0.5: rejected
    assert saf._nonsense_error(unsure, shape, 50, "identity") == 0.0
    # without a nonsense class it is 1 - robustops.curves.nonsense_rate, on the same noise images
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        net[1].weight.mul_(3)  # softmax confidences on both sides of 0.5
    rate = nonsense_rate(net, shape, n=300, threshold=saf.THRESHOLD, output="softmax", seed=5)
    assert 0.2 < rate < 0.8
    assert saf._nonsense_error(net, shape, 300, "softmax", seed=5) == pytest.approx(1 - rate)


def test_evaluate_at_beta_zero_and_rejections():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(40, 1, 8, 8)
    y = torch.randint(0, 10, (40,))
    noise = torch.rand(x.shape) * 2 - 1
    r = saf._evaluate(net, x, y, [0.0, 0.5], "softmax", None, None, 20, noise, seed=0)
    assert r["adversarial"]["0"] == r["noisy"]["0"] == r["clean"]  # beta = 0 leaves every image as it is
    assert r["adversarial_psnr"]["0"] is None and math.isfinite(r["adversarial_psnr"]["0.5"])
    assert r["adversarial"]["0.5"] >= r["clean"]
    # a network that rejects everything (its nonsense class 10 always wins) errs on every digit image
    reject = _Constant([0.0] * 10 + [1.0])
    r = saf._evaluate(reject, x, y, [0.2], "identity", HybridLoss(reduction="none"), 10, 20, noise, seed=0)
    assert r["clean"] == r["adversarial"]["0.2"] == r["noisy"]["0.2"] == 1.0
    assert r["adversarial_rejected"]["0.2"] == r["noisy_rejected"]["0.2"] == 1.0
    assert r["nonsense"] == 0.0
