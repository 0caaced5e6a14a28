"""robustops.ops.spatial_pyramid_pool (robustops::spp_max, spp_mean): agreement with
robustops.reference.spp over devices and dtypes (forward and gradient; ties and NaN
included, and max's saved indices against adaptive_max_pool2d's), by hand, gradcheck,
double backward and bad input (the public op and the dispatcher ops). opcheck,
torch.compile and the fallback: tests/ops/test_contract.py. The modules
(robustops.nn.SpatialPyramidPool, P4SpatialPyramidPool): tests/nn/test_spp.py and
tests/nn/test_p4.py."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from robustops.ops import spatial_pyramid_pool
from robustops.reference import spp as ref_spp
from tests.common import DEVICES, FLOAT_DTYPES, assert_close_scaled, randn

F64 = torch.float64


SIZES = [(4, 4), (5, 5), (4, 9), (7, 5), (8, 8), (13, 6), (16, 16), (37, 23)]


def _input(h, w, dtype, device, nan):
    x = randn(2, 3, h, w, seed=h * 100 + w).to(dtype)
    x[0, 1] = 1.5                 # a constant plane: every bin ties
    x[1, 0, ::2] = x[1, 0, 1::2].max()  # whole rows tied at the plane's maximum
    if nan:
        x[1, 1, h // 2, w // 3] = float("nan")
        x[1, 2, 0, 0] = float("nan")
        x[1, 2, -1, -1] = float("nan")
    return x.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_against_reference(mode, dtype, device):
    levels = (1, 2, 4)
    for h, w in SIZES:
        what = f"{h}x{w}"
        x = _input(h, w, dtype, device, nan=(mode == "max"))
        xg = x.clone().requires_grad_()
        out = spatial_pyramid_pool(xg, levels, mode)
        assert out.shape == (2, 3 * 21) and out.dtype == dtype and out.device == x.device
        g = torch.randn(out.shape, dtype=F64).to(dtype)
        (got,) = torch.autograd.grad(out, xg, g.to(device))

        x64 = x.double().cpu().requires_grad_()
        want_out = ref_spp.spatial_pyramid_pool(x64, levels, mode)
        (want,) = torch.autograd.grad(want_out, x64, g.double())
        if mode == "max":
            # A selection: the same values as the reference in the input's dtype (the
            # float64 reference sees the same, exactly converted values and ties). The
            # element chosen is adaptive_max_pool2d's: the first maximum of the bin in
            # row-major order, NaN winning (the last NaN); ties and NaN included, the
            # saved indices equal adaptive_max_pool2d's, so the gradient lands on the
            # same elements and equals the reference's up to summation order.
            ref_out = ref_spp.spatial_pyramid_pool(x, levels, mode)
            assert_close(out.detach(), ref_out, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")
            _, idx = torch.ops.robustops.spp_max(x, list(levels))
            ref_idx = torch.cat([F.adaptive_max_pool2d(x, n, return_indices=True)[1].flatten(1) for n in levels], 1)
            assert torch.equal(idx, ref_idx), what
            assert out.isnan().any()  # the NaN inputs won their bins
        else:
            assert_close_scaled(out, want_out, ref_spp.spatial_pyramid_pool(x64.detach().abs(), levels, mode),
                                 dtype, f"{what} forward")
        (scale,) = torch.autograd.grad(ref_spp.spatial_pyramid_pool(x64, levels, mode), x64, g.double().abs())
        assert_close_scaled(got, want, scale, dtype, f"{what} backward")


def test_ties_and_nan_by_hand():
    # an all-constant 4 x 4 plane: each bin's gradient goes to its top-left element
    x = torch.full((1, 1, 4, 4), 2.0, dtype=F64, requires_grad=True)
    out = spatial_pyramid_pool(x)
    assert torch.equal(out.detach(), torch.full((1, 21), 2.0, dtype=F64))
    (g,) = torch.autograd.grad(out.sum(), x)
    want = torch.zeros(4, 4, dtype=F64)
    want[0, 0] += 1                   # level 1
    want[0::2, 0::2] += 1             # level 2: bins of 2 x 2
    want += 1                         # level 4: every element is a bin
    assert torch.equal(g[0, 0], want)
    # a NaN wins its bins (and the levels above)
    x = torch.arange(16.0, dtype=F64).view(1, 1, 4, 4)
    x[0, 0, 3, 0] = float("nan")
    out = spatial_pyramid_pool(x, (1, 2))
    assert out[0, 0].isnan() and out[0, 3].isnan()
    assert torch.equal(out[0, [1, 2, 4]], torch.tensor([5.0, 7.0, 15.0], dtype=F64))
    # mean: NaN reaches exactly the bins that hold it
    out = spatial_pyramid_pool(x, (1, 2), "mean")
    assert out[0, 0].isnan() and out[0, 3].isnan() and not out[0, [1, 2, 4]].isnan().any()
    assert torch.equal(out[0, [1, 2, 4]], torch.tensor([2.5, 4.5, 12.5], dtype=F64))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    for h, w in ((5, 7), (8, 4)):
        x = randn(2, 2, h, w, device=device).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: spatial_pyramid_pool(t, (1, 2, 4), "mean"), (x,))
        # max: distinct values at least 1/(h w) apart, so finite differences keep the argmax
        distinct = torch.randperm(2 * 2 * h * w, generator=torch.Generator().manual_seed(h)).to(F64)
        distinct = (distinct / (h * w)).view(2, 2, h, w).to(device).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: spatial_pyramid_pool(t, (1, 3, 2), "max"), (distinct,))


def test_double_backward():
    x = randn(1, 2, 5, 5).requires_grad_()
    w = randn(2 * 21, seed=1).requires_grad_()
    for mode in ("mean", "max"):
        grads = []
        for f in (spatial_pyramid_pool, ref_spp.spatial_pyramid_pool):
            (gx,) = torch.autograd.grad((f(x, (1, 2, 4), mode) * w).sum(), x, create_graph=True)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no "not used in the graph" warning
                grads.append(torch.autograd.grad(gx.square().sum() + w.sum(), w)[0])
        assert_close(grads[0], grads[1])


def test_bad_input():
    x = randn(2, 3, 5, 6)
    op = "robustops.ops.spatial_pyramid_pool"
    with pytest.raises(ValueError, match=f"{op}: argument 'x' has 3x6 planes, smaller than the largest "
                                         "pyramid level 4"):
        spatial_pyramid_pool(x[:, :, :3])
    with pytest.raises(ValueError, match="argument 'x' has 5x2 planes"):
        spatial_pyramid_pool(x[..., :2], (1, 3))
    for levels in (0, (1, 0), (2, -1), (), [], tuple(range(1, 10)), (1.0, 2), (2, "4"), 2.5, True, (1, True)):
        with pytest.raises(ValueError, match=f"{op}: argument 'levels' must be 1 to 8 positive ints"):
            spatial_pyramid_pool(x, levels)
    spatial_pyramid_pool(x, tuple(range(1, 6)) + (1, 1, 1))  # 8 levels is the most
    with pytest.raises(ValueError, match=f"{op}: argument 'mode' must be 'max' or 'mean'"):
        spatial_pyramid_pool(x, mode="avg")
    with pytest.raises(ValueError, match=r"argument 'x' must have shape \[B, C, H, W\]"):
        spatial_pyramid_pool(x[0])
    with pytest.raises(ValueError, match=r"argument 'x' must have shape \[B, C, H, W\]"):
        spatial_pyramid_pool(x.unsqueeze(2))
    with pytest.raises(TypeError, match="argument 'x' must be a floating-point tensor"):
        spatial_pyramid_pool(x.long())
    with pytest.raises(TypeError, match="argument 'x' must be a Tensor"):
        spatial_pyramid_pool(x.tolist())
    # the ops themselves check too, naming the argument
    with pytest.raises(RuntimeError, match="robustops::spp_max: argument 'levels' must be positive"):
        torch.ops.robustops.spp_max(x, [1, 0])
    with pytest.raises(RuntimeError, match="robustops::spp_mean: argument 'levels' must hold 1 to 8"):
        torch.ops.robustops.spp_mean(x, [])
    with pytest.raises(RuntimeError, match="robustops::spp_mean: argument 'levels' must hold 1 to 8"):
        torch.ops.robustops.spp_mean(x, list(range(1, 10)))
    with pytest.raises(RuntimeError, match="robustops::spp_max: argument 'x' has 5x6 planes"):
        torch.ops.robustops.spp_max(x, [1, 6])
    with pytest.raises(RuntimeError, match="robustops::spp_mean: argument 'x' must have shape"):
        torch.ops.robustops.spp_mean(x[0], [1])
    out, idx = torch.ops.robustops.spp_max(x, [1, 2])
    with pytest.raises(RuntimeError, match="_spp_max_backward: argument 'indices' must be an int64 tensor"):
        torch.ops.robustops._spp_max_backward(out, idx.int(), [1, 2], 5, 6)
    with pytest.raises(RuntimeError, match="_spp_mean_backward: argument 'grad' must have shape"):
        torch.ops.robustops._spp_mean_backward(out[:, :7], [1, 2], 5, 6)
