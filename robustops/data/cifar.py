"""CIFAR-10 and CIFAR-100 from the python pickle batches on disk.

    x, y = load_cifar("~/data", "cifar10", "train")                     # [50000, 3, 32, 32], [50000]
    x, y = load_cifar("~/data", "cifar100", "test", label="coarse")     # [10000, 3, 32, 32], 20 classes

robustops downloads nothing: `root` holds the extracted archive as distributed
(cifar-10-python.tar.gz extracts to cifar-10-batches-py/, cifar-100-python.tar.gz to
cifar-100-python/), or is that directory itself.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robustops.data._checks import bytes_to_unit, check_choice, check_dtype

__all__ = ["load_cifar"]

_FN = "robustops.data.load_cifar"
# name: (directory, {split: batch files}, {label: (key, number of classes)})
_SETS = {
    "cifar10": ("cifar-10-batches-py",
                {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                {"fine": ("labels", 10)}),
    "cifar100": ("cifar-100-python",
                 {"train": ("train",), "test": ("test",)},
                 {"fine": ("fine_labels", 100), "coarse": ("coarse_labels", 20)}),
}
_ROW = 3 * 32 * 32


def _directory(root: Path, name: str, split: str) -> Path:
    """root/<the set's directory> or root itself, whichever holds every batch file of
    the split; a FileNotFoundError saying what was looked for where, otherwise."""
    subdir, splits, _ = _SETS[name]
    files = splits[split]
    if not root.is_dir():
        raise FileNotFoundError(f"{_FN}: directory {root} does not exist (looked for {subdir}/ in it)")
    tried = []
    for directory in (root / subdir, root):
        if not directory.is_dir():
            tried.append(f"{directory} (no such directory)")
            continue
        missing = [f for f in files if not (directory / f).is_file()]
        if not missing:
            return directory
        tried.append(f"{directory} (missing {', '.join(missing)})")
    raise FileNotFoundError(f"{_FN}: no {name} {split} batches ({', '.join(files)}) found: looked in "
                            + " and in ".join(tried))


def _get(batch: dict, key: str):
    """batch[key] for the bytes key of the distributed files, or the str key of a
    batch pickled under Python 3; None when neither is there."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _load_batch(path: Path, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 [N, 3072], labels int64 [N]) of one batch file, checked."""
    with open(path, "rb") as f:
        try:
            batch = pickle.load(f, encoding="bytes")
        except Exception as e:  # a damaged or foreign file can fail in almost any way
            raise ValueError(f"{_FN}: {path} is not a readable CIFAR batch: unpickling failed "
                             f"({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{_FN}: {path} holds a {type(batch).__name__}, not the dict of a CIFAR batch")
    data, labels = _get(batch, "data"), _get(batch, label_key)
    if data is None or labels is None:
        missing = " and ".join(repr(k.encode()) for k, v in (("data", data), (label_key, labels)) if v is None)
        keys = ", ".join(sorted(repr(k) for k in batch)) or "none"
        raise ValueError(f"{_FN}: {path} has no key {missing} (a CIFAR batch needs b'data' and "
                         f"b'{label_key}'; its keys: {keys})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        what = f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else \
            f"a {type(data).__name__}"
        raise ValueError(f"{_FN}: {path}: b'data' must be a uint8 array of shape [N, {_ROW}], got {what}")
    try:
        labels = np.asarray(labels)
    except Exception as e:
        raise ValueError(f"{_FN}: {path}: b'{label_key}' is not a list of class indices ({e})") from e
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"{_FN}: {path}: b'{label_key}' must hold {data.shape[0]} integer labels, one per "
                         f"image, got {labels.dtype} of shape {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{_FN}: {path}: b'{label_key}' must lie in [0, {classes}), got labels from "
                         f"{labels.min()} to {labels.max()}")
    return data, labels


def load_cifar(root, name: str = "cifar10", split: str = "train", label: str = "fine",
               dtype: torch.dtype = torch.float32, device=None) -> tuple[Tensor, Tensor]:
    """CIFAR-10 or CIFAR-100 images and labels from the python pickle batches.

    Args:
        root: a directory holding ``cifar-10-batches-py/`` (name ``"cifar10"``: batches
            ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``) or
            ``cifar-100-python/`` (name ``"cifar100"``: ``train`` and ``test``), or that
            directory itself. Each batch is a pickled dict with b"data", uint8
            [N, 3072] (a row is the red plane, then green, then blue, each 32 x 32
            row-major) and the labels: b"labels" (CIFAR-10), b"fine_labels" and
            b"coarse_labels" (CIFAR-100).
        name: ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` (50000 images; the five CIFAR-10 batches concatenated in
            order) or ``"test"`` (10000).
        label: ``"fine"`` (the 10 or 100 classes) or ``"coarse"`` (CIFAR-100's 20
            superclasses; a ValueError for CIFAR-10).
        dtype: a floating-point dtype for x; device: where both tensors go.

    Returns x [N, 3, 32, 32] (the bytes divided by 255, so in [0, 1]) and y [N] int64.

    Unpickling runs code from the file: only load files you trust (the archives from
    the CIFAR page, checked against their published MD5 sums).

    Errors: FileNotFoundError naming the directories and files looked for; ValueError
    naming the file for one that cannot be unpickled, lacks b"data" or the label key,
    or has data of another dtype or shape or labels out of range; ValueError naming the
    argument for a bad name, split or label.
    """
    check_choice(_FN, "name", name, tuple(_SETS))
    check_choice(_FN, "split", split, ("train", "test"))
    _, splits, labels_of = _SETS[name]
    check_choice(_FN, "label", label, ("fine", "coarse"))
    if label not in labels_of:
        raise ValueError(f"{_FN}: argument 'label' must be 'fine' for {name} (only CIFAR-100 has coarse "
                         f"labels), got {label!r}")
    check_dtype(_FN, dtype)
    label_key, classes = labels_of[label]
    directory = _directory(Path(os.path.expanduser(os.fspath(root))), name, split)
    batches = [_load_batch(directory / f, label_key, classes) for f in splits[split]]
    data = batches[0][0] if len(batches) == 1 else np.concatenate([b[0] for b in batches])
    labels = batches[0][1] if len(batches) == 1 else np.concatenate([b[1] for b in batches])
    x = bytes_to_unit(np.ascontiguousarray(data).reshape(-1, 3, 32, 32), dtype, device)
    return x, torch.from_numpy(labels).to(device)
