"""Symmetric activation functions (Zhao & Griffin 2016): the Python face of the ops.

    mrelu(x) = max(1 - |x|, 0)      rbf(x) = exp(-x^2)

Each op is robustops::<op> (schema in csrc/ops.cpp, kernels in csrc/cpu/saf.cpp and
csrc/cuda/saf.cu) with a private backward op robustops::_<op>_backward. This module
validates arguments, registers the autograd formulas (the forward saves only its
input; double backward works) and the fake kernels used by torch.compile, and falls
back to robustops.reference.saf, with one FallbackWarning, when no compiled kernel
is available for the input's device. The NaN/inf policy is documented there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustops._extension import Op, register
from robustops.reference import saf as _ref

__all__ = ["mrelu", "rbf"]

_mrelu = Op("mrelu", reference=_ref.mrelu)
_rbf = Op("rbf", reference=_ref.rbf)


def _check_input(op: str, x) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"robustops.ops.{op}: argument 'x' must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"robustops.ops.{op}: argument 'x' must be a floating-point tensor "
            f"(float16, bfloat16, float32 or float64), got {x.dtype}"
        )


def mrelu(x: Tensor) -> Tensor:
    """mReLU, max(1 - |x|, 0), elementwise.

    Its derivative is +1 on (-1, 0), -1 on (0, 1) and 0 elsewhere (the kinks
    included). Any shape and layout; float16, bfloat16, float32, float64; the output
    has the dtype and, for dense inputs, the strides of ``x``.
    """
    _check_input("mrelu", x)
    return _mrelu.dispatch(x.device.type, x)


def rbf(x: Tensor) -> Tensor:
    """The 1-D radial basis function exp(-x^2), elementwise.

    Its derivative is -2 x exp(-x^2). Any shape and layout; float16, bfloat16,
    float32, float64; the output has the dtype and, for dense inputs, the strides of
    ``x``.
    """
    _check_input("rbf", x)
    return _rbf.dispatch(x.device.type, x)


@register
def _register() -> None:
    ops = torch.ops.robustops

    for name in ("mrelu", "_mrelu_backward", "rbf", "_rbf_backward"):
        # Outputs follow x (the last argument): torch.empty_like's layout rule is the
        # kernels' layout rule (csrc/include/robustops/host.h).
        torch.library.register_fake(f"robustops::{name}", lambda *args: torch.empty_like(args[-1]))

    def save_input(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def save_x(ctx, inputs, output):  # _<op>_backward(grad, x)
        ctx.save_for_backward(inputs[1])

    def save_grad_and_x(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def mrelu_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return ops._mrelu_backward.default(grad, x)

    def rbf_backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return ops._rbf_backward.default(grad, x)

    # Double backward. d/dgrad of grad * f'(x) is f'(x); d/dx is grad * f''(x), which
    # is 0 for mReLU (piecewise linear) and (4 x^2 - 2) exp(-x^2) for the RBF.
    def mrelu_double_backward(ctx, gg):
        (x,) = ctx.saved_tensors
        return ops._mrelu_backward.default(gg, x), None

    def rbf_double_backward(ctx, gg):
        grad, x = ctx.saved_tensors
        grad_grad = ops._rbf_backward.default(gg, x) if ctx.needs_input_grad[0] else None
        grad_x = gg * grad * _ref.rbf_second_derivative(x) if ctx.needs_input_grad[1] else None
        return grad_grad, grad_x

    torch.library.register_autograd("robustops::mrelu", mrelu_backward, setup_context=save_input)
    torch.library.register_autograd("robustops::rbf", rbf_backward, setup_context=save_input)
    torch.library.register_autograd(
        "robustops::_mrelu_backward", mrelu_double_backward, setup_context=save_x
    )
    torch.library.register_autograd(
        "robustops::_rbf_backward", rbf_double_backward, setup_context=save_grad_and_x
    )
