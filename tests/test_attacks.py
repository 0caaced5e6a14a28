"""robustops.attacks: FGS against a hand-computed example, the SAF variant, hot/cold
(finds a flip where one exists, reports failure where none does, and its step is the
smallest that flips; its loss_fn), the committee example's formula, PGD's ball, the
success-rate conventions, the invariants of every attack (model modes and parameters
kept, the caller's input never written, outputs in [0, 1]) and bad input, and
reentrancy (what a call found is returned, never kept on the attack: interleaved calls,
nested or in threads, give each its own results)."""

from __future__ import annotations

import math
import threading

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


def _per_class_gradients(model, x, classes):
    """grad_x CE(f(x_i), j) for every sample i and class j: [K, B, ...], each sample on its own."""
    grads = []
    for j in range(classes):
        rows = []
        for i in range(len(x)):
            xi = x[i:i + 1].clone().requires_grad_()
            (g,) = torch.autograd.grad(F.cross_entropy(model(xi), torch.tensor([j])), xi)
            rows.append(g[0])
        grads.append(torch.stack(rows))
    return torch.stack(grads)


def _brute_force_max_l1(model, x, y, beta, candidates, grads=None):
    """eq. 10 by brute force: per sample, the candidate class (ties: the lowest) whose
    gradient has the largest L1 norm, and the step against its sign. ``grads``: the
    per-class gradients (_per_class_gradients), computed here when None."""
    if grads is None:
        grads = _per_class_gradients(model, x, model(x[:1]).shape[1])
    chosen, steps = [], []
    for i in range(len(x)):
        cands = [j for j in sorted(set(candidates)) if y is None or j != int(y[i])]
        norms = [float(grads[j, i].abs().sum()) for j in cands]
        j = cands[norms.index(max(norms))]
        chosen.append(j)
        steps.append((x[i] - beta * grads[j, i].sign()).clamp(0, 1))
    return torch.stack(steps), chosen


def test_fgs_max_l1_targets_restrict_the_choice():
    # the hand-made model of the test above: class 1's gradient is the largest for y = 0
    model = _linear([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.5]])
    x = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64)
    y = torch.tensor([0])
    free = attacks.FGSMaxL1(model, beta=0.1).evaluate(x, y)
    assert free.extra["target"].tolist() == [1]
    # class 1 ruled out: the only other wrong class, 2, by hand
    p = torch.softmax(model(x), 1)[0].detach()
    g2 = model.weight.detach().t() @ (p - F.one_hot(torch.tensor(2), 3).double())
    for targets in ([0, 2], [2], (2, 0, 2), torch.tensor([2, 0])):  # y itself is ignored; order, repeats
        restricted = attacks.FGSMaxL1(model, beta=0.1, targets=targets).evaluate(x, y)
        assert restricted.extra["target"].tolist() == [2]
        assert_close(restricted.x_adv, (x - 0.1 * g2.sign()).clamp(0, 1), **F64)
        assert not torch.equal(restricted.x_adv, free.x_adv)
    # all classes: the unrestricted attack exactly
    full = attacks.FGSMaxL1(model, beta=0.1, targets=range(3)).evaluate(x, y)
    assert torch.equal(full.x_adv, free.x_adv) and torch.equal(full.extra["target"], free.extra["target"])


@pytest.mark.parametrize("seed", [0, 1])
def test_fgs_max_l1_targets_on_a_network(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 6)).double()
    x = torch.rand(16, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 6, (16,))
    grads = _per_class_gradients(model, x, 6)
    free = attacks.FGSMaxL1(model, beta=0.07).evaluate(x, y)
    full = attacks.FGSMaxL1(model, beta=0.07, targets=range(6)).evaluate(x, y)
    for a, b in ((free.x_adv, full.x_adv), (free.extra["target"], full.extra["target"]),
                 (free.success, full.success), (free.zero_gradient, full.zero_gradient)):
        assert torch.equal(a, b)
    expected, chosen = _brute_force_max_l1(model, x, y, 0.07, range(6), grads)
    assert free.extra["target"].tolist() == chosen
    assert_close(free.x_adv, expected, **F64)
    changed = False
    for targets in ([1, 4], [0, 2, 5], [3, 5]):
        result = attacks.FGSMaxL1(model, beta=0.07, targets=targets).evaluate(x, y)
        target = result.extra["target"]
        assert all(t in targets for t in target.tolist()) and not bool((target == y).any())
        expected, chosen = _brute_force_max_l1(model, x, y, 0.07, targets, grads)
        assert target.tolist() == chosen
        assert_close(result.x_adv, expected, **F64)
        changed |= not torch.equal(target, free.extra["target"])
    assert changed


