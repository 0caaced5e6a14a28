"""The SAF paper's networks (Zhao & Griffin 2016, "Suppressing the Unusual").

``kind`` picks the activation: ``"plain"`` is the usual ReLU network with linear
outputs (train it with cross-entropy); ``"rbf"`` and ``"mrelu"`` put a symmetric
activation function after each convolution, with batch norm before it, and an RBF
on the 10 outputs (train them with robustops.nn.HybridLoss; the outputs are in
[0, 1] and a low maximum flags a nonsense input).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from robustops.nn.saf import RBF, MReLU

__all__ = ["lenet_saf", "cifar_saf", "SAFNet"]

_KINDS = ("plain", "rbf", "mrelu")


def _activation(kind: str) -> nn.Module:
    return {"plain": nn.ReLU, "rbf": RBF, "mrelu": MReLU}[kind]()


class SAFNet(nn.Module):
    """Convolution blocks (conv, [batch norm], activation, pool), then a hidden fully
    connected layer with ReLU, the class layer and, for the robust kinds, an RBF.
    Built for a given input size; ``features``, ``classifier`` and ``output`` are the
    three stages."""

    def __init__(self, kind: str, in_channels: int, input_size: Sequence[int],
                 channels: Sequence[int], hidden: int, num_classes: int, padding: int,
                 pool: dict, batch_norm: Optional[bool], name: str):
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"{name}: argument 'kind' must be one of {_KINDS}, got {kind!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"{name}: 'in_channels' and 'num_classes' must be >= 1")
        self.kind = kind
        if batch_norm is None:
            batch_norm = kind != "plain"
        layers = []
        c = in_channels
        for width in channels:
            layers.append(nn.Conv2d(c, width, kernel_size=5, padding=padding))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(_activation(kind))
            layers.append(nn.MaxPool2d(**pool))
            c = width
        self.features = nn.Sequential(*layers)
        h, w = _pair(input_size)
        with torch.no_grad():
            try:
                flat = self.features.to("meta")(torch.empty(1, in_channels, h, w, device="meta"))
            except RuntimeError as e:
                raise ValueError(
                    f"{name}: input_size {(h, w)} is too small for {len(channels)} "
                    f"5x5 convolutions and poolings ({e})"
                ) from None
        self.features.to_empty(device="cpu")
        _reset(self.features)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat[0].numel(), hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        self.output = RBF() if kind != "plain" else nn.Identity()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.classifier(self.features(x)))


def _pair(size) -> tuple:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()


def lenet_saf(kind: str = "plain", in_channels: int = 1, num_classes: int = 10,
              input_size=28, batch_norm: Optional[bool] = None) -> SAFNet:
    """The SAF paper's MNIST LeNet: conv 5x5x20, act, max pool 2, conv 5x5x50, act,
    max pool 2, fc 500, ReLU, fc 10 (+ RBF for ``kind`` "rbf" and "mrelu").

    ``batch_norm`` (default: on for the robust kinds) adds batch norm before each
    convolutional activation. Any channel count and input size of at least 16x16.
    """
    return SAFNet(kind, in_channels, input_size, channels=(20, 50), hidden=500,
                  num_classes=num_classes, padding=0, pool=dict(kernel_size=2, stride=2),
                  batch_norm=batch_norm, name="lenet_saf")


def cifar_saf(kind: str = "plain", in_channels: int = 3, num_classes: int = 10,
              input_size=32, batch_norm: Optional[bool] = None) -> SAFNet:
    """The SAF paper's CIFAR-10 network (Caffe's cifar10_quick): three blocks of
    conv 5x5 (32, 32, 64 channels, padding 2), act, max pool 3 stride 2 (ceil mode),
    then fc 64, ReLU, fc 10 (+ RBF for ``kind`` "rbf" and "mrelu").

    ``batch_norm`` as in lenet_saf. Any channel count and input size of at least 2x2.
    """
    return SAFNet(kind, in_channels, input_size, channels=(32, 32, 64), hidden=64,
                  num_classes=num_classes, padding=2,
                  pool=dict(kernel_size=3, stride=2, ceil_mode=True),
                  batch_norm=batch_norm, name="cifar_saf")
