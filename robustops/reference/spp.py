"""Reference spatial pyramid pooling: a concatenation of adaptive pools (the oracle
of robustops.ops.spatial_pyramid_pool)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["spatial_pyramid_pool"]


def spatial_pyramid_pool(x: Tensor, levels: Sequence[int] = (1, 2, 4), mode: str = "max") -> Tensor:
    """Spatial pyramid pooling as a concatenation of adaptive pools (the oracle of
    robustops.ops.spatial_pyramid_pool; no argument checks).

    Args:
        x: [B, C, H, W], floating point.
        levels: the levels n (n x n bins each), default (1, 2, 4).
        mode: ``"max"`` (default); anything else averages.

    Returns:
        [B, C * sum(n^2 for n in levels)], that is
        ``torch.cat([adaptive_pool(x, n).flatten(1) for n in levels], 1)``.
    """
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return torch.cat([pool(x, n).flatten(1) for n in levels], 1)
