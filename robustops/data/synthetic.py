"""A synthetic image classification set for fast tests, and a seeded DataLoader.

    x, y = toy(n=512, size=8, classes=4)                  # [512, 1, 8, 8] in [0, 1], [512] int64
    for xb, yb in loader(x, y, batch_size=64, seed=0):    # a reproducible order
        ...
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from robustops.data._checks import check_dtype, check_int, check_seed

__all__ = ["toy", "loader"]


def toy(n: int = 512, size: int = 8, classes: int = 4, noise: float = 0.1, seed: int = 0,
        dtype: torch.dtype = torch.float32, device=None) -> tuple[Tensor, Tensor]:
    """(x [n, 1, size, size] in [0, 1], y [n] int64): noisy copies of one prototype
    image per class.

    A CPU torch.Generator seeded with `seed` draws, in this order, the `classes`
    prototypes (pixels uniform in [0, 1]; they depend only on seed, size and classes,
    not on n), the labels (a random permutation of 0, 1, ..., classes - 1 repeated, so
    the class counts differ by at most one) and the Gaussian noise of standard
    deviation `noise` added to each sample's prototype; the sum is clamped to [0, 1].
    Computed in float64, then cast to `dtype` and moved to `device`. With the defaults
    the classes are far apart (prototype distance about 3.3, noise norm about 0.8), so
    a linear model separates them within a few hundred steps.
    """
    fn = "robustops.data.toy"
    n = check_int(fn, "n", n, minimum=1)
    size = check_int(fn, "size", size, minimum=1)
    classes = check_int(fn, "classes", classes, minimum=1)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"{fn}: argument 'noise' must be a number, got {type(noise).__name__}")
    if not noise >= 0 or noise == float("inf"):
        raise ValueError(f"{fn}: argument 'noise' must be finite and >= 0, got {noise}")
    g = check_seed(fn, seed)
    check_dtype(fn, dtype)
    prototypes = torch.rand(classes, 1, size, size, generator=g, dtype=torch.float64)
    y = torch.randperm(n, generator=g) % classes
    x = prototypes[y] + noise * torch.randn(n, 1, size, size, generator=g, dtype=torch.float64)
    return x.clamp_(0, 1).to(device=device, dtype=dtype), y.to(device)


def loader(x: Tensor, y: Tensor, batch_size: int = 128, shuffle: bool = True, seed: int = 0,
           **kwargs) -> DataLoader:
    """A torch.utils.data.DataLoader over TensorDataset(x, y) whose shuffling uses a
    CPU torch.Generator seeded with `seed`: iterating a fresh loader always gives the
    same batches, and each further pass over the same loader (epoch) a new order that
    is fixed by the seed too. Other keyword arguments (drop_last, num_workers, ...) go
    to the DataLoader. x and y must have the same length (first dimension).
    """
    fn = "robustops.data.loader"
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: argument '{name}' must be a Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise ValueError(f"{fn}: argument '{name}' must have a first (sample) dimension, got a scalar")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{fn}: arguments 'x' and 'y' must hold the same number of samples, "
                         f"got {x.shape[0]} and {y.shape[0]}")
    batch_size = check_int(fn, "batch_size", batch_size, minimum=1)
    g = check_seed(fn, seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=bool(shuffle), generator=g, **kwargs)