def test_fgs_max_l1_without_labels():
    model = _linear([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.5]])
    x = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.9, 0.4]], dtype=torch.float64)
    # no true class: every class of targets is a candidate (class 0 too)
    for targets in (range(3), [0, 2], [2]):
        atk = attacks.FGSMaxL1(model, beta=0.1, targets=targets)
        expected, chosen = _brute_force_max_l1(model, x, None, 0.1, targets)
        result = atk.evaluate(x)
        assert result.extra["target"].tolist() == chosen
        assert_close(result.x_adv, expected, **F64)
        assert torch.equal(atk(x), result.x_adv) and torch.equal(atk(x, None), result.x_adv)
        # no label: nothing is correct or a success
        assert result.correct.tolist() == [False, False] and result.success.tolist() == [False, False]
        assert math.isnan(result.success_rate)
        assert_close(result.linf, (result.x_adv - x).abs().amax(1), **F64)
    # without labels the first sample goes towards class 1, its own prediction, which an attack
    # labelled with that prediction could never choose
    assert model(x).argmax(1).tolist() == [1, 1]
    assert attacks.FGSMaxL1(model, beta=0.1, targets=range(3)).evaluate(x).extra["target"].tolist() == [1, 0]
    assert attacks.FGSMaxL1(model, beta=0.1, targets=range(3)).evaluate(x, torch.tensor([1, 1])) \
        .extra["target"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="FGSMaxL1: argument 'y' may be None only when 'targets' is given"):
        attacks.FGSMaxL1(model, beta=0.1)(x)
    with pytest.raises(ValueError, match="FGSMaxL1: argument 'y' may be None only when 'targets' is given"):
        attacks.FGSMaxL1(model, beta=0.1).evaluate(x)


def test_fgs_max_l1_without_labels_keeps_the_model_and_the_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 8, 8)
    x_before = x.clone()
    result = attacks.FGSMaxL1(model, beta=0.2, targets=range(4)).evaluate(x)
    assert torch.equal(x, x_before) and model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert result.x_adv.dtype == x.dtype and 0 <= result.x_adv.min() and result.x_adv.max() <= 1
    assert set(result.extra["target"].tolist()) <= {0, 1, 2, 3}


