"""Certified training losses and schedules: the global, monotonically decreasing
robustness loss (GM, Liang et al. 2023) on interval bounds, its uniform variant
(GRT), plain IBP training (N = 1), the schedules of eps, kappa and beta, and the
clean and verified errors.

    Loss     = kappa * CE(z(x), y) + (1 - kappa) * Loss_rob
    Loss_rob = sum_{i=1..N} c_i * CE(-m(x, r_i), y),    r_i = i * eps / N

where m(x, r) are the lower bounds of the margins z_y - z_j over the L-inf ball of
radius r (clipped to the input domain), from IBP or CROWN-IBP, CE(-m, y) is the cross-entropy of the
logits [0, -m_j] with target 0, and c_i is proportional to 1 / r_i and sums to 1
(GM) or is 1 / N (GRT). All N radii go through the network in one pass, stacked on
the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from robustops.bounds.crown import margins_cross_entropy
from robustops._checks import check_floating, check_label_shape, check_labels
from robustops.bounds.ibp import BoundedModule, _check_bound, _check_domain, _check_eps, _check_method

__all__ = ["robust_cross_entropy", "subperturbation_weights", "certified_loss", "CertifiedLoss",
           "verified_error", "verified", "clean_error", "linear_schedule", "smoothed_schedule"]


def robust_cross_entropy(margins: Tensor, reduction: str = "mean") -> Tensor:
    """CE(-m, y): cross-entropy of the logits [0, -m_1, ..., -m_{K-1}] with target 0,
    for margin lower bounds m [N, K - 1] (the true class's logit is 0).

    A sample with a non-finite margin (NaN, or an infinite bound) gets a NaN loss, so
    that a broken bound is never mistaken for a small robust loss (a margin of +inf
    alone would give 0): check the loss for NaN as for any training loss."""
    check_floating("robust_cross_entropy", "margins", margins)
    if margins.dim() != 2:
        raise ValueError(f"robust_cross_entropy: argument 'margins' must have shape [N, K - 1], got "
                         f"{list(margins.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"robust_cross_entropy: argument 'reduction' must be 'mean', 'sum' or 'none', "
                         f"got {reduction!r}")
    per_sample = margins_cross_entropy(margins)
    if reduction == "none":
        return per_sample
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


WEIGHT_FORMS = ("gm", "inverse_square", "linear", "exponential", "uniform")


def subperturbation_weights(n: int, kind: str = "gm", device=None) -> Tensor:
    """c_1..c_N, the weights of the N sub-perturbation radii r_i = i eps / N, summing to
    1 (float64). "gm": proportional to 1 / r_i, the GM paper's; "uniform": 1 / N
    (GRT). The other monotonically decreasing forms are for the paper's Fig. 4
    ablation, whose text does not define its forms: "inverse_square": proportional to
    1 / r_i^2; "linear": to N + 1 - i (falling in equal steps to 1/N of the first);
    "exponential": to 2^-i (halving from one radius to the next)."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"subperturbation_weights: argument 'n' must be an int >= 1, got {n!r}")
    i = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    if kind == "gm":
        w = 1.0 / i
    elif kind == "inverse_square":
        w = 1.0 / (i * i)
    elif kind == "linear":
        w = n + 1 - i
    elif kind == "exponential":
        w = torch.pow(0.5, i)
    elif kind == "uniform":
        w = torch.ones_like(i)
    else:
        raise ValueError(f"subperturbation_weights: argument 'kind' must be one of {WEIGHT_FORMS}, got {kind!r}")
    return w / w.sum()


@dataclass
class CertifiedLoss:
    """The loss and its parts, for logging."""

    loss: Tensor
    clean: Optional[Tensor]  # CE(z(x), y); None when kappa = 0 and no logits were given
    robust: Tensor         # Loss_rob
    per_radius: Tensor     # the robust loss bound at r_i (CE(-m(x, r_i), y), or bound="loss"'s), i = 1..N


def certified_loss(bounded: Union[BoundedModule, DistributedDataParallel], x: Tensor, y: Tensor,
                   eps: Union[float, Tensor], *, n: int = 1,
                   weights: str = "gm", kappa: float = 0.5, method: str = "ibp", beta: float = 1.0,
                   lower: Union[float, Tensor, None] = 0.0, upper: Union[float, Tensor, None] = 1.0,
                   logits: Optional[Tensor] = None, bound: str = "margins") -> CertifiedLoss:
    """The certified training loss above with ``n`` sub-perturbations (``weights``
    one of subperturbation_weights' forms: "gm", "uniform", "inverse_square",
    "linear", "exponential") and bounds from ``method`` "ibp" or "crown-ibp" (the CROWN
    bound mixed with the IBP one: beta * CROWN + (1 - beta) * IBP). ``logits``
    (optional) are the model's outputs on x, if the caller has them already. With
    kappa = 0 the loss is Loss_rob alone and the clean forward pass is skipped
    (``clean`` is then None unless ``logits`` are given).

    ``eps`` is a number or a tensor of one radius per sample (all >= 0); either way
    all N radii of all samples go through the network in one batched pass. A
    non-finite bound makes the loss NaN (see robust_cross_entropy); it is never
    silently small.

    ``bound`` says what CROWN-IBP bounds: "margins" (the default), the K - 1 margin
    lower bounds m, each radius's robust loss being CE(-m, y); or "loss", the worst
    cross-entropy over the ball directly (loss fusion, ``crown_ibp_loss``): one
    backward row per sample instead of K - 1, several times faster, and a looser
    bound. With method "ibp" the two are the same.

    ``bounded`` is a BoundedModule or a DistributedDataParallel wrapping one. The
    clean logits and the margins come from one call of ``bounded``'s forward
    (mode "certified", or "margins" when no logits are needed), so under DDP the
    whole loss is computed in the wrapper's forward and its gradients are
    all-reduced. (Under DDP, leave ``logits`` to this function, so that a step is
    one forward call of the wrapper.)"""
    fn = "certified_loss"
    module = _bounded_module(fn, bounded)
    check_floating(fn, "x", x)
    module._check_labels(fn, y, x.shape[0])
    eps = _check_eps(eps, x, fn)
    lower, upper = _check_domain(x, lower, upper)  # once, on x (not on its N copies)
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 <= kappa <= 1:
        raise ValueError(f"{fn}: argument 'kappa' must be a number in [0, 1], got {kappa!r}")
    _check_method(fn, method, beta)
    _check_bound(fn, bound)
    weight = subperturbation_weights(n, weights, device=x.device).to(x.dtype)
    if logits is not None:
        check_floating(fn, "logits", logits)
    # one forward call: the clean logits (when needed) and the margins of all N radii
    mode = "certified" if logits is None and kappa > 0 else "margins"
    if mode == "margins" and bound == "loss":
        mode = "loss"
    out = bounded(x, y, eps, mode=mode, method=method, beta=beta, n=n, lower=lower, upper=upper, bound=bound,
                  _checked=True)
    if mode == "certified":
        logits, bounds = out
    else:
        bounds = out
    if logits is not None:
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"{fn}: argument 'logits' must have shape [{x.shape[0]}, K], got {list(logits.shape)}")
        check_labels(fn, y, x.shape[0], logits.shape[1])
    clean = F.cross_entropy(logits, y) if logits is not None else None
    per_sample = bounds if bound == "loss" else robust_cross_entropy(bounds, reduction="none")
    per_radius = per_sample.reshape(n, x.shape[0]).mean(1)
    robust = (weight * per_radius).sum()
    loss = robust if kappa == 0 else kappa * clean + (1 - kappa) * robust
    return CertifiedLoss(loss, clean, robust, per_radius)


