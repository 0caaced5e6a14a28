"""How the bounds go through each layer type: one rule per type, in a registry.

A ``BoundRule`` holds what IBP and CROWN-IBP need of a layer:

    interval(layer, center, radius) -> (center, radius)
        the IBP image of an interval in center/radius form (every rule has one);
    back(layer, a, in_shape) -> (a L, a f(0))
        for an affine layer f(x) = L x + f(0): CROWN's back-substitution of the
        linear functions a [N, S, *out] of its output to its input;
    relax(layer, l, u) -> (a_lo, b_lo, a_up, b_up)
        for an activation: sound linear bounds a_lo x + b_lo <= f(x) <= a_up x + b_up
        on [l, u]; CROWN goes through them with robustops.ops.crown_relax, or with
    fused(layer, a, l, u) -> (a', d)
        when the rule has one op for the whole step (ReLU: robustops.ops.crown_relu);
    linear(layer) -> bool
        whether CROWN can go through this layer (by default: it has back or relax;
        the rotation and pyramid pools only in mode "mean").

``register_bound_rule(LayerType, rule)`` adds a layer type (or replaces the rule of
one): ``BoundedModule`` then accepts it, IBP propagates through it, and CROWN-IBP
too if the rule has ``back`` or ``relax``. The rule of a layer is that of the first
registered type in its class's method resolution order, so subclasses inherit it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops import ops
from robustops.nn.p4 import (P4AvgPool2d, P4BatchNorm, P4ConvP4, P4ConvZ2, P4MaxPool2d, P4Pool,
                             P4SpatialPyramidPool, _P4Conv)
from robustops.nn.saf import RBF, MReLU
from robustops.nn.spp import SpatialPyramidPool
from robustops.reference import crown as ref_crown
from robustops.reference import saf

__all__ = ["BoundRule", "register_bound_rule", "bound_rule", "supported_types"]

Interval = Tuple[Tensor, Tensor]
Relaxation = Tuple[Tensor, Tensor, Tensor, Tensor]  # a_lo, b_lo, a_up, b_up


@dataclass(frozen=True)
class BoundRule:
    """How the bounds go through one layer type (see the module docstring)."""

    interval: Callable[[nn.Module, Tensor, Tensor], Interval]
    back: Optional[Callable[[nn.Module, Tensor, tuple], Tuple[Tensor, Tensor]]] = None
    relax: Optional[Callable[[nn.Module, Tensor, Tensor], Relaxation]] = None
    fused: Optional[Callable[[nn.Module, Tensor, Tensor, Tensor], Tuple[Tensor, Tensor]]] = None
    linear: Optional[Callable[[nn.Module], bool]] = None

    def crown_through(self, layer: nn.Module) -> bool:
        """Whether CROWN-IBP can go through ``layer``."""
        if self.linear is not None:
            return self.linear(layer)
        return self.back is not None or self.relax is not None


_RULES: Dict[type, BoundRule] = {}


def register_bound_rule(layer_type: type, rule: BoundRule) -> None:
    """Bound ``layer_type`` (and its subclasses without a rule of their own) by ``rule``."""
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"register_bound_rule: argument 'layer_type' must be an nn.Module subclass, got "
                        f"{layer_type!r}")
    if not isinstance(rule, BoundRule):
        raise TypeError(f"register_bound_rule: argument 'rule' must be a BoundRule, got {type(rule).__name__}")
    _RULES[layer_type] = rule


def bound_rule(layer: nn.Module) -> Optional[BoundRule]:
    """The rule of ``layer``'s type, or None when no rule covers it."""
    for cls in type(layer).__mro__:
        rule = _RULES.get(cls)
        if rule is not None:
            return rule
    return None


def supported_types() -> Tuple[type, ...]:
    """The layer types with a rule, in registration order."""
    return tuple(_RULES)


# --------------------------------------------------------------------------- affine maps


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> Tuple[Tensor, Tensor]:
    """Batch norm with its running statistics as y = scale x + shift per channel."""
    if bn.running_mean is None or bn.running_var is None:
        raise TypeError("BoundedModule: BatchNorm without running statistics is not supported")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _channel_view(v: Tensor, dim: int) -> Tensor:
    return v.reshape((1, -1) + (1,) * (dim - 2))


