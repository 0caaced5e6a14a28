"""Interval bound propagation (IBP) in center/radius form: the Python face of the
fused interval activations.

    interval_relu(center, radius)  -> (center', radius')
    interval_mrelu(center, radius) -> (center', radius')
    interval_rbf(center, radius)   -> (center', radius')

Each maps the interval [center - radius, center + radius] (radius >= 0) to the exact,
tightest interval image of the activation, in one pass (math in csrc/include/robustops/interval.h, kernels in
csrc/cpu/interval.cpp and csrc/cuda/interval.cu). mReLU and the RBF are not monotone:
the image of an interval holding 0 reaches their peak f(0) = 1. Differentiable
(first order) for certified training; falls back to robustops.reference.interval,
with one FallbackWarning, when no compiled kernels are available.

NaN in, NaN out: an interval with a NaN center or radius maps to NaN, and so does a
negative radius, inside the kernels at no cost (two selects in the same pass), so
that no bound built on these ops can come out finite from a broken interval. A
negative radius is also a ValueError: every op here checks ``radius >= 0`` when
``validate_args=True`` (the default, as in torch.distributions). That check is one
more read of the radius (a min reduction) and, on a GPU, a synchronization.
robustops.bounds passes ``validate_args=False``: its radii are non-negative by
construction (the input ball is checked, |W| r >= 0), and the kernels' NaN catches
the rest. The check is skipped while torch.compile traces (it depends on values).
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from robustops._checks import check_floating
from robustops._extension import Op, register
from robustops.reference import interval as _ref

__all__ = ["interval_relu", "interval_mrelu", "interval_rbf", "interval_linear", "interval_conv2d"]

_OPS = ("interval_relu", "interval_mrelu", "interval_rbf")
_ACTIVATIONS = {op: Op(op, reference=getattr(_ref, op)) for op in _OPS}
_linear = Op("interval_linear", reference=_ref.interval_linear)
_conv2d = Op("interval_conv2d", reference=_ref.interval_conv2d)


def _check(op: str, center, radius) -> None:
    for arg, t in (("center", center), ("radius", radius)):
        check_floating(f"robustops.ops.{op}", arg, t)
    if center.shape != radius.shape:
        raise ValueError(f"robustops.ops.{op}: 'center' and 'radius' must have the same shape, got "
                         f"{tuple(center.shape)} and {tuple(radius.shape)}")
    if center.dtype != radius.dtype or center.device != radius.device:
        raise TypeError(f"robustops.ops.{op}: 'center' and 'radius' must have the same dtype and device, "
                        f"got {center.dtype} on {center.device} and {radius.dtype} on {radius.device}")


def _check_radius(op: str, radius: Tensor, validate_args: bool) -> None:
    if validate_args and radius.numel() and not torch.compiler.is_compiling():
        low = float(radius.detach().min())
        if low < 0:
            raise ValueError(f"robustops.ops.{op}: argument 'radius' must be >= 0 (an interval "
                             f"[center - radius, center + radius]), got a minimum of {low:.4g}")


def _call(op: str, center: Tensor, radius: Tensor, validate_args: bool):
    _check(op, center, radius)
    _check_radius(op, radius, validate_args)
    return _ACTIVATIONS[op].dispatch(center.device.type, center, radius)


def interval_relu(center: Tensor, radius: Tensor, *, validate_args: bool = True):
    """The interval image of ReLU: [relu(l), relu(u)] as (center, radius)."""
    return _call("interval_relu", center, radius, validate_args)


def interval_mrelu(center: Tensor, radius: Tensor, *, validate_args: bool = True):
    """The exact interval image of mReLU, max(1 - |x|, 0), as (center, radius)."""
    return _call("interval_mrelu", center, radius, validate_args)


def interval_rbf(center: Tensor, radius: Tensor, *, validate_args: bool = True):
    """The exact interval image of the RBF exp(-x^2), as (center, radius)."""
    return _call("interval_rbf", center, radius, validate_args)


# Python ints, or torch.SymInt under torch.compile(dynamic=True): the schema's
# shape-like arguments are SymInt, so they stay symbolic through the op.
_INT = (int, torch.SymInt)


def _pair(name: str, v) -> list:
    if isinstance(v, _INT):
        return [v, v]
    v = list(v)
    if len(v) != 2 or not all(isinstance(i, _INT) for i in v):
        raise ValueError(f"robustops.ops.interval_conv2d: argument '{name}' must be an int or two ints, got {v}")
    return v


def _int(name: str, v):
    if isinstance(v, torch.SymInt):
        return v
    try:
        return operator.index(v)
    except TypeError:
        raise ValueError(f"robustops.ops.interval_conv2d: argument '{name}' must be an int, got {v!r}") from None


def interval_linear(center: Tensor, radius: Tensor, weight: Tensor, bias=None, *, validate_args: bool = True):
    """The interval image of a linear layer: (W c + b, |W| r), for center and radius
    [..., in_features] and weight [out_features, in_features]."""
    _check("interval_linear", center, radius)
    _check_radius("interval_linear", radius, validate_args)
    return _linear.dispatch(center.device.type, center, radius, weight, bias)


def interval_conv2d(center: Tensor, radius: Tensor, weight: Tensor, bias=None, stride=1, padding=0,
                    dilation=1, groups: int = 1, *, validate_args: bool = True):
    """The interval image of a 2-d convolution: (W * c + b, |W| * r), with the
    arguments of torch.nn.functional.conv2d (numeric padding)."""
    _check("interval_conv2d", center, radius)
    _check_radius("interval_conv2d", radius, validate_args)
    args = (_pair("stride", stride), _pair("padding", padding), _pair("dilation", dilation), _int("groups", groups))
    return _conv2d.dispatch(center.device.type, center, radius, weight, bias, *args)


def _register_layers() -> None:
    """Fake kernels and autograd of interval_linear and interval_conv2d:
    d(W c + b) and d(|W| r), with d|W| = sign(W) dW."""
    F = torch.nn.functional

    @torch.library.register_fake("robustops::interval_linear")
    def _(center, radius, weight, bias=None):
        out = F.linear(center, weight, bias)
        return out, torch.empty_like(out)

    @torch.library.register_fake("robustops::interval_conv2d")
    def _(center, radius, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        out = F.conv2d(center, weight, bias, stride, padding, dilation, groups)
        return out, torch.empty_like(out)

    def save_linear(ctx, inputs, output):
        center, radius, weight, bias = inputs
        ctx.save_for_backward(center, radius, weight)
        ctx.has_bias = bias is not None

    def linear_backward(ctx, gc, gr):
        center, radius, weight = ctx.saved_tensors
        # (a None bias is not among the inputs counted here)
        need_c, need_r, need_w, need_b = (tuple(ctx.needs_input_grad) + (False,) * 4)[:4]
        abs_w = weight.abs()
        grad_c = gc.matmul(weight) if need_c and gc is not None else None
        grad_r = gr.matmul(abs_w) if need_r and gr is not None else None
        grad_w = grad_b = None
        if need_w:
            grad_w = torch.zeros_like(weight)
            if gc is not None:
                grad_w = grad_w + gc.reshape(-1, gc.shape[-1]).t().mm(center.reshape(-1, center.shape[-1]))
            if gr is not None:
                grad_w = grad_w + weight.sign() * gr.reshape(-1, gr.shape[-1]).t().mm(
                    radius.reshape(-1, radius.shape[-1]))
        if need_b and ctx.has_bias and gc is not None:
            grad_b = gc.reshape(-1, gc.shape[-1]).sum(0)
        return grad_c, grad_r, grad_w, grad_b

    def save_conv(ctx, inputs, output):
        center, radius, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(center, radius, weight)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None

    def conv_backward(ctx, gc, gr):
        center, radius, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_c, need_r, need_w, need_b = (tuple(ctx.needs_input_grad) + (False,) * 4)[:4]
        cb = torch.ops.aten.convolution_backward
        grad_c = grad_r = grad_w = grad_b = None
        if gc is not None and (need_c or need_w or need_b):
            bias_sizes = [weight.shape[0]] if need_b and ctx.has_bias else None
            grad_c, grad_w, grad_b = cb(gc, center, weight, bias_sizes, stride, padding, dilation, False,
                                        [0, 0], groups, [need_c, need_w, bias_sizes is not None])
        if gr is not None and (need_r or need_w):
            grad_r, gw_abs, _ = cb(gr, radius, weight.abs(), None, stride, padding, dilation, False, [0, 0],
                                   groups, [need_r, need_w, False])
            if need_w:
                gw_abs = weight.sign() * gw_abs
                grad_w = gw_abs if grad_w is None else grad_w + gw_abs
        return grad_c, grad_r, grad_w, grad_b, None, None, None, None

    torch.library.register_autograd("robustops::interval_linear", linear_backward, setup_context=save_linear)
    torch.library.register_autograd("robustops::interval_conv2d", conv_backward, setup_context=save_conv)


@register
def _register() -> None:
    _register_layers()
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
