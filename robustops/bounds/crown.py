"""CROWN-IBP (Zhang et al. 2020): the CROWN backward bound of the margins, with the
intermediate (pre-activation) bounds from IBP, and its mix with the IBP bound.

Going back from the specification C (folded into the last Linear layer), a linear
function A z + d of each layer's output is turned into one of the layer's input:

    affine layers (Linear, Conv2d, Flatten, Unflatten, AvgPool2d, BatchNorm,
    Identity, Dropout; the p4 convolutions, P4BatchNorm, P4AvgPool2d, and the
    rotation and pyramid pools in mode "mean"):
        A' = A L, d' = d + A f(0)       (L: the layer's linear part, as a vjp; a p4
                                         convolution's as the transposed convolution
                                         with its transformed filter)
    activations, with the linear relaxation a_lo x + b_lo <= f(x) <= a_up x + b_up
    on the IBP interval [l, u] of their input:
        A' = A+ a_lo + A- a_up,  d' = d + A+ b_lo + A- b_up
    (one fused op, robustops.ops.crown_relax; for ReLU robustops.ops.crown_relu,
    which computes the relaxation from [l, u] itself)

and at the input, min over the box [l0, u0] of A x + d = A+ l0 + A- u0 + d. The
relaxations (``relaxation``) are sound for ReLU (CROWN's adaptive lower slope),
mReLU and the RBF: exact on their linear pieces, chord and tangent lines where the
function is concave or convex on the whole interval, the interval's constant
bounds otherwise. The max-type pools (MaxPool2d, P4MaxPool2d, and P4Pool,
SpatialPyramidPool, P4SpatialPyramidPool in mode "max") have no relaxation here:
CROWN-IBP rejects them with a TypeError naming the layer (IBP handles them). A
NaN anywhere (weights, statistics) gives NaN bounds, never finite ones.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops._checks import check_floating, check_labels
from robustops.bounds.ibp import (BoundedModule, _bn_affine, _check_beta, input_interval, interval_through,
                                  is_max_pool, p4_bias, specification)
from robustops.nn.p4 import P4BatchNorm, _P4Conv
from robustops.nn.saf import RBF, MReLU
from robustops.ops.crown import crown_relax, crown_relu
from robustops.reference import bounds as ref_bounds
from robustops.reference import saf

__all__ = ["relaxation", "crown_ibp_margins", "crown_ibp_loss"]

Relaxation = Tuple[Tensor, Tensor, Tensor, Tensor]  # a_lo, b_lo, a_up, b_up
_ACTIVATIONS = (nn.ReLU, MReLU, RBF)


def _line_through(fl: Tensor, fu: Tensor, l: Tensor, u: Tensor, tangent_slope: Tensor) -> Tuple[Tensor, Tensor]:
    """(slope, intercept) of the chord from (l, f(l)) to (u, f(u)); the tangent slope
    at l when the interval is a point."""
    width = u - l
    point = width <= 0
    slope = torch.where(point, tangent_slope, (fu - fl) / torch.where(point, torch.ones_like(width), width))
    return slope, fl - slope * l


def relaxation(layer: nn.Module, l: Tensor, u: Tensor) -> Relaxation:
    """Sound linear bounds of the activation on [l, u] (see the module docstring)."""
    if isinstance(layer, nn.ReLU):
        return ref_bounds.relu_relaxation(l, u)
    zero, one = torch.zeros_like(l), torch.ones_like(l)
    if isinstance(layer, MReLU):
        f = saf.mrelu
        df = lambda x: saf.mrelu_backward(torch.ones_like(x), x)  # noqa: E731
    elif isinstance(layer, RBF):
        f = saf.rbf
        df = lambda x: saf.rbf_backward(torch.ones_like(x), x)  # noqa: E731
    else:
        raise TypeError(f"CROWN-IBP: no relaxation for {type(layer).__name__}")
    fl, fu = f(l), f(u)
    # the interval's constant bounds: always sound
    lo = torch.minimum(fl, fu)
    hi = torch.where((l <= 0) & (u >= 0), one, torch.maximum(fl, fu))
    a_lo, b_lo, a_up, b_up = zero, lo, zero, hi
    chord_a, chord_b = _line_through(fl, fu, l, u, df(l))
    mid = (l + u) / 2
    tan_a = df(mid)
    tan_b = f(mid) - tan_a * mid
    if isinstance(layer, MReLU):
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


def _affine_fn(layer: nn.Module):
    """The layer as the affine map the bounds use (batch norm with its running
    statistics, dropout as identity)."""
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, P4BatchNorm)):
        return lambda x: F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                                      False, 0.0, layer.eps)
    if isinstance(layer, nn.Dropout):
        return lambda x: x
    if is_max_pool(layer):
        raise _no_relaxation(layer)
    return layer


def _no_relaxation(layer: nn.Module, name: str = "") -> TypeError:
    """The error for a max-type pool (no linear relaxation), naming it."""
    kind = type(layer).__name__
    if hasattr(layer, "mode"):
        kind += f"(mode={layer.mode!r})"
    where = f" (layer '{name}')" if name else ""
    return TypeError(f"CROWN-IBP: {kind} has no linear relaxation here{where}; use IBP for such models")


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


def _affine_back(layer: nn.Module, a: Tensor, in_shape) -> Tuple[Tensor, Tensor]:
    """(A L, A f(0)) for A [N, S, *out] through an affine layer f(x) = L x + f(0)
    with input shape in_shape."""
    n, s = a.shape[:2]
    if isinstance(layer, nn.Linear):
        d = a.matmul(layer.bias) if layer.bias is not None else a.new_zeros(n, s)
        return a.matmul(layer.weight), d
    if isinstance(layer, nn.Conv2d):
        # the transposed convolution of A, without a forward pass; A f(0) = A . bias
        flat = a.reshape((n * s,) + tuple(a.shape[2:]))
        back = _transposed_conv(flat, layer.weight, in_shape, layer.stride, layer.padding, layer.dilation,
                                layer.groups)
        d = a.sum(dim=(3, 4)).matmul(layer.bias) if layer.bias is not None else a.new_zeros(n, s)
        return back.reshape((n, s) + tuple(in_shape)), d
    if isinstance(layer, _P4Conv):
        # the expanded Conv2d's transposed convolution over the [N, C_in * s, H, W] view
        flat = a.reshape((n * s, layer.out_channels * 4) + tuple(a.shape[-2:]))
        view = (layer.in_channels * layer.in_rotations,) + tuple(in_shape[-2:])
        back = _transposed_conv(flat, layer.transformed_filter(), view, layer.stride, layer.padding,
                                layer.dilation, 1)
        bias = p4_bias(layer)
        d = flat.sum(dim=(2, 3)).reshape(n, s, -1).matmul(bias) if bias is not None else a.new_zeros(n, s)
        return back.reshape((n, s) + tuple(in_shape)), d
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, P4BatchNorm)):
        scale, shift = _bn_affine(layer)
        view = (1, 1, -1) + (1,) * (a.dim() - 3)
        per_channel = a.sum(dim=tuple(range(3, a.dim()))) if a.dim() > 3 else a
        return a * scale.reshape(view), per_channel.matmul(shift)
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return a, a.new_zeros(n, s)
    # any other affine layer (Flatten, Unflatten, the average pools): its vjp, and
    # f(0) from one forward (the max-type pools raise here)
    fn = _affine_fn(layer)
    flat = a.reshape((n * s,) + tuple(a.shape[2:]))
    with torch.enable_grad():
        x0 = a.new_zeros((n * s,) + tuple(in_shape), requires_grad=True)
        out = fn(x0)
        (back,) = torch.autograd.grad(out, x0, flat, create_graph=torch.is_grad_enabled() or a.requires_grad)
    d = (flat * out).reshape(n, s, -1).sum(-1)
    return back.reshape((n, s) + tuple(in_shape)), d


def crown_ibp_margins(bounded: BoundedModule, x: Tensor, y: Tensor, eps: Union[float, Tensor],
                      lower=0.0, upper=1.0, beta: float = 1.0) -> Tensor:
    """Lower bounds of z_y - z_j (j != y): beta * CROWN-IBP + (1 - beta) * IBP."""
    fn = "crown_ibp_margins"
    _check_bounded(fn, bounded)
    _check_beta(fn, beta)
    check_floating(fn, "x", x)
    bounded._check_labels(fn, y, x.shape[0])
    return _crown_ibp_margins(bounded, *input_interval(x, eps, lower, upper), y, beta)


def crown_ibp_loss(bounded: BoundedModule, x: Tensor, y: Tensor, eps: Union[float, Tensor],
                   lower=0.0, upper=1.0, beta: float = 1.0) -> Tensor:
    """Upper bounds [N] of the worst cross-entropy over the ball, max over x' of
    CE(z(x'), y) = log sum_j exp(z_j - z_y), bounded directly ("loss fusion", the
    idea of Xu et al. 2020's training mode): one specification row per sample
    instead of the K - 1 margins, so the CROWN backward pass costs 1 / (K - 1) of
    the margins'.

    With w_j = z_j - z_y in its IBP interval [l_j, u_j], exp(w_j) lies below its
    chord on [l_j, u_j] (exp is convex), so sum_{j != y} exp(w_j) <= sum_j a_j w_j + b_j,
    a linear function of z whose maximum over the ball CROWN bounds through the
    network; log is monotone. The CROWN bound of the sum is mixed with the IBP one
    (sum_j exp(u_j)) as beta * CROWN + (1 - beta) * IBP before the log (beta = 0 is
    CE(-m, y) of the IBP margins m, robust_cross_entropy's loss). Everything is
    computed shifted by M = max(0, max_j u_j), so nothing overflows.

    The bound is never below the loss of any point of the ball, and it is looser
    than CE(-m, y) of the CROWN-IBP margins m (the margins' bound has K - 1
    backward rows to fit the K - 1 margins separately; this one has one). A
    non-finite bound anywhere gives NaN, never a small loss."""
    fn = "crown_ibp_loss"
    _check_bounded(fn, bounded)
    _check_beta(fn, beta)
    check_floating(fn, "x", x)
    bounded._check_labels(fn, y, x.shape[0])
    return _crown_ibp_loss(bounded, *input_interval(x, eps, lower, upper), y, beta)


def _check_bounded(fn: str, bounded) -> None:
    if not isinstance(bounded, BoundedModule):
        raise TypeError(f"{fn}: argument 'bounded' must be a robustops.bounds.BoundedModule, got "
                        f"{type(bounded).__name__}")


def _ibp_forward(bounded: BoundedModule, c0: Tensor, r0: Tensor, y: Tensor, beta: float):
    """IBP through the body (every layer but a last Linear), keeping each layer's input
    interval for the backward pass, and the specification of the margins z_y - z_j
    (j != y) with the last Linear folded in: (body, inputs, a [N, K - 1, in], d, and
    the margins' IBP interval as center and radius [N, K - 1])."""
    if beta != 0:  # before any work: the backward pass could not go through a max
        for name, layer in bounded.layers:
            if is_max_pool(layer):
                raise _no_relaxation(layer, name)
    layers = [m for _, m in bounded.layers]
    fold = isinstance(layers[-1], nn.Linear)
    body = layers[:-1] if fold else layers
    inputs = []  # (center, radius, output shape) of every layer of the body
    c, r = c0, r0
    for layer in body:
        ci, ri = c, r
        c, r = interval_through(layer, c, r)
        inputs.append((ci, ri, tuple(c.shape[1:])))
    bounded._note_width(tuple(c0.shape[1:]), max((math.prod(shape) for *_, shape in inputs), default=0))
    if fold:
        last = layers[-1]
        spec = specification(y, last.out_features).to(c0.dtype)
        a = spec.matmul(last.weight)
        d = spec.matmul(last.bias) if last.bias is not None else c0.new_zeros(spec.shape[:2])
    else:
        check_labels("crown_ibp_margins", y, c0.shape[0], c.shape[1])
        a = specification(y, c.shape[1]).to(c0.dtype)
        d = c0.new_zeros(a.shape[:2])
    center = torch.bmm(a, c.unsqueeze(-1)).squeeze(-1) + d
    radius = torch.bmm(a.abs(), r.unsqueeze(-1)).squeeze(-1)
    return body, inputs, a, d, center, radius


def _crown_back(body, inputs, a: Tensor, d: Tensor, c0: Tensor, r0: Tensor) -> Tensor:
    """The CROWN lower bound [N, S] of A f(x) + d over the box (c0, r0), for A [N, S,
    *out] on the body's output: back-substituted layer by layer, then minimized."""
    n = c0.shape[0]
    for layer, (ci, ri, out_shape) in zip(reversed(body), reversed(inputs)):
        a = a.reshape((n, a.shape[1]) + out_shape)
        if isinstance(layer, nn.ReLU):  # the relaxation computed in the op, not materialized
            a, back_d = crown_relu(a, ci - ri, ci + ri)
        elif isinstance(layer, _ACTIVATIONS):
            a, back_d = crown_relax(a, *relaxation(layer, ci - ri, ci + ri))
        else:
            a, back_d = _affine_back(layer, a, ci.shape[1:])
        d = d + back_d
    a = a.reshape(n, a.shape[1], -1)
    # min over the box of A x: A+ l0 + A- u0 = A c0 - |A| r0
    return torch.bmm(a, c0.reshape(n, -1, 1)).squeeze(-1) - torch.bmm(a.abs(), r0.reshape(n, -1, 1)).squeeze(-1) + d


def _crown_ibp_margins(bounded: BoundedModule, c0: Tensor, r0: Tensor, y: Tensor, beta: float) -> Tensor:
    """crown_ibp_margins from the input interval (c0, r0), for checked arguments."""
    body, inputs, a, d, center, radius = _ibp_forward(bounded, c0, r0, y, beta)
    ibp = center - radius
    if beta == 0:
        return ibp
    crown = _crown_back(body, inputs, a, d, c0, r0)
    # NaN in the IBP bounds (a NaN weight or statistic the backward pass may have
    # multiplied by a zero slope) makes the mix NaN: never a finite certificate
    return torch.where(torch.isnan(ibp), ibp, beta * crown + (1 - beta) * ibp)


def margins_cross_entropy(margins: Tensor) -> Tensor:
    """CE(-m, y) per sample [N] for margin lower bounds m [N, K - 1]: log(1 + sum_j
    exp(-m_j)), NaN where a margin is not finite (see robust_cross_entropy)."""
    logits = torch.cat([margins.new_zeros(margins.shape[0], 1), -margins], 1)
    per_sample = F.cross_entropy(logits, margins.new_zeros(margins.shape[0], dtype=torch.long), reduction="none")
    # + 0 where every margin is finite (the same bits), NaN where one is not
    return per_sample + (margins - margins).sum(1)


def _exp_chord(tl: Tensor, tu: Tensor, el: Tensor) -> Tuple[Tensor, Tensor]:
    """(slope, intercept) of the chord of exp on [tl, tu] (el = exp(tl)), the tangent
    at tl when the interval is a point: exp(t) <= slope t + intercept on [tl, tu]
    (exp is convex). expm1 keeps narrow intervals exact."""
    width = tu - tl
    point = width <= 0
    safe = torch.where(point, torch.ones_like(width), width)
    slope = torch.where(point, el, el * torch.expm1(safe) / safe)
    return slope, el - slope * tl


def _crown_ibp_loss(bounded: BoundedModule, c0: Tensor, r0: Tensor, y: Tensor, beta: float) -> Tensor:
    """crown_ibp_loss from the input interval (c0, r0), for checked arguments."""
    body, inputs, a, d, center, radius = _ibp_forward(bounded, c0, r0, y, beta)
    ibp_margins = center - radius
    if beta == 0:
        return margins_cross_entropy(ibp_margins)
    # w_j = z_j - z_y = -(margin j) lies in [lo, hi]; everything below is divided by
    # exp(M), M = max(0, max_j hi_j) (detached: the bound does not depend on it)
    lo, hi = -center - radius, radius - center
    shift = hi.detach().amax(1).clamp(min=0)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    tl, tu = lo - shift[:, None], hi - shift[:, None]
    el = torch.exp(tl)
    slope, icpt = _exp_chord(tl, tu, el)
    base = torch.exp(-shift)  # the true class's term, exp(0 - M)
    ibp_sum = base + torch.exp(tu).sum(1)
    # sum_j exp(w_j - M) <= -sum_j slope_j m_j + sum_j (icpt_j - slope_j M), and the
    # maximum of -sum_j slope_j m_j over the ball is minus CROWN's lower bound of the
    # one row sum_j slope_j (margin row j)
    row = (slope.unsqueeze(-1) * a).sum(1, keepdim=True)
    row_d = (slope * d).sum(1, keepdim=True)
    low = _crown_back(body, inputs, row, row_d, c0, r0).squeeze(1)
    crown_sum = base - low + (icpt - slope * shift[:, None]).sum(1)
    # rounding must not take it below the sum's least value over the interval (no
    # point has a smaller one), nor to 0 (log), where the IBP sum (>= 1) stands in
    crown_sum = torch.maximum(crown_sum, base + el.sum(1))
    crown_sum = torch.where((crown_sum > 0) | torch.isnan(crown_sum), crown_sum, ibp_sum)
    total = beta * crown_sum + (1 - beta) * ibp_sum
    # NaN where a margin bound is not finite, as margins_cross_entropy
    return shift + torch.log(total) + (ibp_margins - ibp_margins).sum(1)
