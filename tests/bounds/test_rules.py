"""robustops.bounds.register_bound_rule: a new layer type goes through IBP and
CROWN-IBP by its rule alone, with the bounds of the equivalent plain network and no
point of the ball beating them; a rule without back or relax is IBP-only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustops.bounds import BoundedModule, crown_ibp_loss, crown_ibp_margins
from robustops.bounds import rules as rules_mod
from robustops.bounds.rules import BoundRule, bound_rule, register_bound_rule
from tests.bounds.test_soundness import attack_bounds

DT = torch.float64


class Scale(nn.Module):
    """y = s * x per feature (s may be negative): a layer no rule covers."""

    def __init__(self, features: int):
        super().__init__()
        self.s = nn.Parameter(torch.linspace(-1.5, 2.0, features, dtype=DT))

    def forward(self, x):
        return x * self.s


SCALE_RULE = BoundRule(lambda layer, c, r: (c * layer.s, r * layer.s.abs()),
                       back=lambda layer, a, in_shape: (a * layer.s, a.new_zeros(a.shape[:2])))


@pytest.fixture
def registered():
    register_bound_rule(Scale, SCALE_RULE)
    yield
    rules_mod._RULES.pop(Scale, None)


def _nets():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), Scale(8), nn.ReLU(), nn.Linear(8, 4)).to(DT)
    plain = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 4)).to(DT)
    with torch.no_grad():
        plain[0].load_state_dict(net[0].state_dict())
        plain[1].weight.copy_(torch.diag(net[1].s))
        plain[3].load_state_dict(net[3].state_dict())
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 6, generator=g, dtype=DT), torch.randint(0, 4, (12,), generator=g)
    return net, plain, x, y


def test_an_unregistered_layer_is_refused_with_the_way_to_add_it():
    net, *_ = _nets()
    with pytest.raises(TypeError, match="unsupported .*'1.s'.*register_bound_rule"):
        BoundedModule(net)


def test_a_registered_layer_is_bounded_as_its_plain_equivalent(registered):
    net, plain, x, y = _nets()
    bounded, reference = BoundedModule(net), BoundedModule(plain)
    assert bound_rule(net[1]) is SCALE_RULE
    torch.testing.assert_close(bounded.margins(x, y, 0.1), reference.margins(x, y, 0.1), rtol=1e-12, atol=1e-12)
    for beta in (0.5, 1.0):
        torch.testing.assert_close(crown_ibp_margins(bounded, x, y, 0.1, beta=beta),
                                   crown_ibp_margins(reference, x, y, 0.1, beta=beta), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(crown_ibp_loss(bounded, x, y, 0.1, beta=beta),
                                   crown_ibp_loss(reference, x, y, 0.1, beta=beta), rtol=1e-12, atol=1e-12)
    checked, violations = attack_bounds(net, x, y, 0.1, 0.0, 1.0, seed=5,
                                        methods=("ibp", "crown-ibp-0.5", "crown-ibp-1.0"), crown=True)
    assert checked > 1000 and violations == 0


def test_a_wrong_rule_is_caught(registered):
    """The rule's radius through s instead of |s|: the attack finds points beyond it."""
    register_bound_rule(Scale, BoundRule(lambda layer, c, r: (c * layer.s, (r * layer.s).clamp(min=0)),
                                         back=SCALE_RULE.back))
    net, _, x, y = _nets()
    assert attack_bounds(net, x, y, 0.1, 0.0, 1.0, seed=5, methods=("ibp",), crown=False)[1] > 0


def test_a_rule_without_back_is_ibp_only(registered):
    register_bound_rule(Scale, BoundRule(SCALE_RULE.interval))
    net, plain, x, y = _nets()
    bounded = BoundedModule(net)
    torch.testing.assert_close(bounded.margins(x, y, 0.1), BoundedModule(plain).margins(x, y, 0.1))
    with pytest.raises(TypeError, match="CROWN-IBP: Scale has no linear relaxation here \\(layer '1'\\)"):
        bounded.margins(x, y, 0.1, method="crown-ibp")


def test_register_bound_rule_errors():
    with pytest.raises(TypeError, match="argument 'layer_type' must be an nn.Module subclass"):
        register_bound_rule(int, SCALE_RULE)
    with pytest.raises(TypeError, match="argument 'rule' must be a BoundRule"):
        register_bound_rule(Scale, lambda layer, c, r: (c, r))


def test_margins_is_the_one_entry_point():
    net, _, x, y = _nets()
    net = nn.Sequential(net[0], net[2], net[3])
    bounded = BoundedModule(net)
    assert torch.equal(bounded.margins(x, y, 0.1), bounded.ibp_margins(x, y, 0.1))
    for beta in (0.0, 0.5, 1.0):
        assert torch.equal(bounded.margins(x, y, 0.1, method="crown-ibp", beta=beta),
                           crown_ibp_margins(bounded, x, y, 0.1, beta=beta))
    with pytest.raises(ValueError, match="BoundedModule.margins: argument 'method'"):
        bounded.margins(x, y, 0.1, method="crown")
