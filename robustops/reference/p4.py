"""Reference p4 group convolutions, written with torch.rot90 / roll / stack / reshape
straight from GrouPy's conventions (the oracle of robustops.ops.p4_filter and the
robustops.nn p4 layers)::

    filter for output rotation r, input slot t:  rot90(W[:, :, (t - r) mod s], r)
    layout:                                      [C_out * 4, C_in * s, k, k], rotation innermost
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["p4_filter", "p4_conv", "grot"]


def p4_filter(weight: Tensor) -> Tensor:
    """The expanded filter of a p4 layer (the oracle of robustops.ops.p4_filter): for
    output rotation r and input slot t, ``rot90(W[:, :, (t - r) mod s], r)``.

    Args:
        weight: [C_out, C_in, s, k, k], s = 1 (lifting layer) or 4 (p4 layer).

    Returns:
        [C_out * 4, C_in * s, k, k], rotation innermost in both channel dimensions,
        in the weight's dtype; differentiable.
    """
    o, i, s, k, _ = weight.shape
    rotated = []
    for r in range(4):
        w = weight if s == 1 else torch.roll(weight, r, dims=2)  # slot t reads W[(t - r) mod 4]
        rotated.append(torch.rot90(w, r, dims=(3, 4)))
    return torch.stack(rotated, dim=1).reshape(o * 4, i * s, k, k)


def p4_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0,
            dilation=1) -> Tensor:
    """The lifting (x [B, C, H, W], weight [O, C, 1, k, k]) or p4 (x [B, C, 4, H, W],
    weight [O, C, 4, k, k]) convolution: [B, O, 4, H', W']."""
    b = x.shape[0]
    flat = x.reshape(b, -1, x.shape[-2], x.shape[-1])
    bias4 = bias.repeat_interleave(4) if bias is not None else None
    y = F.conv2d(flat, p4_filter(weight), bias4, stride, padding, dilation)
    return y.reshape(b, weight.shape[0], 4, y.shape[-2], y.shape[-1])


def grot(y: Tensor, k: int) -> Tensor:
    """The p4 action on a p4 feature map [B, C, 4, H, W]: rotate the plane by k x 90
    degrees and shift the rotation axis by k."""
    return torch.rot90(torch.roll(y, k, dims=2), k, dims=(3, 4))
