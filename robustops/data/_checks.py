"""Argument checks and conversions shared by the robustops.data loaders."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from robustops._checks import check_choice, check_dtype, check_int  # noqa: F401  (the loaders import them from here)

__all__ = []


def check_seed(fn: str, seed) -> torch.Generator:
    """A CPU torch.Generator seeded with `seed` (an int that manual_seed accepts)."""
    seed = check_int(fn, "seed", seed)
    try:
        return torch.Generator().manual_seed(seed)
    except (RuntimeError, ValueError, OverflowError) as e:  # outside the range of a 64-bit seed
        raise ValueError(f"{fn}: argument 'seed' must fit in 64 bits, got {seed}") from e


def check_images(fn: str, x) -> Tensor:
    """x if it is a floating-point [N, C, H, W] tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: argument 'x' must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: argument 'x' must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: argument 'x' must have shape [N, C, H, W], got {tuple(x.shape)}")
    return x


def bytes_to_unit(a: np.ndarray, dtype: torch.dtype, device) -> Tensor:
    """uint8 pixels 0..255 as a `dtype` tensor a / 255 on `device`. The bytes travel to
    the device first (a quarter of the float32 traffic), then are converted there."""
    if not a.flags.writeable:  # torch.from_numpy warns about read-only memory
        a = a.copy()
    return torch.from_numpy(a).to(device).to(dtype).div_(255)
