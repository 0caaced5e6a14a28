"""robustops.data.load_mnist: small IDX files written here (plain and gzipped) read
back exactly, header sizes other than 28 x 28, dtypes and devices, and the errors
for a missing directory or file, a wrong magic number, truncated or oversized files,
damaged gzip and image/label count mismatches."""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from robustops.data import load_mnist
from tests.common import DEVICES, FLOAT_DTYPES, tolerances

IMAGES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
LABELS = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}


def _idx(magic, array):
    """The bytes of an IDX file: magic, big-endian sizes, the uint8 data."""
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write(path, data, gz=False):
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _make(root, split="train", n=5, rows=28, cols=28, seed=0, gz=False):
    """Writes n random images and labels for the split; returns them as numpy arrays."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
    if n:
        images[0, 0, :2] = (0, 255)  # both ends of the range
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    _write(root / IMAGES[split], _idx(0x803, images), gz)
    _write(root / LABELS[split], _idx(0x801, labels), gz)
    return images, labels


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_reads_back(tmp_path, split, gz):
    images, labels = _make(tmp_path, split, gz=gz)
    x, y = load_mnist(tmp_path, split)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (5,) and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(images).float().div(255).unsqueeze(1))
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert float(x[0, 0, 0, 0]) == 0.0 and float(x[0, 0, 0, 1]) == 1.0


def test_str_root_and_other_split_absent(tmp_path):
    images, labels = _make(tmp_path, "test")
    x, y = load_mnist(str(tmp_path), "test")
    assert torch.equal(y, torch.from_numpy(labels).long())
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")


def test_plain_file_preferred_over_gzip(tmp_path):
    _make(tmp_path, seed=1, gz=True)
    images, labels = _make(tmp_path, seed=2)
    x, y = load_mnist(tmp_path)
    assert torch.equal(x, torch.from_numpy(images).float().div(255).unsqueeze(1))
    assert torch.equal(y, torch.from_numpy(labels).long())


def test_mixed_plain_and_gzip(tmp_path):
    images, labels = _make(tmp_path)
    (tmp_path / LABELS["train"]).unlink()
    _write(tmp_path / LABELS["train"], _idx(0x801, labels), gz=True)
    x, y = load_mnist(tmp_path)
    assert torch.equal(y, torch.from_numpy(labels).long()) and x.shape[0] == 5


def test_header_sizes(tmp_path):
    images, _ = _make(tmp_path, n=3, rows=5, cols=7)
    x, y = load_mnist(tmp_path)
    assert x.shape == (3, 1, 5, 7) and y.shape == (3,)
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)  # row-major rows x cols


def test_empty_files(tmp_path):
    _make(tmp_path, n=0)
    x, y = load_mnist(tmp_path)
    assert x.shape == (0, 1, 28, 28) and y.shape == (0,) and y.dtype == torch.int64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dtype_and_device(tmp_path, dtype, device):
    images, labels = _make(tmp_path)
    x, y = load_mnist(tmp_path, dtype=dtype, device=device)
    assert x.dtype == dtype and x.device.type == device and y.device.type == device
    assert_close(x.double().cpu(), torch.from_numpy(images).double().div(255).unsqueeze(1), **tolerances(dtype))
    assert torch.equal(y.cpu(), torch.from_numpy(labels).long())


def test_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_mnist(missing)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(missing)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
                 "train-labels-idx1-ubyte.gz", str(tmp_path)):
        assert name in message
    _make(tmp_path)
    (tmp_path / LABELS["train"]).unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte") as info:
        load_mnist(tmp_path)
    assert "train-images" not in str(info.value)


def test_wrong_magic(tmp_path):
    images, labels = _make(tmp_path)
    (tmp_path / IMAGES["train"]).write_bytes(_idx(0x801, images.reshape(-1)))  # labels' magic
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte has magic number 0x00000801, "
                                         r"expected 0x00000803"):
        load_mnist(tmp_path)
    _make(tmp_path)
    (tmp_path / LABELS["train"]).write_bytes(_idx(0x803, labels.reshape(1, 1, -1)))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte has magic number 0x00000803"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_truncated_images(tmp_path, gz):
    images, labels = _make(tmp_path)
    path = tmp_path / IMAGES["train"]
    data = _idx(0x803, images)[:-100]
    path.unlink()
    _write(path, data, gz)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte(\.gz)? is truncated: .* 3920 bytes of data, "
                                         r"the file holds 3820"):
        load_mnist(tmp_path)


def test_truncated_header(tmp_path):
    _make(tmp_path)
    (tmp_path / LABELS["train"]).write_bytes(struct.pack(">II", 0x801, 5)[:6])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte is truncated: 6 bytes"):
        load_mnist(tmp_path)


def test_trailing_bytes(tmp_path):
    _, labels = _make(tmp_path)
    (tmp_path / LABELS["train"]).write_bytes(_idx(0x801, labels) + b"\0\0")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte has 2 bytes after"):
        load_mnist(tmp_path)


def test_damaged_gzip(tmp_path):
    images, _ = _make(tmp_path, gz=True)
    path = tmp_path / (IMAGES["train"] + ".gz")
    path.write_bytes(path.read_bytes()[:40])  # cut inside the deflate stream
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz is not a complete gzip file"):
        load_mnist(tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz is not a complete gzip file"):
        load_mnist(tmp_path)


def test_count_mismatch(tmp_path):
    _, labels = _make(tmp_path)
    (tmp_path / LABELS["train"]).write_bytes(_idx(0x801, labels[:4]))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte holds 5 images but .*"
                                         r"train-labels-idx1-ubyte holds 4 labels"):
        load_mnist(tmp_path)


def test_bad_arguments(tmp_path):
    _make(tmp_path)
    with pytest.raises(ValueError, match="load_mnist: argument 'split'"):
        load_mnist(tmp_path, "val")
    with pytest.raises(TypeError, match="load_mnist: argument 'dtype'"):
        load_mnist(tmp_path, dtype=torch.uint8)
