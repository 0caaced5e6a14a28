"""Interval bound propagation (IBP) in center/radius form: the Python face of the
fused interval activations.

    interval_relu(center, radius)  -> (center', radius')
    interval_mrelu(center, radius) -> (center', radius')
    interval_rbf(center, radius)   -> (center', radius')

Each maps the interval [center - radius, center + radius] (radius >= 0, not checked
here: robustops.bounds checks its inputs) to the exact, tightest interval image of
the activation, in one pass (math in csrc/include/robustops/interval.h, kernels in
csrc/cpu/interval.cpp and csrc/cuda/interval.cu). mReLU and the RBF are not monotone:
the image of an interval holding 0 reaches their peak f(0) = 1. Differentiable
(first order) for certified training; falls back to robustops.reference.interval,
with one FallbackWarning, when no compiled kernel is available.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustops import _extension
from robustops.reference import interval as _ref

__all__ = ["interval_relu", "interval_mrelu", "interval_rbf"]

_OPS = ("interval_relu", "interval_mrelu", "interval_rbf")
_KERNELS = _extension.kernel_table(*_OPS)


def _check(op: str, center, radius) -> None:
    for arg, t in (("center", center), ("radius", radius)):
        if not isinstance(t, Tensor):
            raise TypeError(f"robustops.ops.{op}: argument '{arg}' must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"robustops.ops.{op}: argument '{arg}' must be a floating-point tensor, got {t.dtype}")
    if center.shape != radius.shape:
        raise ValueError(f"robustops.ops.{op}: 'center' and 'radius' must have the same shape, got "
                         f"{tuple(center.shape)} and {tuple(radius.shape)}")
    if center.dtype != radius.dtype or center.device != radius.device:
        raise TypeError(f"robustops.ops.{op}: 'center' and 'radius' must have the same dtype and device, "
                        f"got {center.dtype} on {center.device} and {radius.dtype} on {radius.device}")


def _call(op: str, center: Tensor, radius: Tensor):
    _check(op, center, radius)
    if center.device.type in _KERNELS[op]:
        return getattr(torch.ops.robustops, op).default(center, radius)
    _extension.warn_fallback(op, center.device.type)
    return getattr(_ref, op)(center, radius)


def interval_relu(center: Tensor, radius: Tensor):
    """The interval image of ReLU: [relu(l), relu(u)] as (center, radius)."""
    return _call("interval_relu", center, radius)


def interval_mrelu(center: Tensor, radius: Tensor):
    """The exact interval image of mReLU, max(1 - |x|, 0), as (center, radius)."""
    return _call("interval_mrelu", center, radius)


def interval_rbf(center: Tensor, radius: Tensor):
    """The exact interval image of the RBF exp(-x^2), as (center, radius)."""
    return _call("interval_rbf", center, radius)


def _register() -> None:
    for op in _OPS:
        torch.library.register_fake(
            f"robustops::{op}", lambda c, r: (torch.empty_like(c), torch.empty_like(c)))
        torch.library.register_fake(
            f"robustops::_{op}_backward",
            lambda gc, gr, c, r: (torch.empty_like(c), torch.empty_like(c)))

        backward_op = getattr(torch.ops.robustops, f"_{op}_backward").default

        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        def backward(ctx, grad_center, grad_radius, backward_op=backward_op):
            center, radius = ctx.saved_tensors
            if grad_center is None:
                grad_center = torch.zeros_like(center)
            if grad_radius is None:
                grad_radius = torch.zeros_like(center)
            return backward_op(grad_center, grad_radius, center, radius)

        torch.library.register_autograd(f"robustops::{op}", backward, setup_context=setup_context)


if _extension._C is not None:
    _register()
