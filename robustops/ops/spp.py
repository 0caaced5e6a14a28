"""Spatial pyramid pooling (He et al. 2015): every level in one pass.

    spatial_pyramid_pool(x [B, C, H, W], levels=(1, 2, 4), mode="max") -> [B, C * T]

T = sum of n^2 over the levels; level n pools n x n bins with the edges of adaptive
pooling (bin i spans [floor(i H / n), ceil((i + 1) H / n))), and the output is laid out
as torch.cat([adaptive_pool(x, n).flatten(1) for n in levels], 1). max takes the
first maximum of a bin (NaN wins, as adaptive_max_pool2d); mean its average. The
kernels (csrc/cpu/spp.cpp, csrc/cuda/spp.cu) read the feature map once for all levels
(on the CPU, 16 planes at a time in vector lanes), and their backward passes are
deterministic (a gather on CUDA, a scatter by one thread per plane on the CPU);
second-order gradients work (each backward's adjoint is the forward's gather). Falls back to
robustops.reference.spp, with one FallbackWarning, when no compiled kernel is
available.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from robustops._checks import check_floating, check_levels
from robustops._extension import Op, register
from robustops.reference import spp as _ref

__all__ = ["spatial_pyramid_pool"]


def _spp_max_values(x: Tensor, levels: list) -> Tensor:
    return torch.ops.robustops.spp_max.default(x, levels)[0]  # the pooled values, not their indices


def _spp_max_reference(x: Tensor, levels: list) -> Tensor:
    return _ref.spatial_pyramid_pool(x, levels, "max")


def _spp_mean_reference(x: Tensor, levels: list) -> Tensor:
    return _ref.spatial_pyramid_pool(x, levels, "mean")


_SPP = {"max": Op("spp_max", reference=_spp_max_reference, kernel=_spp_max_values),
        "mean": Op("spp_mean", reference=_spp_mean_reference)}


def spatial_pyramid_pool(x: Tensor, levels: Sequence[int] = (1, 2, 4), mode: str = "max") -> Tensor:
    """A fixed-size vector [B, C * sum(n^2)] for any input of at least max(levels)
    rows and columns (see the module docstring)."""
    op = "robustops.ops.spatial_pyramid_pool"
    check_floating(op, "x", x)
    if x.dim() != 4:
        raise ValueError(f"{op}: argument 'x' must have shape [B, C, H, W], got {tuple(x.shape)}")
    if mode not in ("max", "mean"):
        raise ValueError(f"{op}: argument 'mode' must be 'max' or 'mean', got {mode!r}")
    levels = list(check_levels(op, levels))  # SymInt levels stay symbolic: the schema takes SymInt[]
    if min(x.shape[2], x.shape[3]) < max(levels):
        raise ValueError(f"{op}: argument 'x' has {x.shape[2]}x{x.shape[3]} planes, smaller than the largest "
                         f"pyramid level {max(levels)} (every bin must hold at least one element)")
    return _SPP[mode].dispatch(x.device.type, x, levels)


def _total(levels) -> int:
    return sum(n * n for n in levels)


@register
def _register() -> None:
    @torch.library.register_fake("robustops::spp_max")
    def _(x, levels):
        shape = (x.shape[0], x.shape[1] * _total(levels))
        return x.new_empty(shape), x.new_empty(shape, dtype=torch.long)

    @torch.library.register_fake("robustops::spp_mean")
    def _(x, levels):
        return x.new_empty(x.shape[0], x.shape[1] * _total(levels))

    @torch.library.register_fake("robustops::_spp_max_backward")
    def _(grad, indices, levels, height, width):
        return grad.new_empty(grad.shape[0], grad.shape[1] // _total(levels), height, width)

    @torch.library.register_fake("robustops::_spp_mean_backward")
    def _(grad, levels, height, width):
        return grad.new_empty(grad.shape[0], grad.shape[1] // _total(levels), height, width)

    def save_max(ctx, inputs, output):
        x, levels = inputs
        ctx.levels, ctx.size = levels, x.shape[2:]
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    def max_backward(ctx, grad, _):
        (indices,) = ctx.saved_tensors
        return torch.ops.robustops._spp_max_backward.default(grad, indices, ctx.levels, *ctx.size), None

    def save_mean(ctx, inputs, output):
        x, levels = inputs
        ctx.levels, ctx.size = levels, x.shape[2:]

    def mean_backward(ctx, grad):
        return torch.ops.robustops._spp_mean_backward.default(grad, ctx.levels, *ctx.size), None

    # Double backward: each backward is linear in its grad, and its adjoint is the
    # forward's own gather (max: the values at the saved indices; mean: the mean pool).
    def save_max_backward(ctx, inputs, output):
        grad, indices, levels, height, width = inputs
        ctx.levels, ctx.size = levels, (height, width)
        ctx.save_for_backward(indices)

    def max_backward_backward(ctx, gg):
        (indices,) = ctx.saved_tensors
        b, h, w = gg.shape[0], *ctx.size
        channels = gg.shape[1]
        plane = torch.cat([torch.arange(channels, device=gg.device).repeat_interleave(n * n)
                           for n in ctx.levels])
        flat = plane.unsqueeze(0) * (h * w) + indices
        return gg.reshape(b, channels * h * w).gather(1, flat), None, None, None, None

    def save_mean_backward(ctx, inputs, output):
        ctx.levels = inputs[1]

    def mean_backward_backward(ctx, gg):
        return torch.ops.robustops.spp_mean.default(gg, ctx.levels), None, None, None

    torch.library.register_autograd("robustops::spp_max", max_backward, setup_context=save_max)
    torch.library.register_autograd("robustops::spp_mean", mean_backward, setup_context=save_mean)
    torch.library.register_autograd("robustops::_spp_max_backward", max_backward_backward,
                                    setup_context=save_max_backward)
    torch.library.register_autograd("robustops::_spp_mean_backward", mean_backward_backward,
                                    setup_context=save_mean_backward)
