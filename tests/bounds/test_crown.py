"""CROWN-IBP: the linear relaxations are sound, the margin bounds are sound, equal
the forward pass at radius 0, match an independent dense-Jacobian computation of
the same backward bound, are at least as tight as IBP on these networks, and train."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import robustops
from robustops.bounds import BoundedModule, certified_loss, crown_ibp_margins, input_interval, relaxation
from robustops.reference import saf
from tests.bounds.test_ibp import _data, _nets

F64 = dict(rtol=1e-9, atol=1e-9)
NETS = ["mlp-bn1d", "rbf-output"]


def _crown_nets():
    nets = {k: v for k, v in _nets().items() if k in NETS}
    torch.manual_seed(3)
    nets["conv-avgpool"] = nn.Sequential(
        nn.Conv2d(2, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), robustops.nn.RBF(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 10), robustops.nn.MReLU(), nn.Linear(10, 6)).double().eval()
    return nets


@pytest.mark.parametrize("kind", ["relu", "mrelu", "rbf"])
def test_relaxations_are_sound(kind):
    layer = {"relu": nn.ReLU(), "mrelu": robustops.nn.MReLU(), "rbf": robustops.nn.RBF()}[kind]
    f = {"relu": torch.relu, "mrelu": saf.mrelu, "rbf": saf.rbf}[kind]
    g = torch.Generator().manual_seed(0)
    centers = torch.cat([torch.linspace(-3, 3, 61, dtype=torch.float64),
                         torch.randn(200, generator=g, dtype=torch.float64) * 2])
    for width in (0.0, 0.05, 0.3, 1.0, 3.0):
        l, u = centers - width, centers + width
        a_lo, b_lo, a_up, b_up = relaxation(layer, l, u)
        xs = l[:, None] + (u - l)[:, None] * torch.linspace(0, 1, 301, dtype=torch.float64)[None, :]
        ys = f(xs)
        assert (a_lo[:, None] * xs + b_lo[:, None] <= ys + 1e-12).all(), width
        assert (a_up[:, None] * xs + b_up[:, None] >= ys - 1e-12).all(), width


def _affine_fn(layer):
    """The layer as the affine map the bounds use: batch norm with its running
    statistics, dropout as the identity."""
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return lambda x: torch.nn.functional.batch_norm(x, layer.running_mean, layer.running_var, layer.weight,
                                                        layer.bias, False, 0.0, layer.eps)
    if isinstance(layer, nn.Dropout):
        return lambda x: x
    return layer


def _dense_crown(net, layers, x, y, eps):
    """The same backward bound, with every affine layer's linear part as a dense
    Jacobian (torch.func.jacrev) instead of a vjp: an independent computation."""
    c0, r0 = input_interval(x, eps)
    out = []
    for i in range(x.shape[0]):
        c, r = c0[i:i + 1], r0[i:i + 1]
        mats, biases, relax = [], [], []
        for layer in layers[:-1]:
            if isinstance(layer, (nn.ReLU, robustops.nn.MReLU, robustops.nn.RBF)):
                relax.append(relaxation(layer, (c - r).flatten(), (c + r).flatten()))
                mats.append(None)
                biases.append(None)
            else:
                fn = _affine_fn(layer)
                flat = torch.zeros(c.numel(), dtype=c.dtype)
                jac = torch.func.jacrev(lambda t: fn(t.reshape(c.shape)).flatten())(flat)
                mats.append(jac)
                biases.append(fn(torch.zeros_like(c)).flatten())
                relax.append(None)
            c, r = robustops.bounds.interval_through(layer, c, r)
        last = layers[-1]
        k = last.out_features
        eye = torch.eye(k, dtype=x.dtype)
        spec = torch.stack([eye[y[i]] - eye[j] for j in range(k) if j != y[i]])
        a = spec @ last.weight
        d = spec @ last.bias
        for m, b, rl in zip(reversed(mats), reversed(biases), reversed(relax)):
            if m is None:
                a_lo, b_lo, a_up, b_up = rl
                ap, an = a.clamp(min=0), a.clamp(max=0)
                d = d + ap @ b_lo + an @ b_up
                a = ap * a_lo + an * a_up
            else:
                d = d + a @ b
                a = a @ m
        l0, u0 = (c0[i] - r0[i]).flatten(), (c0[i] + r0[i]).flatten()
        out.append(a.clamp(min=0) @ l0 + a.clamp(max=0) @ u0 + d)
    return torch.stack(out)


@pytest.mark.parametrize("name", ["mlp-bn1d", "conv-avgpool"])
def test_crown_matches_dense_jacobians_and_is_sound(name):
    net = _crown_nets()[name]
    bounded = BoundedModule(net)
    layers = [m for _, m in bounded.layers]
    x, y = _data()
    for eps in (0.0, 0.01, 0.05):
        crown = crown_ibp_margins(bounded, x, y, eps)
        assert_close(crown, _dense_crown(net, layers, x, y, eps), **F64)
        ibp = bounded.ibp_margins(x, y, eps)
        assert (crown >= ibp - 1e-9).all()  # tighter than IBP on these networks
        mixed = crown_ibp_margins(bounded, x, y, eps, beta=0.25)
        assert_close(mixed, 0.25 * crown + 0.75 * ibp, **F64)
        c, r = input_interval(x, eps)
        for k in range(30):
            sign = torch.randint(0, 2, x.shape, dtype=torch.float64) * 2 - 1
            z = net(c + r * (sign if k % 2 else torch.rand_like(x) * 2 - 1))
            keep = torch.ones_like(z, dtype=torch.bool)
            keep[torch.arange(len(y)), y] = False
            assert ((z.gather(1, y[:, None]) - z)[keep].reshape(len(y), -1) >= crown - 1e-9).all()


@pytest.mark.parametrize("name", list(_crown_nets()))
def test_radius_zero_is_the_forward_pass(name):
    net = _crown_nets()[name]
    x, y = _data()
    z = net(x)
    keep = torch.ones_like(z, dtype=torch.bool)
    keep[torch.arange(len(y)), y] = False
    assert_close(crown_ibp_margins(BoundedModule(net), x, y, 0.0),
                 (z.gather(1, y[:, None]) - z)[keep].reshape(len(y), -1), **F64)


def test_crown_ibp_training_loss_backpropagates():
    net = _crown_nets()["conv-avgpool"]
    bounded = BoundedModule(net)
    x, y = _data()
    out = certified_loss(bounded, x, y, 0.03, n=4, method="crown-ibp", beta=0.5, kappa=0.5)
    out.loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    err_ibp = robustops.bounds.verified_error(bounded, x, y, 0.03)
    err_crown = robustops.bounds.verified_error(bounded, x, y, 0.03, method="crown-ibp")
    assert err_crown <= err_ibp


def test_maxpool_is_rejected_by_crown():
    net = _nets()["conv-relu-maxpool-bn"]
    x, y = _data()
    with pytest.raises(TypeError, match="MaxPool2d has no linear relaxation"):
        crown_ibp_margins(BoundedModule(net), x, y, 0.01)
    with pytest.raises(ValueError, match="'beta' must be a number in"):
        crown_ibp_margins(BoundedModule(_crown_nets()["mlp-bn1d"]), x, y, 0.01, beta=1.5)
