"""CROWN's back-substitution through an activation's linear relaxation, fused:

    crown_relax(a, lower_slope, lower_intercept, upper_slope, upper_intercept) -> (a', d)
    crown_relu(a, lower, upper) -> (a', d)

For S linear functions A y of each sample's activation output y = f(z) (a [N, S, ...])
and sound linear bounds lower_slope z + lower_intercept <= f(z) <= upper_slope z +
upper_intercept on each element's input interval (each [N, ...], the shape of a
without dimension 1), the lower bound of A y as a linear function of z is a' z + d:

    a' = A+ lower_slope + A- upper_slope,   d[n, s] = sum (A+ lower_intercept + A- upper_intercept)[n, s]

with A+ = max(A, 0), A- = min(A, 0). crown_relu is crown_relax through ReLU's
relaxation of the input interval [lower, upper] (robustops.reference.bounds.
relu_relaxation: the chord above, CROWN's adaptive slope below), computed in the
kernel from lower and upper instead of read from four tensors, and differentiated
in lower and upper there too: about a quarter of the time of materializing the
relaxation and differentiating it as a chain of elementwise ops. One read of A instead of the ~10 passes over
[N, S, ...] tensors of the unfused form (math in csrc/include/robustops/crown.h,
kernels in csrc/cpu/crown.cpp and csrc/cuda/crown.cu). Differentiable in every
argument (first order); falls back to robustops.reference.bounds.crown_relax, with
one FallbackWarning, when no compiled kernel is available.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from robustops._checks import check_floating
from robustops._extension import Op, register
from robustops.reference import bounds as _ref

__all__ = ["crown_relax", "crown_relu"]

_crown_relax = Op("crown_relax", reference=_ref.crown_relax)
_crown_relu = Op("crown_relu", reference=_ref.crown_relu)
_RELAX = ("lower_slope", "lower_intercept", "upper_slope", "upper_intercept")


def _check(a, relax, names=_RELAX, op="robustops.ops.crown_relax") -> None:
    for name, t in (("a", a),) + tuple(zip(names, relax)):
        check_floating(op, name, t)
    if a.dim() < 3:
        raise ValueError(f"{op}: argument 'a' must have shape [N, S, ...], got {tuple(a.shape)}")
    want = (a.shape[0],) + tuple(a.shape[2:])
    for name, t in zip(names, relax):
        if t.dtype != a.dtype or t.device != a.device:
            raise TypeError(f"{op}: argument '{name}' must have the dtype and device of 'a' ({a.dtype} on "
                            f"{a.device}), got {t.dtype} on {t.device}")
        if tuple(t.shape) != want:
            raise ValueError(f"{op}: argument '{name}' must have shape {want} (the shape of 'a' without its "
                             f"dimension 1), got {tuple(t.shape)}")


def crown_relax(a: Tensor, lower_slope: Tensor, lower_intercept: Tensor, upper_slope: Tensor,
                upper_intercept: Tensor) -> Tuple[Tensor, Tensor]:
    """(A+ lower_slope + A- upper_slope, the sum of A+ lower_intercept + A- upper_intercept
    over each row) for a [N, S, ...] and the relaxation [N, ...]; see the module docstring."""
    relax = (lower_slope, lower_intercept, upper_slope, upper_intercept)
    _check(a, relax)
    return _crown_relax.dispatch(a.device.type, a, *relax)


def crown_relu(a: Tensor, lower: Tensor, upper: Tensor) -> Tuple[Tensor, Tensor]:
    """crown_relax(a, *relaxation of ReLU on [lower, upper]) for a [N, S, ...] and the
    interval's ends [N, ...] (lower <= upper); see the module docstring."""
    _check(a, (lower, upper), ("lower", "upper"), "robustops.ops.crown_relu")
    return _crown_relu.dispatch(a.device.type, a, lower, upper)


@register
def _register() -> None:
    @torch.library.register_fake("robustops::crown_relax")
    def _(a, lower_slope, lower_intercept, upper_slope, upper_intercept):
        return torch.empty_like(a, memory_format=torch.contiguous_format), a.new_empty(a.shape[:2])

    @torch.library.register_fake("robustops::_crown_relax_backward")
    def _(grad_a, grad_d, a, lower_slope, lower_intercept, upper_slope, upper_intercept):
        return (torch.empty_like(a, memory_format=torch.contiguous_format),) + tuple(
            torch.empty_like(t, memory_format=torch.contiguous_format)
            for t in (lower_slope, lower_intercept, upper_slope, upper_intercept))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward_with(op):
        """The autograd backward of a crown op from its private backward op."""
        def backward(ctx, grad_a, grad_d):
            a = ctx.saved_tensors[0]
            if grad_a is None:
                grad_a = torch.zeros_like(a)
            if grad_d is None:
                grad_d = a.new_zeros(a.shape[:2])
            grads = op(grad_a, grad_d, *ctx.saved_tensors)
            return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))
        return backward

    torch.library.register_autograd("robustops::crown_relax",
                                    backward_with(torch.ops.robustops._crown_relax_backward.default),
                                    setup_context=setup_context)

    @torch.library.register_fake("robustops::crown_relu")
    def _(a, lower, upper):
        return torch.empty_like(a, memory_format=torch.contiguous_format), a.new_empty(a.shape[:2])

    @torch.library.register_fake("robustops::_crown_relu_backward")
    def _(grad_a, grad_d, a, lower, upper):
        return (torch.empty_like(a, memory_format=torch.contiguous_format),) + tuple(
            torch.empty_like(t, memory_format=torch.contiguous_format) for t in (lower, upper))

    torch.library.register_autograd("robustops::crown_relu",
                                    backward_with(torch.ops.robustops._crown_relu_backward.default),
                                    setup_context=setup_context)
