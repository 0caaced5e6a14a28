"""Pure-PyTorch reference of interval bound propagation (Gowal et al. 2018), written
in lower/upper form straight from the paper's formulas, independently of the
center/radius form of robustops.bounds: the oracle of its tests. The formulas::

    affine x -> W x + b:   l' = W+ l + W- u + b,   u' = W+ u + W- l + b
                           (W+ = max(W, 0), W- = min(W, 0))
    monotone f:            [f(l), f(u)]
    unimodal f (peak at 0): [min(f(l), f(u)), f(0) if l <= 0 <= u else max(f(l), f(u))]
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops.nn.saf import RBF, MReLU
from robustops.reference import saf

__all__ = ["ibp", "ibp_margins", "crown_relax", "relu_relaxation", "crown_relu"]


def _affine(fn, weight, bias, l, u):
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    lo = fn(l, wp, None) + fn(u, wn, None)
    hi = fn(u, wp, None) + fn(l, wn, None)
    if bias is not None:
        lo, hi = lo + _bias_view(bias, lo), hi + _bias_view(bias, hi)
    return lo, hi


def _bias_view(b, like):
    return b.reshape((1, -1) + (1,) * (like.dim() - 2))


def _unimodal(f, l, u):
    fl, fu = f(l), f(u)
    peak = f(torch.zeros((), dtype=l.dtype))
    hi = torch.where((l <= 0) & (u >= 0), peak, torch.maximum(fl, fu))
    return torch.minimum(fl, fu), hi


def ibp(layers: List[nn.Module], l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
    """[l, u] through the layers."""
    for layer in layers:
        if isinstance(layer, nn.Linear):
            l, u = _affine(lambda x, w, b: F.linear(x, w, b), layer.weight, layer.bias, l, u)
        elif isinstance(layer, nn.Conv2d):
            conv = lambda x, w, b, m=layer: F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)  # noqa: E731
            l, u = _affine(conv, layer.weight, layer.bias, l, u)
        elif isinstance(layer, nn.ReLU):
            l, u = torch.relu(l), torch.relu(u)
        elif isinstance(layer, MReLU):
            l, u = _unimodal(saf.mrelu, l, u)
        elif isinstance(layer, RBF):
            l, u = _unimodal(saf.rbf, l, u)
        elif isinstance(layer, (nn.Flatten, nn.AvgPool2d, nn.MaxPool2d)):
            l, u = layer(l), layer(u)
        elif isinstance(layer, (nn.Identity, nn.Dropout)):
            pass
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            a = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            b = layer.bias - layer.running_mean * a
            av, bv = _bias_view(a, l), _bias_view(b, l)
            l, u = torch.minimum(av * l, av * u) + bv, torch.maximum(av * l, av * u) + bv
        else:
            raise TypeError(f"reference ibp: unsupported layer {type(layer).__name__}")
    return l, u


def ibp_margins(layers: List[nn.Module], l: Tensor, u: Tensor, y: Tensor) -> Tensor:
    """Lower bounds of z_y - z_j (j != y), with C = e_y - e_j folded into the last
    layer when it is Linear."""
    last = layers[-1]
    if isinstance(last, nn.Linear):
        l, u = ibp(layers[:-1], l, u)
        k = last.out_features
        eye = torch.eye(k, dtype=l.dtype, device=l.device)
        rows = [torch.stack([eye[y[i]] - eye[j] for j in range(k) if j != y[i]]) for i in range(len(y))]
        c = torch.stack(rows)                                  # [N, K-1, K]
        w = c @ last.weight                                    # [N, K-1, in]
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        lo = (wp @ l.unsqueeze(-1) + wn @ u.unsqueeze(-1)).squeeze(-1)
        return lo + c @ last.bias if last.bias is not None else lo
    l, u = ibp(layers, l, u)
    k = l.shape[1]
    return torch.stack([torch.stack([l[i, y[i]] - u[i, j] for j in range(k) if j != y[i]])
                        for i in range(len(y))])


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
