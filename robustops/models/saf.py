"""The SAF paper's networks (Zhao & Griffin 2016, "Suppressing the Unusual"): its
Table 1 (MNIST) and Table 3 (CIFAR-10), each in three kinds.

``kind`` picks the activations:

- ``"plain"``: the paper's plain CNN, exactly as its tables list it: NO activation
  after the convolutions (each convolution goes straight into its pooling), a ReLU
  only after the hidden fully connected layer fc1, and linear outputs (train it with
  cross-entropy).
- ``"rbf"`` and ``"mrelu"``: the robust CNNs: a symmetric activation function (1-D
  RBF or mReLU) after each convolution, with batch norm before it (the paper calls
  batch norm "necessary" to train them, Sec. 4, though its tables leave it out), the
  same ReLU after fc1, and an RBF on the outputs (train them with
  robustops.nn.HybridLoss; the outputs are in [0, 1] and a low maximum flags a
  nonsense input).

For Caffe's LeNet and cifar10_quick as the BANG paper trains them (with the ReLUs
Caffe puts after the convolutions of cifar10_quick, Caffe's initialisation and a
Dropout layer) see robustops.models.lenet_caffe and robustops.models.cifar10_quick.
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence

import torch
from torch import nn

from robustops._checks import check_choice, check_int
from robustops.nn.saf import RBF, MReLU

__all__ = ["lenet_saf", "cifar_saf", "SAFNet"]

_KINDS = ("plain", "rbf", "mrelu")
_POOLS = ("max", "avg")


def _activation(kind: str) -> Optional[nn.Module]:
    """The activation after each convolution: none for the plain networks (the
    SAF paper's Tables 1 and 3 list "-" there), the SAF for the robust ones."""
    return {"plain": None, "rbf": RBF, "mrelu": MReLU}[kind]


def _pool(kind: str, pool: dict) -> nn.Module:
    return (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(**pool)


class SAFNet(nn.Module):
    """Convolution blocks (conv, [batch norm], [activation], pool), then a hidden
    fully connected layer with ReLU, the class layer and, for the robust kinds, an
    RBF. Built for a given input size; ``features``, ``classifier`` and ``output`` are
    the three stages.

    ``kind`` "plain" has no activation after the convolutions; "rbf" / "mrelu" put
    robustops.nn.RBF / MReLU there. ``pool`` holds the nn.MaxPool2d / nn.AvgPool2d
    arguments shared by every pooling; ``pool_kinds`` says, per convolution block,
    "max" or "avg" (default: all "max"). lenet_saf and cifar_saf build the papers'
    two networks with it.

    Args:
        kind: ``"plain"``, ``"rbf"`` or ``"mrelu"``.
        in_channels: the input's channels (>= 1).
        input_size: the input's side (an int) or (height, width).
        channels: the output channels of the 5x5 convolutions, one block each.
        hidden: the width of the hidden fully connected layer.
        num_classes: the outputs (>= 1).
        padding: every convolution's padding.
        pool: keyword arguments of every pooling layer (kernel_size, stride, ...).
        batch_norm: batch norm after each convolution; None: on for the robust kinds,
            off for "plain".
        name: the name errors are reported under (the builder's).
        pool_kinds: ``"max"`` or ``"avg"`` per block; None: all "max".

    Shape:
        input: [B, in_channels, height, width], floating point; output: [B,
        num_classes], logits ("plain") or RBF outputs in (0, 1] (the robust kinds).

    Raises:
        TypeError: a non-int size or count, or a ``batch_norm`` that is not None or a
            bool.
        ValueError: an unknown ``kind`` or pooling kind, a ``pool_kinds`` of the wrong
            length, a count below 1, or an input too small for the layers.
    """

    def __init__(self, kind: str, in_channels: int, input_size, channels: Sequence[int], hidden: int,
                 num_classes: int, padding: int, pool: dict, batch_norm: Optional[bool], name: str,
                 pool_kinds: Optional[Sequence[str]] = None):
        super().__init__()
        check_choice(name, "kind", kind, _KINDS)
        in_channels = check_int(name, "in_channels", in_channels, 1)
        num_classes = check_int(name, "num_classes", num_classes, 1)
        h, w = _input_size(name, input_size)
        if batch_norm is not None and not isinstance(batch_norm, bool):
            raise TypeError(f"{name}: argument 'batch_norm' must be None or a bool, got {type(batch_norm).__name__}")
        if pool_kinds is None:
            pool_kinds = ("max",) * len(channels)
        if len(pool_kinds) != len(channels):
            raise ValueError(f"{name}: argument 'pool_kinds' must name one pooling per convolution "
                             f"({len(channels)}), got {len(pool_kinds)}")
        for p in pool_kinds:
            check_choice(name, "pool_kinds", p, _POOLS)
        self.kind = kind
        if batch_norm is None:
            batch_norm = kind != "plain"
        activation = _activation(kind)
        layers = []
        c = in_channels
        for width, pool_kind in zip(channels, pool_kinds):
            layers.append(nn.Conv2d(c, width, kernel_size=5, padding=padding))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            if activation is not None:
                layers.append(activation())
            layers.append(_pool(pool_kind, pool))
            c = width
        self.features = nn.Sequential(*layers)
        flat = _flat_features(name, self.features, in_channels, (h, w),
                              f"{len(channels)} 5x5 convolutions and poolings")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        self.output = RBF() if kind != "plain" else nn.Identity()

    def extra_repr(self) -> str:
        """The network's kind, shown in the module's repr."""
        return f"kind={self.kind!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``output(classifier(features(x)))``.

        Args:
            x: [B, in_channels, height, width] at the size the network was built for.

        Returns:
            [B, num_classes], logits for "plain", RBF outputs in (0, 1] for "rbf" and
            "mrelu".
        """
        return self.output(self.classifier(self.features(x)))


def _input_size(fn: str, size) -> tuple:
    """(h, w) from an int or a pair of ints, each >= 1 (TypeError / ValueError naming
    'input_size' otherwise)."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise TypeError(f"{fn}: argument 'input_size' must be an int or a pair of ints (height, width), "
                        f"got {size!r}")
    return tuple(check_int(fn, "input_size", v, 1) for v in size)


def _flat_features(fn: str, features: nn.Module, in_channels: int, size: tuple, what: str) -> int:
    """The number of values ``features`` makes of one [in_channels, h, w] input
    (found on the meta device, then the parameters are re-created and initialised on
    the CPU); a ValueError naming 'input_size' when the input is too small."""
    h, w = size
    with torch.no_grad():
        try:
            flat = features.to("meta")(torch.empty(1, in_channels, h, w, device="meta"))
        except RuntimeError as e:
            raise ValueError(f"{fn}: argument 'input_size' {(h, w)} is too small for {what} ({e})") from None
    features.to_empty(device="cpu")
    _reset(features)
    return flat[0].numel()


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()


def lenet_saf(kind: str = "plain", in_channels: int = 1, num_classes: int = 10,
              input_size=28, batch_norm: Optional[bool] = None) -> SAFNet:
    """The SAF paper's MNIST LeNet (its Table 1).

    - ``"plain"`` (8 layers in the table): cv1 (5x5x20) - max pool - cv2 (5x5x50) -
      max pool - fc1 500 - ReLU - fc2 10 (softmax loss). No activation after the
      convolutions.
    - ``"rbf"`` / ``"mrelu"`` (11 layers): cv1 - [BN] - SAF - max pool - cv2 - [BN] -
      SAF - max pool - fc1 500 - ReLU - fc2 10 - RBF (hybrid loss), SAF the 1-D RBF or
      the mReLU.

    Convolutions without padding, max pooling 2x2 stride 2, PyTorch's default
    initialisation. ``batch_norm`` (default: on for the robust kinds, off for plain)
    puts batch norm after each convolution. Any channel count, class count and input
    size of at least 16x16 (``input_size``: an int or (height, width)); 28x28 gives
    fc1 800 inputs (50 x 4 x 4).
    """
    return SAFNet(kind, in_channels, input_size, channels=(20, 50), hidden=500,
                  num_classes=num_classes, padding=0, pool=dict(kernel_size=2, stride=2),
                  batch_norm=batch_norm, name="lenet_saf")


def cifar_saf(kind: str = "plain", in_channels: int = 3, num_classes: int = 10,
              input_size=32, batch_norm: Optional[bool] = None) -> SAFNet:
    """The SAF paper's CIFAR-10 network (its Table 3, "a deeper LeNet").

    - ``"plain"`` (10 layers in the table): cv1 (5x5x32) - max pool - cv2 (5x5x32) -
      avg pool - cv3 (5x5x64) - avg pool - fc1 64 - ReLU - fc2 10 (softmax loss). No
      activation after the convolutions: the only ReLU is fc1's (unlike Caffe's
      cifar10_quick, robustops.models.cifar10_quick, which has ReLUs after pool1,
      conv2 and conv3 and none after ip1).
    - ``"rbf"`` / ``"mrelu"`` (14 layers): cv1 - [BN] - SAF - max pool - cv2 - [BN] -
      SAF - avg pool - cv3 - [BN] - SAF - avg pool - fc1 64 - ReLU - fc2 10 - RBF
      (hybrid loss).

    The table gives the pooling kinds (max, avg, avg) but not their sizes: they are
    cifar10_quick's, 3x3 stride 2 in Caffe's ceil mode (32 -> 16 -> 8 -> 4; an average
    over a window clipped by the border divides by the values inside it, as Caffe
    does). Convolutions with padding 2, PyTorch's default initialisation.
    ``batch_norm`` as in lenet_saf. Any channel count, class count and input size of
    at least 8x8; 32x32 gives fc1 1024 inputs (64 x 4 x 4).
    """
    return SAFNet(kind, in_channels, input_size, channels=(32, 32, 64), hidden=64,
                  num_classes=num_classes, padding=2,
                  pool=dict(kernel_size=3, stride=2, ceil_mode=True),
                  batch_norm=batch_norm, name="cifar_saf", pool_kinds=("max", "avg", "avg"))
