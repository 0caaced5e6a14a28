"""robustops.curves: noise curves (sigma 0 is the clean error; a model that ignores its
input never flips; a threshold model's flip rate against its analytic value), attack
curves, nonsense rates, confidence, the table and plot, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
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


class Bands(nn.Module):
    """RBF-style outputs in [0, 1] over 3 classes, class 2 the nonsense class, by the
    mean pixel m: m < 0.3 -> class 0 at 0.9; m > 0.7 -> nonsense at 0.9; between, every
    output 0.3 (top confidence below 0.5)."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        low, high = (m < 0.3).float(), (m > 0.7).float()
        mid = 1 - low - high
        return torch.stack([0.9 * low + 0.3 * mid, 0.3 * mid, 0.9 * high + 0.3 * mid], 1)


def test_nonsense_rate_with_a_nonsense_class():
    model = Bands()
    # nonsense_rate's uniform draw, reproduced (one batch): which band each image falls in
    m = torch.rand((400, 1, 1, 1), generator=torch.Generator().manual_seed(7)).flatten(1).mean(1)
    low, high = int((m < 0.3).sum()), int((m > 0.7).sum())
    assert 80 < low < 160 and 80 < high < 160
    # without a nonsense class only the unsure middle band is flagged (as before)
    rate = curves.nonsense_rate(model, (1, 1, 1), n=400, output="identity", seed=7)
    assert rate == (400 - low - high) / 400
    # with it, the confident nonsense predictions too
    assert curves.nonsense_rate(model, (1, 1, 1), n=400, output="identity", seed=7, nonsense_class=2) == \
        (400 - low) / 400
    # class 0 as the "nonsense" class: the low band instead
    assert curves.nonsense_rate(model, (1, 1, 1), n=400, output="identity", seed=7, nonsense_class=0) == \
        (400 - high) / 400
    # the same rule on given images, per image
    x = torch.tensor([0.1, 0.5, 0.9, 0.29, 0.71]).view(5, 1, 1, 1)
    assert curves.nonsense_flags(model, x, output="identity").tolist() == [False, True, False, False, False]
    assert curves.nonsense_flags(model, x, output="identity", nonsense_class=2, batch_size=2).tolist() == \
        [False, True, True, False, True]
    assert curves.nonsense_flags(model, x, threshold=0.95, output="identity", nonsense_class=2).all()
    for fn in (lambda **k: curves.nonsense_rate(model, (1, 1, 1), n=5, output="identity", **k),
               lambda **k: curves.nonsense_flags(model, x, output="identity", **k)):
        with pytest.raises(ValueError, match=r"argument 'nonsense_class' must be a class of the model, in \[0, 3\), "
                                             "got 3"):
            fn(nonsense_class=3)
        with pytest.raises(ValueError, match="argument 'nonsense_class' must be >= 0"):
            fn(nonsense_class=-1)
        with pytest.raises(TypeError, match="argument 'nonsense_class' must be an int"):
            fn(nonsense_class=2.0)
    with pytest.raises(ValueError, match="nonsense_flags: argument 'x'"):
        curves.nonsense_flags(model, x.long())


def test_gaussian_noisy_is_the_clamped_gaussian_and_reproducible():
    x = torch.rand(6, 1, 5, 5, dtype=torch.float64)
    a = curves.gaussian_noisy(x, 0.3, torch.Generator().manual_seed(4))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(a, (x + 0.3 * noise).clamp(0, 1))
    assert a.shape == x.shape and a.dtype == x.dtype and a.min() >= 0 and a.max() <= 1
    assert bool((a == 0).any()) and bool((a == 1).any())  # sigma 0.3 clamps some values
    assert torch.equal(a, curves.gaussian_noisy(x, 0.3, torch.Generator().manual_seed(4)))
    assert not torch.equal(a, curves.gaussian_noisy(x, 0.3, torch.Generator().manual_seed(5)))
    assert torch.equal(curves.gaussian_noisy(x, 0.0, torch.Generator().manual_seed(4)), x)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert curves.gaussian_noisy(x.to(dtype), 0.1).dtype == dtype


