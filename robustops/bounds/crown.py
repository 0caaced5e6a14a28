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

from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops._checks import check_floating
from robustops.bounds.ibp import (BoundedModule, _check_beta, input_interval, is_max_pool)
from robustops.bounds.rules import bound_rule
from robustops.ops.crown import crown_relax

__all__ = ["relaxation", "crown_ibp_margins", "crown_ibp_loss"]

Relaxation = Tuple[Tensor, Tensor, Tensor, Tensor]  # a_lo, b_lo, a_up, b_up


def relaxation(layer: nn.Module, l: Tensor, u: Tensor) -> Relaxation:
    """Sound linear bounds (a_lo, b_lo, a_up, b_up) of the activation on [l, u], by its
    rule (robustops.bounds.rules; see the module docstring)."""
    rule = bound_rule(layer)
    if rule is None or rule.relax is None:
        raise TypeError(f"CROWN-IBP: no relaxation for {type(layer).__name__}")
    return rule.relax(layer, l, u)


def _no_relaxation(layer: nn.Module, name: str = "") -> TypeError:
    """The error for a layer CROWN cannot go through (a max-type pool), naming it."""
    kind = type(layer).__name__
    if hasattr(layer, "mode"):
        kind += f"(mode={layer.mode!r})"
    where = f" (layer '{name}')" if name else ""
    return TypeError(f"CROWN-IBP: {kind} has no linear relaxation here{where}; use IBP for such models")


def _back_through(layer: nn.Module, a: Tensor, c: Tensor, r: Tensor) -> Tuple[Tensor, Tensor]:
    """(A', d') for A [N, S, *out] on the layer's output, back to its input with IBP
    interval (c, r): its affine map, or its relaxation on [c - r, c + r]."""
    rule = bound_rule(layer)
    if rule.back is not None and rule.crown_through(layer):
        return rule.back(layer, a, c.shape[1:])
    if rule.relax is None or not rule.crown_through(layer):
        raise _no_relaxation(layer)
    l, u = c - r, c + r
    if rule.fused is not None:
        return rule.fused(layer, a, l, u)
    return crown_relax(a, *rule.relax(layer, l, u))


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
    """BoundedModule._spec_interval keeping every body layer's input interval, after
    checking that CROWN can go through every layer (before any work)."""
    if beta != 0:
        for name, layer in bounded.layers:
            if is_max_pool(layer):
                raise _no_relaxation(layer, name)
    return bounded._spec_interval(c0, r0, y, keep_inputs=True, fn="crown_ibp_margins")


def _crown_back(body, inputs, a: Tensor, d: Tensor, c0: Tensor, r0: Tensor) -> Tensor:
    """The CROWN lower bound [N, S] of A f(x) + d over the box (c0, r0), for A [N, S,
    *out] on the body's output: back-substituted layer by layer, then minimized."""
    n = c0.shape[0]
    for layer, (ci, ri, out_shape) in zip(reversed(body), reversed(inputs)):
        a, back_d = _back_through(layer, a.reshape((n, a.shape[1]) + out_shape), ci, ri)
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
