"""The models of the symmetry-enforcement comparison (Wang et al.) and P4CNN (Cohen &
Welling 2016):

    standard_cnn(in_channels, num_classes)   a plain CNN with a flatten + linear head
    symmetric_cnn(in_channels, num_classes)  p4 layers, rotation pooling, an invariant
                                             SPP head (robustops.nn.P4SpatialPyramidPool)
    p4cnn(num_classes)                       P4CNN for rotated MNIST: 6 p4 layers of 10
                                             channels, 3x3, batch norm + ReLU, 2x2 max
                                             pool after layer 2, max over rotations and space
    wang_cnn(in_channels, num_classes)       the paper's model as its text describes it: the
                                             standard CNN with ONE rotation-equivariant layer
                                             (a lifting G-convolution, then rotation pooling)
                                             and ONE plain SPP layer (He et al.) before the head
    parameter_count(model)                   the number of parameters
    matched_width(build, target)             the width at which build(width) has the
                                             parameter count nearest target (within a tolerance)

The first two take CIFAR-100-sized (3x32x32, 100 classes) or 28x28 grayscale (1x28x28,
10 classes) inputs. Their trunks' convolutions 2-4 have the same number of weights (a p4
channel carries 4 planes: ``width`` p4 channels against 2 x width plain ones, so a
P4ConvP4 of width w holds as many weights as a Conv2d of width 2w; the lifting layer
holds half the first plain convolution's); their heads differ (flatten + linear against
the invariant SPP head, which is much smaller: 1.14M against 0.14M parameters in all at
the defaults for CIFAR-100). The symmetric model's logits are invariant to rotations of
the input by multiples of 90 degrees (square inputs whose side is divisible by 4; the
tests check it), and its SPP head takes inputs of any size >= 16.
"""

from __future__ import annotations

from torch import Tensor, nn

from typing import Callable, Sequence, Union

import torch

from robustops._checks import check_choice, check_int, check_levels
from robustops.nn.p4 import P4BatchNorm, P4ConvP4, P4ConvZ2, P4MaxPool2d, P4Pool, P4SpatialPyramidPool
from robustops.nn.spp import SpatialPyramidPool

__all__ = ["standard_cnn", "symmetric_cnn", "p4cnn", "P4CNN", "wang_cnn", "parameter_count", "matched_width"]


def _block(conv: nn.Module, bn: nn.Module) -> list:
    return [conv, bn, nn.ReLU(inplace=True)]


def standard_cnn(in_channels: int = 3, num_classes: int = 100, input_size: int = 32, width: int = 32) -> nn.Sequential:
    """conv3x3(w) x2, max pool, conv3x3(2w) x2, max pool, linear(256), linear(classes);
    batch norm and ReLU after every convolution; padding 1."""
    in_channels = check_int("standard_cnn", "in_channels", in_channels, 1)
    num_classes = check_int("standard_cnn", "num_classes", num_classes, 1)
    width = check_int("standard_cnn", "width", width, 1)
    input_size = check_int("standard_cnn", "input_size", input_size, 4)
    if input_size % 4:
        raise ValueError(f"standard_cnn: argument 'input_size' must be divisible by 4, got {input_size}")
    w = width
    side = input_size // 4
    return nn.Sequential(
        *_block(nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w)),
        *_block(nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w)),
        nn.MaxPool2d(2),
        *_block(nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w)),
        *_block(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w)),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * w * side * side, 256), nn.ReLU(inplace=True),
        nn.Linear(256, num_classes))


def symmetric_cnn(in_channels: int = 3, num_classes: int = 100, width: int = 16,
                  levels=(1, 2, 4), mode: str = "max") -> nn.Sequential:
    """The same trunk with p4 layers (``width`` p4 channels, then 2 x width), p4 batch
    norm and p4 max pooling, and the rotation-invariant SPP head (rotation pooling,
    SPP, pooling over the orbits of the bins), then linear(256), linear(classes)."""
    w = width
    head = P4SpatialPyramidPool(levels, mode)
    return nn.Sequential(
        *_block(P4ConvZ2(in_channels, w, 3, padding=1), P4BatchNorm(w)),
        *_block(P4ConvP4(w, w, 3, padding=1), P4BatchNorm(w)),
        P4MaxPool2d(2),
        *_block(P4ConvP4(w, 2 * w, 3, padding=1), P4BatchNorm(2 * w)),
        *_block(P4ConvP4(2 * w, 2 * w, 3, padding=1), P4BatchNorm(2 * w)),
        P4MaxPool2d(2),
        head,
        nn.Linear(head.output_size(2 * w), 256), nn.ReLU(inplace=True),
        nn.Linear(256, num_classes))