def p4_conv_view(layer: _P4Conv, x: Tensor) -> Tensor:
    """A p4 convolution's input as the expanded Conv2d's: [N, C_in * s, H, W] (checked)."""
    layer._check(x)
    return x.reshape(x.shape[0], layer.in_channels * layer.in_rotations, x.shape[-2], x.shape[-1])


def p4_bias(layer: _P4Conv) -> Optional[Tensor]:
    """The expanded Conv2d's bias: each output channel's bias for its 4 rotations."""
    return layer.bias.repeat_interleave(4) if layer.bias is not None else None


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _transposed_conv(a: Tensor, weight: Tensor, in_shape, stride, padding, dilation, groups) -> Tensor:
    """A L for a convolution L (the input's gradient, what torch.nn.grad.conv2d_input
    computes) as conv_transpose2d, with the output padding that gives the input's
    size back: its own backward is a plain convolution, where conv2d_input's is
    convolution_backward's generic double backward."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    extra = tuple(int(in_shape[-2 + i]) - ((a.shape[-2 + i] - 1) * stride[i] - 2 * padding[i]
                                           + dilation[i] * (weight.shape[-2 + i] - 1) + 1) for i in range(2))
    return F.conv_transpose2d(a, weight, None, stride, padding, extra, groups, dilation)


def _vjp_back(fn: Callable[[Tensor], Tensor]):
    """back() of an affine map ``fn(layer)`` from its vjp, and f(0) from one forward."""
    def back(layer: nn.Module, a: Tensor, in_shape) -> Tuple[Tensor, Tensor]:
        n, s = a.shape[:2]
        flat = a.reshape((n * s,) + tuple(a.shape[2:]))
        with torch.enable_grad():
            x0 = a.new_zeros((n * s,) + tuple(in_shape), requires_grad=True)
            out = fn(layer)(x0)
            (grad,) = torch.autograd.grad(out, x0, flat, create_graph=torch.is_grad_enabled() or a.requires_grad)
        d = (flat * out).reshape(n, s, -1).sum(-1)
        return grad.reshape((n, s) + tuple(in_shape)), d
    return back


def _linear_interval(layer: nn.Linear, c: Tensor, r: Tensor) -> Interval:
    # validate_args=False: radii are >= 0 by construction (input_interval checks the
    # ball, |W| r >= 0), and the kernels map a negative radius to NaN
    return ops.interval_linear(c, r, layer.weight, layer.bias, validate_args=False)


def _linear_back(layer: nn.Linear, a: Tensor, in_shape) -> Tuple[Tensor, Tensor]:
    d = a.matmul(layer.bias) if layer.bias is not None else a.new_zeros(a.shape[:2])
    return a.matmul(layer.weight), d


def _conv_interval(layer: nn.Conv2d, c: Tensor, r: Tensor) -> Interval:
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise TypeError("BoundedModule: Conv2d needs numeric zero padding, got "
                        f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}")
    return ops.interval_conv2d(c, r, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                               layer.groups, validate_args=False)


def _conv_back(layer: nn.Conv2d, a: Tensor, in_shape) -> Tuple[Tensor, Tensor]:
    # the transposed convolution of A, without a forward pass; A f(0) = A . bias
    n, s = a.shape[:2]
    flat = a.reshape((n * s,) + tuple(a.shape[2:]))
    back = _transposed_conv(flat, layer.weight, in_shape, layer.stride, layer.padding, layer.dilation,
                            layer.groups)
    d = a.sum(dim=(3, 4)).matmul(layer.bias) if layer.bias is not None else a.new_zeros(n, s)
    return back.reshape((n, s) + tuple(in_shape)), d


def _p4_conv_interval(layer: _P4Conv, c: Tensor, r: Tensor) -> Interval:
    # the Conv2d with the transformed filter over the [N, C_in * s, H, W] view
    cc, rc = ops.interval_conv2d(p4_conv_view(layer, c), p4_conv_view(layer, r), layer.transformed_filter(),
                                 p4_bias(layer), layer.stride, layer.padding, layer.dilation, 1,
                                 validate_args=False)
    shape = (c.shape[0], layer.out_channels, 4) + tuple(cc.shape[-2:])
    return cc.view(shape), rc.view(shape)


def _p4_conv_back(layer: _P4Conv, a: Tensor, in_shape) -> Tuple[Tensor, Tensor]:
    # the expanded Conv2d's transposed convolution over the [N, C_in * s, H, W] view
    n, s = a.shape[:2]
    flat = a.reshape((n * s, layer.out_channels * 4) + tuple(a.shape[-2:]))
    view = (layer.in_channels * layer.in_rotations,) + tuple(in_shape[-2:])
    back = _transposed_conv(flat, layer.transformed_filter(), view, layer.stride, layer.padding,
                            layer.dilation, 1)
    bias = p4_bias(layer)
    d = flat.sum(dim=(2, 3)).reshape(n, s, -1).matmul(bias) if bias is not None else a.new_zeros(n, s)
    return back.reshape((n, s) + tuple(in_shape)), d


def _bn_interval(layer: nn.Module, c: Tensor, r: Tensor) -> Interval:
    if isinstance(layer, P4BatchNorm):
        layer._check_input_dim(c)
    scale, shift = bn_affine(layer)
    return c * _channel_view(scale, c.dim()) + _channel_view(shift, c.dim()), r * _channel_view(scale.abs(), c.dim())


def _bn_back(layer: nn.Module, a: Tensor, in_shape) -> Tuple[Tensor, Tensor]:
    scale, shift = bn_affine(layer)
    view = (1, 1, -1) + (1,) * (a.dim() - 3)
    per_channel = a.sum(dim=tuple(range(3, a.dim()))) if a.dim() > 3 else a
    return a * scale.reshape(view), per_channel.matmul(shift)


def _identity_interval(layer: nn.Module, c: Tensor, r: Tensor) -> Interval:
    return c, r


def _identity_back(layer: nn.Module, a: Tensor, in_shape) -> Tuple[Tensor, Tensor]:
    return a, a.new_zeros(a.shape[:2])


def _both_ends(layer: nn.Module, c: Tensor, r: Tensor) -> Interval:
    """(f c, f r): a reshape, or an average (non-negative weights)."""
    return layer(c), layer(r)


def _max_interval(layer: nn.Module, c: Tensor, r: Tensor) -> Interval:
    """[f l, f u] for a monotone f (a maximum)."""
    lo, hi = layer(c - r), layer(c + r)
    return (hi + lo) / 2, (hi - lo) / 2


def _pool_interval(layer: nn.Module, c: Tensor, r: Tensor) -> Interval:
    """The rotation and pyramid pools: a maximum or an average, by their mode."""
    return _max_interval(layer, c, r) if layer.mode == "max" else _both_ends(layer, c, r)


def _is_mean(layer: nn.Module) -> bool:
    return layer.mode == "mean"


# --------------------------------------------------------------------------- activations


def _line_through(fl: Tensor, fu: Tensor, l: Tensor, u: Tensor, tangent_slope: Tensor) -> Tuple[Tensor, Tensor]:
    """(slope, intercept) of the chord from (l, f(l)) to (u, f(u)); the tangent slope
    at l when the interval is a point."""
    width = u - l
    point = width <= 0
    slope = torch.where(point, tangent_slope, (fu - fl) / torch.where(point, torch.ones_like(width), width))
    return slope, fl - slope * l


def _saf_relaxation(layer: nn.Module, l: Tensor, u: Tensor) -> Relaxation:
    """mReLU and the RBF: exact on linear pieces, chord and tangent lines where the
    function is concave or convex on the whole interval, the interval's constant
    bounds otherwise."""
    mrelu = isinstance(layer, MReLU)
    if mrelu:
        f = saf.mrelu
        df = lambda x: saf.mrelu_backward(torch.ones_like(x), x)  # noqa: E731
    else:
        f = saf.rbf
        df = lambda x: saf.rbf_backward(torch.ones_like(x), x)  # noqa: E731
    zero, one = torch.zeros_like(l), torch.ones_like(l)
    fl, fu = f(l), f(u)
    # the interval's constant bounds: always sound
    lo = torch.minimum(fl, fu)
    hi = torch.where((l <= 0) & (u >= 0), one, torch.maximum(fl, fu))
    a_lo, b_lo, a_up, b_up = zero, lo, zero, hi
    chord_a, chord_b = _line_through(fl, fu, l, u, df(l))
    mid = (l + u) / 2
    tan_a = df(mid)
    tan_b = f(mid) - tan_a * mid
    if mrelu:
        # linear pieces: [-1, 0] (1 + x), [0, 1] (1 - x), outside [-1, 1] (0): exact
        piece = ((l >= -1) & (u <= 0)) | ((l >= 0) & (u <= 1)) | (u <= -1) | (l >= 1)
        concave = (l >= -1) & (u <= 1)  # 1 - |x|: the chord is below
        a_lo = torch.where(piece | concave, chord_a, a_lo)
        b_lo = torch.where(piece | concave, chord_b, b_lo)
        a_up = torch.where(piece, chord_a, a_up)
        b_up = torch.where(piece, chord_b, b_up)
    else:
        k = 1 / math.sqrt(2)  # exp(-x^2) is concave on [-k, k], convex outside
        concave = (l >= -k) & (u <= k)
        convex = (l >= k) | (u <= -k)
        a_lo = torch.where(concave, chord_a, torch.where(convex, tan_a, a_lo))
        b_lo = torch.where(concave, chord_b, torch.where(convex, tan_b, b_lo))
        a_up = torch.where(concave, tan_a, torch.where(convex, chord_a, a_up))
        b_up = torch.where(concave, tan_b, torch.where(convex, chord_b, b_up))
    return a_lo, b_lo, a_up, b_up


def _activation_interval(op):
    return lambda layer, c, r: op(c, r, validate_args=False)


# --------------------------------------------------------------------------- the built-in rules

_AFFINE_RESHAPE = BoundRule(_both_ends, back=_vjp_back(lambda layer: layer))
_IDENTITY = BoundRule(_identity_interval, back=_identity_back)
_BATCH_NORM = BoundRule(_bn_interval, back=_bn_back)
_MAX = BoundRule(_max_interval)
_POOL = BoundRule(_pool_interval, back=_vjp_back(lambda layer: layer), linear=_is_mean)

for _type, _rule in [
    (nn.Linear, BoundRule(_linear_interval, back=_linear_back)),
    (nn.Conv2d, BoundRule(_conv_interval, back=_conv_back)),
    (nn.ReLU, BoundRule(_activation_interval(ops.interval_relu),
                        relax=lambda layer, l, u: ref_crown.relu_relaxation(l, u),
                        fused=lambda layer, a, l, u: ops.crown_relu(a, l, u))),
    (MReLU, BoundRule(_activation_interval(ops.interval_mrelu), relax=_saf_relaxation)),
    (RBF, BoundRule(_activation_interval(ops.interval_rbf), relax=_saf_relaxation)),
    (nn.Flatten, _AFFINE_RESHAPE), (nn.Unflatten, _AFFINE_RESHAPE),
    (nn.Identity, _IDENTITY), (nn.Dropout, _IDENTITY),
    (nn.AvgPool2d, _AFFINE_RESHAPE), (P4AvgPool2d, _AFFINE_RESHAPE),
    (nn.MaxPool2d, _MAX), (P4MaxPool2d, _MAX),
    (nn.BatchNorm1d, _BATCH_NORM), (nn.BatchNorm2d, _BATCH_NORM), (P4BatchNorm, _BATCH_NORM),
    (P4ConvZ2, BoundRule(_p4_conv_interval, back=_p4_conv_back)),
    (P4ConvP4, BoundRule(_p4_conv_interval, back=_p4_conv_back)),
    (P4Pool, _POOL), (SpatialPyramidPool, _POOL), (P4SpatialPyramidPool, _POOL),
]:
    register_bound_rule(_type, _rule)