def test_fgs_max_l1_bad_targets():
    model = _five_classes()
    x = torch.rand(3, 1, 2, 2)
    y = torch.tensor([0, 1, 4])
    with pytest.raises(ValueError, match="FGSMaxL1: argument 'targets' must hold at least one class"):
        attacks.FGSMaxL1(model, targets=[])
    with pytest.raises(ValueError, match=r"FGSMaxL1: argument 'targets' must hold classes >= 0, got \[0, -1\]"):
        attacks.FGSMaxL1(model, targets=[0, -1])
    with pytest.raises(TypeError, match="FGSMaxL1: argument 'targets' must be an int, got float"):
        attacks.FGSMaxL1(model, targets=[0, 1.0])
    with pytest.raises(TypeError, match="FGSMaxL1: argument 'targets' must be an int, got bool"):
        attacks.FGSMaxL1(model, targets=[True])
    with pytest.raises(TypeError, match="FGSMaxL1: argument 'targets' must be an iterable of ints, got int"):
        attacks.FGSMaxL1(model, targets=3)
    with pytest.raises(TypeError, match="FGSMaxL1: argument 'targets' must be a 1-D integer tensor"):
        attacks.FGSMaxL1(model, targets=torch.tensor([[0, 1]]))
    with pytest.raises(TypeError, match="FGSMaxL1: argument 'targets' must be a 1-D integer tensor"):
        attacks.FGSMaxL1(model, targets=torch.tensor([0.0, 1.0]))
    # the upper bound is the model's number of outputs, checked at the first forward (with or without labels)
    for labels in (y, None):
        with pytest.raises(ValueError, match=r"FGSMaxL1: argument 'targets' must hold classes in \[0, 5\) \(the "
                                             r"model has 5 outputs\), got \[1, 5\]"):
            attacks.FGSMaxL1(model, targets=[5, 1])(x, labels)
    # a sample left with no candidate: its label is the only target
    with pytest.raises(ValueError, match="FGSMaxL1: argument 'targets' leaves sample 1 no class to attack "
                                         r"towards: targets \[1\] holds only its label 1"):
        attacks.FGSMaxL1(model, targets=[1])(x, y)
    attacks.FGSMaxL1(model, targets=[2])(x, y)  # no sample is labelled 2: fine
    attacks.FGSMaxL1(model, targets=[1])(x)     # no labels: fine
    # without labels the model's output is still checked
    flat = nn.Sequential(model, nn.Flatten(0))
    with pytest.raises(ValueError, match=r"FGSMaxL1: the model's output must have shape \[3, classes\]"):
        attacks.FGSMaxL1(flat, targets=[0])(x)
    with pytest.raises(ValueError, match=r"FGSMaxL1: argument 'x' must hold values in \[0, 1\]"):
        attacks.FGSMaxL1(model, targets=[0])(x * 3)


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


# ---------------------------------------------------------------------------- reentrancy


def _ce(out, target):
    return F.cross_entropy(out, target, reduction="none")


# (factory, labelled): every attack, HotCold with a loss_fn too, FGSMaxL1 without labels too
VARIANTS = {
    **{name: (make, True) for name, make in ATTACKS.items()},
    "HotCold-loss_fn": (lambda m: attacks.HotCold(m, grid=4, refine=2, loss_fn=_ce), True),
    "FGSMaxL1-unlabelled": (lambda m: attacks.FGSMaxL1(m, beta=0.1, targets=[0, 2, 3]), False),
}


class _Gated(nn.Module):
    """A small net whose output is all zero (so is its input gradient) for the samples
    with x[:, 0, 0, 0] < 0.25: zero-gradient masks that differ between batches."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 5)).double()

    def forward(self, x):
        return self.net(x) * (x[:, 0, 0, 0] >= 0.25).to(x.dtype)[:, None]


class _Hooked(nn.Module):
    """``model``, with ``hook()`` run once before this thread's forward number ``at``
    (``arm``); ``forwards(fn)`` counts the forwards of ``fn()``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.local = threading.local()

    def arm(self, at, hook=None):
        self.local.count, self.local.at, self.local.hook = 0, at, hook

    def forwards(self, fn) -> int:
        self.arm(None)
        fn()
        return self.local.count

    def forward(self, x):
        local = self.local
        local.count += 1
        if local.count == local.at:
            local.hook()
        return self.model(x)


def _batches():
    """Two batches of different sizes, each with a zero-gradient sample where the other has none."""
    gen = torch.Generator().manual_seed(1)
    xa = torch.rand(6, 1, 4, 4, generator=gen, dtype=torch.float64) * 0.7 + 0.3
    xb = torch.rand(4, 1, 4, 4, generator=gen, dtype=torch.float64) * 0.7 + 0.3
    xa[1, 0, 0, 0], xb[3, 0, 0, 0] = 0.1, 0.2
    return (xa, torch.tensor([0, 1, 2, 3, 4, 0])), (xb, torch.tensor([4, 3, 2, 1]))


def _setup(name):
    make, labelled = VARIANTS[name]
    hooked = _Hooked(_Gated().eval())
    hooked.arm(None)
    a, b = _batches()
    if not labelled:
        a, b = (a[0], None), (b[0], None)
    return hooked, make(hooked), a, b


