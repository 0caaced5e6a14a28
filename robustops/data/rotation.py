"""Rotated test sets: rotate images by arbitrary angles, quarter turns exactly.

    xr = rotate(x, 90)                             # == torch.rot90(x, 1, dims=(2, 3)), bit for bit
    xr = rotate(x, torch.tensor([0., 30., 45.]))   # one angle per image
    xr, angles = rotated(x, mode="random", seed=0) # angles uniform in [0, 360)
    xr, angles = rotated(x, mode="p4", seed=0)     # angles from {0, 90, 180, 270}

Convention: angles are in degrees, counter-clockwise in the image as displayed with
row 0 at the top and column 0 at the left (as matplotlib's imshow shows it), about the
image centre; so rotate(x, 90) is torch.rot90(x, 1, dims=(2, 3)), the convention of
robustops.nn's p4 layers.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustops.data._checks import check_choice, check_images, check_seed

__all__ = ["rotate", "rotated"]


def _angles(fn: str, angles, n: int) -> Tensor:
    """angles as a finite float64 CPU tensor [n]: one number for every image, or n."""
    if isinstance(angles, Tensor):
        a = angles.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            a = torch.from_numpy(np.array(angles, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{fn}: argument 'angles_degrees' must be a number, a sequence of numbers or a "
                            f"tensor, got {type(angles).__name__}") from e
    if a.dim() == 0:
        a = a.expand(n)
    elif a.dim() != 1 or a.shape[0] != n:
        raise ValueError(f"{fn}: argument 'angles_degrees' must be one angle or one per image ({n}), "
                         f"got shape {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ValueError(f"{fn}: argument 'angles_degrees' must be finite, got {a[~torch.isfinite(a)][0].item()}")
    return a.contiguous()


def _sampled(x: Tensor, angles: Tensor) -> Tensor:
    """x rotated by angles (float64 CPU [N]) with affine_grid + grid_sample (bilinear,
    zeros outside). The rotation is done in pixel units about the centre, so non-square
    images are rotated without shear; float16 and bfloat16 are computed in float32."""
    n, c, h, w = x.shape
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    rad = torch.deg2rad(torch.fmod(angles, 360))
    cos, sin = rad.cos(), rad.sin()
    # affine_grid maps each output location (normalized: -1..1 across the width and
    # height, y down) to the input location it samples: the inverse rotation, R(-a).
    # In pixel units (u = x W / 2, v = y H / 2), counter-clockwise on screen (y down)
    # by a sends (u, v) to (u cos a + v sin a, -u sin a + v cos a), so the output at
    # (u, v) samples the input at (u cos a - v sin a, u sin a + v cos a).
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta.to(device=x.device, dtype=compute), [n, c, h, w], align_corners=False)
    out = F.grid_sample(x.to(compute), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


def rotate(x: Tensor, angles_degrees) -> Tensor:
    """Each image of x [N, C, H, W] rotated by its angle, in degrees, counter-clockwise
    as displayed (row 0 at the top), about the image centre; a new tensor of x's shape,
    dtype and device.

    `angles_degrees` is one number for every image or N of them (a sequence, array or
    tensor on any device). Multiples of 90 degrees are exact: 0 is a copy, 180 a flip of
    both axes, and 90 and 270 (square images) are torch.rot90(x, k, dims=(2, 3)) with
    k = 1 and 3, so rotate(x, 90) equals torch.rot90(x, 1, dims=(2, 3)) bit for bit.
    Other angles (and quarter turns of non-square images, which keep the H x W frame)
    sample x with torch.nn.functional.affine_grid and grid_sample: bilinear
    interpolation, zeros where the rotated frame leaves the image, align_corners=False,
    the rotation done in pixel units (no shear for H != W). Mixed batches take the
    exact path per image. Differentiable with respect to x.
    """
    fn = "robustops.data.rotate"
    check_images(fn, x)
    n, _, h, w = x.shape
    angles = _angles(fn, angles_degrees, n)
    # quarter turns: fmod is exact, and so is the division of an exact multiple of 90
    exact = torch.fmod(angles, 90) == 0
    k = torch.where(exact, torch.fmod(angles, 360) / 90, torch.zeros_like(angles)).long() % 4
    if h != w:
        exact &= k % 2 == 0
    groups = [(torch.rot90 if quarter else _copy, quarter, exact & (k == quarter)) for quarter in range(4)]
    groups.append((None, None, ~exact))
    groups = [(f, quarter, mask) for f, quarter, mask in groups if mask.any()]
    if len(groups) == 1:  # one kind of rotation for the whole batch: no gather / scatter
        f, quarter, _ = groups[0]
        return _sampled(x, angles) if f is None else f(x, quarter, dims=(2, 3)).contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for f, quarter, mask in groups:
        index = mask.nonzero().squeeze(1).to(x.device)
        part = x.index_select(0, index)
        out[index] = _sampled(part, angles[mask]) if f is None else f(part, quarter, dims=(2, 3))
    return out


def _copy(x: Tensor, k: int, dims) -> Tensor:
    return x.clone(memory_format=torch.contiguous_format)


_MODES = ("random", "p4")


def rotated(x: Tensor, y: Tensor | None = None, mode: str = "random", seed: int = 0) -> tuple[Tensor, Tensor]:
    """A rotated copy of a test set: (rotate(x, angles), angles).

    Args:
        x: images [N, C, H, W] (floating point).
        y: optional labels, only checked to hold one entry per image (so that a
            mismatched pair is caught); rotation leaves the labels as they are (mind
            that a 6 turned by 180 degrees looks like a 9).
        mode: ``"random"``: angles uniform in [0, 360); ``"p4"``: angles drawn
            uniformly from {0, 90, 180, 270} (exact quarter turns, see rotate).
        seed: the seed of a CPU torch.Generator that draws the angles, so a seed gives
            the same angles on every device.

    Returns the rotated images (x's shape, dtype and device) and the angles in degrees,
    float64 [N] on x's device.
    """
    fn = "robustops.data.rotated"
    check_images(fn, x)
    n = x.shape[0]
    if y is not None and (not hasattr(y, "__len__") or len(y) != n):
        got = len(y) if hasattr(y, "__len__") else type(y).__name__
        raise ValueError(f"{fn}: argument 'y' must hold one label per image ({n}), got {got}")
    check_choice(fn, "mode", mode, _MODES)
    g = check_seed(fn, seed)
    if mode == "random":
        angles = torch.rand(n, generator=g, dtype=torch.float64) * 360
        angles[angles >= 360] = 0.0  # rand < 1, but keep [0, 360) whatever the rounding
    else:
        angles = torch.randint(0, 4, (n,), generator=g).to(torch.float64) * 90
    return rotate(x, angles), angles.to(x.device)
