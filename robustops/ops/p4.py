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

from robustops import _extension
from robustops._checks import check_floating
from robustops._extension import Op, register
from robustops.reference import p4 as _ref

__all__ = ["p4_filter"]

_p4_filter = Op("p4_filter", reference=_ref.p4_filter)

# Read by robustops.nn.p4's filter cache (_p4._KERNELS["p4_filter"]) until it asks
# _p4_filter.has_kernel(device_type) instead: the live table, which kernels_disabled
# switches too.
_KERNELS = _extension._COMPILED


def p4_filter(weight: Tensor) -> Tensor:
    """The p4 group convolution's filter as a plain convolution's (see the module
    docstring)."""
    check_floating("robustops.ops.p4_filter", "weight", weight)
    if weight.dim() != 5 or weight.shape[2] not in (1, 4) or weight.shape[3] != weight.shape[4]:
        raise ValueError("robustops.ops.p4_filter: argument 'weight' must have shape [C_out, C_in, s, k, k] "
                         f"with s = 1 or 4 and a square kernel, got {tuple(weight.shape)}")
    return _p4_filter.dispatch(weight.device.type, weight)


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
