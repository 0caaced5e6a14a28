"""Helpers shared by the robustops tests (an ordinary module, as torchvision's
common_utils.py): the devices and dtypes they run over, and per-dtype tolerances.
tests/conftest.py holds only pytest's hooks."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

# Every device the tests run on: CUDA tests are marked and skipped without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def tolerances(dtype: torch.dtype) -> dict:
    """Per-dtype tolerances for a result against an upcast (float64) reference that
    is rounded to the same dtype: one rounding step of that dtype, plus room for the
    float32 rounding of intermediates."""
    return {
        torch.float64: dict(rtol=1e-12, atol=1e-14),
        torch.float32: dict(rtol=2e-6, atol=1e-7),
        torch.float16: dict(rtol=1e-3, atol=1e-5),
        torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
    }[dtype]


F64 = torch.float64


def randn(*shape, dtype=F64, device="cpu", seed=0):
    """A standard normal tensor drawn in float64 from its own seeded generator, then
    cast and moved (the same values on every device and dtype)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64).to(dtype).to(device)


def assert_close_scaled(actual, expected, scale, dtype, what=""):
    """actual against a float64 expected whose terms have magnitude sums `scale`
    (elementwise): the dtype's rounding of the result plus one rounding step of the
    dtype (at least 1e-6, for float32 accumulation) of the terms' magnitude."""
    tol = tolerances(dtype)
    actual = actual.detach().double().cpu()
    expected, scale = expected.detach().double().cpu(), scale.detach().double().cpu()
    assert actual.shape == expected.shape, what
    assert torch.equal(actual.isnan(), expected.isnan()), f"{what}: NaN positions differ"
    ok = ~expected.isnan()
    err = (actual - expected).abs()[ok]
    bound = (tol["atol"] + tol["rtol"] * expected.abs() + max(tol["rtol"], 1e-6) * scale)[ok]
    assert (err <= bound).all(), f"{what}: max excess {(err - bound).max().item()}"


def spawn_ranks(worker, tmp_path, arg, world: int = 2) -> list:
    """Run ``worker(rank, world, port, out_dir, arg)`` in ``world`` processes (a free
    local port for the gloo rendezvous) and load what each rank saved to
    ``out_dir/rank<r>.pt``: the distributed tests' scaffolding."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(world, port, str(tmp_path), arg), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