class P4CNN(nn.Module):
    """P4CNN (Cohen & Welling 2016) for 1x28x28 rotated MNIST: a lifting layer and 5
    p4 layers (3x3, no padding, ``channels`` each, the last one ``num_classes``),
    batch norm + ReLU after all but the last, 2x2 max pooling after layer 2, and the
    max over rotations and space as the logits.

    Args:
        num_classes: the outputs (the last p4 layer's channels; default 10).
        channels: the channels of the other p4 layers (default 10).
        in_channels: the input's channels (default 1).

    Shape:
        input: [B, in_channels, H, W], floating point, H and W >= 22 (28 for rotated
        MNIST); output: [B, num_classes] logits, invariant to rotations of a square
        input by multiples of 90 degrees when the side is even (the max pooling's grid
        then maps onto itself), as for 28.
    """

    def __init__(self, num_classes: int = 10, channels: int = 10, in_channels: int = 1):
        super().__init__()
        c = channels
        layers = _block(P4ConvZ2(in_channels, c, 3), P4BatchNorm(c))
        layers += _block(P4ConvP4(c, c, 3), P4BatchNorm(c)) + [P4MaxPool2d(2)]
        for _ in range(3):
            layers += _block(P4ConvP4(c, c, 3), P4BatchNorm(c))
        layers.append(P4ConvP4(c, num_classes, 3))
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """The logits: the last p4 layer's output maxed over rotations and space.

        Args:
            x: [B, in_channels, H, W], floating point.

        Returns:
            [B, num_classes] logits.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not [B, in_channels, H, W] (the first layer's checks).
            RuntimeError: ``x`` is smaller than 22 x 22 (a convolution's error).
        """
        return self.features(x).amax(dim=(2, 3, 4))


def p4cnn(num_classes: int = 10, channels: int = 10, in_channels: int = 1) -> P4CNN:
    """P4CNN (Cohen & Welling 2016) for rotated MNIST: ``P4CNN(num_classes, channels,
    in_channels)``; see P4CNN for the layers.

    Args:
        num_classes: the outputs (default 10).
        channels: the channels of the p4 layers but the last (default 10).
        in_channels: the input's channels (default 1).

    Returns:
        A new P4CNN, with PyTorch's default initialisation of its layers (the p4
        convolutions as nn.Conv2d).
    """
    return P4CNN(num_classes, channels, in_channels)


def wang_cnn(in_channels: int = 3, num_classes: int = 100, width: int = 32, levels: Sequence[int] = (1, 2, 4),
             rotation_pool: str = "max", spp_mode: str = "max") -> nn.Sequential:
    """The symmetry-enforced CNN of Wang et al. as their Section II describes it: a
    standard CNN "by adding a rotation-equivariant layer" (a G-convolution, Cohen &
    Welling 2016) "and a scale-equivariant layer" (spatial pyramid pooling, He et al.
    2015, which "divid[es] the feature map (output from the previous convolutional
    layers) into bins at different scales and appl[ies] pooling (usually max pooling)
    in each bin", so that inputs of any size give a fixed-size output).

    The paper gives no layer list, widths or placement (its Fig. 1 is a sketch), so
    this is standard_cnn's layer list with exactly two layers swapped::

        0  P4ConvZ2(in_channels, w, 3, padding=1)   the ONE rotation-equivariant layer
        1  P4BatchNorm(w), 2 ReLU
        3  P4Pool(rotation_pool)                    [B, w, 4, H, W] -> [B, w, H, W]
        4  Conv2d(w, w, 3, padding=1), 5 BatchNorm2d(w), 6 ReLU
        7  MaxPool2d(2)
        8  Conv2d(w, 2w, 3, padding=1), 9 BatchNorm2d(2w), 10 ReLU
        11 Conv2d(2w, 2w, 3, padding=1), 12 BatchNorm2d(2w), 13 ReLU
        14 MaxPool2d(2)
        15 SpatialPyramidPool(levels, spp_mode)     the ONE plain SPP layer, in place of
                                                    standard_cnn's Flatten
        16 Linear(2w * sum(n^2 for n in levels), 256), 17 ReLU
        18 Linear(256, num_classes)

    Choices where the paper is silent: the G-convolution is the first layer (the
    lifting layer is the p4 layer that takes an image) and replaces standard_cnn's
    first convolution, which has as many parameters (w * (9 in_channels + 1)); its 4
    rotation planes are max-pooled (rotation pooling) so the plain layers after it see
    w ordinary channels that rotate with the input; the SPP replaces the flatten before
    the linear head (where He et al. put it, after the last pooling layer), levels
    (1, 2, 4) as in symmetric_cnn. The trunk thus holds exactly standard_cnn's
    parameters at the same width, and the head is smaller (2w * 21 * 256 weights
    against 2w * (input_size / 4)^2 * 256): use matched_width for a comparison at equal
    parameter counts.

    Only layer 0 (and 1-3 with it) is rotation-equivariant: the plain convolutions and
    the SPP's bins at levels > 1 are not, so the logits are NOT invariant to quarter
    turns (unlike symmetric_cnn's, which is p4 throughout with an invariant head).
    Inputs: any H, W >= 4 * max(levels) (16 at the defaults), square or not."""
    fn = "wang_cnn"
    in_channels = check_int(fn, "in_channels", in_channels, 1)
    num_classes = check_int(fn, "num_classes", num_classes, 1)
    w = check_int(fn, "width", width, 1)
    levels = check_levels(fn, levels)
    rotation_pool = check_choice(fn, "rotation_pool", rotation_pool, ("max", "mean"))
    spp_mode = check_choice(fn, "spp_mode", spp_mode, ("max", "mean"))
    spp = SpatialPyramidPool(levels, spp_mode)
    return nn.Sequential(
        *_block(P4ConvZ2(in_channels, w, 3, padding=1), P4BatchNorm(w)),
        P4Pool(rotation_pool),
        *_block(nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w)),
        nn.MaxPool2d(2),
        *_block(nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w)),
        *_block(nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w)),
        nn.MaxPool2d(2),
        spp,
        nn.Linear(spp.output_size(2 * w), 256), nn.ReLU(inplace=True),
        nn.Linear(256, num_classes))


