"""MNIST (and MNIST-format data sets such as Fashion-MNIST) from IDX files on disk.

    x, y = load_mnist("~/data/mnist", "train")   # [60000, 1, 28, 28] in [0, 1], [60000] int64

robustops downloads nothing: `root` is a directory holding the four files as
distributed, gzipped or not. The IDX header is parsed here (no torchvision needed).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robustops.data._checks import bytes_to_unit, check_choice, check_dtype

__all__ = ["load_mnist"]

_FN = "robustops.data.load_mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the
# number of dimensions; the dimensions follow as big-endian 32-bit sizes.
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801


def _find(root: Path, names: tuple) -> list:
    """The path of each name in root, the plain file preferred over name + '.gz';
    a FileNotFoundError listing every name with neither."""
    found, missing = [], []
    for name in names:
        for candidate in (root / name, root / (name + ".gz")):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            missing.append(f"{name} (or {name}.gz)")
    if missing:
        raise FileNotFoundError(f"{_FN}: directory {root} has no {' and no '.join(missing)}")
    return found


def _read(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise ValueError(f"{_FN}: {path} is not a complete gzip file ({type(e).__name__}: {e})") from e
    return path.read_bytes()


def _parse_idx(data: bytes, path: Path, magic: int, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with the given magic number and ndim sizes."""
    kind = "images (idx3)" if magic == _IMAGES_MAGIC else "labels (idx1)"
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise ValueError(f"{_FN}: {path} is truncated: {len(data)} bytes, less than the {header}-byte "
                         f"IDX header of {kind}")
    fields = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if int(fields[0]) != magic:
        raise ValueError(f"{_FN}: {path} has magic number 0x{int(fields[0]):08x}, expected 0x{magic:08x} "
                         f"(IDX {kind}, unsigned bytes)")
    shape = tuple(int(d) for d in fields[1:])
    expected = math.prod(shape)
    have = len(data) - header
    if have < expected:
        raise ValueError(f"{_FN}: {path} is truncated: its header says {' x '.join(map(str, shape))} = "
                         f"{expected} bytes of data, the file holds {have}")
    if have > expected:
        raise ValueError(f"{_FN}: {path} has {have - expected} bytes after the {expected} bytes of data "
                         f"its header ({' x '.join(map(str, shape))}) announces")
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(shape).copy()


def load_mnist(root, split: str = "train", dtype: torch.dtype = torch.float32,
               device=None) -> tuple[Tensor, Tensor]:
    """MNIST-format images and labels from the IDX files in the directory `root`.

    Reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (split
    ``"train"``) or ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (split
    ``"test"``), each as is or with a ``.gz`` suffix (the plain file wins when both are
    there). Returns x [N, 1, rows, cols] (the sizes in the images header: 28 x 28 for
    MNIST) holding the bytes divided by 255, so in [0, 1], as `dtype`; and y [N] int64.
    Both go to `device` (default: the CPU).

    The headers are checked: a magic number other than 0x00000803 (images) or
    0x00000801 (labels), a file shorter or longer than its header's sizes say, a
    damaged gzip file, and image and label files of different counts are each a
    ValueError naming the file(s). A missing directory or file is a FileNotFoundError
    naming the directory and the file names looked for.
    """
    check_choice(_FN, "split", split, tuple(_FILES))
    check_dtype(_FN, dtype)
    root = Path(os.path.expanduser(os.fspath(root)))
    if not root.is_dir():
        raise FileNotFoundError(f"{_FN}: directory {root} does not exist (looked for "
                                f"{' and '.join(_FILES[split])}, optionally .gz, in it)")
    images_path, labels_path = _find(root, _FILES[split])
    images = _parse_idx(_read(images_path), images_path, _IMAGES_MAGIC, 3)
    labels = _parse_idx(_read(labels_path), labels_path, _LABELS_MAGIC, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{_FN}: {images_path} holds {images.shape[0]} images but {labels_path} "
                         f"holds {labels.shape[0]} labels")
    x = bytes_to_unit(images[:, None], dtype, device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    return x, y
