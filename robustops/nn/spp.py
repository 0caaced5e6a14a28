"""Spatial pyramid pooling (He et al. 2015) as a module: the spp family's face in
robustops.nn (the op is robustops.ops.spatial_pyramid_pool). The rotation-invariant
head of p4 feature maps, P4SpatialPyramidPool, is a p4 layer (robustops.nn.p4) and
builds on the same op and argument checks.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustops._checks import check_floating, check_levels
from robustops.ops import spp as _spp

__all__ = ["SpatialPyramidPool"]


class SpatialPyramidPool(nn.Module):
    """Spatial pyramid pooling (He et al. 2015): [B, C, H, W] -> [B, C * sum(n^2)] for
    any H, W >= max(levels), with the bins of adaptive pooling; one fused op for all
    levels (robustops.ops.spatial_pyramid_pool).

    Args:
        levels: the pyramid's levels n (an n x n grid of bins each): 1 to 8 positive
            ints, or one int; default (1, 2, 4).
        mode: ``"max"`` (default) or ``"mean"`` pooling in each bin.

    Shape:
        input: [B, C, H, W], floating point; output: [B, C * sum(n^2 for n in
        levels)], level by level, channel-major within a level.

    Raises:
        ValueError: bad ``levels`` or ``mode``.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 4), mode: str = "max"):
        super().__init__()
        self.levels = check_levels("SpatialPyramidPool", levels)
        if mode not in ("max", "mean"):
            raise ValueError(f"SpatialPyramidPool: argument 'mode' must be 'max' or 'mean', got {mode!r}")
        self.mode = mode

    def extra_repr(self) -> str:
        """The levels and mode, shown in the module's repr."""
        return f"levels={self.levels}, mode={self.mode!r}"

    def output_size(self, channels: int) -> int:
        """The number of features per sample for an input of ``channels`` channels
        (the in_features of the linear layer after it).

        Args:
            channels: the input's channels C.

        Returns:
            ``channels * sum(n^2 for n in levels)``.
        """
        return channels * sum(n * n for n in self.levels)

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` at every level and concatenate.

        Args:
            x: [B, C, H, W], floating point, H and W >= max(levels).

        Returns:
            [B, output_size(C)] in the dtype of ``x``.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: ``x`` is not 4-d or is smaller than the largest level (the op's
                checks).
        """
        check_floating("SpatialPyramidPool", "x", x)  # the op checks the rest, naming itself
        return _spp.spatial_pyramid_pool(x, self.levels, self.mode)