def parameter_count(model: nn.Module) -> int:
    """The number of parameters of ``model`` (shared parameters counted once).

    Args:
        model: any nn.Module (on the meta device too).

    Returns:
        The total number of elements of its parameters (buffers not counted).

    Raises:
        TypeError: ``model`` is not an nn.Module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"parameter_count: argument 'model' must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters())


def matched_width(build: Callable[[int], nn.Module], target: Union[int, nn.Module], tolerance: float = 0.05,
                  max_width: int = 1024) -> int:
    """The width w in [1, max_width] at which ``build(w)`` has the parameter count
    nearest ``target`` (a count, or a model whose count is taken), the smaller w on a
    tie; a ValueError when even that count differs from the target by more than
    ``tolerance`` of the target. ``build``'s count must not decrease with the width
    (true of standard_cnn, symmetric_cnn and wang_cnn): a binary search, the models
    built on the meta device (no memory). For example, the standard CNN with as many
    parameters as wang_cnn() (435,972 on CIFAR-100)::

        w = matched_width(lambda w: standard_cnn(3, 100, 32, width=w), wang_cnn())   # 12: 428,784, -1.65%

    The widths are integers, so a count can be matched only as finely as one width
    step allows: on 28x28 grayscale inputs the standard CNN's steps are ~25k
    parameters (its flatten + linear head), too coarse to match wang_cnn(1, 10,
    width=8)'s 93,090 within 5% (the ValueError says so); match the other way instead
    (wang_cnn's width for standard_cnn's count)."""
    fn = "matched_width"
    if not callable(build) or isinstance(build, nn.Module):
        raise TypeError(f"{fn}: argument 'build' must be a callable width -> nn.Module (not a model), got "
                        f"{type(build).__name__}")
    if isinstance(target, nn.Module):
        target = parameter_count(target)
    target = check_int(fn, "target", target, 1)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"{fn}: argument 'tolerance' must be a number in [0, 1), got {tolerance!r}")
    max_width = check_int(fn, "max_width", max_width, 1)

    def count(w: int) -> int:
        with torch.device("meta"):
            return parameter_count(build(w))

    lo, hi = 1, max_width  # the smallest w with count(w) >= target, or max_width
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min((w for w in (lo - 1, lo) if w >= 1), key=lambda w: (abs(count(w) - target), w))
    got = count(best)
    if abs(got - target) > tolerance * target:
        raise ValueError(f"{fn}: no width in [1, {max_width}] gives {target} parameters within tolerance="
                         f"{tolerance:g}: the nearest, width {best}, gives {got} ({(got - target) / target:+.2%})")
    return best
