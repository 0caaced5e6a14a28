"""robustops.data.load_cifar: small pickle batches written here in the distributed
format (CIFAR-10: five train batches and a test batch; CIFAR-100: train and test with
fine and coarse labels) read back with the right layout (a row is the R, G, B planes,
each 32 x 32 row-major) and order, the root given as the parent or the batches
directory, and the errors for missing, damaged and malformed files and bad arguments."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from robustops.data import load_cifar
from tests.common import DEVICES, FLOAT_DTYPES, tolerances

C10, C100 = "cifar-10-batches-py", "cifar-100-python"


def _batch(rng, n, label_keys):
    batch = {b"batch_label": b"a batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [b"img%d.png" % i for i in range(n)]}
    for key, classes in label_keys:
        batch[key] = rng.integers(0, classes, n).tolist()  # lists of ints, as distributed
    return batch


def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar10(root, n=2, seed=0):
    """Writes root/cifar-10-batches-py; returns {file name: batch dict}."""
    rng = np.random.default_rng(seed)
    batches = {name: _batch(rng, n, [(b"labels", 10)])
               for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    for name, batch in batches.items():
        _dump(root / C10 / name, batch)
    return batches


def _cifar100(root, n=2, seed=0):
    rng = np.random.default_rng(seed)
    batches = {name: _batch(rng, n, [(b"fine_labels", 100), (b"coarse_labels", 20)]) for name in ("train", "test")}
    for name, batch in batches.items():
        _dump(root / C100 / name, batch)
    return batches


def _expected(batches, names, key):
    data = np.concatenate([batches[n][b"data"] for n in names])
    labels = sum((batches[n][key] for n in names), [])
    return torch.from_numpy(data).double().div(255).reshape(-1, 3, 32, 32), torch.tensor(labels)


def test_cifar10_train_and_test(tmp_path):
    batches = _cifar10(tmp_path)
    x, y = load_cifar(tmp_path, "cifar10", "train")
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (10,) and y.dtype == torch.int64
    ex, ey = _expected(batches, [f"data_batch_{i}" for i in range(1, 6)], b"labels")  # in batch order
    assert torch.equal(x, ex.float()) and torch.equal(y, ey)
    x, y = load_cifar(tmp_path, "cifar10", "test")
    ex, ey = _expected(batches, ["test_batch"], b"labels")
    assert x.shape == (2, 3, 32, 32) and torch.equal(x, ex.float()) and torch.equal(y, ey)


def test_layout_planes(tmp_path):
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    red, green, blue = i, j, (i * 32 + j) % 256
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()]).astype(np.uint8)  # R plane, G, B
    batch = {b"data": np.stack([row, 255 - row]), b"labels": [3, 7]}
    _dump(tmp_path / C10 / "test_batch", batch)
    x, y = load_cifar(tmp_path, split="test", dtype=torch.float64)
    assert torch.equal((x[0] * 255).round().long(), torch.from_numpy(np.stack([red, green, blue])).long())
    assert x[0, 0, 5, 9] * 255 == 5 and x[0, 1, 5, 9] * 255 == 9 and x[0, 2, 5, 9] * 255 == 5 * 32 + 9
    assert torch.equal((x[1] * 255).round().long(), 255 - torch.from_numpy(np.stack([red, green, blue])).long())
    assert y.tolist() == [3, 7]


def test_cifar100_fine_and_coarse(tmp_path):
    batches = _cifar100(tmp_path)
    for split in ("train", "test"):
        x, y = load_cifar(tmp_path, "cifar100", split)
        ex, ey = _expected(batches, [split], b"fine_labels")
        assert x.shape == (2, 3, 32, 32) and torch.equal(x, ex.float()) and torch.equal(y, ey)
        _, y = load_cifar(tmp_path, "cifar100", split, label="coarse")
        assert torch.equal(y, _expected(batches, [split], b"coarse_labels")[1])


def test_root_is_the_batches_directory(tmp_path):
    batches = _cifar10(tmp_path)
    _cifar100(tmp_path)
    x, y = load_cifar(tmp_path / C10, split="test")
    assert torch.equal(y, _expected(batches, ["test_batch"], b"labels")[1])
    x, y = load_cifar(str(tmp_path / C100), "cifar100", "test")
    assert x.shape == (2, 3, 32, 32)


def test_python3_str_keys(tmp_path):
    data = np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)
    _dump(tmp_path / "test_batch", {"data": data, "labels": [1, 2]})
    x, y = load_cifar(tmp_path, split="test", dtype=torch.float64)
    assert torch.equal(x, torch.from_numpy(data).double().div(255).reshape(2, 3, 32, 32))
    assert y.tolist() == [1, 2]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dtype_and_device(tmp_path, dtype, device):
    batches = _cifar100(tmp_path)
    x, y = load_cifar(tmp_path, "cifar100", "test", dtype=dtype, device=device)
    ex, ey = _expected(batches, ["test"], b"fine_labels")
    assert x.dtype == dtype and x.device.type == device and y.device.type == device
    assert_close(x.double().cpu(), ex, **tolerances(dtype))
    assert torch.equal(y.cpu(), ey)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        load_cifar(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(tmp_path)  # empty
    message = str(info.value)
    assert C10 in message and "data_batch_1" in message and "data_batch_5" in message
    _cifar10(tmp_path)
    (tmp_path / C10 / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing data_batch_4\)"):
        load_cifar(tmp_path)
    load_cifar(tmp_path, split="test")  # the test batch is still there
    with pytest.raises(FileNotFoundError, match=re.escape(C100)):
        load_cifar(tmp_path, "cifar100", "test")


def test_unpicklable_files(tmp_path):
    _cifar10(tmp_path)
    path = tmp_path / C10 / "data_batch_3"
    path.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(ValueError, match=r"data_batch_3 is not a readable CIFAR batch: unpickling failed"):
        load_cifar(tmp_path)
    good = (tmp_path / C10 / "data_batch_2").read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=r"data_batch_3 is not a readable CIFAR batch"):
        load_cifar(tmp_path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"data_batch_3 is not a readable CIFAR batch"):
        load_cifar(tmp_path)


@pytest.mark.parametrize("batch, pattern", [
    ({b"data": np.zeros((2, 3072), np.uint8)}, r"has no key b'labels'"),
    ({b"labels": [0, 1]}, r"has no key b'data'"),
    ([1, 2, 3], r"holds a list, not the dict"),
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, r"uint8 array of shape \[N, 3072\], got a "
                                                                    r"uint8 array of shape \(2, 3000\)"),
    ({b"data": np.zeros((2, 3, 32, 32), np.uint8), b"labels": [0, 1]}, r"shape \[N, 3072\]"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"got a float32 array"),
    ({b"data": [[0] * 3072] * 2, b"labels": [0, 1]}, r"got a list"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"must hold 2 integer labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0.5, 1.5]}, r"must hold 2 integer labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"must lie in \[0, 10\)"),
])
def test_malformed_batches(tmp_path, batch, pattern):
    _dump(tmp_path / "test_batch", batch)
    with pytest.raises(ValueError, match=r"load_cifar: .*test_batch.*" + pattern):
        load_cifar(tmp_path, split="test")


def test_cifar100_label_range(tmp_path):
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 99], b"coarse_labels": [0, 20]}
    _dump(tmp_path / "test", batch)
    assert load_cifar(tmp_path, "cifar100", "test")[1].tolist() == [0, 99]
    with pytest.raises(ValueError, match=r"b'coarse_labels' must lie in \[0, 20\)"):
        load_cifar(tmp_path, "cifar100", "test", label="coarse")


@pytest.mark.parametrize("kwargs, name", [
    (dict(name="cifar-10"), "name"), (dict(name="mnist"), "name"), (dict(split="val"), "split"),
    (dict(label="medium"), "label"), (dict(label="coarse"), "label"),  # CIFAR-10 has no coarse labels
])
def test_bad_arguments(tmp_path, kwargs, name):
    _cifar10(tmp_path)
    with pytest.raises(ValueError, match=f"load_cifar: argument '{name}'"):
        load_cifar(tmp_path, **kwargs)


def test_bad_dtype(tmp_path):
    with pytest.raises(TypeError, match="load_cifar: argument 'dtype'"):
        load_cifar(tmp_path, dtype=torch.int32)
