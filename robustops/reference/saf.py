"""Pure-PyTorch reference of the symmetric activation functions (Zhao & Griffin 2016).

The oracle of the tests, the baseline of the benchmarks, and the fallback when the
compiled kernels are missing. Written straight from the definitions::

    mrelu(x) = max(1 - |x|, 0)      mrelu'(x) = +1 on (-1, 0), -1 on (0, 1), 0 elsewhere
    rbf(x)   = exp(-x^2)            rbf'(x)   = -2 x exp(-x^2)

NaN and infinity policy (the kernels in csrc/include/robustops/saf.h follow it):
the forward propagates NaN and maps +-inf to 0. The mrelu backward is a select, like
torch.relu's: where the derivative is 0 (at the kinks -1, 0, 1, outside (-1, 1), and
at NaN) the gradient is 0 whatever comes in. The rbf backward is grad * rbf'(x), with
rbf'(x) taken as 0 wherever exp(-x^2) is 0 (its limit, so rbf'(+-inf) = 0 rather than
inf * 0 = NaN) and NaN at NaN. Half and bfloat16 are computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mrelu", "mrelu_backward", "rbf", "rbf_backward", "rbf_second_derivative"]


def _opmath(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _mrelu_forward(x: Tensor) -> Tensor:
    return torch.clamp(1 - _opmath(x).abs(), min=0).to(x.dtype)


def mrelu_backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad * mrelu'(x), the gradient of mrelu w.r.t. its input."""
    g = _opmath(grad)
    xo = _opmath(x)
    out = torch.where((xo > -1) & (xo < 0), g, torch.where((xo > 0) & (xo < 1), -g, 0))
    return out.to(x.dtype)


def _rbf_forward(x: Tensor) -> Tensor:
    xo = _opmath(x)
    return torch.exp(-(xo * xo)).to(x.dtype)


def _rbf_derivative(xo: Tensor) -> Tensor:
    e = torch.exp(-(xo * xo))
    return torch.where(e == 0, 0, -2 * xo * e)


def rbf_backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad * rbf'(x), the gradient of rbf w.r.t. its input."""
    return (_opmath(grad) * _rbf_derivative(_opmath(x))).to(x.dtype)


def rbf_second_derivative(x: Tensor) -> Tensor:
    """rbf''(x) = (4 x^2 - 2) exp(-x^2), 0 wherever exp(-x^2) is 0."""
    xo = _opmath(x)
    e = torch.exp(-(xo * xo))
    return torch.where(e == 0, 0, (4 * xo * xo - 2) * e).to(x.dtype)


def _elementwise_function(name: str, forward, backward) -> type:
    """A torch.autograd.Function computing forward(x) that saves only x and whose
    backward is backward(grad, x), made of torch ops (so it is differentiable again)."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def backward_(ctx, grad):
        (x,) = ctx.saved_tensors
        return backward(grad, x)

    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward_),
    })


_MReLU = _elementwise_function("_MReLU", _mrelu_forward, mrelu_backward)
_RBF = _elementwise_function("_RBF", _rbf_forward, rbf_backward)


def mrelu(x: Tensor) -> Tensor:
    """mReLU, ``max(1 - |x|, 0)``, elementwise; differentiable (twice: the backward is
    made of torch ops).

    Args:
        x: a floating-point tensor of any shape (half and bfloat16 computed in float32).

    Returns:
        A tensor shaped as ``x``, in its dtype.
    """
    return _MReLU.apply(x)


def rbf(x: Tensor) -> Tensor:
    """The 1-D RBF, ``exp(-x^2)``, elementwise; differentiable (twice: the backward is
    made of torch ops).

    Args:
        x: a floating-point tensor of any shape (half and bfloat16 computed in float32).

    Returns:
        A tensor shaped as ``x``, in its dtype.
    """
    return _RBF.apply(x)