TABLE_2_PSNR = {0.01: 40.00, 0.02: 33.98, 0.05: 26.02, 0.10: 20.00}  # the SAF paper's PSNR row (dB)


def test_gaussian_noisy_psnr_against_the_papers_row():
    from robustops.metrics import psnr

    g = torch.Generator().manual_seed(0)
    # mid-grey-ish images: clamping at sigma <= 0.1 needs a 2.5-sigma draw or more, rare
    grey = 0.25 + 0.5 * torch.rand(256, 1, 28, 28, generator=g, dtype=torch.float64)
    for beta, row in TABLE_2_PSNR.items():
        noisy = curves.gaussian_noisy(grey, beta, g)
        assert abs(float(psnr(grey, noisy).mean()) - row) < 0.05, beta
    # MNIST-like images, every pixel 0 or 1: half of each pixel's noise is clamped away
    # (MSE sigma^2 / 2), so the PSNR is 10 log10(2) = 3.01 dB above the row
    binary = (torch.rand(256, 1, 28, 28, generator=g, dtype=torch.float64) < 0.2).double()
    noisy = curves.gaussian_noisy(binary, 0.1, g)
    assert abs(float(psnr(binary, noisy).mean()) - (20.0 + 10 * math.log10(2))) < 0.05
    # and the noise that survives is one-sided: it brightens the background, darkens the strokes
    assert float((noisy - binary)[binary == 0].min()) == 0 and float((noisy - binary)[binary == 1].max()) == 0


def test_gaussian_nonsense_covers_the_unit_range():
    x = curves.gaussian_nonsense(7, (1, 6, 6), torch.Generator().manual_seed(3))
    assert x.shape == (7, 1, 6, 6) and x.dtype == torch.float32 and x.device.type == "cpu"
    flat = x.flatten(1)
    assert flat.amin(1).tolist() == [0.0] * 7 and flat.amax(1).tolist() == [1.0] * 7  # every image spans [0, 1]
    # it is the Gaussian draw, min-max scaled per image
    z = torch.randn((7, 1, 6, 6), generator=torch.Generator().manual_seed(3)).flatten(1)
    lo, hi = z.amin(1, keepdim=True), z.amax(1, keepdim=True)
    torch.testing.assert_close(flat, (z - lo) / (hi - lo), rtol=0, atol=1e-6)
    assert torch.equal(x, curves.gaussian_nonsense(7, (1, 6, 6), torch.Generator().manual_seed(3)))
    assert not torch.equal(x, curves.gaussian_nonsense(7, (1, 6, 6), torch.Generator().manual_seed(4)))
    for dtype in (torch.float64, torch.float16):
        y = curves.gaussian_nonsense(3, (2, 4), dtype=dtype)
        assert y.dtype == dtype
        assert y.flatten(1).amin(1).tolist() == [0] * 3 and y.flatten(1).amax(1).tolist() == [1] * 3
    assert curves.gaussian_nonsense(0, (1, 3, 3)).shape == (0, 1, 3, 3)
    with pytest.raises(ValueError, match="gaussian_nonsense: argument 'shape' must give images of at least 2 values"):
        curves.gaussian_nonsense(3, (1, 1, 1))
    with pytest.raises(ValueError, match="gaussian_nonsense: argument 'shape' must be >= 1"):
        curves.gaussian_nonsense(3, (1, 0, 4))
    with pytest.raises(TypeError, match="gaussian_nonsense: argument 'shape' must be a sequence of ints"):
        curves.gaussian_nonsense(3, 4)
    with pytest.raises(ValueError, match="gaussian_nonsense: argument 'n' must be >= 0"):
        curves.gaussian_nonsense(-1, (1, 2, 2))
    with pytest.raises(TypeError, match="gaussian_nonsense: argument 'dtype'"):
        curves.gaussian_nonsense(2, (1, 2, 2), dtype=torch.int64)
    with pytest.raises(TypeError, match="gaussian_nonsense: argument 'generator' must be a torch.Generator"):
        curves.gaussian_nonsense(2, (1, 2, 2), generator=3)


