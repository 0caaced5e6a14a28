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
from robustops.reference import p4 as _ref

__all__ = ["p4_filter"]

_KERNELS = _extension.kernel_table("p4_filter")


def p4_filter(weight: Tensor) -> Tensor:
    """The p4 group convolution's filter as a plain convolution's (see the module
    docstring)."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"robustops.ops.p4_filter: argument 'weight' must be a Tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"robustops.ops.p4_filter: argument 'weight' must be a floating-point tensor, got "
                        f"{weight.dtype}")
    if weight.dim() != 5 or weight.shape[2] not in (1, 4) or weight.shape[3] != weight.shape[4]:
        raise ValueError("robustops.ops.p4_filter: argument 'weight' must have shape [C_out, C_in, s, k, k] "
                         f"with s = 1 or 4 and a square kernel, got {tuple(weight.shape)}")
    if weight.device.type in _KERNELS["p4_filter"]:
        return torch.ops.robustops.p4_filter.default(weight)
    _extension.warn_fallback("p4_filter", weight.device.type)
    return _ref.p4_filter(weight)


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


if _extension._C is not None:
    _register()
