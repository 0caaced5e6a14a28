"""Pure-PyTorch reference of CROWN's back-substitution through ReLU (Zhang et al.
2018), straight from the formulas: the oracle of robustops.ops.crown_relax and
crown_relu (and their fallback), and the ReLU relaxation of robustops.bounds. A
relaxation of an activation on [l, u] is two lines per element,
a_lo x + b_lo <= f(x) <= a_up x + b_up; back-substituting a bound matrix A through
it for a lower bound of A f(x) takes, per element, the lower line where A >= 0 and
the upper line where A < 0.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["crown_relax", "relu_relaxation", "crown_relu"]


def crown_relax(a: Tensor, lower_slope: Tensor, lower_intercept: Tensor, upper_slope: Tensor,
                upper_intercept: Tensor) -> Tuple[Tensor, Tensor]:
    """CROWN's back-substitution of A [N, S, ...] through a linear relaxation [N, ...]
    (the oracle of robustops.ops.crown_relax), straight from the formula:
    (A+ a_lo + A- a_up, sum over each row of A+ b_lo + A- b_up)."""
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    lo_a, lo_b, up_a, up_b = (t.unsqueeze(1) for t in (lower_slope, lower_intercept, upper_slope, upper_intercept))
    return pos * lo_a + neg * up_a, (pos * lo_b + neg * up_b).flatten(2).sum(-1)


def relu_relaxation(l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """ReLU's CROWN relaxation on [l, u], (a_lo, b_lo, a_up, b_up): dead (u <= 0)
    0 <= relu <= 0; alive (l >= 0) x <= relu <= x; mixed the chord above and the
    adaptive lower slope [u > -l] below (b_lo = 0). NaN ends count as mixed (NaN
    upper lines)."""
    zero, one = torch.zeros_like(l), torch.ones_like(l)
    dead, alive = u <= 0, l >= 0
    mixed = ~dead & ~alive
    width = torch.where(mixed, u - l, one)
    a_up = torch.where(dead, zero, torch.where(alive, one, u / width))
    b_up = torch.where(mixed, -l * u / width, zero)
    a_lo = torch.where(dead, zero, torch.where(alive, one, (u > -l).to(l.dtype)))
    return a_lo, zero, a_up, b_up


def crown_relu(a: Tensor, lower: Tensor, upper: Tensor) -> Tuple[Tensor, Tensor]:
    """crown_relax through ReLU's relaxation of [lower, upper] (the oracle of
    robustops.ops.crown_relu), differentiable in a, lower and upper by autograd."""
    return crown_relax(a, *relu_relaxation(lower, upper))
