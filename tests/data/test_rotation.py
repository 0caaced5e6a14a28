"""robustops.data.rotate and rotated: quarter turns bit-exact (torch.rot90), the
counter-clockwise-as-displayed convention on both paths (exact and grid_sample),
identity at 0, 45 then -45 recovering the centre, mixed batches, non-square images,
dtypes, devices, gradients, the seeded angles of rotated and bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from robustops.data import rotate, rotated
from tests.common import DEVICES, FLOAT_DTYPES


def _images(n=3, c=2, h=9, w=9, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g, dtype=torch.float64).to(dtype).to(device)


def _smooth(size=33):
    """A smooth, asymmetric image [1, 1, size, size] (float64) with its mass near the centre."""
    i, j = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    c = (size - 1) / 2
    blob = torch.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * 6.0 ** 2))
    return (blob * (1 + 0.5 * torch.sin(i / 4) + 0.3 * torch.cos(j / 3 + 1)))[None, None]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("angle, k", [(0, 0), (90, 1), (180, 2), (270, 3), (-90, 3), (-180, 2), (360, 0),
                                      (450, 1), (-630, 1), (90.0, 1), (1e6 * 90 + 270, 3)])
def test_quarter_turns_are_exact(angle, k, dtype, device):
    x = _images(dtype=dtype, device=device)
    out = rotate(x, angle)
    assert out.dtype == dtype and out.device == x.device and out.shape == x.shape
    assert torch.equal(out, torch.rot90(x, k, dims=(2, 3)))
    assert out.is_contiguous()


def test_zero_is_a_copy():
    x = _images()
    out = rotate(x, 0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_convention_counter_clockwise_as_displayed():
    # row 0 at the top: the top-right pixel goes to the top-left under a quarter turn
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 2] = 1
    assert rotate(x, 90)[0, 0].nonzero().tolist() == [[0, 0]]
    assert rotate(x, 180)[0, 0].nonzero().tolist() == [[2, 0]]
    assert rotate(x, 270)[0, 0].nonzero().tolist() == [[2, 2]]
    assert torch.equal(rotate(x, 90), torch.rot90(x, 1, dims=(2, 3)))


@pytest.mark.parametrize("angle, k", [(90, 1), (180, 2), (270, 3), (-90, 3)])
@pytest.mark.parametrize("eps", [1e-7, -1e-7])
def test_sampled_path_agrees_with_quarter_turns(angle, k, eps):
    # just off a multiple of 90 the grid_sample path runs: same direction and centre
    x = _images(dtype=torch.float64, h=8, w=8)
    assert_close(rotate(x, angle + eps), torch.rot90(x, k, dims=(2, 3)), rtol=0, atol=1e-7)


def test_sampled_path_direction_at_45():
    # a bright pixel right of the centre moves up and right (counter-clockwise) at 45 degrees
    x = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    x[0, 0, 10, 18] = 1  # 8 pixels right of the centre (10, 10)
    out = rotate(x, 45)[0, 0]
    row, col = divmod(int(out.argmax()), 21)
    d = 8 / math.sqrt(2)  # (10 - 5.66, 10 + 5.66)
    assert abs(row - (10 - d)) < 1 and abs(col - (10 + d)) < 1
    rows, cols = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    centroid = ((out * rows).sum() / out.sum(), (out * cols).sum() / out.sum())
    assert abs(float(centroid[0]) - (10 - d)) < 0.1 and abs(float(centroid[1]) - (10 + d)) < 0.1


def test_45_then_minus_45_recovers_the_centre():
    x = _smooth()
    once = rotate(x, 45)
    back = rotate(once, -45)
    i, j = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    centre = ((i - 16) ** 2 + (j - 16) ** 2) <= 10 ** 2
    assert (once - x)[0, 0][centre].abs().max() > 0.1  # the rotation does something
    assert (back - x)[0, 0][centre].abs().max() < 0.02  # two bilinear resamplings
    # corners leave the frame: zeros come in
    corner = rotate(torch.ones(1, 1, 33, 33), 45)[0, 0]
    assert corner[0, 0] == 0 and corner[16, 16] == 1


def test_per_image_angles_mixed_batch():
    x = _images(n=6, dtype=torch.float64)
    angles = [0, 90, 45, 180, 270, -30]
    out = rotate(x, angles)
    for i, a in enumerate(angles):
        if a % 90 == 0:
            assert torch.equal(out[i], torch.rot90(x[i], a // 90, dims=(1, 2)))
        else:
            assert_close(out[i:i + 1], rotate(x[i:i + 1], a), rtol=0, atol=1e-15)
    # every form of the angles gives the same result
    for form in (torch.tensor(angles), torch.tensor(angles, dtype=torch.float32), np.array(angles), tuple(angles)):
        assert torch.equal(rotate(x, form), out)
    assert torch.equal(rotate(x, torch.tensor(45.0)), rotate(x, [45.0] * 6))


def test_non_square_images():
    x = _images(n=2, c=1, h=5, w=9, dtype=torch.float64)
    assert torch.equal(rotate(x, 180), x.flip(2, 3))
    assert torch.equal(rotate(x, 0), x)
    out = rotate(x, 90)  # keeps the 5 x 9 frame: grid_sample, in pixel units
    assert out.shape == x.shape
    # the output at offset (u, v) from the centre (2, 4) is the input at (-v, u)
    for v in range(-2, 3):
        for u in range(-2, 3):
            assert_close(out[:, :, 2 + v, 4 + u], x[:, :, 2 + u, 4 - v], rtol=0, atol=1e-12)
    assert (out[:, :, :, 0] == 0).all() and (out[:, :, :, 8] == 0).all()  # beyond the 5-pixel-wide band


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_sampled_dtype_and_device(dtype, device):
    x = _images(dtype=dtype, device=device)
    out = rotate(x, [30.0, 45.0, 100.0])
    assert out.dtype == dtype and out.device == x.device and out.shape == x.shape
    ref = rotate(x.double().cpu(), [30.0, 45.0, 100.0])
    atol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    assert_close(out.double().cpu(), ref, rtol=0, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
def test_angles_on_another_device(device):
    x = _images(device=device)
    assert torch.equal(rotate(x, torch.tensor([90.0, 0.0, 180.0], device=device)),
                       torch.stack([torch.rot90(x[0], 1, dims=(1, 2)), x[1], x[2].flip(1, 2)]))


def test_gradients():
    x = _images(n=2, dtype=torch.float64).requires_grad_()
    rotate(x, [90, 30]).sum().backward()
    assert torch.equal(x.grad[0], torch.ones_like(x[0]))  # a permutation
    assert x.grad[1].min() >= 0 and x.grad[1].sum() < x[1].numel()  # corners fall outside
    small = x.detach()[:, :1, :5, :5].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: rotate(t, [90, 30]), (small,))


def test_rotate_bad_arguments():
    x = _images()
    with pytest.raises(ValueError, match=r"rotate: argument 'angles_degrees' must be one angle or one per image \(3\)"):
        rotate(x, [0, 90])
    with pytest.raises(ValueError, match="rotate: argument 'angles_degrees'"):
        rotate(x, [[0, 90, 0]])
    with pytest.raises(ValueError, match="rotate: argument 'angles_degrees' must be finite"):
        rotate(x, [0, float("nan"), 0])
    with pytest.raises(TypeError, match="rotate: argument 'angles_degrees'"):
        rotate(x, "ninety")
    with pytest.raises(ValueError, match=r"rotate: argument 'x' must have shape \[N, C, H, W\]"):
        rotate(x[0], 90)
    with pytest.raises(TypeError, match="rotate: argument 'x' must be a floating-point tensor"):
        rotate(x.to(torch.uint8), 90)


def test_rotated_random():
    x = _images(n=50, c=1, h=8, w=8)
    xr, angles = rotated(x, seed=3)
    assert xr.shape == x.shape and xr.dtype == x.dtype
    assert angles.shape == (50,) and angles.dtype == torch.float64
    assert float(angles.min()) >= 0 and float(angles.max()) < 360
    assert angles.std() > 50  # spread over the circle, not a constant
    assert torch.equal(xr, rotate(x, angles))
    xr2, angles2 = rotated(x, seed=3)
    assert torch.equal(angles, angles2) and torch.equal(xr, xr2)
    _, angles3 = rotated(x, seed=4)
    assert not torch.equal(angles, angles3)
    # the angles depend only on the seed and N, not on the images
    assert torch.equal(rotated(torch.zeros(50, 3, 4, 4), seed=3)[1], angles)


def test_rotated_p4():
    x = _images(n=64, c=1, h=8, w=8)
    y = torch.arange(64)
    xr, angles = rotated(x, y, mode="p4", seed=0)
    assert set(angles.tolist()) == {0.0, 90.0, 180.0, 270.0}
    for i in range(64):
        assert torch.equal(xr[i], torch.rot90(x[i], int(angles[i]) // 90, dims=(1, 2)))
    assert torch.equal(rotated(x, mode="p4", seed=0)[1], angles)
    assert not torch.equal(rotated(x, mode="p4", seed=1)[1], angles)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_rotated_dtype_and_device(dtype, device):
    x = _images(dtype=dtype, device=device)
    xr, angles = rotated(x, mode="random")
    assert xr.dtype == dtype and xr.device == x.device and angles.device == x.device
    xr, angles = rotated(x, mode="p4")
    assert xr.dtype == dtype and torch.equal(xr, rotate(x, angles))


def test_rotated_bad_arguments():
    x = _images()
    with pytest.raises(ValueError, match="rotated: argument 'mode'"):
        rotated(x, mode="p8")
    with pytest.raises(ValueError, match=r"rotated: argument 'y' must hold one label per image \(3\), got 2"):
        rotated(x, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="rotated: argument 'seed'"):
        rotated(x, seed=0.5)
    with pytest.raises(ValueError, match="rotated: argument 'x'"):
        rotated(x[0])
