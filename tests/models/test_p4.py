"""robustops.models.standard_cnn, symmetric_cnn and p4cnn: the symmetric models'
logits are invariant to rotations of the input by multiples of 90 degrees (eval
mode, float64) and the plain CNN's are not; layers, output shapes, other input sizes
for the SPP head, parameter counts, and one training step."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from robustops.models import P4CNN, p4cnn, standard_cnn, symmetric_cnn
from robustops.nn import P4BatchNorm, P4ConvP4, P4ConvZ2, P4SpatialPyramidPool

F64 = torch.float64

# (in_channels, num_classes, side): CIFAR-100-sized and 28x28 grayscale inputs
KINDS = [(3, 100, 32), (1, 10, 28)]


def _randomize_batch_norm(model, x):
    """Non-trivial running statistics and affine parameters, so that eval mode is
    not the identity batch norm."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        model.train()
        for _ in range(2):
            model(x)
    model.eval()


def _max_rotation_error(model, x):
    with torch.no_grad():
        y = model(x)
        return max((model(torch.rot90(x, k, dims=(2, 3))) - y).abs().max().item() for k in (1, 2, 3))


@pytest.mark.parametrize("mode", ["max", "mean"])
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_symmetric_cnn_is_rotation_invariant(kind, mode):
    c, classes, side = kind
    torch.manual_seed(0)
    model = symmetric_cnn(c, classes, width=4, mode=mode).double()
    x = torch.randn(3, c, side, side, dtype=F64)
    _randomize_batch_norm(model, x)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, classes)
    assert y.abs().max() > 1e-3  # not trivially constant
    assert _max_rotation_error(model, x) < 1e-10
    # the transformed-filter caches were used (eval mode)
    convs = [m for m in model.modules() if isinstance(m, (P4ConvZ2, P4ConvP4))]
    assert len(convs) == 4 and all(m._cache is not None for m in convs)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_symmetric_cnn_takes_other_input_sizes(kind):
    c, classes, side = kind
    torch.manual_seed(0)
    model = symmetric_cnn(c, classes, width=4).double().eval()
    for s in (16, 24, 40, side):
        x = torch.randn(2, c, s, s, dtype=F64)
        with torch.no_grad():
            assert model(x).shape == (2, classes), s
        if s % 4 == 0:  # every pooling grid symmetric: still invariant
            assert _max_rotation_error(model, x) < 1e-10, s
    with pytest.raises(ValueError, match="square planes"):
        model(torch.randn(1, c, 32, 40, dtype=F64))


def test_symmetric_cnn_layers():
    model = symmetric_cnn()
    convs = [m for m in model if isinstance(m, (P4ConvZ2, P4ConvP4))]
    assert [type(m) for m in convs] == [P4ConvZ2, P4ConvP4, P4ConvP4, P4ConvP4]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.padding) for m in convs] == \
        [(3, 16, 3, 1), (16, 16, 3, 1), (16, 32, 3, 1), (32, 32, 3, 1)]
    assert sum(isinstance(m, P4BatchNorm) for m in model) == 4
    head = [m for m in model if isinstance(m, P4SpatialPyramidPool)]
    assert len(head) == 1 and head[0].levels == (1, 2, 4)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32 * 6, 256), (256, 100)]
    # a p4 channel carries 4 planes: the p4 layers after the first hold as many
    # weights as the plain model's convolutions of twice the width
    plain = [m for m in standard_cnn() if isinstance(m, torch.nn.Conv2d)]
    assert [m.weight.numel() for m in convs[1:]] == [m.weight.numel() for m in plain[1:]]
    # the docstring's totals at the defaults (CIFAR-100)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(symmetric_cnn()) / 1e6, 2) == 0.14
    assert round(count(standard_cnn()) / 1e6, 2) == 1.14


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_standard_cnn_shapes_and_no_invariance(kind):
    c, classes, side = kind
    torch.manual_seed(0)
    model = standard_cnn(c, classes, input_size=side, width=4).double()
    x = torch.randn(3, c, side, side, dtype=F64)
    _randomize_batch_norm(model, x)
    with torch.no_grad():
        assert model(x).shape == (3, classes)
    # the sanity contrast: a plain CNN with random weights is not rotation invariant
    assert _max_rotation_error(model, x) > 1e-6
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == 8 * (side // 4) ** 2
    with pytest.raises(ValueError, match="standard_cnn: argument 'input_size' must be divisible by 4"):
        standard_cnn(input_size=30)


def test_p4cnn_is_rotation_invariant():
    torch.manual_seed(0)
    model = p4cnn().double()
    assert isinstance(model, P4CNN)
    convs = [m for m in model.modules() if isinstance(m, (P4ConvZ2, P4ConvP4))]
    assert len(convs) == 6
    assert isinstance(convs[0], P4ConvZ2) and (convs[0].in_channels, convs[0].out_channels) == (1, 10)
    assert all(isinstance(m, P4ConvP4) for m in convs[1:])
    assert [m.out_channels for m in convs] == [10] * 5 + [10]
    assert all(m.kernel_size == 3 and m.padding == 0 for m in convs)
    assert sum(isinstance(m, P4BatchNorm) for m in model.modules()) == 5
    x = torch.randn(3, 1, 28, 28, dtype=F64)
    _randomize_batch_norm(model, x)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, 10)
    assert _max_rotation_error(model, x) < 1e-10
    # other class and channel counts
    other = p4cnn(num_classes=5, channels=6, in_channels=3)
    assert other(torch.randn(2, 3, 28, 28)).shape == (2, 5)


def test_one_training_step_of_symmetric_cnn():
    torch.manual_seed(0)
    model = symmetric_cnn(1, 10, width=4)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, target = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), target)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert torch.isfinite(loss)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)
    opt.step()
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters())]
    assert all(changed)
    # and the model stays invariant after the step (eval mode)
    model.eval().double()
    assert _max_rotation_error(model, x.double()) < 1e-10
    loss2 = torch.nn.functional.cross_entropy(model.float()(x), target)
    assert torch.isfinite(loss2)
    assert_close(model(x), model(x))
