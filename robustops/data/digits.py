"""The embedded handwritten digits data set: 1797 images of 8x8 pixels, 10 classes.

The file digits.csv.gz next to this module is scikit-learn's copy of the test set of
the UCI "Optical Recognition of Handwritten Digits" data (see digits.rst): one row per
image, 64 pixel values 0..16 (row-major) followed by the label 0..9. It ships with
the package, so tests and examples train on real images without a download.

    x, y = load_digits("train")             # [1346, 1, 8, 8] in [0, 1], [1346] int64
    x, y = load_digits("test", size=28)     # [451, 1, 28, 28], bilinear upsampling
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustops.data._checks import check_choice, check_dtype, check_int, check_seed

__all__ = ["load_digits"]

_FILE = "digits.csv.gz"
_ROWS, _PIXELS, _CLASSES = 1797, 64, 10
_SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=None)
def _read() -> tuple[np.ndarray, np.ndarray]:
    """The CSV as (pixels uint8 [1797, 64], labels int64 [1797]), read once per
    process. The arrays are read-only: callers take copies (_arrays)."""
    with resources.files("robustops.data").joinpath(_FILE).open("rb") as raw, \
            gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape != (_ROWS, _PIXELS + 1) or table[:, :_PIXELS].min() < 0 or table[:, :_PIXELS].max() > 16 \
            or table[:, -1].min() < 0 or table[:, -1].max() >= _CLASSES:
        raise RuntimeError(f"robustops.data: the embedded {_FILE} is damaged (a {table.shape} table, expected "
                           f"({_ROWS}, {_PIXELS + 1}) with pixels 0..16 and labels 0..9); reinstall robustops")
    pixels = table[:, :_PIXELS].astype(np.uint8)
    labels = np.ascontiguousarray(table[:, -1])
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """Fresh, writable copies of the cached (pixels, labels)."""
    pixels, labels = _read()
    return pixels.copy(), labels.copy()


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices, each sorted ascending: for every class c in
    ascending order, its rows (in file order) are permuted by torch.randperm with one
    Generator seeded with `seed` (shared by the classes, so class c's permutation
    depends on the draws for classes < c), and the first floor(test_fraction * n_c
    + 0.5) of them go to the test set."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        perm = torch.randperm(len(rows), generator=g).numpy()
        n_test = int(math.floor(test_fraction * len(rows) + 0.5))
        test.append(rows[perm[:n_test]])
        train.append(rows[perm[n_test:]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(split: str = "train", size: int = 8, test_fraction: float = 0.25, seed: int = 0,
                dtype: torch.dtype = torch.float32, device=None) -> tuple[Tensor, Tensor]:
    """The embedded digits data set as (x [N, 1, size, size], y [N] int64).

    x holds the pixels divided by 16, so it lies in [0, 1]; y the labels 0..9.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (the 1797 images in file order).
            The split is stratified: for every class, round(test_fraction * n_c) of
            its n_c images (rounded half up) go to the test set and the rest to the
            train set, chosen by torch.randperm with a torch.Generator seeded with
            `seed`. Train and test are disjoint and together hold all 1797 images; a
            seed always gives the same split (for a given torch version: randperm
            draws it), and each set keeps the file order. With test_fraction = 0.25
            the train set has 1346 images and the test set 451.
        size: 8, the stored resolution, or any larger side length (28 and 32 match
            MNIST- and CIFAR-sized models): the 8x8 images are resized with
            ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
            antialias=False)`` in float64, then clamped to [0, 1] and cast to `dtype`.
        test_fraction: the fraction of each class held out for the test set, in (0, 1).
            Used by every split (``"all"`` only checks it).
        seed: the seed of the split.
        dtype: a floating-point dtype for x (pixel values k / 16 are exact in every one).
        device: where both tensors go (default: the CPU).

    The CSV is read once per process (the raw arrays are cached; every call gets its
    own tensors). Bad arguments are a ValueError naming the argument (a TypeError for
    the wrong type).
    """
    fn = "robustops.data.load_digits"
    check_choice(fn, "split", split, _SPLITS)
    size = check_int(fn, "size", size, minimum=8)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"{fn}: argument 'test_fraction' must be a number, got {type(test_fraction).__name__}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"{fn}: argument 'test_fraction' must lie in (0, 1), got {test_fraction}")
    check_seed(fn, seed)
    check_dtype(fn, dtype)

    pixels, labels = _arrays()
    if split != "all":
        train, test = _split_indices(labels, float(test_fraction), int(seed))
        rows = train if split == "train" else test
        pixels, labels = pixels[rows], labels[rows]
    x = torch.from_numpy(pixels.astype(np.float64)).div_(16).reshape(-1, 1, 8, 8)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=False).clamp_(0, 1)
    return x.to(device=device, dtype=dtype), torch.from_numpy(labels).to(device)