def _assert_same(r, expected):
    for k in ("attack", "x_adv", "correct", "success", "zero_gradient", "linf", "l2"):
        got, want = getattr(r, k), getattr(expected, k)
        assert (torch.equal(got, want) if isinstance(want, torch.Tensor) else got == want), k
    assert list(r.extra) == list(expected.extra)
    for k, v in expected.extra.items():
        assert torch.equal(r.extra[k], v), k


def test_the_gated_batches_differ_in_their_zero_gradients():
    hooked, atk, a, b = _setup("FGSM")
    assert atk.evaluate(*a).zero_gradient.tolist() == [False, True, False, False, False, False]
    assert atk.evaluate(*b).zero_gradient.tolist() == [False, False, False, True]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_perturb_returns_what_it_found(name):
    # _perturb for one batch, then for another, then each one's result: the same as a call of its own
    hooked, atk, a, b = _setup(name)
    alone = [atk.evaluate(*a), atk.evaluate(*b)]
    found = [atk._perturb(x.clone(), y) for x, y in (a, b)]
    for (x_adv, info), expected in zip(found, alone):
        assert torch.equal(x_adv, expected.x_adv)
        assert torch.equal(info["zero_gradient"], expected.zero_gradient)
        assert list(info) == ["zero_gradient"] + list(expected.extra)
        for k, v in expected.extra.items():
            assert torch.equal(info[k], v), k
    extra = {"FGSMaxL1": ["target"], "FGSLineSearch": ["step"], "HotCold": ["step", "hot"]}
    assert list(alone[0].extra) == extra.get(name.split("-")[0], [])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_call_nested_in_a_running_call_gives_each_its_own_results(name):
    # the same attack object called on batch b from inside its call on batch a (from the
    # model, as a loss_fn or a callback might), at each of the outer call's forwards in turn
    hooked, atk, a, b = _setup(name)
    alone = [atk.evaluate(*a), atk.evaluate(*b)]
    n = hooked.forwards(lambda: atk.evaluate(*a))
    assert n >= 2
    for at in range(1, n + 1):
        inner = []
        hooked.arm(at, lambda: inner.append((atk.evaluate(*b), atk(*b))))
        outer = atk.evaluate(*a)
        assert len(inner) == 1, at
        _assert_same(outer, alone[0])
        _assert_same(inner[0][0], alone[1])
        assert torch.equal(inner[0][1], alone[1].x_adv)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_nested_call_does_not_skip_the_outer_calls_label_check(name):
    hooked, atk, a, b = _setup(name)
    bad = a[1].clone()
    bad[2] = 5
    hooked.arm(1, lambda: atk.evaluate(*b))  # inside the outer call's first forward
    with pytest.raises(ValueError, match=rf"{name}: argument 'y' must hold class labels in \[0, 5\)"):
        atk(a[0], bad)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_threads_sharing_an_attack_get_their_own_results(name):
    # two threads, one attack object; each waits at its call's last forward for the
    # other to reach its own, so both have attacked before either scores its batch
    hooked, atk, a, b = _setup(name)
    batches = (a, b)
    alone = [atk.evaluate(*batch) for batch in batches]
    last = [hooked.forwards(lambda batch=batch: atk.evaluate(*batch)) for batch in batches]
    barrier = threading.Barrier(2, timeout=60)
    results, errors = [None, None], []

    def work(i):
        try:
            hooked.arm(last[i], barrier.wait)
            results[i] = atk.evaluate(*batches[i])
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for r, expected in zip(results, alone):
        _assert_same(r, expected)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_labels_none_is_an_error_naming_y(name):
    # (FGSMaxL1 runs without labels only with targets: test_fgs_max_l1_without_labels)
    model = _five_classes()
    x = torch.rand(3, 1, 2, 2)
    for call in (lambda atk: atk(x, None), lambda atk: atk.evaluate(x, None)):
        with pytest.raises((TypeError, ValueError), match=rf"{name}: argument 'y' "):
            call(ATTACKS[name](model))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_call_leaves_nothing_on_the_attack(name):
    hooked, atk, a, b = _setup(name)
    before = dict(vars(atk))
    atk.evaluate(*a)
    atk(*b)
    assert list(vars(atk)) == list(before)
    for k, v in vars(atk).items():
        assert v is before[k], k


