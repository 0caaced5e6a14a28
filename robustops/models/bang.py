"""The BANG paper's networks (Rozsa, Guenther & Boult, "Towards robust deep neural
networks with BANG"): Caffe's LeNet (examples/mnist/lenet_train_test.prototxt) and
"CIFAR-10 quick" (examples/cifar10/cifar10_quick_train_test.prototxt), each "extended
with one additional Dropout layer" (Sec. 4), as the paper trains them.

Both are plain nn.Sequential models whose modules carry the prototxt's layer names
(conv1, pool1, relu1, ..., ip1, ip2; ``flatten`` and ``drop1`` are ours) and are
initialised as the prototxt's fillers say. Their outputs are logits (Caffe's
SoftmaxWithLoss: train them with cross-entropy).
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from robustops._checks import check_int
from robustops.models.saf import _flat_features, _input_size

__all__ = ["lenet_caffe", "cifar10_quick"]


def _check_dropout(fn: str, dropout) -> float:
    """The dropout probability as a float in [0, 1); None is 0 (no Dropout layer)."""
    if dropout is None:
        return 0.0
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"{fn}: argument 'dropout' must be None or a number in [0, 1), "
                        f"got {type(dropout).__name__}")
    if not (math.isfinite(dropout) and 0 <= dropout < 1):
        raise ValueError(f"{fn}: argument 'dropout' must be in [0, 1) (0 or None: no Dropout layer), "
                         f"got {dropout!r}")
    return float(dropout)


def _xavier_(weight: torch.Tensor) -> None:
    """Caffe's "xavier" filler with its default variance_norm FAN_IN:
    uniform(-sqrt(3 / fan_in), +sqrt(3 / fan_in)), fan_in = count / num (in_channels x
    kh x kw of a convolution, in_features of an inner product)."""
    bound = math.sqrt(3.0 / (weight.numel() // weight.shape[0]))
    nn.init.uniform_(weight, -bound, bound)


def _build(fn: str, features: "OrderedDict[str, nn.Module]", in_channels: int, size: tuple, hidden: int,
           num_classes: int, dropout: float, hidden_relu: Optional[str]) -> nn.Sequential:
    """features, then flatten - ip1 - [the ReLU named ``hidden_relu``] - [drop1] - ip2."""
    flat = _flat_features(fn, nn.Sequential(features), in_channels, size,
                          f"{sum(isinstance(m, nn.Conv2d) for m in features.values())} 5x5 convolutions "
                          f"and poolings")
    layers = OrderedDict(features)
    layers["flatten"] = nn.Flatten()
    layers["ip1"] = nn.Linear(flat, hidden)
    if hidden_relu is not None:
        assert hidden_relu not in layers, hidden_relu
        layers[hidden_relu] = nn.ReLU()
    if dropout > 0:
        layers["drop1"] = nn.Dropout(dropout)
    layers["ip2"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(layers)


def lenet_caffe(dropout: Optional[float] = 0.5, in_channels: int = 1, num_classes: int = 10,
                input_size=28) -> nn.Sequential:
    """Caffe's LeNet (examples/mnist/lenet_train_test.prototxt) with the BANG paper's
    Dropout layer.

    conv1 (5x5, 20) - pool1 (max 2x2 stride 2) - conv2 (5x5, 50) - pool2 (max 2x2
    stride 2) - flatten - ip1 (500) - relu1 - drop1 (Dropout(dropout)) - ip2
    (num_classes). No activation after the convolutions (as in Caffe's prototxt);
    convolutions without padding. 431,080 parameters at the defaults.

    The BANG paper says only that it added one Dropout layer, not where: after ip1's
    ReLU, before the class layer, is our choice (the usual place). ``dropout`` is its
    probability of zeroing an input, in [0, 1); 0 or None leaves the layer out (Caffe's
    LeNet as distributed).

    Initialisation as the prototxt's fillers: every weight "xavier", which Caffe
    draws from uniform(-sqrt(3 / fan_in), +sqrt(3 / fan_in)) with fan_in = the
    inputs of one output unit (in_channels x 5 x 5 for a convolution, in_features
    for ip1 and ip2); every bias "constant" 0.

    Any channel count, class count and input size of at least 16x16 (``input_size``:
    an int or (height, width)); 28x28 gives ip1 800 inputs (50 x 4 x 4).
    """
    fn = "lenet_caffe"
    dropout = _check_dropout(fn, dropout)
    in_channels = check_int(fn, "in_channels", in_channels, 1)
    num_classes = check_int(fn, "num_classes", num_classes, 1)
    size = _input_size(fn, input_size)
    features = OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 20, kernel_size=5)),
        ("pool1", nn.MaxPool2d(kernel_size=2, stride=2)),
        ("conv2", nn.Conv2d(20, 50, kernel_size=5)),
        ("pool2", nn.MaxPool2d(kernel_size=2, stride=2)),
    ])
    net = _build(fn, features, in_channels, size, 500, num_classes, dropout, hidden_relu="relu1")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _xavier_(m.weight)
                nn.init.zeros_(m.bias)
    return net


# cifar10_quick_train_test.prototxt's "gaussian" weight fillers (mean 0); biases are 0.
_QUICK_STD = {"conv1": 1e-4, "conv2": 1e-2, "conv3": 1e-2, "ip1": 0.1, "ip2": 0.1}


def cifar10_quick(dropout: Optional[float] = 0.5, in_channels: int = 3, num_classes: int = 10,
                  input_size=32) -> nn.Sequential:
    """Caffe's "CIFAR-10 quick" (examples/cifar10/cifar10_quick_train_test.prototxt)
    with the BANG paper's Dropout layer.

    conv1 (5x5, 32, pad 2) - pool1 (max 3x3 stride 2) - relu1 - conv2 (5x5, 32, pad 2)
    - relu2 - pool2 (avg 3x3 stride 2) - conv3 (5x5, 64, pad 2) - relu3 - pool3 (avg
    3x3 stride 2) - flatten - ip1 (64) - drop1 (Dropout(dropout)) - ip2 (num_classes).
    The layer order is the prototxt's: pool1 comes before relu1, and there is no
    activation between ip1 and ip2. 145,578 parameters at the defaults.

    Pooling is in Caffe's ceil mode (output size ceil((n - 3) / 2) + 1: 32 -> 16 -> 8
    -> 4), and an average over a window clipped by the border divides by the number
    of values inside the image, as Caffe's AVE pooling does without padding.

    The BANG paper says only that it added one Dropout layer, not where: between ip1
    and ip2, on the 64 hidden units before the class layer, is our choice (the usual
    place, and where lenet_caffe has it). ``dropout`` is its probability, in [0, 1);
    0 or None leaves the layer out (cifar10_quick as distributed).

    Initialisation as the prototxt's fillers: weights "gaussian" with mean 0 and std
    0.0001 (conv1), 0.01 (conv2, conv3), 0.1 (ip1, ip2); biases "constant" 0.

    Any channel count, class count and input size of at least 8x8 (``input_size``: an
    int or (height, width)); 32x32 gives ip1 1024 inputs (64 x 4 x 4).
    """
    fn = "cifar10_quick"
    dropout = _check_dropout(fn, dropout)
    in_channels = check_int(fn, "in_channels", in_channels, 1)
    num_classes = check_int(fn, "num_classes", num_classes, 1)
    size = _input_size(fn, input_size)

    def pool(kind):
        return (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(kernel_size=3, stride=2, ceil_mode=True)

    features = OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 32, kernel_size=5, padding=2)),
        ("pool1", pool("max")),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 32, kernel_size=5, padding=2)),
        ("relu2", nn.ReLU()),
        ("pool2", pool("avg")),
        ("conv3", nn.Conv2d(32, 64, kernel_size=5, padding=2)),
        ("relu3", nn.ReLU()),
        ("pool3", pool("avg")),
    ])
    net = _build(fn, features, in_channels, size, 64, num_classes, dropout, hidden_relu=None)
    with torch.no_grad():
        for name, std in _QUICK_STD.items():
            layer = getattr(net, name)
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)
    return net
