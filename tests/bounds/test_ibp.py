"""robustops.bounds: IBP through every supported layer type against the reference
(lower/upper form), soundness by sampling, batched sub-perturbations, the certified
loss and schedules, torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import robustops
from robustops.bounds import BoundedModule, certified_loss, input_interval
from robustops.reference import bounds as ref

F64 = dict(rtol=1e-10, atol=1e-10)


def _nets():
    torch.manual_seed(0)
    nets = {
        "conv-relu-maxpool-bn": nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3, padding=1, groups=1), robustops.nn.MReLU(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(5, 8), robustops.nn.RBF(), nn.Dropout(0.1), nn.Linear(8, 6)),
        "mlp-bn1d": nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Linear(16, 12), robustops.nn.MReLU(), nn.Identity(), nn.Linear(12, 6)),
        "rbf-output": nn.Sequential(nn.Conv2d(2, 3, 3, dilation=2), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(3 * 4 * 4, 6), robustops.nn.RBF()),
    }
    for net in nets.values():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):  # non-trivial statistics
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(-1.5, 1.5)  # negative scales too
        net.double().eval()
    return nets


def _data(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 2, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 6, (n,), generator=g)


@pytest.mark.parametrize("name", list(_nets()))
def test_ibp_matches_reference_and_is_sound(name):
    net = _nets()[name]
    bounded = BoundedModule(net)
    x, y = _data()
    for eps in (0.01, 0.05):
        c, r = input_interval(x, eps)
        layers = [m for _, m in bounded.layers]
        oc, orr = bounded.interval(c, r)
        lo, hi = ref.ibp(layers, c - r, c + r)
        assert_close(oc - orr, lo, **F64)
        assert_close(oc + orr, hi, **F64)
        margins = bounded.ibp_margins(x, y, eps)
        assert_close(margins, ref.ibp_margins(layers, c - r, c + r, y), **F64)
        # sampled points, corners included, never leave the bounds
        for k in range(30):
            sign = torch.randint(0, 2, x.shape, dtype=torch.float64) * 2 - 1
            point = c + r * (sign if k % 2 else torch.rand_like(x) * 2 - 1)
            z = net(point)
            assert ((z >= oc - orr - 1e-9) & (z <= oc + orr + 1e-9)).all()
            true_margins = z.gather(1, y[:, None]) - z
            keep = torch.ones_like(z, dtype=torch.bool)
            keep[torch.arange(len(y)), y] = False
            assert (true_margins[keep].reshape(len(y), -1) >= margins - 1e-9).all()


@pytest.mark.parametrize("name", list(_nets()))
def test_radius_zero_is_the_forward_pass(name):
    net = _nets()[name]
    x, y = _data()
    c, r = BoundedModule(net).interval(x, torch.zeros_like(x))
    assert_close(c, net(x), **F64)
    assert (r == 0).all()


def test_input_domain_and_per_sample_eps():
    x = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    c, r = input_interval(x, 0.2)
    assert_close(c - r, torch.tensor([[0.0, 0.3, 0.8]], dtype=torch.float64))
    assert_close(c + r, torch.tensor([[0.2, 0.7, 1.0]], dtype=torch.float64))
    c, r = input_interval(x.repeat(2, 1), torch.tensor([0.0, 0.1], dtype=torch.float64), None, None)
    assert_close(r, torch.tensor([[0.0] * 3, [0.1] * 3], dtype=torch.float64))


def test_batched_subperturbations_equal_separate_passes():
    net = _nets()["conv-relu-maxpool-bn"]
    bounded = BoundedModule(net)
    x, y = _data()
    n, eps = 4, 0.04
    out = certified_loss(bounded, x, y, eps, n=n, weights="gm", kappa=0.3)
    separate = torch.stack([
        robustops.bounds.robust_cross_entropy(bounded.ibp_margins(x, y, (i + 1) * eps / n)) for i in range(n)])
    assert_close(out.per_radius, separate, **F64)
    w = 1 / torch.arange(1.0, n + 1, dtype=torch.float64)
    assert_close(out.robust, (w / w.sum() * separate).sum(), **F64)
    assert_close(out.loss, 0.3 * out.clean + 0.7 * out.robust, **F64)
    uniform = certified_loss(bounded, x, y, eps, n=n, weights="uniform")
    assert_close(uniform.robust, separate.mean(), **F64)
    # N = 1: plain IBP training
    one = certified_loss(bounded, x, y, eps, n=1, kappa=0.0)
    assert_close(one.loss, robustops.bounds.robust_cross_entropy(bounded.ibp_margins(x, y, eps)), **F64)
    assert one.clean is None  # kappa = 0: no clean pass
    logits = net(x)
    given = certified_loss(bounded, x, y, eps, n=1, kappa=0.0, logits=logits)
    assert_close(given.clean, torch.nn.functional.cross_entropy(logits, y), **F64)
    assert_close(given.loss, one.loss, **F64)
    one.loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_verified_error():
    net = _nets()["mlp-bn1d"]
    bounded = BoundedModule(net)
    x, y = _data(20)
    clean = robustops.bounds.clean_error(net, x, y)
    assert robustops.bounds.verified_error(bounded, x, y, 0.0) == pytest.approx(clean)
    errors = [robustops.bounds.verified_error(bounded, x, y, e) for e in (0.0, 0.01, 0.1, 1.0)]
    assert errors == sorted(errors) and errors[-1] == 1.0


def test_schedules():
    lin = robustops.bounds.linear_schedule
    assert [lin(s, 10, 20, 0.0, 1.0) for s in (0, 10, 15, 20, 30)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    smooth = robustops.bounds.smoothed_schedule
    values = [smooth(s, 0, 100, 0.0, 0.3) for s in range(0, 121)]
    assert values[0] == 0.0 and values[100] == pytest.approx(0.3) and values[120] == pytest.approx(0.3)
    assert all(b >= a for a, b in zip(values, values[1:]))  # monotone
    # power growth below the mid point, slope continuous at it
    assert values[10] < 0.3 * 10 / 100
    slopes = [values[s + 1] - values[s] for s in (23, 24, 25, 26)]
    assert max(slopes) - min(slopes) < 0.2 * max(slopes)


def test_compile_of_a_bound_computation():
    net = _nets()["conv-relu-maxpool-bn"].float()
    bounded = BoundedModule(net)
    x, y = _data()
    x = x.float()
    f = torch.compile(lambda a, b: bounded.ibp_margins(a, b, 0.03), fullgraph=True)
    assert_close(f(x, y), bounded.ibp_margins(x, y, 0.03), rtol=1e-5, atol=1e-5)


def test_bad_input():
    net = _nets()["mlp-bn1d"]
    bounded = BoundedModule(net)
    x, y = _data()
    with pytest.raises(ValueError, match="must be >= 0"):
        bounded.ibp_margins(x, y, -0.1)
    with pytest.raises(ValueError, match="must be >= 0"):
        bounded.ibp_margins(x, y, torch.tensor([0.1, -0.1, 0, 0, 0, 0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"'eps' must be a number or have shape \(6,\)"):
        bounded.ibp_margins(x, y, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="lower > upper"):
        bounded.ibp_margins(x, y, 0.1, lower=1.0, upper=0.0)
    with pytest.raises(ValueError, match=r"'y' must have shape \(6,\)"):
        bounded.ibp_margins(x, y[:3], 0.1)
    with pytest.raises(TypeError, match=r"unsupported layer '1' \(Tanh\)"):
        BoundedModule(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return x + self.fc(x)

    with pytest.raises(TypeError, match="unsupported operation 'add'"):
        BoundedModule(Residual())
    with pytest.raises(ValueError, match="'kappa' must be in"):
        certified_loss(bounded, x, y, 0.1, kappa=2.0)
    with pytest.raises(ValueError, match="'kind' must be 'gm' or 'uniform'"):
        certified_loss(bounded, x, y, 0.1, weights="exp")
