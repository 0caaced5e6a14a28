"""Pure-PyTorch reference of interval bound propagation (Gowal et al. 2018), written
in lower/upper form straight from the paper's formulas, independently of the
center/radius form of robustops.bounds: the oracle of its tests. The formulas::

    affine x -> W x + b:   l' = W+ l + W- u + b,   u' = W+ u + W- l + b
                           (W+ = max(W, 0), W- = min(W, 0))
    monotone f:            [f(l), f(u)]
    unimodal f (peak at 0): [min(f(l), f(u)), f(0) if l <= 0 <= u else max(f(l), f(u))]

The CROWN references (crown_relax, relu_relaxation, crown_relu) are
robustops.reference.crown's; their names here remain for compatibility.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops.nn.saf import RBF, MReLU
from robustops.reference import saf
# The CROWN references live in robustops.reference.crown (the crown family's):
# re-exported here for compatibility with `from robustops.reference.bounds import
# crown_relax` and `robustops.reference.bounds.crown_relu`.
from robustops.reference.crown import crown_relax, crown_relu, relu_relaxation

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
