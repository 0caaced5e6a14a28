"""robustops.models.lenet_saf and cifar_saf."""

from __future__ import annotations

import pytest
import torch

from robustops.models import cifar_saf, lenet_saf
from robustops.nn import RBF, HybridLoss, MReLU


@pytest.mark.parametrize("kind", ["plain", "rbf", "mrelu"])
def test_lenet_saf_layers_and_shapes(kind):
    net = lenet_saf(kind)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5)), (50, (5, 5))]
    fcs = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(800, 500), (500, 10)]
    # the SAF paper's Table 1: no activation after the plain net's convolutions
    acts = (torch.nn.ReLU, RBF, MReLU)
    want = {"plain": None, "rbf": RBF, "mrelu": MReLU}[kind]
    assert [type(m) for m in net.features if isinstance(m, acts)] == ([] if want is None else [want, want])
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.classifier) == 1
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.features) == (0 if kind == "plain" else 2)
    assert isinstance(net.output, RBF) == (kind != "plain")
    y = net(torch.rand(3, 1, 28, 28))
    assert y.shape == (3, 10)
    if kind != "plain":
        assert ((y >= 0) & (y <= 1)).all()


@pytest.mark.parametrize("size", [16, 32, (20, 40)])
def test_any_input_size_and_channels(size):
    h, w = (size, size) if isinstance(size, int) else size
    assert lenet_saf("mrelu", in_channels=3, input_size=size)(torch.rand(2, 3, h, w)).shape == (2, 10)
    assert cifar_saf("rbf", in_channels=1, num_classes=100, input_size=size)(torch.rand(2, 1, h, w)).shape == (2, 100)


def test_cifar_saf_layers():
    net = cifar_saf("rbf")
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64]
    fcs = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(1024, 64), (64, 10)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="'kind' must be one of"):
        lenet_saf("tanh")
    with pytest.raises(ValueError, match="too small"):
        lenet_saf(input_size=8)


def test_a_training_step_reduces_the_hybrid_loss():
    torch.manual_seed(0)
    net = lenet_saf("rbf", input_size=16)
    x, t = torch.rand(32, 1, 16, 16), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    loss_fn = HybridLoss()
    first = loss_fn(net(x), t)
    for _ in range(10):
        opt.zero_grad()
        loss = loss_fn(net(x), t)
        loss.backward()
        opt.step()
    assert loss_fn(net(x), t) < first
