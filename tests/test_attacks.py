"""robustops.attacks: FGS against a hand-computed example, the SAF variant, hot/cold
(finds a flip where one exists, reports failure where none does, and its step is the
smallest that flips), the committee example's formula, PGD's ball, the success-rate
conventions, and the invariants of every attack (model modes and parameters kept, the
caller's input never written, outputs in [0, 1]) and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from robustops import attacks

F64 = dict(rtol=1e-12, atol=1e-12)


def _linear(weight, bias=None) -> nn.Linear:
    w = torch.tensor(weight, dtype=torch.float64)
    m = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(torch.tensor(bias, dtype=torch.float64) if bias is not None else torch.zeros(w.shape[0]))
    return m


def test_fgsm_hand_computed():
    # logits = x; x = (0.6, 0.4), y = 0: dCE/dx = softmax(x) - e_0 = (p0 - 1, p1): sign (-1, +1)
    model = _linear([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[0.6, 0.4]], dtype=torch.float64)
    y = torch.tensor([0])
    x_adv = attacks.FGSM(model, eps=0.15)(x, y)
    assert_close(x_adv, torch.tensor([[0.45, 0.55]], dtype=torch.float64), **F64)
    result = attacks.FGSM(model, eps=0.15).evaluate(x, y)
    assert result.success.tolist() == [True] and result.success_rate == 1.0
    assert_close(result.linf, torch.tensor([0.15], dtype=torch.float64), **F64)
    # the step is clamped to [0, 1]
    x_edge = torch.tensor([[0.05, 0.97]], dtype=torch.float64)
    assert_close(attacks.FGSM(model, eps=0.15)(x_edge, y), torch.tensor([[0.0, 1.0]], dtype=torch.float64), **F64)


def test_fgs_max_l1_picks_the_largest_wrong_class_gradient():
    model = _linear([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.5]])
    x = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64)
    y = torch.tensor([0])
    # by hand: grad_x CE(Wx, j) = W^T (softmax(Wx) - e_j) for j = 1, 2; keep the larger L1 norm
    p = torch.softmax(model(x), 1)[0].detach()
    w = model.weight.detach()
    grads = {j: w.t() @ (p - F.one_hot(torch.tensor(j), 3).double()) for j in (1, 2)}
    j = max(grads, key=lambda k: grads[k].abs().sum())
    expected = (x - 0.1 * grads[j].sign()).clamp(0, 1)
    result = attacks.FGSMaxL1(model, beta=0.1).evaluate(x, y)
    assert_close(result.x_adv, expected, **F64)
    assert result.extra["target"].tolist() == [j]


def test_success_counts_only_correct_samples_and_zero_gradients_fail():
    class Gate(nn.Module):
        """logits (relu(x0 - 0.5), 0.1): zero gradient wherever x0 < 0.5."""

        def forward(self, x):
            return torch.stack([torch.relu(x[:, 0] - 0.5) * 10, torch.full_like(x[:, 0], 0.1)], 1)

    model = Gate()
    x = torch.tensor([[0.2, 0.0], [0.9, 0.0], [0.7, 0.0], [0.3, 0.0]], dtype=torch.float64)
    # predictions: 1 (zero gradient), 0, 0, 1 (zero gradient)
    y = torch.tensor([1, 0, 1, 0])
    result = attacks.FGSM(model, eps=0.45).evaluate(x, y)
    assert result.correct.tolist() == [True, True, False, False]
    assert result.zero_gradient.tolist() == [True, False, False, True]
    # sample 1 (x0 = 0.9, y = 0) is pushed to x0 = 0.45: flips; sample 0 cannot move
    assert result.success.tolist() == [False, True, False, False]
    assert result.success_rate == 0.5  # 1 success over the 2 correctly classified
    assert result.adversarial_accuracy == 0.25
    empty = attacks.FGSM(model, eps=0.1).evaluate(x[2:3], y[2:3])
    assert math.isnan(empty.success_rate)
    assert "success rate" in str(result)


def test_hot_cold_flips_with_the_smallest_step():
    model = _linear([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 0.0, 0.05])
    x = torch.tensor([[0.7, 0.3, 0.5]], dtype=torch.float64)
    y = torch.tensor([0])
    atk = attacks.HotCold(model, max_step=1.0, grid=16, refine=30)
    result = atk.evaluate(x, y)
    assert result.extra["hot"].tolist() == [2]  # the closest wrong class (0.05 > -0.4)
    assert result.success.tolist() == [True]
    # the direction grad(z_2 - z_0) = (-1, 1, 0), unit L-inf; z_0 - z_2 = 0.4 - 2 s - 0.05 hits 0 at s = 0.175
    step = float(result.extra["step"][0])
    assert abs(step - 0.175) < 1e-6
    assert_close(result.x_adv, torch.tensor([[0.7 - step, 0.3 + step, 0.5]], dtype=torch.float64), **F64)
    d = torch.tensor([[-1.0, 1.0, 0.0]], dtype=torch.float64)
    assert model((x + (step - 1e-6) * d)).argmax(1).item() == 0  # a slightly smaller step does not flip


def test_hot_cold_reports_failure_where_no_flip_exists():
    # z_0 - z_1 = 0.5 (x0 + x1) + 10 > 0 on the whole box: nothing flips
    model = _linear([[1.0, 1.0], [0.5, 0.5]], [10.0, 0.0])
    x = torch.tensor([[0.2, 0.3], [0.9, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    result = attacks.HotCold(model, max_step=1.0).evaluate(x, y)
    assert result.success.tolist() == [False, False]
    assert result.extra["step"].tolist() == [0.0, 0.0]
    assert_close(result.x_adv, x, **F64)


def test_fgs_line_search_finds_the_smallest_eps():
    # z = Wx + b = (x0 - x1, x1 - x0, -1), y = 0; dCE/dx = W^T (p - e_0) = (v, -v, 0)
    # with v = p0 - 1 - p1 < 0: the sign is (-1, +1, 0)
    model = _linear([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 0.0, -1.0])
    x = torch.tensor([[0.7, 0.3, 0.5], [0.6, 0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    result = attacks.FGSLineSearch(model, max_step=1.0, grid=16, refine=30).evaluate(x, y)
    # along (-eps, +eps, .): z_0 - z_1 = 2 (x0 - x1) - 4 eps, zero at eps = (x0 - x1) / 2
    # (before z_0 - z_2 = (x0 - x1) + 1 - 2 eps)
    step = result.extra["step"]
    assert result.success.tolist() == [True, True]
    assert_close(step, torch.tensor([0.2, 0.05], dtype=torch.float64), rtol=0, atol=1e-8)
    assert_close(result.linf, step, rtol=0, atol=1e-12)
    g_sign = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64)
    assert_close(result.x_adv, (x + step[:, None] * g_sign).clamp(0, 1), **F64)
    # nothing within max_step: failure, the image unchanged, step 0
    short = attacks.FGSLineSearch(model, max_step=0.05, grid=8).evaluate(x[:1], y[:1])
    assert short.success.tolist() == [False] and short.extra["step"].tolist() == [0.0]
    assert_close(short.x_adv, x[:1], **F64)


def test_committee_example_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.rand(4, 6, dtype=torch.float64) * 0.5 + 0.25
    y = torch.tensor([0, 1, 2, 1])

    def grad(z):
        z = z.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)
        return g

    x1 = (x + 0.05 * grad(x).sign()).clamp(0, 1)
    expected = (x1 + 0.7 * grad(x1)).clamp(0, 1)
    assert_close(attacks.CommitteeExample(model, eps=0.05, c=0.7)(x, y), expected, **F64)


def test_pgd_stays_in_the_ball_and_is_seeded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).double()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    a = attacks.PGD(model, eps=0.05, alpha=0.02, steps=7, seed=3)(x, y)
    assert (a - x).abs().max() <= 0.05 + 1e-12 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, attacks.PGD(model, eps=0.05, alpha=0.02, steps=7, seed=3)(x, y))
    # (a linear model's gradient sign is constant: 7 steps reach the same corner of the
    # ball from any start; one step does not)
    assert not torch.equal(attacks.PGD(model, eps=0.05, alpha=0.02, steps=1, seed=3)(x, y),
                           attacks.PGD(model, eps=0.05, alpha=0.02, steps=1, seed=4)(x, y))
    assert torch.equal(attacks.PGD(model, eps=0.05, steps=0, random_start=False)(x, y), x)
    # one step from no random start is FGSM with eps = alpha (inside the ball)
    assert_close(attacks.PGD(model, eps=0.05, alpha=0.05, steps=1, random_start=False)(x, y),
                 attacks.FGSM(model, eps=0.05)(x, y), **F64)


ATTACKS = {
    "FGSM": lambda m: attacks.FGSM(m, eps=0.1),
    "FGSMaxL1": lambda m: attacks.FGSMaxL1(m, beta=0.1),
    "HotCold": lambda m: attacks.HotCold(m, grid=4, refine=2),
    "FGSLineSearch": lambda m: attacks.FGSLineSearch(m, grid=4, refine=2),
    "CommitteeExample": lambda m: attacks.CommitteeExample(m, eps=0.1, c=0.5),
    "PGD": lambda m: attacks.PGD(m, eps=0.1, alpha=0.03, steps=3),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_keep_the_model_and_the_input(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    model.train()
    model[1].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 8, 8)
    x_before = x.clone()
    y = torch.randint(0, 5, (8,))
    atk = ATTACKS[name](model)
    result = atk.evaluate(x, y)
    x_adv = atk(x, y)
    assert torch.equal(x, x_before)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # batch-norm statistics too: eval mode during the attack
    assert all(p.grad is None for p in model.parameters())
    for out in (x_adv, result.x_adv):
        assert out.shape == x.shape and out.dtype == x.dtype and not out.requires_grad
        assert out.min() >= 0 and out.max() <= 1
    assert result.success.dtype == torch.bool and result.success.shape == (8,)


def test_bad_input():
    model = nn.Linear(4, 2)
    x = torch.rand(3, 4)
    y = torch.tensor([0, 1, 0])
    with pytest.raises(ValueError, match="argument 'x' must hold values in \\[0, 1\\]"):
        attacks.FGSM(model)(x * 3, y)
    with pytest.raises(ValueError, match="argument 'y' must have shape \\[3\\] \\(one label per sample\\)"):
        attacks.FGSM(model)(x, y[:2])
    with pytest.raises(TypeError, match="argument 'y' must hold int64 class labels"):
        attacks.FGSM(model)(x, y.float())
    with pytest.raises(TypeError, match="argument 'x' must be a floating-point tensor"):
        attacks.FGSM(model)(x.int(), y)
    with pytest.raises(ValueError, match="FGSM: argument 'eps' must be a finite number >= 0"):
        attacks.FGSM(model, eps=-0.1)
    with pytest.raises(ValueError, match="PGD: argument 'steps'"):
        attacks.PGD(model, steps=-1)
    with pytest.raises(ValueError, match="HotCold: argument 'max_step' must be a finite number > 0"):
        attacks.HotCold(model, max_step=0)
    with pytest.raises(ValueError, match="FGSLineSearch: argument 'max_step' must be a finite number > 0"):
        attacks.FGSLineSearch(model, max_step=-1)
    with pytest.raises(ValueError, match="FGSLineSearch: 'grid' must be an int >= 1"):
        attacks.FGSLineSearch(model, grid=0)
    with pytest.raises(TypeError, match="argument 'model' must be an nn.Module"):
        attacks.FGSM(lambda t: t)


def _five_classes():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 5))


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("bad", [-1, 5, 7])
def test_labels_out_of_the_models_range(name, bad):
    # the model has 5 classes: a label of -1 would index from the end, 5 or more out of bounds
    model = _five_classes()
    x = torch.rand(3, 1, 2, 2)
    y = torch.tensor([0, bad, 4])
    lo, hi = min(0, bad), max(4, bad)
    msg = rf"{name}: argument 'y' must hold class labels in \[0, 5\), got values in \[{lo}, {hi}\]"
    with pytest.raises(ValueError, match=msg):
        ATTACKS[name](model)(x, y)
    with pytest.raises(ValueError, match=msg):
        ATTACKS[name](model).evaluate(x, y)
    # the labels in range still work
    ATTACKS[name](model)(x, y.clamp(0, 4))


@pytest.mark.parametrize("name", list(ATTACKS))
def test_label_types_and_model_output(name):
    model = _five_classes()
    x = torch.rand(3, 1, 2, 2)
    y = torch.tensor([0, 1, 4])
    with pytest.raises(TypeError, match=rf"{name}: argument 'y' must hold int64 class labels, got torch.float32"):
        ATTACKS[name](model)(x, y.float())
    with pytest.raises(TypeError, match=rf"{name}: argument 'y' must hold int64 class labels, got torch.int32"):
        ATTACKS[name](model)(x, y.int())
    with pytest.raises(TypeError, match=rf"{name}: argument 'y' must be a Tensor of int64 class labels, got list"):
        ATTACKS[name](model)(x, [0, 1, 4])
    with pytest.raises(ValueError, match=rf"{name}: argument 'y' must have shape \[3\]"):
        ATTACKS[name](model)(x, y[:, None])
    with pytest.raises(TypeError, match=rf"{name}: argument 'x' must be a Tensor, got list"):
        ATTACKS[name](model)(x.tolist(), y)
    with pytest.raises(ValueError, match=rf"{name}: argument 'x' must have a batch dimension"):
        ATTACKS[name](model)(torch.tensor(0.5), y)
    # the model must give one row of class scores per sample
    flat = nn.Sequential(model, nn.Flatten(0))
    with pytest.raises(ValueError, match=rf"{name}: the model's output must have shape \[3, classes\].*got \(15,\)"):
        ATTACKS[name](flat)(x, y)


def test_pgd_without_steps_checks_the_labels_in_evaluate():
    # no step, no forward in the attack itself: evaluate's prediction checks the labels
    model = _five_classes()
    x = torch.rand(3, 1, 2, 2)
    atk = attacks.PGD(model, steps=0)
    with pytest.raises(ValueError, match=r"PGD: argument 'y' must hold class labels in \[0, 5\)"):
        atk.evaluate(x, torch.tensor([0, 9, 4]))