def _bounded_module(fn: str, bounded) -> BoundedModule:
    """The BoundedModule that ``bounded`` is or that a DistributedDataParallel wraps."""
    if isinstance(bounded, BoundedModule):
        return bounded
    if isinstance(bounded, DistributedDataParallel):
        if isinstance(bounded.module, BoundedModule):
            return bounded.module
        raise TypeError(f"{fn}: argument 'bounded' is a DistributedDataParallel wrapping a "
                        f"{type(bounded.module).__name__}; wrap the BoundedModule instead: "
                        "DistributedDataParallel(BoundedModule(model))")
    raise TypeError(f"{fn}: argument 'bounded' must be a robustops.bounds.BoundedModule or a "
                    f"DistributedDataParallel wrapping one, got {type(bounded).__name__}")


@torch.no_grad()
def verified_error(bounded: Union[BoundedModule, DistributedDataParallel], x: Tensor, y: Tensor,
                   eps: Union[float, Tensor], lower=0.0, upper=1.0, method: str = "ibp") -> float:
    """The fraction of samples not verified robust at eps (a number or one per
    sample) by ``method`` ("ibp" or "crown-ibp", with beta = 1): a sample is verified
    only when every margin lower bound is finite and positive (the clean prediction
    counts: at eps = 0 this is the error). NaN or inf in a bound is never verified."""
    bounded = _bounded_module("verified_error", bounded)  # no gradients: DDP's module will do
    _check_method("verified_error", method, 1.0)
    margins = bounded.margins(x, y, eps, method=method, beta=1.0, lower=lower, upper=upper)
    return verified(margins).logical_not().float().mean().item()


def verified(margins: Tensor) -> Tensor:
    """[N] bool: whether every margin lower bound of the sample is finite and > 0."""
    return (torch.isfinite(margins) & (margins > 0)).all(1)


@torch.no_grad()
def clean_error(model, x: Tensor, y: Tensor) -> float:
    """The fraction of samples whose argmax prediction is not their label."""
    check_floating("clean_error", "x", x)
    check_label_shape("clean_error", y, x.shape[0])
    out = model(x)
    check_labels("clean_error", y, x.shape[0], out.shape[1])
    return (out.argmax(1) != y).float().mean().item()


def linear_schedule(step: int, start: int, end: int, initial: float, final: float) -> float:
    """initial until ``start``, then linearly to ``final`` at ``end``, then final."""
    if end <= start:
        return final if step >= start else initial
    t = min(max((step - start) / (end - start), 0.0), 1.0)
    return initial + t * (final - initial)


def smoothed_schedule(step: int, start: int, end: int, initial: float, final: float,
                      mid: float = 0.25, power: float = 4.0) -> float:
    """The smoothed ramp of CROWN-IBP training: from ``start`` it grows like
    (step - start)^power until the fraction ``mid`` of the ramp, then linearly to
    ``final`` at ``end``, the two pieces meeting with equal value and slope."""
    if not power >= 2 or not 0 <= mid <= 1:
        raise ValueError("smoothed_schedule: needs power >= 2 and 0 <= mid <= 1")
    if step <= start or end <= start:
        return initial if step <= start else final
    mid_step = start + int((end - start) * mid)
    if mid_step <= start:
        return linear_schedule(step, start, end, initial, final)
    a, b = mid_step - start, end - mid_step
    alpha = (final - initial) / (a ** (power - 1) * (power * b + a))
    if step < mid_step:
        return initial + alpha * (step - start) ** power
    mid_value = initial + alpha * a ** power
    return min(mid_value + (final - mid_value) * (step - mid_step) / max(b, 1), final)
