"""Every CUDA kernel of robustops, run on CPU threads by the CPU execution lane
(csrc/include/robustops/sim/cuda_sim.h), against the CPU kernels (and, for the
saf, interval, BANG norm and p4 ops, the references too): every dtype,
shapes that reach the vectorized bodies and the scalar tails, misaligned pointers,
empty tensors, NaN and inf, BANG samples of several chunks and batches past the
sample blocks, SPP planes larger than a block, and each case also with the grid
capped at 3 blocks (the grid-stride loops).

The lane runs what a GPU runs, so results may differ from the CPU kernels where the
device code does: exp is the C library's expf in the lane (a GPU's expf) and a
Cephes polynomial in the CPU kernels (both within 2 ulp), and the CUDA reductions
(BANG's norms, CROWN's row sums) add in another order (1e-12 relative in float64
accumulators, one rounding of the output dtype otherwise)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from robustops.reference import bang as ref_bang
from robustops.reference import interval as ref_interval
from robustops.reference import p4 as ref_p4
from robustops.reference import saf as ref_saf
from tests.common import FLOAT_DTYPES, tolerances

CPU = torch.ops.robustops

# elementwise sizes: empty, one, below and above one vector (4-8 elements), a block
# (256 threads), and past kThreads * 3 blocks
SIZES = [0, 1, 7, 9, 255, 257, 1031, 5003]


def _close(got, want, dtype):
    tol = tolerances(dtype)
    if dtype in (torch.float16, torch.bfloat16):  # one rounding of the output
        tol = dict(rtol=2 * tol["rtol"], atol=2 * tol["atol"])
    assert_close(got, want, equal_nan=True, **tol)


def _data(n, dtype, seed=0, special=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n + 1, generator=g, dtype=torch.float64) * 2).to(dtype)
    if special and n >= 4:
        x[1], x[2], x[3] = float("nan"), float("inf"), -float("inf")
    return x


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("name", ["mrelu", "rbf"])
def test_saf(sim, grid_cap, name, n, dtype, aligned):
    base = _data(n, dtype)
    x = base[:n] if aligned else base[1:]  # a pointer one element past 16-byte alignment
    grad = _data(n, dtype, seed=1, special=False)[:n]
    _close(getattr(sim, name)(x), getattr(CPU, name)(x), dtype)
    _close(getattr(sim, name)(x), getattr(ref_saf, name)(x.double()).to(dtype), dtype)  # the oracle, upcast
    _close(getattr(sim, f"_{name}_backward")(grad, x), getattr(CPU, f"_{name}_backward")(grad, x), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", ["interval_relu", "interval_mrelu", "interval_rbf"])
def test_interval(sim, grid_cap, name, n, dtype):
    c = _data(n, dtype)[1:]
    r = _data(n, dtype, seed=2, special=False)[:n].abs()
    if n >= 6:
        r[5] = -1.0  # a negative radius: NaN, as in the CPU kernel
    for got, want, ref in zip(getattr(sim, name)(c, r), getattr(CPU, name)(c, r),
                              getattr(ref_interval, name)(c.double(), r.double())):
        _close(got, want, dtype)
        _close(got, ref.to(dtype), dtype)
    gc, gr = _data(n, dtype, seed=3, special=False)[:n], _data(n, dtype, seed=4, special=False)[:n]
    for got, want in zip(getattr(sim, f"_{name}_backward")(gc, gr, c, r),
                         getattr(CPU, f"_{name}_backward")(gc, gr, c, r)):
        _close(got, want, dtype)


def test_non_contiguous_inputs(sim):
    x = torch.randn(64, 33)[:, ::2]
    assert_close(sim.mrelu(x), CPU.mrelu(x), rtol=0, atol=0)
    c, r = torch.randn(40, 30).t(), torch.rand(40, 30).t()
    for got, want in zip(sim.interval_mrelu(c, r), CPU.interval_mrelu(c, r)):
        assert_close(got, want, rtol=0, atol=0)


# ---------------------------------------------------------------- BANG

# (samples, elements per sample): one chunk (4096) and several, odd tails; with the
# grid capped at 3 a batch of 7 samples is past the sample blocks
BANG_SHAPES = [(0, 5), (1, 1), (3, 0), (7, 33), (5, 4096), (4, 4097), (3, 3 * 4096 + 11), (9, 1000)]


def _bang_tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else tolerances(dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", BANG_SHAPES, ids=str)
def test_bang(sim, grid_cap, shape, dtype):
    n, d = shape
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    if n > 2 and d > 0:
        x[1] = 0  # a zero gradient keeps eta = 1
    norms = sim.per_sample_norm(x)
    assert_close(norms, CPU.per_sample_norm(x), **_bang_tol(norms.dtype))
    assert_close(norms, ref_bang.per_sample_norm(x), **_bang_tol(norms.dtype))
    eps = torch.linspace(0.1, 0.9, n, dtype=torch.float64)
    for max_norm in (None, torch.tensor(50.0, dtype=torch.float64)):
        out, nrm = sim.bang_scale(x, eps, max_norm)
        want_out, want_nrm = CPU.bang_scale(x, eps, max_norm)
        assert_close(nrm, want_nrm, **_bang_tol(nrm.dtype))
        _close(out, want_out, dtype)
        assert_close(sim.bang_eta(want_nrm, eps, max_norm), CPU.bang_eta(want_nrm, eps, max_norm),
                     **_bang_tol(want_nrm.dtype))


def test_bang_nan(sim):
    x = torch.randn(4, 5000)
    x[2, 77] = float("nan")
    eps = torch.full((4,), 0.5, dtype=torch.float64)
    for got, want in zip(sim.bang_scale(x, eps, None), CPU.bang_scale(x, eps, None)):
        assert_close(got, want, equal_nan=True)


# ---------------------------------------------------------------- CROWN


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(0, 3, 4), (1, 1, 1), (2, 9, 3, 5, 5), (3, 4, 600), (2, 3, 3, 17, 19)], ids=str)
def test_crown_relax(sim, grid_cap, shape, dtype):
    g = torch.Generator().manual_seed(6)
    a = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    rel_shape = (shape[0],) + shape[2:]
    rel = [torch.randn(rel_shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(4)]
    got, want = sim.crown_relax(a, *rel), CPU.crown_relax(a, *rel)
    _close(got[0], want[0], dtype)
    m = max(1, a[0, 0].numel() if a.shape[0] else 1)  # the offset is a sum over a row: tolerance grows with it
    tol = tolerances(dtype)
    assert_close(got[1], want[1], rtol=tol["rtol"] * m, atol=tol["atol"] * m * 4)
    ga = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    gd = torch.randn(shape[:2], generator=g, dtype=torch.float64).to(dtype)
    got, want = sim._crown_relax_backward(ga, gd, a, *rel), CPU._crown_relax_backward(ga, gd, a, *rel)
    for u, v in zip(got, want):
        assert_close(u, v, rtol=tol["rtol"] * shape[1], atol=tol["atol"] * shape[1] * 4)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(0, 3, 4), (1, 1, 1), (2, 9, 3, 5, 5), (3, 4, 600), (2, 3, 3, 17, 19)], ids=str)
def test_crown_relu(sim, grid_cap, shape, dtype):
    g = torch.Generator().manual_seed(7)
    a = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    rel_shape = (shape[0],) + shape[2:]
    l = torch.randn(rel_shape, generator=g, dtype=torch.float64)
    u = l + torch.rand(rel_shape, generator=g, dtype=torch.float64) * 2
    l.view(-1)[::5] = 0  # alive from 0
    u.view(-1)[1::7] = l.view(-1)[1::7]  # points
    l, u = l.to(dtype), u.to(dtype)
    got, want = sim.crown_relu(a, l, u), CPU.crown_relu(a, l, u)
    _close(got[0], want[0], dtype)
    m = max(1, a[0, 0].numel() if a.shape[0] else 1)
    tol = tolerances(dtype)
    assert_close(got[1], want[1], rtol=tol["rtol"] * m, atol=tol["atol"] * m * 4)
    ga = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    gd = torch.randn(shape[:2], generator=g, dtype=torch.float64).to(dtype)
    got, want = sim._crown_relu_backward(ga, gd, a, l, u), CPU._crown_relu_backward(ga, gd, a, l, u)
    assert [t.shape for t in got] == [a.shape, l.shape, l.shape]
    for x, y in zip(got, want):
        assert_close(x, y, rtol=tol["rtol"] * shape[1] * 4, atol=tol["atol"] * shape[1] * 16, equal_nan=True)


# ---------------------------------------------------------------- p4 and SPP


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(0, 2, 1, 3, 3), (3, 2, 1, 3, 3), (2, 3, 4, 5, 5), (5, 1, 4, 1, 1),
                                   (4, 3, 1, 7, 7), (16, 8, 4, 3, 3)], ids=str)
def test_p4_filter(sim, grid_cap, shape, dtype):
    w = torch.randn(shape, dtype=torch.float64).to(dtype)
    assert_close(sim.p4_filter(w), CPU.p4_filter(w), rtol=0, atol=0)  # a permutation: exact
    assert_close(sim.p4_filter(w), ref_p4.p4_filter(w), rtol=0, atol=0)
    grad = torch.randn(CPU.p4_filter(w).shape, dtype=torch.float64).to(dtype)
    _close(sim._p4_filter_backward(grad, shape[2]), CPU._p4_filter_backward(grad, shape[2]), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(0, 2, 5, 5), (1, 1, 4, 4), (2, 3, 13, 11), (1, 2, 40, 37), (3, 1, 4, 64)],
                         ids=str)
def test_spp(sim, grid_cap, shape, dtype):
    levels = [1, 2, 4]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if x.numel() > 5:
        x.view(-1)[3] = float("nan")
    out, idx = sim.spp_max(x, levels)
    want_out, want_idx = CPU.spp_max(x, levels)
    assert_close(out, want_out, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, want_idx)
    h, w = shape[2:]
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    _close(sim._spp_max_backward(grad, idx, levels, h, w), CPU._spp_max_backward(grad, idx, levels, h, w), dtype)
    _close(sim.spp_mean(x, levels), CPU.spp_mean(x, levels), dtype)
    _close(sim._spp_mean_backward(grad, levels, h, w), CPU._spp_mean_backward(grad, levels, h, w), dtype)


def test_lane_checks_launches(sim):
    """The host checks run in the lane as on a GPU: bad input is a clear error."""
    with pytest.raises(RuntimeError, match="bang_scale"):
        sim.bang_scale(torch.ones(3, 2), torch.ones(2, dtype=torch.float64), None)
