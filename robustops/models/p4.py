"""The models of the symmetry-enforcement comparison (Wang et al.) and P4CNN (Cohen &
Welling 2016):

    standard_cnn(in_channels, num_classes)   a plain CNN with a flatten + linear head
    symmetric_cnn(in_channels, num_classes)  p4 layers, rotation pooling, an invariant
                                             SPP head (robustops.nn.P4SpatialPyramidPool)
    p4cnn(num_classes)                       P4CNN for rotated MNIST: 6 p4 layers of 10
                                             channels, 3x3, batch norm + ReLU, 2x2 max
                                             pool after layer 2, max over rotations and space

The first two take CIFAR-100-sized (3x32x32, 100 classes) or 28x28 grayscale (1x28x28,
10 classes) inputs. Their trunks' convolutions 2-4 have the same number of weights (a
p4 channel carries 4 planes: ``width`` p4 channels against 2 x width plain ones, so a
P4ConvP4 of width w holds as many weights as a Conv2d of width 2w; the lifting layer
holds half the first plain convolution's); their heads differ
(flatten + linear against the invariant SPP head, which is much smaller: 1.14M against
0.14M parameters in all at the defaults for CIFAR-100). The symmetric model's logits are invariant to rotations of the input by
multiples of 90 degrees (square inputs whose side is divisible by 4; the tests check
it), and its SPP head takes inputs of any size >= 16.
"""

from __future__ import annotations

from torch import Tensor, nn

from robustops.nn.p4 import P4BatchNorm, P4ConvP4, P4ConvZ2, P4MaxPool2d, P4SpatialPyramidPool

__all__ = ["standard_cnn", "symmetric_cnn", "p4cnn", "P4CNN"]


def _block(conv: nn.Module, bn: nn.Module) -> list:
    return [conv, bn, nn.ReLU(inplace=True)]


def standard_cnn(in_channels: int = 3, num_classes: int = 100, input_size: int = 32, width: int = 32) -> nn.Sequential:
    """conv3x3(w) x2, max pool, conv3x3(2w) x2, max pool, linear(256), linear(classes);
    batch norm and ReLU after every convolution; padding 1."""
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
    max over rotations and space as the logits."""

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
        return self.features(x).amax(dim=(2, 3, 4))


def p4cnn(num_classes: int = 10, channels: int = 10, in_channels: int = 1) -> P4CNN:
    return P4CNN(num_classes, channels, in_channels)
