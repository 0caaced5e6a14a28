"""robustops.models.wang_cnn (the symmetry-enforced CNN as Wang et al.'s text describes
it: a standard CNN plus ONE rotation-equivariant layer and ONE plain spatial pyramid
pooling layer), parameter_count and matched_width (the parameter-matched baseline).

Layer by layer against the paper's description, parameter counts computed by hand,
output shapes for 28x28, 32x32 and other input sizes (SPP), the rotation-equivariant
layer's quarter-turn equivariance, the parameter matching, and bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from robustops.models import matched_width, parameter_count, standard_cnn, wang_cnn
from robustops.nn import P4BatchNorm, P4ConvP4, P4ConvZ2, P4Pool, P4SpatialPyramidPool, SpatialPyramidPool

F64 = torch.float64
KINDS = [(3, 100, 32), (1, 10, 28)]  # (in_channels, num_classes, side): CIFAR-100, 28x28 grayscale


def _kind(m: nn.Module) -> tuple:
    """A layer as (type name, its shape-defining arguments)."""
    if isinstance(m, (P4ConvZ2, P4ConvP4)):
        return (type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.Conv2d):
        return ("Conv2d", m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
    if isinstance(m, (nn.BatchNorm2d, P4BatchNorm)):
        return (type(m).__name__, m.num_features)
    if isinstance(m, nn.MaxPool2d):
        return ("MaxPool2d", m.kernel_size)
    if isinstance(m, (P4Pool, SpatialPyramidPool)):
        return (type(m).__name__,) + ((m.levels,) if isinstance(m, SpatialPyramidPool) else ()) + (m.mode,)
    if isinstance(m, nn.Linear):
        return ("Linear", m.in_features, m.out_features)
    return (type(m).__name__,)


def test_wang_cnn_layers_against_the_paper():
    # Section II: "enhancing standard CNNs by adding a rotation-equivariant layer"
    # (G-convolution [4]) "and a scale-equivariant layer" (SPP [5]: the feature map of
    # the previous convolutional layers, bins at different scales, max pooling in each)
    w = 32
    model = wang_cnn(3, 100, width=w)
    assert isinstance(model, nn.Sequential)
    assert [_kind(m) for m in model] == [
        ("P4ConvZ2", 3, w, 3, 1, 1), ("P4BatchNorm", w), ("ReLU",), ("P4Pool", "max"),  # the G-convolution
        ("Conv2d", w, w, 3, 1, 1), ("BatchNorm2d", w), ("ReLU",),
        ("MaxPool2d", 2),
        ("Conv2d", w, 2 * w, 3, 1, 1), ("BatchNorm2d", 2 * w), ("ReLU",),
        ("Conv2d", 2 * w, 2 * w, 3, 1, 1), ("BatchNorm2d", 2 * w), ("ReLU",),
        ("MaxPool2d", 2),
        ("SpatialPyramidPool", (1, 2, 4), "max"),                                       # the SPP layer
        ("Linear", 2 * w * (1 + 4 + 16), 256), ("ReLU",), ("Linear", 256, 100)]
    leaves = [m for m in model.modules() if not list(m.children())]
    # exactly ONE rotation-equivariant (group) convolution and ONE plain SPP, no p4 head
    assert sum(isinstance(m, (P4ConvZ2, P4ConvP4)) for m in leaves) == 1
    assert sum(isinstance(m, SpatialPyramidPool) for m in leaves) == 1
    assert not any(isinstance(m, (P4SpatialPyramidPool, nn.Flatten)) for m in leaves)
    # the rest is the standard CNN: its layer list with conv1 -> G-conv (+ p4 batch
    # norm + rotation pooling) and Flatten -> SPP
    std = [_kind(m) for m in standard_cnn(3, 100, 32, width=w)]
    swapped = [("P4ConvZ2",) + std[0][1:], ("P4BatchNorm", w), ("ReLU",), ("P4Pool", "max")] + std[3:]
    flat = swapped.index(("Flatten",))
    swapped[flat] = ("SpatialPyramidPool", (1, 2, 4), "max")
    swapped[flat + 1] = ("Linear", 2 * w * 21, 256)
    assert [_kind(m) for m in model] == swapped
    # the options reach their layers
    other = wang_cnn(1, 10, width=5, levels=(1, 3), rotation_pool="mean", spp_mode="mean")
    assert _kind(other[3]) == ("P4Pool", "mean") and _kind(other[15]) == ("SpatialPyramidPool", (1, 3), "mean")
    assert _kind(other[16]) == ("Linear", 10 * 10, 256)


def _standard_params(c, k, w, side):
    # convs 9 c w + w, 9 w^2 + w, 18 w^2 + 2w, 36 w^2 + 2w; batch norms 2w + 2w + 4w + 4w;
    # fc1 2w (side / 4)^2 * 256 + 256; fc2 256 k + k
    return 63 * w * w + (9 * c + 18) * w + 512 * w * (side // 4) ** 2 + 256 + 257 * k


def _wang_params(c, k, w, bins=21):
    # the same trunk (P4ConvZ2(c, w, 3): w x c x 1 x 3 x 3 weights + w biases, as
    # Conv2d(c, w, 3); P4BatchNorm(w): 2w, as BatchNorm2d(w)); fc1 2w * bins * 256 + 256
    return 63 * w * w + (9 * c + 18) * w + 512 * w * bins + 256 + 257 * k


@pytest.mark.parametrize("c,k,w", [(3, 100, 32), (1, 10, 8), (3, 10, 5), (2, 7, 1)])
def test_parameter_counts_by_hand(c, k, w):
    assert parameter_count(wang_cnn(c, k, width=w)) == _wang_params(c, k, w)
    assert parameter_count(wang_cnn(c, k, width=w, levels=(1, 3))) == _wang_params(c, k, w, bins=10)
    for side in (32, 28):
        assert parameter_count(standard_cnn(c, k, side, width=w)) == _standard_params(c, k, w, side)
    # the trunk (all but the two linear layers) holds exactly the standard CNN's parameters
    trunk = lambda m: sum(p.numel() for layer in m if not isinstance(layer, nn.Linear)  # noqa: E731
                          for p in layer.parameters())
    assert trunk(wang_cnn(c, k, width=w)) == trunk(standard_cnn(c, k, 32, width=w))
    # the defaults (CIFAR-100): 435,972 against 1,140,484
    assert _wang_params(3, 100, 32) == 435_972 and _standard_params(3, 100, 32, 32) == 1_140_484


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_output_shapes_and_other_input_sizes(kind):
    c, k, side = kind
    torch.manual_seed(0)
    model = wang_cnn(c, k, width=4).eval()
    with torch.no_grad():
        for h, w in [(side, side), (16, 16), (17, 40), (64, 64), (45, 23)]:
            assert model(torch.randn(2, c, h, w)).shape == (2, k)
            # the SPP gives the linear head the same 2w * 21 features at every size
            assert model[:16](torch.randn(2, c, h, w)).shape == (2, 8 * 21)
        with pytest.raises((ValueError, RuntimeError)):  # 15 -> 7 -> 3 < 4 bins
            model(torch.randn(2, c, 15, 15))


def _grot(y, k):
    """The p4 action on [B, C, 4, H, W]: rotate the planes and shift the rotation axis."""
    return torch.rot90(torch.roll(y, k, dims=2), k, dims=(3, 4))


def _randomize_batch_norm(model, x):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        model.train()
        model(x)
    model.eval()


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_rotation_layer_is_equivariant_to_quarter_turns(kind):
    c, k, side = kind
    torch.manual_seed(1)
    model = wang_cnn(c, k, width=6).to(F64)
    x = torch.randn(3, c, side, side, dtype=F64)
    _randomize_batch_norm(model, x)
    with torch.no_grad():
        for r in (1, 2, 3):
            xr = torch.rot90(x, r, dims=(2, 3))
            for depth in (1, 3):  # the G-convolution; with its batch norm and ReLU
                y, yr = model[:depth](x), model[:depth](xr)
                assert y.shape == (3, 6, 4, side, side)
                # rotated input -> rotated planes, rotation axis cyclically shifted by r
                assert_close(yr, _grot(y, r))
                # the shift is needed: rotating the planes alone does not match
                assert (yr - torch.rot90(y, r, dims=(3, 4))).abs().max() > 1e-3
            # after rotation pooling, plain feature maps that rotate with the input
            assert_close(model[:4](xr), torch.rot90(model[:4](x), r, dims=(2, 3)))
        # the plain layers after it are not equivariant: no quarter-turn invariance of
        # the logits (unlike symmetric_cnn), as documented
        assert (model(torch.rot90(x, 1, dims=(2, 3))) - model(x)).abs().max() > 1e-6


def test_one_training_step_reaches_the_rotation_layer():
    torch.manual_seed(0)
    model = wang_cnn(1, 10, width=4)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_matched_width_gives_the_parameter_matched_baseline():
    # the standard CNN at wang_cnn()'s budget (CIFAR-100): width 12, 428,784 against
    # 435,972 (-1.65%); widths 11 and 13 are farther (394,522: -9.5%; 463,172: +6.2%)
    build = lambda w: standard_cnn(3, 100, 32, width=w)  # noqa: E731
    target = wang_cnn()
    assert matched_width(build, target) == 12
    assert matched_width(build, 435_972) == 12
    assert [_standard_params(3, 100, w, 32) for w in (11, 12, 13)] == [394_522, 428_784, 463_172]
    assert parameter_count(build(12)) == 428_784
    assert abs(428_784 - 435_972) / 435_972 < 0.05
    # the other way: wang_cnn at the 28x28 standard CNN's budget (width 4: 104,294) is
    # width 9 (104,940, +0.62%; width 8: 93,090, -10.7%; width 10: 116,916)
    assert matched_width(lambda w: wang_cnn(1, 10, width=w), standard_cnn(1, 10, 28, width=4)) == 9
    assert [_wang_params(1, 10, w) for w in (8, 9, 10)] == [93_090, 104_940, 116_916]
    assert _standard_params(1, 10, 4, 28) == 104_294
    # the nearest width, even where it is below the first one that reaches the target
    assert matched_width(build, 428_784 + 100) == 12 and matched_width(build, 463_172 - 100) == 13
    # too coarse: the 28x28 standard CNN steps by ~25k parameters, so wang_cnn(1, 10, 8)'s
    # 93,090 lies 15.4% / 12.0% from widths 3 / 4
    with pytest.raises(ValueError, match=r"matched_width: no width .* within tolerance=0.05: the nearest, "
                                         r"width 4, gives 104294 \(\+12.04%\)"):
        matched_width(lambda w: standard_cnn(1, 10, 28, width=w), wang_cnn(1, 10, width=8))
    assert matched_width(lambda w: standard_cnn(1, 10, 28, width=w), wang_cnn(1, 10, width=8), tolerance=0.15) == 4
    # the target is above every width up to max_width
    with pytest.raises(ValueError, match="matched_width: no width in \\[1, 4\\]"):
        matched_width(build, 10**9, max_width=4)


@pytest.mark.parametrize("call,message", [
    (lambda: wang_cnn(in_channels=0), "wang_cnn: argument 'in_channels' must be >= 1"),
    (lambda: wang_cnn(num_classes=0), "wang_cnn: argument 'num_classes' must be >= 1"),
    (lambda: wang_cnn(width=0), "wang_cnn: argument 'width' must be >= 1"),
    (lambda: wang_cnn(levels=()), "wang_cnn: argument 'levels' must be 1 to 8 positive ints"),
    (lambda: wang_cnn(levels=(1, 0)), "wang_cnn: argument 'levels' must be 1 to 8 positive ints"),
    (lambda: wang_cnn(levels="12"), "wang_cnn: argument 'levels' must be 1 to 8 positive ints"),
    (lambda: wang_cnn(rotation_pool="avg"), "wang_cnn: argument 'rotation_pool' must be one of"),
    (lambda: wang_cnn(spp_mode="min"), "wang_cnn: argument 'spp_mode' must be one of"),
    (lambda: standard_cnn(width=0), "standard_cnn: argument 'width' must be >= 1"),
    (lambda: standard_cnn(in_channels=0), "standard_cnn: argument 'in_channels' must be >= 1"),
    (lambda: standard_cnn(num_classes=0), "standard_cnn: argument 'num_classes' must be >= 1"),
    (lambda: matched_width(lambda w: wang_cnn(width=w), 0), "matched_width: argument 'target' must be >= 1"),
    (lambda: matched_width(lambda w: wang_cnn(width=w), 10, tolerance=-0.1),
     "matched_width: argument 'tolerance' must be a number in \\[0, 1\\)"),
    (lambda: matched_width(lambda w: wang_cnn(width=w), 10, max_width=0),
     "matched_width: argument 'max_width' must be >= 1"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_argument_types():
    with pytest.raises(TypeError, match="wang_cnn: argument 'width' must be an int"):
        wang_cnn(width=2.5)
    with pytest.raises(TypeError, match="matched_width: argument 'build' must be a callable"):
        matched_width(wang_cnn(), 10)
    with pytest.raises(TypeError, match="parameter_count: argument 'model' must be an nn.Module"):
        parameter_count([1, 2])
