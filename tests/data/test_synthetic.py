"""robustops.data.toy and loader: shapes, ranges, class balance, determinism by seed,
a logistic regression that learns the toy set, the seeded DataLoader's order and
bad arguments."""

from __future__ import annotations

import pytest
import torch

from robustops.data import loader, toy
from tests.common import DEVICES, FLOAT_DTYPES


def test_toy_shapes_and_range():
    x, y = toy()
    assert x.shape == (512, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (512,) and y.dtype == torch.int64
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.bincount(y).tolist() == [128] * 4
    x, y = toy(n=10, size=5, classes=3, noise=0.3)
    assert x.shape == (10, 1, 5, 5) and sorted(torch.bincount(y).tolist()) == [3, 3, 4]


def test_toy_is_seeded():
    a, b, c = toy(seed=0), toy(seed=0), toy(seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_toy_prototypes():
    # without noise every sample is its class prototype, which does not depend on n
    x, y = toy(n=40, noise=0.0)
    protos = torch.stack([x[y == c][0] for c in range(4)])
    for c in range(4):
        assert torch.equal(x[y == c], protos[c].expand_as(x[y == c]))
    x2, y2 = toy(n=9, noise=0.0)
    assert torch.equal(torch.stack([x2[y2 == c][0] for c in range(4)]), protos)
    # the noise has the requested scale (before clamping, away from 0 and 1)
    xn, yn = toy(n=4000, noise=0.05)
    inside = (protos[yn] > 0.2) & (protos[yn] < 0.8)
    assert abs(float((xn - protos[yn])[inside].std()) - 0.05) < 0.003


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_toy_dtype_and_device(dtype, device):
    x, y = toy(n=16, dtype=dtype, device=device)
    ref, ref_y = toy(n=16, dtype=torch.float64)
    assert x.dtype == dtype and x.device.type == device and y.device.type == device
    assert torch.equal(x.cpu(), ref.to(dtype)) and torch.equal(y.cpu(), ref_y)


def test_logistic_regression_learns_toy():
    torch.manual_seed(0)
    x, y = toy(n=512, size=8, classes=4, noise=0.1, seed=0)
    model = torch.nn.Linear(64, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    flat = x.flatten(1)
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model(flat), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (model(flat).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


def test_loader_covers_every_sample_once():
    x, y = toy(n=100)
    batches = list(loader(x, y, batch_size=32, seed=0))
    assert [len(b[0]) for b in batches] == [32, 32, 32, 4]
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert not torch.equal(ys, y)  # shuffled
    order = torch.tensor([int(torch.nonzero((x == row).flatten(1).all(1))[0]) for row in xs])
    assert sorted(order.tolist()) == list(range(100))
    assert torch.equal(ys, y[order])


def test_loader_is_seeded():
    x, y = toy(n=64)
    first = [b[1] for b in loader(x, y, batch_size=16, seed=5)]
    again = [b[1] for b in loader(x, y, batch_size=16, seed=5)]
    other = [b[1] for b in loader(x, y, batch_size=16, seed=6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # a second epoch of the same loader has a new order, reproducible from the seed
    dl, dl2 = loader(x, y, batch_size=64, seed=5), loader(x, y, batch_size=64, seed=5)
    e1, e2 = next(iter(dl))[1], next(iter(dl))[1]
    assert not torch.equal(e1, e2)
    assert torch.equal(next(iter(dl2))[1], e1) and torch.equal(next(iter(dl2))[1], e2)


def test_loader_without_shuffle_and_kwargs():
    x, y = toy(n=10)
    batches = list(loader(x, y, batch_size=4, shuffle=False, drop_last=True))
    assert len(batches) == 2
    assert torch.equal(torch.cat([b[0] for b in batches]), x[:8])
    assert torch.equal(torch.cat([b[1] for b in batches]), y[:8])


def test_bad_arguments():
    with pytest.raises(ValueError, match="toy: argument 'n'"):
        toy(n=0)
    with pytest.raises(ValueError, match="toy: argument 'classes'"):
        toy(classes=0)
    with pytest.raises(ValueError, match="toy: argument 'size'"):
        toy(size=0)
    with pytest.raises(ValueError, match="toy: argument 'noise'"):
        toy(noise=-0.1)
    with pytest.raises(TypeError, match="toy: argument 'dtype'"):
        toy(dtype=torch.int64)
    x, y = toy(n=10)
    with pytest.raises(ValueError, match=r"loader: arguments 'x' and 'y' must hold the same number of samples, "
                                         r"got 10 and 9"):
        loader(x, y[:9])
    with pytest.raises(ValueError, match="loader: argument 'batch_size'"):
        loader(x, y, batch_size=0)
    with pytest.raises(TypeError, match="loader: argument 'y'"):
        loader(x, y.tolist())
