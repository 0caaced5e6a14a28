"""robustops.bounds: IBP through every supported layer type against the reference
(lower/upper form), soundness by sampling, batched sub-perturbations, the certified
loss and schedules, torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import robustops
from robustops.bounds import (BoundedModule, certified_loss, clean_error, crown_ibp_margins, input_interval,
                              verified_error)
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
    with pytest.raises(ValueError, match=r"'y' must have shape \[6\]"):
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
    with pytest.raises(ValueError, match="'kappa' must be a number in"):
        certified_loss(bounded, x, y, 0.1, kappa=2.0)
    with pytest.raises(ValueError, match="'kind' must be one of"):
        certified_loss(bounded, x, y, 0.1, weights="exp")


# ---------------------------------------------------------------- bounds that cannot lie


def _mlp_and_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 6)).double().eval()
    x, y = _data(32)
    return net, x, y


def test_inputs_outside_the_domain_are_refused():
    """x * 255 with the default domain [0, 1] was 'verified' (error 0.0) on a model
    whose clean error is high: the clipped ball was about other points."""
    net, x, y = _mlp_and_data()
    bounded = BoundedModule(net)
    for fn in (lambda a: verified_error(bounded, a, y, 0.01),
               lambda a: verified_error(bounded, a, y, 0.01, method="crown-ibp"),
               lambda a: certified_loss(bounded, a, y, 0.01),
               lambda a: bounded.ibp_margins(a, y, 0.01),
               lambda a: input_interval(a, 0.01)):
        with pytest.raises(ValueError,
                           match=r"'x' must lie in the input domain \[0.0, 1.0\].*x lies in \[0.0569, 254.9\]"):
            fn(x * 255)
    # normalized inputs with the default domain: refused too
    mean, std = torch.tensor([0.4, 0.5], dtype=torch.float64), torch.tensor([0.2, 0.3], dtype=torch.float64)
    xn = (x - mean[:, None, None]) / std[:, None, None]
    with pytest.raises(ValueError, match="'x' must lie in the input domain"):
        verified_error(bounded, xn, y, 0.01)


def test_normalized_inputs_with_their_domain_per_channel():
    """The normalized domain per channel certifies the same points as the
    normalization inside the model on inputs in [0, 1]."""
    net, x, y = _mlp_and_data()
    mean, std = torch.tensor([0.4, 0.5], dtype=torch.float64), torch.tensor([0.2, 0.3], dtype=torch.float64)
    xn = (x - mean[:, None, None]) / std[:, None, None]
    lower, upper = (0 - mean) / std, (1 - mean) / std
    eps = 0.02
    # the radius of the normalized ball is eps / std per channel: one sample at a time
    # is a per-element domain; compare with the normalization as the model's first layer
    norm = nn.Conv2d(2, 2, 1, groups=2).double()
    with torch.no_grad():
        norm.weight.copy_((1 / std).reshape(2, 1, 1, 1))
        norm.bias.copy_(-mean / std)
    inside = BoundedModule(nn.Sequential(norm, *net).eval())
    torch.testing.assert_close(inside(x), net(xn))
    clean = clean_error(net, xn, y)
    for method in ("ibp", "crown-ibp"):
        per_channel = verified_error(BoundedModule(net), xn, y, 0.0, lower, upper, method=method)
        assert per_channel == clean
        assert verified_error(inside, x, y, eps, method=method) >= clean
    c, r = input_interval(xn, 0.5, lower, upper)
    lo, hi = c - r, c + r
    assert (lo >= lower[:, None, None] - 1e-12).all() and (hi <= upper[:, None, None] + 1e-12).all()
    assert (r >= 0).all()
    with pytest.raises(ValueError, match="'lower' must be a number, None, a tensor of 2 values"):
        input_interval(xn, 0.1, torch.zeros(3, dtype=torch.float64), 1.0)


def test_nan_in_the_last_layer_is_never_verified():
    net, x, y = _mlp_and_data()
    with torch.no_grad():
        net[-1].weight[0, 0] = float("nan")
    bounded = BoundedModule(net)
    for method in ("ibp", "crown-ibp"):
        assert verified_error(bounded, x, y, 0.0, method=method) == 1.0
        assert verified_error(bounded, x, y, 0.01, method=method) == 1.0
    assert torch.isnan(certified_loss(bounded, x, y, 0.01, kappa=0).loss)


def test_per_sample_eps_in_the_certified_loss():
    """One radius per sample, as the README documents: the same loss as the samples
    one at a time, in one batched pass."""
    net, x, y = _mlp_and_data()
    bounded = BoundedModule(net)
    eps = torch.linspace(0, 0.05, len(x), dtype=torch.float64)
    for method in ("ibp", "crown-ibp"):
        out = certified_loss(bounded, x, y, eps, n=3, kappa=0.0, method=method)
        per = [certified_loss(bounded, x[i:i + 1], y[i:i + 1], float(eps[i]), n=3, kappa=0.0, method=method)
               for i in range(len(x))]
        torch.testing.assert_close(out.per_radius, torch.stack([p.per_radius for p in per]).mean(0))
        same = certified_loss(bounded, x, y, torch.full((len(x),), 0.03, dtype=torch.float64), n=3, kappa=0.5,
                              method=method)
        torch.testing.assert_close(same.loss, certified_loss(bounded, x, y, 0.03, n=3, kappa=0.5, method=method).loss)
    with pytest.raises(ValueError, match="'eps' .* must be >= 0"):
        certified_loss(bounded, x, y, -eps)
    with pytest.raises(ValueError, match="'eps' must be a number or have shape"):
        certified_loss(bounded, x, y, eps[:3])


@pytest.mark.parametrize("entry", ["ibp_margins", "crown", "verified_error", "certified_loss", "clean_error"])
def test_labels_are_checked(entry):
    net, x, y = _mlp_and_data()
    bounded = BoundedModule(net)
    call = {"ibp_margins": lambda t: bounded.ibp_margins(x, t, 0.01),
            "crown": lambda t: crown_ibp_margins(bounded, x, t, 0.01),
            "verified_error": lambda t: verified_error(bounded, x, t, 0.01),
            "certified_loss": lambda t: certified_loss(bounded, x, t, 0.01, kappa=0.0),
            "clean_error": lambda t: clean_error(net, x, t)}[entry]
    for bad in (-1, 6, 100):
        t = y.clone()
        t[3] = bad
        with pytest.raises(ValueError, match=r"argument 'y' must hold class labels in \[0, 6\)"):
            call(t)
    with pytest.raises(TypeError, match="argument 'y' must hold int64 class labels"):
        call(y.double())
    with pytest.raises(ValueError, match=r"argument 'y' must have shape \[32\]"):
        call(y[:5])


def test_labels_of_a_model_with_rbf_outputs_are_checked():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 4), robustops.nn.RBF()).double().eval()
    x, _ = _data(5)
    bounded = BoundedModule(net)
    y = torch.tensor([0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"'y' must hold class labels in \[0, 4\)"):
        bounded.ibp_margins(x, y, 0.01)
    with pytest.raises(ValueError, match=r"'y' must hold class labels in \[0, 4\)"):
        crown_ibp_margins(bounded, x, y, 0.01)


def test_a_tensor_method_in_forward_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(TypeError, match=r"tensor method '\.flatten\(\)'.*use an nn\.Flatten layer instead"):
        BoundedModule(Net())


def test_subperturbation_weight_forms():
    """Every form sums to 1 and decreases with the radius (uniform: flat), by its formula."""
    from robustops.bounds.training import WEIGHT_FORMS, subperturbation_weights

    n = 5
    i = torch.arange(1, n + 1, dtype=torch.float64)
    expected = {"gm": 1 / i, "inverse_square": 1 / i ** 2, "linear": n + 1 - i, "exponential": 0.5 ** i,
                "uniform": torch.ones(n, dtype=torch.float64)}
    assert set(WEIGHT_FORMS) == set(expected)
    for kind, w in expected.items():
        got = subperturbation_weights(n, kind)
        assert got.dtype == torch.float64 and float(got.sum()) == pytest.approx(1.0)
        torch.testing.assert_close(got, w / w.sum())
        if kind != "uniform":
            assert bool((got[1:] < got[:-1]).all()), kind
    assert torch.equal(subperturbation_weights(1, "exponential"), torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="'kind' must be one of"):
        subperturbation_weights(3, "cubic")
    with pytest.raises(ValueError, match="'n' must be an int >= 1"):
        subperturbation_weights(True, "gm")
