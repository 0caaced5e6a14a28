"""robustops.curves: noise curves (sigma 0 is the clean error; a model that ignores its
input never flips; a threshold model's flip rate against its analytic value), attack
curves, nonsense rates, confidence, the table and plot, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustops import curves


class Threshold(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0 (logits +-10)."""

    def forward(self, x):
        s = (x.flatten(1).mean(1) - 0.5) * 1000
        return torch.stack([-s, s], 1)


class Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, 0.1, 0.9]))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 3) + 0 * x.flatten(1)[:, :1]


def test_noise_curve_sigma_zero_and_constant_model():
    x = torch.rand(10, 1, 4, 4)
    y = torch.tensor([2, 2, 0, 1, 2, 2, 2, 0, 2, 1])
    c = curves.noise_curve(Constant(), x, y, [0.0, 0.3, 1.0], draws=7, progress=False)
    assert c.series["flip"] == [0.0, 0.0, 0.0]
    assert c.series["error"] == [0.4] * 3  # the constant model predicts 2 for all: 4 of 10 wrong
    assert c.x == [0.0, 0.3, 1.0]


def test_noise_curve_matches_the_analytic_flip_rate():
    # a 1-pixel image at 0.5 + 0.1 with sign noise of 0.2: the prediction flips exactly when
    # the sign is negative (0.4 < 0.5): half of the draws
    x = torch.full((4, 1, 1, 1), 0.6)
    y = torch.ones(4, dtype=torch.long)
    c = curves.noise_curve(Threshold(), x, y, [0.05, 0.2], draws=2000, kind="sign", seed=1, progress=False)
    assert c.series["flip"][0] == 0.0
    assert abs(c.series["flip"][1] - 0.5) < 0.03
    assert c.series["error"] == c.series["flip"]  # all were correct
    # Gaussian: P(0.6 + 0.2 N < 0.5) = Phi(-0.5) = 0.3085
    g = curves.noise_curve(Threshold(), x, y, [0.2], draws=5000, seed=2, progress=False, batch_size=512)
    assert abs(g.series["flip"][0] - 0.5 * math.erfc(0.5 / math.sqrt(2))) < 0.02
    # the same seed gives the same curve
    again = curves.noise_curve(Threshold(), x, y, [0.2], draws=5000, seed=2, progress=False, batch_size=512)
    assert again.series == g.series


def test_attack_curve_is_monotone_on_a_threshold_model():
    x = torch.full((6, 1, 2, 2), 0.6)
    x[3:] = 0.3
    y = torch.tensor([1, 1, 1, 0, 0, 0])

    class Smooth(nn.Module):
        def forward(self, x):
            s = (x.flatten(1).mean(1) - 0.5) * 10
            return torch.stack([-s, s], 1)

    c = curves.attack_curve(Smooth(), x, y, [0.05, 0.15, 0.25], progress=False)
    # FGSM moves every pixel by eps towards the boundary: flips at eps > 0.1 (class 1) and > 0.2 (class 0)
    assert c.series["success rate"] == [0.0, 0.5, 1.0]
    assert c.series["error"] == [0.0, 0.5, 1.0]
    assert "success rate" in str(c)


def test_nonsense_rate_and_confidence():
    x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(curves.confidence(x), torch.tensor([math.exp(2) / (math.exp(2) + 2), 1 / 3]))
    assert torch.equal(curves.confidence(torch.tensor([[0.2, 0.7]]), "identity"), torch.tensor([0.7]))
    # a constant softmax confidence of e^0.9 / (e^0.3 + e^0.1 + e^0.9) = 0.5; flagged below the threshold
    with torch.no_grad():
        conf = float(curves.confidence(Constant()(torch.zeros(1, 1)))[0])
    assert curves.nonsense_rate(Constant(), (1, 4, 4), n=50, threshold=conf + 1e-3) == 1.0
    assert curves.nonsense_rate(Constant(), (1, 4, 4), n=50, threshold=conf - 1e-3) == 0.0
    with pytest.raises(ValueError, match="argument 'kind'"):
        curves.nonsense_rate(Constant(), (1, 4, 4), kind="salt")
    with pytest.raises(ValueError, match="argument 'kind'"):
        curves.confidence(x, "max")


def test_curves_restore_the_mode_and_plot(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 2))
    model.train()
    x = torch.rand(5, 1, 2, 2)
    y = torch.zeros(5, dtype=torch.long)
    c = curves.noise_curve(model, x, y, [0.1], draws=3, progress=False)
    assert model.training and model[1].training
    import matplotlib

    matplotlib.use("Agg")
    ax = c.plot()
    ax.figure.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_bad_input():
    x = torch.rand(3, 1, 2, 2)
    y = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="argument 'kind'"):
        curves.noise_curve(Threshold(), x, y, [0.1], kind="pink")
    with pytest.raises(ValueError, match="argument 'draws'"):
        curves.noise_curve(Threshold(), x, y, [0.1], draws=0)
    with pytest.raises(ValueError, match="argument 'sigmas'"):
        curves.noise_curve(Threshold(), x, y, [-0.1])
    with pytest.raises(ValueError, match="argument 'y'"):
        curves.noise_curve(Threshold(), x, y[:2], [0.1])


def test_rotated_accuracy():
    from robustops.data import rotated

    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1, 0, 1])

    class Corner(nn.Module):
        """Class 1 when the top-left pixel is brighter than the bottom-right one."""

        def forward(self, x):
            s = (x[:, 0, 0, 0] - x[:, 0, -1, -1]) * 100
            return torch.stack([-s, s], 1)

    model = Corner()
    xr, _ = rotated(x, mode="p4", seed=3)
    expected = float((model(xr).argmax(1) == y).float().mean())
    assert curves.rotated_accuracy(model, x, y, mode="p4", seed=3) == expected
