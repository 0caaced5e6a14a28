"""Argument checks shared by every public entry of robustops (the data loaders,
the bounds, the attacks, the losses, the layers). Each raises a TypeError or a
ValueError whose message names the function, the argument and what was expected.

Checks that need the values of a tensor (label ranges, finiteness) synchronize with
the device; they are skipped while torch.compile traces, where data-dependent
control flow would break the graph.
"""

from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch import Tensor

__all__ = []


def check_choice(fn: str, name: str, value, choices: tuple) -> str:
    """value if it is one of the strings `choices`, else a ValueError naming `name`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{fn}: argument '{name}' must be one of {choices}, got {value!r}")
    return value


def check_int(fn: str, name: str, value, minimum: Optional[int] = None) -> int:
    """value as an int: a TypeError for anything but an integer (bool included), a
    ValueError when it is below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: argument '{name}' must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: argument '{name}' must be >= {minimum}, got {value}")
    return int(value)


def check_levels(fn: str, levels) -> tuple:
    """Spatial pyramid levels as a tuple: one int or 1 to 8 positive ints (Python
    ints, or SymInts while torch.compile traces with dynamic shapes), else a
    ValueError naming 'levels' (bools are not levels)."""
    def is_int(n):
        return isinstance(n, (int, torch.SymInt)) and not isinstance(n, bool)

    if is_int(levels):
        levels = (levels,)
    try:
        levels = tuple(levels)
    except TypeError:
        raise ValueError(f"{fn}: argument 'levels' must be 1 to 8 positive ints, got {levels!r}") from None
    if not levels or len(levels) > 8 or not all(is_int(n) and n >= 1 for n in levels):
        raise ValueError(f"{fn}: argument 'levels' must be 1 to 8 positive ints, got {levels!r}")
    return levels


def check_dtype(fn: str, dtype) -> torch.dtype:
    """dtype if it is a floating-point torch.dtype, else a TypeError."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{fn}: argument 'dtype' must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def check_floating(fn: str, name: str, x) -> Tensor:
    """x if it is a floating-point tensor, else a TypeError."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: argument '{name}' must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: argument '{name}' must be a floating-point tensor, got {x.dtype}")
    return x


def check_label_shape(fn: str, y, batch: Optional[int] = None, name: str = "y") -> Tensor:
    """y if it is an int64 tensor of shape [batch]: the checks of check_labels that do
    not read the values (so never synchronize with the device). For a caller that
    learns the number of classes later (an attack, after the model's forward) and
    checks the range then with check_labels."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{fn}: argument '{name}' must be a Tensor of int64 class labels, got {type(y).__name__}")
    if y.dtype != torch.long:
        raise TypeError(f"{fn}: argument '{name}' must hold int64 class labels, got {y.dtype}")
    if y.dim() != 1 or (batch is not None and y.shape[0] != batch):
        want = f"[{batch}]" if batch is not None else "[N]"
        raise ValueError(f"{fn}: argument '{name}' must have shape {want} (one label per sample), "
                         f"got {list(y.shape)}")
    return y


def check_labels(fn: str, y, batch: Optional[int] = None, num_classes: Optional[int] = None,
                 name: str = "y") -> Tensor:
    """y if it is an int64 tensor of shape [batch] with values in [0, num_classes).

    A float tensor, a negative label (which indexing would silently take from the end)
    or one >= num_classes is a clear error instead of a wrong result or a raw
    IndexError deep inside the computation."""
    check_label_shape(fn, y, batch, name)
    if y.numel() and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in torch.aminmax(y))
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            want = f"in [0, {num_classes})" if num_classes is not None else ">= 0"
            raise ValueError(f"{fn}: argument '{name}' must hold class labels {want}, "
                             f"got values in [{lo}, {hi}]")
    return y
