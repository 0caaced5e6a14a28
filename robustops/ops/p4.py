"""p4 group convolutions (Cohen & Welling 2016): the Python face of the filter
transform.

    p4_filter(weight [C_out, C_in, s, k, k]) -> [C_out * 4, C_in * s, k, k]

with s = 1 (the lifting layer, Z2 -> p4) or s = 4 (p4 -> p4), in GrouPy's
conventions: the filter for output rotation r and input rotation slot t is
rot90(weight[:, :, (t - r) mod s], r) (counter-clockwise, torch.rot90 on the last two
dims), the rotation innermost on both channel axes, so that a plain convolution with
it is the group convolution. One gather (csrc/include/robustops/p4.h, kernels in
csrc/cpu/p4.cpp and csrc/cuda/p4.cu); its adjoint, the filter gradient, is a gather
of 4 values per weight (deterministic). Their autograd is in C++
(csrc/autograd/p4.cpp), their fake kernels here. Falls back to robustops.reference.p4,
with one FallbackWarning, when no compiled kernel is available.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustops._checks import check_floating
from robustops._extension import Op, register
from robustops.reference import p4 as _ref

__all__ = ["p4_filter", "p4_filter_cached"]

_p4_filter = Op("p4_filter", reference=_ref.p4_filter)



def p4_filter(weight: Tensor) -> Tensor:
    """The p4 group convolution's filter as a plain convolution's (see the module
    docstring)."""
    check_floating("robustops.ops.p4_filter", "weight", weight)
    if weight.dim() != 5 or weight.shape[2] not in (1, 4) or weight.shape[3] != weight.shape[4]:
        raise ValueError("robustops.ops.p4_filter: argument 'weight' must have shape [C_out, C_in, s, k, k] "
                         f"with s = 1 or 4 and a square kernel, got {tuple(weight.shape)}")
    return _p4_filter.dispatch(weight.device.type, weight)


class _CachedFilter(torch.autograd.Function):
    """A transformed filter computed earlier, with the transform's adjoint (the op's
    backward) as its gradient."""

    @staticmethod
    def forward(ctx, weight: Tensor, cache: list) -> Tensor:
        ctx.in_rotations = weight.shape[2]
        return cache[0].view_as(cache[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        return torch.ops.robustops._p4_filter_backward.default(grad, ctx.in_rotations), None


def p4_filter_cached(weight: Tensor, cache: list) -> Tensor:
    """``p4_filter(weight)`` when ``cache[0]`` already holds it (computed from this
    weight, as robustops.nn's p4 layers cache it in eval mode): that tensor,
    differentiable in ``weight`` through the transform's adjoint where a kernel is
    compiled for the device; elsewhere ``p4_filter(weight)`` itself (the reference's
    autograd).

    Args:
        weight: the filter [C_out, C_in, s, k, k].
        cache: a one-element list holding ``p4_filter(weight)``.

    Returns:
        The transformed filter [C_out * 4, C_in * s, k, k].
    """
    if _p4_filter.has_kernel(weight.device.type):
        return _CachedFilter.apply(weight, cache)
    return p4_filter(weight)


@register
def _register() -> None:
    @torch.library.register_fake("robustops::p4_filter")
    def _(weight):
        o, i, s, k, _ = weight.shape
        return weight.new_empty(o * 4, i * s, k, k)

    @torch.library.register_fake("robustops::_p4_filter_backward")
    def _(grad, in_rotations):
        o4, is_, k, _ = grad.shape
        return grad.new_empty(o4 // 4, is_ // in_rotations, in_rotations, k, k)

    # Autograd (the adjoint, and the transform as the adjoint's derivative) is
    # registered in C++: csrc/autograd/p4.cpp.