def _nonsense_net():
    """4 outputs, the last the nonsense class, its weights scaled up so that the
    unrestricted attack prefers it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    with torch.no_grad():
        model[3].weight[3].mul_(20)
        model[3].bias[3] = -100.0  # and never predicted: its cross-entropy gradient is then about -W_3
    return model


def test_nonsense_samples_are_the_attack_at_every_beta():
    from robustops.attacks import FGSMaxL1

    model = _nonsense_net()
    x = curves.gaussian_nonsense(10, (1, 6, 6), torch.Generator().manual_seed(0))
    betas = [0.0, 0.05, 0.2, 1.0]
    meaningful = range(3)
    pushed = curves.nonsense_samples(model, x, betas, targets=meaningful)
    assert list(pushed) == betas
    assert torch.equal(pushed[0.0], x)
    for beta in betas:
        assert torch.equal(pushed[beta], FGSMaxL1(model, beta, targets=meaningful)(x)), beta
        assert pushed[beta].dtype == x.dtype and pushed[beta].min() >= 0 and pushed[beta].max() <= 1
    # every image went towards a meaningful class, which the unrestricted attack would not choose
    assert set(FGSMaxL1(model, 0.1, targets=meaningful).evaluate(x).extra["target"].tolist()) <= {0, 1, 2}
    assert FGSMaxL1(model, 0.1, targets=range(4)).evaluate(x).extra["target"].tolist() == [3] * 10
    everything = curves.nonsense_samples(model, x, [0.2])
    assert torch.equal(everything[0.2], FGSMaxL1(model, 0.2, targets=range(4))(x))
    assert not torch.equal(everything[0.2], pushed[0.2])
    # batching does not change the images; the loss is the attack's
    assert torch.equal(curves.nonsense_samples(model, x, [0.2], targets=meaningful, batch_size=3)[0.2], pushed[0.2])

    def margin(out, t):
        return F.multi_margin_loss(out, t, reduction="none")

    assert torch.equal(curves.nonsense_samples(model, x, [0.2], loss_fn=margin, targets=meaningful)[0.2],
                       FGSMaxL1(model, 0.2, loss_fn=margin, targets=meaningful)(x))
    assert curves.nonsense_samples(model, x[:0], [0.1])[0.1].shape == (0, 1, 6, 6)
    with pytest.raises(ValueError, match="nonsense_samples: argument 'betas' must be a finite number >= 0"):
        curves.nonsense_samples(model, x, [0.1, -0.1])
    with pytest.raises(ValueError, match="nonsense_samples: argument 'x'"):
        curves.nonsense_samples(model, x.long(), [0.1])
    with pytest.raises(ValueError, match=r"FGSMaxL1: argument 'targets' must hold classes in \[0, 4\)"):
        curves.nonsense_samples(model, x, [0.1], targets=[0, 4])
    with pytest.raises(ValueError, match=r"FGSMaxL1: argument 'x' must hold values in \[0, 1\]"):
        curves.nonsense_samples(model, x * 2, [0.1])


def test_gaussian_noisy_bad_input():
    x = torch.rand(2, 1, 3, 3)
    with pytest.raises(ValueError, match="gaussian_noisy: argument 'sigma' must be a finite number >= 0"):
        curves.gaussian_noisy(x, -0.1)
    with pytest.raises(ValueError, match="gaussian_noisy: argument 'sigma'"):
        curves.gaussian_noisy(x, math.inf)
    with pytest.raises(ValueError, match=r"gaussian_noisy: argument 'x' must hold values in \[0, 1\]"):
        curves.gaussian_noisy(x + 1, 0.1)
    with pytest.raises(TypeError, match="gaussian_noisy: argument 'x' must be a floating-point tensor"):
        curves.gaussian_noisy(x.long(), 0.1)
    with pytest.raises(TypeError, match="gaussian_noisy: argument 'generator' must be a torch.Generator"):
        curves.gaussian_noisy(x, 0.1, generator=0)


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
