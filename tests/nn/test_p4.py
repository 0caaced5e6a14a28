"""robustops.nn p4 layers:

- P4ConvZ2 / P4ConvP4: the equivariance laws (exact in float64) for odd and even
  kernels, padding, bias, dilation and stride 2 where the strided grid is symmetric,
  and their documented failure where it is not; agreement with
  robustops.reference.p4.p4_conv over devices and dtypes (forward, input, weight and
  bias gradients); gradcheck; the eval-mode filter cache (reuse, invalidation,
  state_dict, gradients, dtype and device moves); bad input.
- P4Pool, P4MaxPool2d, P4AvgPool2d, P4BatchNorm against their plain-torch meanings.
- P4SpatialPyramidPool: rotation invariance, output_size, agreement with a
  straightforward reference (rotation pool, adaptive pool, orbit pool), bad input.

The plain SpatialPyramidPool and its op, robustops.ops.spatial_pyramid_pool (the spp
family): tests/nn/test_spp.py and tests/ops/test_spp.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import robustops
from robustops import _extension
from robustops.nn import P4AvgPool2d, P4BatchNorm, P4ConvP4, P4ConvZ2, P4MaxPool2d, P4Pool, P4SpatialPyramidPool
from robustops.ops import spatial_pyramid_pool
from robustops.reference.p4 import grot, p4_conv
from tests.common import DEVICES, FLOAT_DTYPES, assert_close_scaled, randn

F64 = torch.float64


def _lift_input(layer, h, w=None, seed=0, batch=2):
    w = h if w is None else w
    if isinstance(layer, P4ConvZ2):
        return randn(batch, layer.in_channels, h, w, seed=seed)
    return randn(batch, layer.in_channels, 4, h, w, seed=seed)


def _rotate_input(layer, x, k):
    return torch.rot90(x, k, dims=(2, 3)) if isinstance(layer, P4ConvZ2) else grot(x, k)


def _max_law_error(layer, x):
    y = layer(x)
    return max((layer(_rotate_input(layer, x, k)) - grot(y, k)).abs().max().item() for k in range(4))


# ---------------------------------------------------------------------------------
# P4ConvZ2 / P4ConvP4: equivariance

# (kernel_size, padding, stride, dilation, side, bias): every case has
# (side + 2 padding - dilation (k - 1) - 1) divisible by the stride
EQUIVARIANT = [
    (3, 1, 1, 1, 8, True),
    (3, 0, 1, 1, 7, False),
    (4, 0, 1, 1, 8, True),   # even kernel: rotates about the centre of the 4 x 4 window
    (4, 2, 1, 1, 7, False),
    (4, 1, 1, 1, 6, True),
    (5, 2, 1, 1, 9, True),
    (5, 0, 1, 1, 6, False),
    (3, 1, 2, 1, 9, True),   # stride 2: 9 + 2 - 2 - 1 = 8
    (3, 0, 2, 1, 7, False),  # 7 - 2 - 1 = 4
    (4, 1, 2, 1, 8, True),   # 8 + 2 - 3 - 1 = 6
    (5, 2, 2, 1, 11, True),  # 11 + 4 - 4 - 1 = 10
    (3, 2, 1, 2, 8, True),   # dilation 2
    (3, 0, 2, 2, 9, False),  # dilation 2, stride 2: 9 - 4 - 1 = 4
]


@pytest.mark.parametrize("cls", [P4ConvZ2, P4ConvP4])
@pytest.mark.parametrize("case", EQUIVARIANT, ids=lambda c: "k{}-p{}-s{}-d{}-h{}-{}".format(*c))
def test_equivariance_is_exact(case, cls):
    k, p, s, d, h, bias = case
    assert (h + 2 * p - d * (k - 1) - 1) % s == 0
    torch.manual_seed(0)
    layer = cls(3, 2, k, stride=s, padding=p, dilation=d, bias=bias).double()
    x = _lift_input(layer, h)
    for k_rot in range(4):
        assert_close(layer(_rotate_input(layer, x, k_rot)), grot(layer(x), k_rot), rtol=0, atol=1e-12)
    # composing the layers: Z2 -> p4 -> p4
    if cls is P4ConvZ2:
        nxt = P4ConvP4(2, 3, 3, padding=1).double()
        for k_rot in range(4):
            assert_close(nxt(layer(torch.rot90(x, k_rot, dims=(2, 3)))), grot(nxt(layer(x)), k_rot),
                         rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [P4ConvZ2, P4ConvP4])
def test_equivariance_fails_for_an_asymmetric_strided_grid(cls):
    # the documented failure: stride 2 with 10 + 2 - 2 - 1 = 9 not divisible by 2, so
    # the strided grid keeps row 0 but not row 9: the rotated input loses other rows
    k, p, s, h = 3, 1, 2, 10
    assert (h + 2 * p - (k - 1) - 1) % s != 0
    torch.manual_seed(0)
    layer = cls(3, 2, k, stride=s, padding=p).double()
    x = _lift_input(layer, h)
    assert layer(x).shape[-2:] == (5, 5)  # the law's two sides have the same shape ...
    assert _max_law_error(layer, x) > 1e-3  # ... but are not equal


def test_rotation_pooling_after_a_p4_layer_is_invariant_to_the_rotation_shift():
    torch.manual_seed(0)
    layer = P4ConvZ2(2, 3, 3, padding=1).double()
    x = randn(2, 2, 8, 8)
    for mode in ("max", "mean"):
        pool = P4Pool(mode)
        for k in range(4):
            # grot = roll on the rotation axis and rot90 of the plane: the pool removes the roll
            assert_close(pool(layer(torch.rot90(x, k, dims=(2, 3)))), torch.rot90(pool(layer(x)), k, dims=(2, 3)),
                         rtol=0, atol=1e-12)
            assert_close(pool(torch.roll(layer(x), k, dims=2)), pool(layer(x)), rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------
# P4ConvZ2 / P4ConvP4: against the reference


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("cls", [P4ConvZ2, P4ConvP4])
def test_layers_against_reference(cls, dtype, device):
    for k, kw, h, w in ((3, dict(padding=1), 7, 7), (4, dict(stride=2, padding=1), 8, 6),
                        (2, dict(dilation=2), 6, 5)):
        torch.manual_seed(k)
        layer = cls(3, 5, k, **kw).to(device=device, dtype=dtype)
        x = _lift_input(layer, h, w, seed=k).to(device=device, dtype=dtype).requires_grad_()
        y = layer(x)
        assert y.dtype == dtype and y.shape[:3] == (2, 5, 4)
        g = torch.randn(y.shape, dtype=F64).to(dtype)
        got = torch.autograd.grad(y, (x, layer.weight, layer.bias), g.to(device))

        ins = [t.detach().double().cpu().requires_grad_() for t in (x, layer.weight, layer.bias)]
        y64 = p4_conv(*ins, **kw)
        want = torch.autograd.grad(y64, ins, g.double())
        # the magnitude sums of the terms: the same computation on absolute values
        absins = [t.detach().abs().requires_grad_() for t in ins]
        scale_y = p4_conv(*absins, **kw)
        scales = torch.autograd.grad(scale_y, absins, g.double().abs())

        assert_close_scaled(y, y64, scale_y, dtype, f"k={k} forward")
        for name, a, e, s in zip(("input", "weight", "bias"), got, want, scales):
            assert a.shape == e.shape and a.dtype == dtype
            assert_close_scaled(a, e, s, dtype, f"k={k} {name} grad")


@pytest.mark.parametrize("device", DEVICES)
def test_layers_gradcheck(device):
    torch.manual_seed(0)
    for layer, shape in ((P4ConvP4(2, 1, 3, padding=1), (1, 2, 4, 3, 3)), (P4ConvP4(1, 2, 2), (1, 1, 4, 3, 3)),
                         (P4ConvZ2(2, 2, 2), (2, 2, 3, 3))):
        layer = layer.to(device=device, dtype=F64)
        x = torch.randn(shape, dtype=F64, device=device, requires_grad=True)
        w = layer.weight.detach().clone().requires_grad_()
        b = layer.bias.detach().clone().requires_grad_()

        def f(x, w, b, layer=layer):
            return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))

        assert torch.autograd.gradcheck(f, (x, w, b))


# ---------------------------------------------------------------------------------
# the eval-mode filter cache


def _expected(layer, x):
    return p4_conv(x, layer.weight.detach(), layer.bias.detach(), layer.stride, layer.padding, layer.dilation)


@pytest.mark.parametrize("cls", [P4ConvZ2, P4ConvP4])
def test_eval_cache_is_reused(cls):
    torch.manual_seed(0)
    layer = cls(3, 4, 3, padding=1).double()
    x = _lift_input(layer, 6)
    # train mode: no cache, a fresh transform every call
    layer(x)
    assert layer._cache is None
    f1, f2 = layer.transformed_filter(), layer.transformed_filter()  # both alive: distinct storage
    assert f1.data_ptr() != f2.data_ptr() and torch.equal(f1, f2)
    layer.eval()
    with torch.no_grad():
        y1 = layer(x)
        cache = layer._cache
        assert cache is not None
        y2 = layer(x)
        assert layer._cache is cache  # the same entry, not recomputed
        f1, f2 = layer.transformed_filter(), layer.transformed_filter()
        assert f1 is cache[1][0] and f2 is cache[1][0]
    # with grad enabled: a view of the same storage
    f3 = layer.transformed_filter()
    assert layer._cache is cache and f3.data_ptr() == cache[1][0].data_ptr() and f3.requires_grad
    assert torch.equal(y1, y2)
    assert torch.equal(y1, _expected(layer, x))
    assert torch.equal(cache[1][0], robustops.reference.p4.p4_filter(layer.weight.detach()))


@pytest.mark.parametrize("cls", [P4ConvZ2, P4ConvP4])
def test_eval_cache_is_invalidated_by_weight_updates(cls):
    torch.manual_seed(0)
    layer = cls(3, 4, 3, padding=1).double().eval()
    x = _lift_input(layer, 6)
    with torch.no_grad():
        y0 = layer(x)
        layer.weight.add_(1)  # in place
        y1 = layer(x)
    assert not torch.equal(y0, y1)
    assert_close(y1, _expected(layer, x), rtol=0, atol=0)

    # load_state_dict copies in place
    other = cls(3, 4, 3, padding=1).double()
    layer.load_state_dict(other.state_dict())
    assert_close(layer(x), _expected(other, x), rtol=0, atol=0)

    # an optimizer step (in place, under no_grad)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).square().sum().backward()
    opt.step()
    assert_close(layer(x), _expected(layer, x), rtol=0, atol=0)

    # a new Parameter
    layer.weight = torch.nn.Parameter(layer.weight.detach() * -2)
    assert_close(layer(x), _expected(layer, x), rtol=0, atol=0)

    # back to train mode and in place there, then eval again
    layer.train()
    with torch.no_grad():
        layer.weight.mul_(0.5)
    layer.eval()
    assert_close(layer(x), _expected(layer, x), rtol=0, atol=0)


def test_eval_cache_after_changes_through_data():
    """Changes through .data bypass the version counter the cache key uses (the
    documented limitation); clear_filter_cache() or eval() again sees them."""
    torch.manual_seed(0)
    layer = P4ConvP4(2, 3, 3, padding=1).double().eval()
    x = _lift_input(layer, 6)
    with torch.no_grad():
        layer(x)
        layer.weight.data.mul_(2)  # as gradcheck's finite differences and older code do
        layer.clear_filter_cache()
        assert_close(layer(x), _expected(layer, x), rtol=0, atol=1e-12)
        layer.weight.data.mul_(2)
        layer.eval()
        assert_close(layer(x), _expected(layer, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_cache_is_not_in_the_state_dict(bias):
    torch.manual_seed(0)
    layer = P4ConvP4(2, 3, 3, bias=bias).double()
    want = {"weight", "bias"} if bias else {"weight"}
    x = _lift_input(layer, 5)
    for mode in (True, False):
        layer.train(mode)
        assert set(layer.state_dict().keys()) == want
        layer(x)
        with torch.no_grad():
            layer(x)
        assert set(layer.state_dict().keys()) == want
        assert {n for n, _ in layer.named_buffers()} == set()
        assert {n for n, _ in layer.named_parameters()} == want
    assert layer._cache is not None


@pytest.mark.parametrize("cls", [P4ConvZ2, P4ConvP4])
def test_eval_cache_keeps_gradients_flowing(cls):
    torch.manual_seed(0)
    layer = cls(3, 4, 3, padding=1).double()
    x = _lift_input(layer, 6).requires_grad_()
    grads = {}
    for mode in ("train", "eval", "eval again"):
        layer.train(mode == "train")
        y = layer(x)
        grads[mode] = torch.autograd.grad(y.sin().sum(), (x, layer.weight, layer.bias))
    assert layer._cache is not None
    for a, b in zip(grads["train"], grads["eval"]):
        assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(grads["eval"], grads["eval again"]):
        assert torch.equal(a, b)
    # and a training step in eval mode (e.g. fine-tuning with frozen batch norm)
    layer.eval()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()
    layer(x.detach()).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(layer.weight, before)
    assert_close(layer(x.detach()), _expected(layer, x.detach()), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_eval_cache_follows_dtype_and_device_moves(device):
    torch.manual_seed(0)
    layer = P4ConvP4(2, 3, 3, padding=1).eval()
    x = _lift_input(layer, 6)
    with torch.no_grad():
        y32 = layer(x.float())
        assert y32.dtype == torch.float32
        layer.double()
        y64 = layer(x)
        assert y64.dtype == F64
        assert layer._cache[1][0].dtype == F64
        assert_close(y64, _expected(layer, x), rtol=0, atol=0)
        assert_close(y32, y64.float(), rtol=1e-5, atol=1e-5)
        layer.to(device)
        xd = x.to(device)
        y = layer(xd)
        assert y.device.type == device and layer._cache[1][0].device.type == device
        assert_close(y, _expected(layer, xd), rtol=0, atol=0)
        layer.to(torch.float32)
        assert_close(layer(xd.float()), _expected(layer, xd.float()), rtol=0, atol=0)


def test_layers_fall_back_with_one_warning():
    # no compiled p4_filter: the layers run the reference transform (train and eval
    # mode, the eval cache included) with the same numbers and gradients
    torch.manual_seed(0)
    layer = P4ConvP4(2, 3, 3, padding=1).double()
    x = _lift_input(layer, 6)
    want = {}
    for mode in (True, False):
        layer.train(mode)
        want[mode] = torch.autograd.grad(layer(x).sin().sum(), layer.weight)[0]
    with _extension.kernels_disabled("p4_filter"):
        with pytest.warns(robustops.FallbackWarning, match="robustops.ops.p4_filter: no compiled kernel"):
            layer.train()
            got = torch.autograd.grad(layer(x).sin().sum(), layer.weight)[0]
        assert_close(got, want[True], rtol=1e-12, atol=1e-14)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            layer.eval()
            with torch.no_grad():
                layer.weight.mul_(1.0)  # a new version: the cache is rebuilt by the reference
                assert_close(layer(x), _expected(layer, x), rtol=0, atol=0)
            got = torch.autograd.grad(layer(x).sin().sum(), layer.weight)[0]
        assert_close(got, want[False], rtol=1e-12, atol=1e-14)


def test_conv_bad_input():
    z2, p4 = P4ConvZ2(3, 4, 3), P4ConvP4(3, 4, 3)
    with pytest.raises(ValueError, match=r"P4ConvZ2: the input must have shape \[B, C, H, W\]"):
        z2(torch.randn(2, 3, 4, 6, 6))
    with pytest.raises(ValueError, match=r"P4ConvZ2: the input has 2 channels, expected in_channels=3"):
        z2(torch.randn(2, 2, 6, 6))
    with pytest.raises(ValueError, match=r"P4ConvP4: the input must have shape \[B, C, 4, H, W\]"):
        p4(torch.randn(2, 3, 6, 6))
    with pytest.raises(ValueError, match=r"P4ConvP4: the input must have shape \[B, C, 4, H, W\]"):
        p4(torch.randn(2, 3, 3, 6, 6))  # 3 rotations
    with pytest.raises(ValueError, match=r"P4ConvP4: the input has 5 channels, expected in_channels=3"):
        p4(torch.randn(2, 5, 4, 6, 6))
    for cls in (P4ConvZ2, P4ConvP4):
        name = cls.__name__
        with pytest.raises(ValueError, match=f"{name}: argument 'kernel_size' must be an int or two equal ints"):
            cls(3, 4, (3, 5))
        with pytest.raises(ValueError, match=f"{name}: argument 'stride' must be an int or two equal ints"):
            cls(3, 4, 3, stride=(1, 2))
        with pytest.raises(ValueError, match=f"{name}: argument 'padding'"):
            cls(3, 4, 3, padding=(1, 0))
        with pytest.raises(ValueError, match=f"{name}: argument 'dilation'"):
            cls(3, 4, 3, dilation=(2, 1))
        with pytest.raises(ValueError, match=f"{name}: argument 'in_channels' must be >= 1, got 0"):
            cls(0, 4, 3)
        with pytest.raises(TypeError, match=f"{name}: argument 'out_channels' must be an int, got float"):
            cls(3, 2.0, 3)
    # equal pairs are fine
    layer = P4ConvP4(3, 4, (3, 3), stride=(2, 2), padding=[1, 1])
    assert (layer.kernel_size, layer.stride, layer.padding) == (3, 2, 1)
    assert layer.weight.shape == (4, 3, 4, 3, 3) and P4ConvZ2(3, 4, 5).weight.shape == (4, 3, 1, 5, 5)


# ---------------------------------------------------------------------------------
# P4Pool, P4MaxPool2d, P4AvgPool2d, P4BatchNorm


def test_p4_pools():
    y = randn(2, 3, 4, 7, 6)
    assert torch.equal(P4Pool("max")(y), y.amax(2))
    assert torch.equal(P4Pool()(y), y.amax(2))
    assert torch.equal(P4Pool("mean")(y), y.mean(2))
    for cls, pool in ((P4MaxPool2d, F.max_pool2d), (P4AvgPool2d, F.avg_pool2d)):
        for args in ((2,), (3, 2, 1), ((2, 2), 1)):
            got = cls(*args)(y)
            k = args[0] if isinstance(args[0], int) else args[0][0]
            stride = args[1] if len(args) > 1 else k
            pad = args[2] if len(args) > 2 else 0
            want = pool(y.reshape(2, 12, 7, 6), k, stride, pad)
            assert torch.equal(got, want.reshape(2, 3, 4, *want.shape[-2:])), (cls, args)
    with pytest.raises(ValueError, match="P4Pool: argument 'mode'"):
        P4Pool("sum")
    with pytest.raises(ValueError, match=r"P4Pool: the input must be a p4 feature map"):
        P4Pool()(y[:, :, 0])
    with pytest.raises(ValueError, match=r"P4MaxPool2d: the input must be a p4 feature map"):
        P4MaxPool2d(2)(y[:, :, :3])
    with pytest.raises(ValueError, match="P4AvgPool2d: argument 'kernel_size'"):
        P4AvgPool2d((2, 3))


def test_p4_pools_are_equivariant():
    y = randn(2, 3, 4, 8, 8)
    for m in (P4MaxPool2d(2), P4AvgPool2d(2), P4MaxPool2d(3, 1, 1)):
        for k in range(4):
            assert_close(m(grot(y, k)), grot(m(y), k), rtol=0, atol=1e-15)


def test_p4_batch_norm():
    torch.manual_seed(0)
    y = randn(3, 5, 4, 6, 6) * 3 + 1
    bn = P4BatchNorm(5).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    plain = torch.nn.BatchNorm3d(5).double()
    plain.load_state_dict(bn.state_dict())
    assert bn.running_mean.shape == (5,) and bn.weight.shape == (5,)  # shared by the 4 rotations
    assert_close(bn(y), plain(y), rtol=0, atol=0)
    assert_close(bn.running_mean, plain.running_mean, rtol=0, atol=0)
    assert_close(bn.running_var, plain.running_var, rtol=0, atol=0)
    # one mean per channel, over the batch, the rotations and the plane
    assert_close(bn.running_mean, 0.1 * y.mean(dim=(0, 2, 3, 4)))
    normed = (bn(y) - bn.bias.view(1, 5, 1, 1, 1)) / bn.weight.view(1, 5, 1, 1, 1)
    assert_close(normed.mean(dim=(0, 2, 3, 4)), torch.zeros(5, dtype=F64), rtol=0, atol=1e-12)
    # equivariant in train and eval mode
    for mode in (True, False):
        bn.train(mode)
        for k in range(4):
            assert_close(bn(grot(y, k)), grot(bn(y), k), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"P4BatchNorm: the input must be a p4 feature map"):
        bn(y[:, :, 0])


# ---------------------------------------------------------------------------------
# P4SpatialPyramidPool


def _orbit_reference(y, levels, mode):
    """Rotation pool, then per level an adaptive pool and a pool over each orbit of
    bins {(i, j), (n-1-j, i), (n-1-i, n-1-j), (j, n-1-i)}, orbits in row-major order
    of their first bin."""
    r = y.amax(2) if mode == "max" else y.mean(2)
    out = []
    for n in levels:
        p = (F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d)(r, n)
        seen, feats = set(), []
        for i in range(n):
            for j in range(n):
                if (i, j) in seen:
                    continue
                orbit = {(i, j), (n - 1 - j, i), (n - 1 - i, n - 1 - j), (j, n - 1 - i)}
                seen |= orbit
                vals = torch.stack([p[:, :, a, b] for a, b in sorted(orbit)], -1)
                feats.append(vals.amax(-1) if mode == "max" else vals.mean(-1))
        out.append(torch.stack(feats, -1).flatten(1))  # [B, C, orbits] -> channel-major
    return torch.cat(out, 1)


@pytest.mark.parametrize("mode", ["max", "mean"])
@pytest.mark.parametrize("side", [8, 7, 4, 9])
def test_p4_spp_is_rotation_invariant(side, mode):
    y = randn(2, 3, 4, side, side, seed=side)
    for levels in ((1, 2, 4), (3, 1), (4, 3, 2)):
        head = P4SpatialPyramidPool(levels, mode)
        out = head(y)
        assert out.shape == (2, head.output_size(3))
        for k in range(4):
            assert_close(head(grot(y, k)), out, rtol=0, atol=1e-12)
            # the rotation axis alone, and the plane alone, are absorbed too
            assert_close(head(torch.roll(y, k, dims=2)), out, rtol=0, atol=1e-12)
            assert_close(head(torch.rot90(y, k, dims=(3, 4))), out, rtol=0, atol=1e-12)
    # a plain SPP is not invariant (the contrast: bins permute under rotation)
    plain = spatial_pyramid_pool(y.amax(2) if mode == "max" else y.mean(2), (1, 2, 4), mode)
    rotated = spatial_pyramid_pool(torch.rot90(y, 1, dims=(3, 4)).amax(2) if mode == "max"
                                   else torch.rot90(y, 1, dims=(3, 4)).mean(2), (1, 2, 4), mode)
    assert (plain - rotated).abs().max() > 1e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_p4_spp_against_reference(mode, device):
    for levels, side in (((1, 2, 4), 8), ((1, 2, 4), 7), ((3,), 5), ((4, 1, 3, 2), 9), ((5, 2), 12)):
        y = randn(2, 3, 4, side, side, seed=side, device=device)
        head = P4SpatialPyramidPool(levels, mode).to(device)
        out = head(y)
        want = _orbit_reference(y, levels, mode)
        assert out.shape == want.shape == (2, head.output_size(3))
        assert_close(out, want, rtol=1e-12, atol=1e-12)
    # features per channel: n^2 / 4 (n even), (n^2 + 3) / 4 (n odd)
    assert P4SpatialPyramidPool((1, 2, 4)).output_size(1) == 1 + 1 + 4
    assert P4SpatialPyramidPool((3, 5)).output_size(2) == 2 * (3 + 7)
    # and the gradient
    y = randn(1, 2, 4, 6, 6, seed=3).requires_grad_()
    if mode == "mean":
        assert torch.autograd.gradcheck(P4SpatialPyramidPool((1, 2, 3), mode), (y,))
    else:
        distinct = (torch.randperm(y.numel(), generator=torch.Generator().manual_seed(0)).to(F64) / y.numel())
        assert torch.autograd.gradcheck(P4SpatialPyramidPool((1, 2, 3), mode), (distinct.view_as(y).requires_grad_(),))


def test_p4_spp_bad_input():
    head = P4SpatialPyramidPool()
    with pytest.raises(ValueError, match="P4SpatialPyramidPool: rotation invariance needs square planes, got 8x9"):
        head(randn(1, 2, 4, 8, 9))
    with pytest.raises(ValueError, match=r"P4SpatialPyramidPool: the input must be a p4 feature map"):
        head(randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"P4SpatialPyramidPool: the input must be a p4 feature map"):
        head(randn(1, 2, 2, 8, 8))
    with pytest.raises(ValueError, match="argument 'x' has 3x3 planes"):
        head(randn(1, 2, 4, 3, 3))
    with pytest.raises(ValueError, match="P4SpatialPyramidPool: argument 'levels' must be 1 to 8 positive ints"):
        P4SpatialPyramidPool((2, -1))
    with pytest.raises(ValueError, match="P4SpatialPyramidPool: argument 'mode'"):
        P4SpatialPyramidPool(mode="sum")
    assert set(head.state_dict().keys()) == set()  # the orbit tables are not persistent


def test_layer_arguments_must_be_positive_ints():
    for cls in (P4ConvZ2, P4ConvP4):
        name = cls.__name__
        for k in (0, -1, (0, 0)):
            with pytest.raises(ValueError, match=f"{name}: argument 'kernel_size' must be >= 1, got"):
                cls(3, 4, k)
        for k in (3.0, "3", None, True, (3.0, 3.0)):
            with pytest.raises(TypeError, match=f"{name}: argument 'kernel_size' must be an int or two equal ints"):
                cls(3, 4, k)
        with pytest.raises(ValueError, match=f"{name}: argument 'stride' must be >= 1, got 0"):
            cls(3, 4, 3, stride=0)
        with pytest.raises(ValueError, match=f"{name}: argument 'padding' must be >= 0, got -1"):
            cls(3, 4, 3, padding=-1)
        with pytest.raises(ValueError, match=f"{name}: argument 'dilation' must be >= 1, got 0"):
            cls(3, 4, 3, dilation=(0, 0))
        with pytest.raises(TypeError, match=f"{name}: argument 'stride' must be an int or two equal ints"):
            cls(3, 4, 3, stride=1.5)
        with pytest.raises(ValueError, match=f"{name}: argument 'out_channels' must be >= 1, got -2"):
            cls(3, -2, 3)
        with pytest.raises(TypeError, match=f"{name}: argument 'in_channels' must be an int, got float"):
            cls(3.0, 4, 3)
    for cls in (P4MaxPool2d, P4AvgPool2d):
        name = cls.__name__
        with pytest.raises(ValueError, match=f"{name}: argument 'kernel_size' must be >= 1, got 0"):
            cls(0)
        with pytest.raises(TypeError, match=f"{name}: argument 'kernel_size' must be an int or two equal ints"):
            cls(2.0)
        with pytest.raises(ValueError, match=f"{name}: argument 'stride' must be >= 1, got 0"):
            cls(2, 0)
        with pytest.raises(ValueError, match=f"{name}: argument 'padding' must be >= 0, got -1"):
            cls(2, 2, -1)
        with pytest.raises(ValueError, match=f"{name}: argument 'padding' must be at most half of "
                                             "'kernel_size' \\(1\\), got 2"):
            cls(3, 1, 2)
    # numpy-style integers are ints
    import numpy as np
    assert P4ConvZ2(np.int64(3), 4, np.int64(3)).kernel_size == 3


def test_layers_reject_integer_and_non_tensor_input():
    x = torch.ones(2, 3, 4, 6, 6, dtype=torch.long)
    layers = {"P4ConvZ2": (P4ConvZ2(3, 4, 3), x[:, :, 0]), "P4ConvP4": (P4ConvP4(3, 4, 3), x),
              "P4Pool": (P4Pool(), x), "P4MaxPool2d": (P4MaxPool2d(2), x), "P4AvgPool2d": (P4AvgPool2d(2), x),
              "P4SpatialPyramidPool": (P4SpatialPyramidPool(), x)}
    for name, (layer, inp) in layers.items():
        with pytest.raises(TypeError, match=f"^{name}: argument 'x' must be a floating-point tensor, got torch.int64"):
            layer(inp)
        with pytest.raises(TypeError, match=f"^{name}: argument 'x' must be a Tensor, got list"):
            layer(inp.tolist())
    with pytest.raises(TypeError,
                       match="^P4BatchNorm: argument 'input' must be a floating-point tensor, got torch.int64"):
        P4BatchNorm(3)(x)
    with pytest.raises(ValueError, match="^P4BatchNorm: the input has 5 channels, expected num_features=3"):
        P4BatchNorm(3)(torch.ones(2, 5, 4, 6, 6))
