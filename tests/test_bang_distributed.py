"""BANG under torch.distributed: two gloo processes on CPU, each with half of the
batch, give the gradients of a single-process run on the whole batch (the batch max
of every layer's per-sample norms is taken over both ranks)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from robustops.bang import BANG
from tests.common import spawn_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

N = 12
SETTINGS = dict(eps=0.855, beta=0.4, ratio=0.5)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 6, 16),
                         nn.Tanh(), nn.Linear(16, 4)).double()


def _batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, 3, 6, 6, generator=g, dtype=torch.float64)
    # Uneven scales: the two halves have different norm ranges, so a local max
    # would give different etas than the global one.
    x[N // 2:] *= 3.0
    return x, torch.randint(0, 4, (N,), generator=g)


def _grads(model, x, y, bang):
    logits = model(x)
    bang.observe(logits, y)
    model.zero_grad()
    F.cross_entropy(logits, y).backward()
    return {n.removeprefix("module."): p.grad.clone() for n, p in model.named_parameters()}


def _worker(rank, world, port, out_dir, group_mode):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = nn.parallel.DistributedDataParallel(_model())
        bang = BANG(model, **SETTINGS, process_group="auto" if group_mode == "global" else None)
        x, y = _batch()
        part = slice(rank * N // world, (rank + 1) * N // world)
        grads = _grads(model, x[part], y[part], bang)
        torch.save(grads, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # neither rank tears down its connections while the other works
    finally:
        dist.destroy_process_group()


def _run(tmp_path, group_mode):
    return spawn_ranks(_worker, tmp_path, group_mode)


def test_ddp_equals_single_process_on_the_concatenated_batch(tmp_path):
    ranks = _run(tmp_path, "global")
    model = _model()
    x, y = _batch()
    single = _grads(model, x, y, BANG(model, **SETTINGS))
    for name, g in single.items():
        # DDP averages the ranks' gradients, so both hold the same numbers
        assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=0)
        assert_close(ranks[0][name], g, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_local_max_differs(tmp_path):
    """With process_group=None each rank uses its own batch max: a different result,
    which is what makes the test above meaningful."""
    ranks = _run(tmp_path, "local")
    model = _model()
    x, y = _batch()
    single = _grads(model, x, y, BANG(model, **SETTINGS))
    assert not torch.allclose(ranks[0]["0.weight"], single["0.weight"], rtol=1e-6, atol=1e-9)
