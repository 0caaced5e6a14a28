"""robustops.bounds.crown_ibp_loss (loss fusion): an upper bound of the worst
cross-entropy over the ball, through the chord of exp and one CROWN backward row per
sample. Its soundness against sampled, corner and PGD points of random networks of
every layer type is attacked with the margins' in test_soundness.attack_bounds (and
test_p4_bounds for the p4 layers); here: its exact cases, its NaN promise, a
weakened chord caught, and certified_loss(bound="loss")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustops.bounds import (BoundedModule, certified_loss, crown_ibp_loss, crown_ibp_margins,
                              robust_cross_entropy, subperturbation_weights)
from robustops.bounds import crown as crown_mod
from tests.bounds.test_soundness import NETWORKS, attack_network, random_network, random_problem

DT = torch.float64


def _networks(start: int, count: int):
    for seed in range(start, start + count):
        net, shape, classes = random_network(seed, allow_maxpool=False)
        yield (net,) + random_problem(seed, shape, classes)


@pytest.mark.parametrize("seed", range(8))
def test_beta_zero_is_the_ibp_margins_loss(seed):
    (net, x, y, eps, lower, upper), = _networks(400 + seed, 1)
    bounded = BoundedModule(net)
    want = robust_cross_entropy(bounded.ibp_margins(x, y, eps, lower, upper), reduction="none")
    assert torch.equal(crown_ibp_loss(bounded, x, y, eps, lower, upper, beta=0.0), want)


@pytest.mark.parametrize("seed", range(8))
def test_radius_zero_gives_the_clean_loss(seed):
    """At radius 0 every interval is a point: the chord is the tangent, CROWN is exact."""
    (net, x, y, _, lower, upper), = _networks(500 + seed, 1)
    bounded = BoundedModule(net)
    with torch.no_grad():
        want = F.cross_entropy(net(x), y, reduction="none")
    for beta in (0.0, 0.5, 1.0):
        torch.testing.assert_close(crown_ibp_loss(bounded, x, y, 0.0, lower, upper, beta), want,
                                   rtol=1e-10, atol=1e-10)


def test_the_bound_does_not_overflow():
    """Margins of +-1000 (exp overflows in float64 past 709): the shifted form stays
    finite, and a sample with a huge positive margin gets a loss bound near 0."""
    net = nn.Sequential(nn.Linear(2, 3)).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1000.0, 0], [0, 1000.0], [0, 0]], dtype=DT))
        net[0].bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    y = torch.tensor([0, 2])
    loss = crown_ibp_loss(BoundedModule(net), x, y, 0.01)
    assert torch.isfinite(loss).all()
    assert loss[0] < 1e-100 and 990 < loss[1] < 1020


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_give_nan(value):
    (net, x, y, eps, lower, upper), = _networks(600, 1)
    with torch.no_grad():
        net[0].weight.view(-1)[0] = value
    loss = crown_ibp_loss(BoundedModule(net), x, y, 0.05 if isinstance(eps, float) else eps, lower, upper)
    assert torch.isnan(loss).all()


def test_a_weakened_chord_is_caught(monkeypatch):
    """The chord of exp lowered by 0.1% of its intercept: the attack of
    test_soundness finds points whose loss beats the bound."""
    true = crown_mod._exp_chord

    def weak(tl, tu, el):
        slope, icpt = true(tl, tu, el)
        return slope, icpt - 1e-3 * icpt.abs()
    monkeypatch.setattr(crown_mod, "_exp_chord", weak)
    methods = ("crown-ibp-1.0",)
    assert sum(attack_network(seed, methods=methods)[1] for seed in range(NETWORKS)) > 0


@pytest.mark.parametrize("kappa", [0.0, 0.5])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_certified_loss_with_the_loss_bound(kappa, beta):
    """certified_loss(bound="loss") is the weighted crown_ibp_loss of every radius (the
    N radii in one pass), with the clean term; gradients reach every parameter."""
    (net, x, y, eps, lower, upper), = _networks(700, 1)
    bounded = BoundedModule(net)
    n = 3
    out = certified_loss(bounded, x, y, eps, n=n, kappa=kappa, method="crown-ibp", beta=beta, lower=lower,
                         upper=upper, bound="loss")
    eps_t = torch.as_tensor(eps, dtype=DT)
    per_radius = torch.stack([crown_ibp_loss(bounded, x, y, (i + 1) * (eps_t / n) if eps_t.dim() else
                                             (i + 1) * (eps / n), lower, upper, beta).mean() for i in range(n)])
    torch.testing.assert_close(out.per_radius, per_radius, rtol=1e-12, atol=1e-12)
    robust = (subperturbation_weights(n, "gm").to(DT) * per_radius).sum()
    want = robust if kappa == 0 else kappa * F.cross_entropy(net(x), y) + (1 - kappa) * robust
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_with_ibp_the_two_bounds_are_one():
    (net, x, y, eps, lower, upper), = _networks(800, 1)
    bounded = BoundedModule(net)
    a = certified_loss(bounded, x, y, eps, n=2, lower=lower, upper=upper, bound="loss")
    b = certified_loss(bounded, x, y, eps, n=2, lower=lower, upper=upper, bound="margins")
    assert torch.equal(a.loss, b.loss)


def test_both_bounds_hold_and_neither_is_always_tighter():
    """The margins' loss CE(-m, y) and the fused bound against the worst sampled loss:
    both are above it; on random networks each is sometimes the tighter one (the
    margins fit K - 1 rows separately, the fused bound keeps the exp terms' dependence)."""
    fused_wins = margins_wins = 0
    for net, x, y, eps, lower, upper in _networks(900, 24):
        bounded = BoundedModule(net)
        fused = crown_ibp_loss(bounded, x, y, eps, lower, upper)
        margins = robust_cross_entropy(crown_ibp_margins(bounded, x, y, eps, lower, upper), reduction="none")
        fused_wins += int((fused < margins - 1e-9).sum())
        margins_wins += int((margins < fused - 1e-9).sum())
    assert fused_wins > 0 and margins_wins > 0


def test_errors():
    (net, x, y, eps, lower, upper), = _networks(1000, 1)
    bounded = BoundedModule(net)
    with pytest.raises(TypeError, match="crown_ibp_loss: argument 'bounded'"):
        crown_ibp_loss(net, x, y, 0.1)
    with pytest.raises(ValueError, match="crown_ibp_loss: argument 'beta'"):
        crown_ibp_loss(bounded, x, y, 0.1, lower, upper, beta=1.5)
    with pytest.raises(TypeError, match="crown_ibp_loss: argument 'x'"):
        crown_ibp_loss(bounded, x.long(), y, 0.1)
    with pytest.raises(TypeError, match="MaxPool2d.*no linear relaxation"):
        crown_ibp_loss(BoundedModule(nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2))),
                       torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), 0.1)
