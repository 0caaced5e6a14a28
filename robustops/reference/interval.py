"""Pure-PyTorch reference of interval bound propagation (IBP, Gowal et al. 2018) in
center/radius form: the oracle of the tests, the baseline of the benchmarks and the
fallback when the compiled kernels are missing.

An interval [l, u] is carried as (center, radius) = ((l + u) / 2, (u - l) / 2).
The activations map it to the exact image [lo, hi]::

    ReLU (monotone):       lo = relu(l), hi = relu(u)
    mReLU, RBF (unimodal, peak f(0) at 0):
                           lo = min(f(l), f(u))
                           hi = f(0) if l <= 0 <= u else max(f(l), f(u))

Gradients flow through the endpoint that attains lo or hi (ties go to l), none
through the constant f(0). An interval with a NaN endpoint, or a negative radius,
maps to (NaN, NaN).
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from robustops.reference import saf

__all__ = ["interval_relu", "interval_mrelu", "interval_rbf", "interval_image", "interval_linear",
           "interval_conv2d"]

Interval = Tuple[Tensor, Tensor]


def interval_image(f: Callable[[Tensor], Tensor], center: Tensor, radius: Tensor,
                   unimodal: bool) -> Interval:
    """(center, radius) of the image of [center - radius, center + radius] under an
    elementwise f that is monotone non-decreasing, or unimodal with its peak at 0."""
    l, u = center - radius, center + radius
    fl, fu = f(l), f(u)
    if unimodal:
        lo = torch.where(fl <= fu, fl, fu)
        peak = f(torch.zeros((), dtype=center.dtype, device=center.device))
        hi = torch.where((l <= 0) & (u >= 0), peak, torch.where(fl > fu, fl, fu))
    else:
        lo, hi = fl, fu
    # NaN in, NaN out: no image for a NaN endpoint or a negative (or NaN) radius
    bad = torch.isnan(fl) | torch.isnan(fu) | ~(radius >= 0)
    nan = torch.full((), float("nan"), dtype=center.dtype, device=center.device)
    return torch.where(bad, nan, (hi + lo) * 0.5), torch.where(bad, nan, (hi - lo) * 0.5)


def interval_relu(center: Tensor, radius: Tensor) -> Interval:
    """The exact interval image of ReLU: [relu(l), relu(u)], as (center, radius).

    Args:
        center: the interval's center (l + u) / 2, floating point, any shape.
        radius: its radius (u - l) / 2, the same shape and dtype.

    Returns:
        (center, radius) of the image, shaped as ``center``; NaN where an endpoint is
        NaN or the radius negative.
    """
    return interval_image(torch.relu, center, radius, unimodal=False)


def interval_mrelu(center: Tensor, radius: Tensor) -> Interval:
    """The exact interval image of mReLU, ``max(1 - |x|, 0)``, as (center, radius):
    [min(f(l), f(u)), 1 if l <= 0 <= u else max(f(l), f(u))].

    Args:
        center: the interval's center (l + u) / 2, floating point, any shape.
        radius: its radius (u - l) / 2, the same shape and dtype.

    Returns:
        (center, radius) of the image, shaped as ``center``; NaN where an endpoint is
        NaN or the radius negative.
    """
    return interval_image(saf.mrelu, center, radius, unimodal=True)


def interval_rbf(center: Tensor, radius: Tensor) -> Interval:
    """The exact interval image of the RBF, ``exp(-x^2)``, as (center, radius):
    [min(f(l), f(u)), 1 if l <= 0 <= u else max(f(l), f(u))].

    Args:
        center: the interval's center (l + u) / 2, floating point, any shape.
        radius: its radius (u - l) / 2, the same shape and dtype.

    Returns:
        (center, radius) of the image, shaped as ``center``; NaN where an endpoint is
        NaN or the radius negative.
    """
    return interval_image(saf.rbf, center, radius, unimodal=True)


def interval_linear(center: Tensor, radius: Tensor, weight: Tensor, bias=None) -> Interval:
    """``(W c + b, |W| r)``: the interval image of x -> W x + b, from the definition.

    Args:
        center: [..., in_features].
        radius: [..., in_features], non-negative.
        weight: [out_features, in_features].
        bias: [out_features], or None.

    Returns:
        (center, radius) of the image, [..., out_features].
    """
    return torch.nn.functional.linear(center, weight, bias), torch.nn.functional.linear(radius, weight.abs())


def interval_conv2d(center: Tensor, radius: Tensor, weight: Tensor, bias=None, stride=1, padding=0,
                    dilation=1, groups=1) -> Interval:
    """``(W * c + b, |W| * r)`` for a 2-d convolution ``*``: its interval image.

    Args:
        center: [B, C_in, H, W].
        radius: [B, C_in, H, W], non-negative.
        weight: [C_out, C_in / groups, kH, kW].
        bias: [C_out], or None.
        stride, padding, dilation, groups: as for torch.nn.functional.conv2d.

    Returns:
        (center, radius) of the image, [B, C_out, H', W'].
    """
    conv = torch.nn.functional.conv2d
    return (conv(center, weight, bias, stride, padding, dilation, groups),
            conv(radius, weight.abs(), None, stride, padding, dilation, groups))