# ---------------------------------------------------------------------------- HotCold's loss_fn


def _hot_cold_reference_direction(model, x, y):
    """HotCold's direction by its formula: grad_x (z_hot - z_y), the hot class the
    largest wrong logit, scaled to unit L-inf norm per sample."""
    xg = x.clone().requires_grad_()
    z = model(xg)
    wrong = z.detach().clone()
    wrong[torch.arange(len(y)), y] = -math.inf
    hot = wrong.argmax(1)
    (g,) = torch.autograd.grad((z[torch.arange(len(y)), hot] - z[torch.arange(len(y)), y]).sum(), xg)
    scale = g.flatten(1).abs().amax(1)
    return g / scale.clamp_min(torch.finfo(g.dtype).tiny).view(-1, *([1] * (x.dim() - 1))), hot


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hot_cold_default_is_the_logit_difference_bit_for_bit(dtype):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 6)).to(dtype)
    x = torch.rand(12, 1, 6, 6, dtype=dtype)
    y = torch.randint(0, 6, (12,))
    d_ref, hot_ref = _hot_cold_reference_direction(model, x, y)
    for atk in (attacks.HotCold(model), attacks.HotCold(model, loss_fn=None)):
        d, info = atk._direction(x, y)
        assert torch.equal(d, d_ref) and torch.equal(info["hot"], hot_ref)
    default = attacks.HotCold(model, grid=8, refine=6).evaluate(x, y)
    _assert_same(attacks.HotCold(model, grid=8, refine=6, loss_fn=None).evaluate(x, y), default)
    assert torch.equal(default.extra["hot"], hot_ref)
    # the line search along the reference direction: the default's steps and images exactly
    assert_close(default.x_adv, (x + default.extra["step"].view(-1, 1, 1, 1) * d_ref).clamp(0, 1), rtol=0, atol=0)


def test_hot_cold_uses_its_loss_fn():
    model = _linear([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 0.0, 0.05])
    x = torch.tensor([[0.7, 0.3, 0.5], [0.2, 0.6, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    calls = []

    def counting(out, target):
        calls.append(target.tolist())
        return _ce(out, target)

    # L(f(x), y) - L(f(x), hot): one loss against the labels, one against the hot classes
    result = attacks.HotCold(model, grid=16, refine=30, loss_fn=counting).evaluate(x, y)
    assert calls == [[0, 1], [2, 2]] and result.extra["hot"].tolist() == [2, 2]
    # cross-entropy: CE(z, y) - CE(z, hot) = z_hot - z_y, the default's objective, up to rounding
    default = attacks.HotCold(model, grid=16, refine=30).evaluate(x, y)
    assert result.success.tolist() == default.success.tolist() == [True, True]
    assert abs(float(result.extra["step"][0]) - 0.175) < 1e-6
    assert_close(result.extra["step"], default.extra["step"], rtol=0, atol=1e-9)
    assert_close(result.x_adv, default.x_adv, rtol=0, atol=1e-9)
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4)).double()
    xs, ys = torch.rand(9, 5, dtype=torch.float64), torch.randint(0, 4, (9,))
    assert_close(attacks.HotCold(net, loss_fn=_ce)._direction(xs, ys)[0],
                 attacks.HotCold(net)._direction(xs, ys)[0], rtol=0, atol=1e-12)
    # a loss that changes the objective changes the result: the negated loss moves away
    # from the hot class, where nothing flips
    away = attacks.HotCold(model, grid=16, refine=30, loss_fn=lambda o, t: -_ce(o, t)).evaluate(x, y)
    assert away.success.tolist() == [False, False] and away.extra["step"].tolist() == [0.0, 0.0]
    assert_close(away.x_adv, x, **F64)
    # a scalar (mean) loss: the same direction (each sample's is scaled to unit L-inf norm)
    mean = attacks.HotCold(net, loss_fn=lambda o, t: F.cross_entropy(o, t))
    assert_close(mean._direction(xs, ys)[0], attacks.HotCold(net, loss_fn=_ce)._direction(xs, ys)[0],
                 rtol=1e-12, atol=1e-12)
