"""Interval bound propagation (IBP, Gowal et al. 2018) through feed-forward models,
with the specification matrix folded into the last linear layer.

``BoundedModule(model)`` traces ``model`` (torch.fx) into a chain of layers and
propagates an L-inf ball, as center/radius intervals, through it with the fused
interval ops of robustops.ops:

    Linear, Conv2d              (W c + b, |W| r)
    ReLU, MReLU, RBF            exact interval images
    Flatten, Unflatten,         shape only / identity
    Identity, Dropout
    AvgPool2d                   (avgpool c, avgpool r): non-negative weights
    MaxPool2d                   [maxpool l, maxpool u]: monotone
    BatchNorm1d/2d, P4BatchNorm y = a x + b per channel with the running statistics
                                (the bounds use them whatever the module's mode)

and the p4 (rotation-equivariant) layers of robustops.nn:

    P4ConvZ2, P4ConvP4          the Conv2d with the transformed filter over the input's
                                [N, C_in * s, H, W] view: (W' c + b', |W'| r)
    P4AvgPool2d, P4Pool("mean"), SpatialPyramidPool("mean"),
    P4SpatialPyramidPool("mean")  (f c, f r): averages, non-negative weights
    P4MaxPool2d, P4Pool("max"), SpatialPyramidPool("max"),
    P4SpatialPyramidPool("max")   [f l, f u]: monotone

Any other layer is rejected with an error naming it. For a classifier with K
outputs and labels y, ``margin_bounds`` returns lower bounds of z_y - z_j for every
j != y, [N, K - 1], computed with C = e_y - e_j folded into the last Linear layer
(tighter than bounding z and subtracting); a model ending in another layer (the
SAF networks' RBF outputs) gets lo(z_y) - hi(z_j) from the output interval.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple, Union

import torch
import torch.fx
from torch import Tensor, nn

from robustops._checks import check_floating, check_label_shape, check_labels
from robustops.bounds.rules import bn_affine as _bn_affine  # noqa: F401  (re-exported for crown)
from robustops.bounds.rules import bound_rule, p4_bias, p4_conv_view, supported_types  # noqa: F401

__all__ = ["BoundedModule", "Interval", "input_interval", "specification"]

Interval = Tuple[Tensor, Tensor]  # (center, radius)

# what to use instead of a tensor method or function in a bounded model's forward
_HINTS = {**{m: " (use an nn.Flatten layer instead)" for m in ("flatten", "view", "reshape")},
          **{f: " (use an nn.ReLU layer instead)" for f in ("relu", "relu_")},
          "max_pool2d": " (use an nn.MaxPool2d layer instead)", "avg_pool2d": " (use an nn.AvgPool2d layer instead)",
          "linear": " (use an nn.Linear layer instead)", "conv2d": " (use an nn.Conv2d layer instead)"}


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return bound_rule(m) is not None or super().is_leaf_module(m, qualname)


def _chain(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The model's layers in order, if its forward is a chain of supported layers."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"BoundedModule: cannot trace {type(model).__name__} into a chain of layers "
                        f"({type(e).__name__}: {e})") from e
    modules = dict(model.named_modules())
    layers = []
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "call_module" and bound_rule(modules[node.target]) is not None:
            if len(node.args) != 1 or node.kwargs:
                raise TypeError(f"BoundedModule: layer '{node.target}' is not called on the previous "
                                "layer's output alone: only feed-forward chains are supported")
            layers.append((node.target, modules[node.target]))
            continue
        if node.op == "call_module":
            what = f"layer '{node.target}' ({type(modules[node.target]).__name__})"
        elif node.op == "call_method":
            what = f"tensor method '.{node.target}()' in the model's forward"
        else:
            what = f"operation '{getattr(node.target, '__name__', node.target)}' in the model's forward"
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        hint = _HINTS.get(name, "")
        raise TypeError(f"BoundedModule: unsupported {what}{hint}; supported layers: "
                        + ", ".join(t.__name__ for t in supported_types())
                        + " (robustops.bounds.register_bound_rule adds one)")
    return layers


def is_max_pool(layer: nn.Module) -> bool:
    """Whether CROWN-IBP cannot go through the layer: the ones that take maxima
    (MaxPool2d, P4MaxPool2d, and the rotation and pyramid pools in mode "max"), or
    any registered layer whose rule has neither back nor relax. IBP bounds them."""
    rule = bound_rule(layer)
    return rule is not None and not rule.crown_through(layer)


def interval_through(layer: nn.Module, c: Tensor, r: Tensor) -> Interval:
    """The IBP image of (c, r) under one layer, by its rule (robustops.bounds.rules)."""
    rule = bound_rule(layer)
    if rule is None:
        raise TypeError(f"BoundedModule: unsupported layer {type(layer).__name__}")
    return rule.interval(layer, c, r)


def specification(y: Tensor, num_classes: int) -> Tensor:
    """C [N, K - 1, K] with rows e_y - e_j for every j != y."""
    n = y.shape[0]
    eye = torch.eye(num_classes, device=y.device)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # [N, K, K]: row j = e_y - e_j
    keep = torch.ones(n, num_classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(n, device=y.device), y] = False
    return c[keep].reshape(n, num_classes - 1, num_classes)


def _domain_bound(name: str, v, x: Tensor):
    """lower / upper as a number, None, or a tensor broadcastable to x (a 1-D tensor of
    x.shape[1] values is taken per channel/feature)."""
    if v is None:
        return None
    if isinstance(v, Tensor):
        if not v.is_floating_point():
            v = v.to(x.dtype)
        if v.dim() == 1 and x.dim() > 2 and v.shape[0] == x.shape[1]:
            v = v.reshape((1, -1) + (1,) * (x.dim() - 2))  # one value per channel
        try:
            torch.broadcast_shapes(v.shape, x.shape)
        except RuntimeError:
            raise ValueError(f"input_interval: argument '{name}' must be a number, None, a tensor of "
                             f"{x.shape[1]} values (one per channel) or one broadcastable to x "
                             f"{list(x.shape)}, got shape {list(v.shape)}") from None
        v = v.to(device=x.device, dtype=x.dtype)
        if not torch.compiler.is_compiling() and bool(torch.isnan(v).any()):
            raise ValueError(f"input_interval: argument '{name}' holds NaN")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"input_interval: argument '{name}' must be a number, a tensor or None, "
                        f"got {type(v).__name__}")
    if v != v:
        raise ValueError(f"input_interval: argument '{name}' must not be NaN")
    return float(v)


def _check_method(fn: str, method, beta) -> None:
    """method is "ibp" or "crown-ibp", and for "crown-ibp" beta a number in [0, 1]."""
    if method not in ("ibp", "crown-ibp"):
        raise ValueError(f"{fn}: argument 'method' must be 'ibp' or 'crown-ibp', got {method!r}")
    if method == "crown-ibp":
        _check_beta(fn, beta)


def _check_beta(fn: str, beta) -> None:
    """beta (the CROWN share of the CROWN-IBP bound) is a number in [0, 1]."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
        raise ValueError(f"{fn}: argument 'beta' must be a number in [0, 1], got {beta!r}")


# The largest temporary one pass of the bounds may allocate (see _rows_per_pass).
_CHUNK_BYTES = 16 << 20


def _check_bound(fn: str, bound, mode: str = "loss") -> None:
    """bound is "margins" or "loss", and "loss" only where a loss is asked for."""
    if bound not in ("margins", "loss"):
        raise ValueError(f"{fn}: argument 'bound' must be 'margins' or 'loss', got {bound!r}")
    if bound == "loss" and mode == "margins":
        raise ValueError(f"{fn}: mode 'margins' gives margin bounds; bound='loss' needs mode 'loss' or "
                         "'certified'")


def _check_eps(eps, x: Tensor, fn: str = "input_interval"):
    """eps as a float or a [N] tensor of x's dtype, with every value >= 0 (inf allowed:
    the whole domain)."""
    if isinstance(eps, Tensor):
        if eps.dim() == 0:
            eps = eps.reshape(1).expand(x.shape[0])
        if eps.dim() != 1 or eps.shape[0] != x.shape[0]:
            raise ValueError(f"{fn}: argument 'eps' must be a number or have shape ({x.shape[0]},) "
                             f"(one radius per sample), got {tuple(eps.shape)}")
        if not eps.is_floating_point():
            eps = eps.to(x.dtype)
        if not torch.compiler.is_compiling() and eps.numel() and not bool((eps >= 0).all()):
            raise ValueError(f"{fn}: argument 'eps' (the radius) must be >= 0 (and not NaN), got values "
                             f"in [{float(eps.min()):.4g}, {float(eps.max()):.4g}]")
        return eps.to(device=x.device, dtype=x.dtype)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{fn}: argument 'eps' must be a number or a tensor of one radius per sample, "
                        f"got {type(eps).__name__}")
    if not eps >= 0:
        raise ValueError(f"{fn}: argument 'eps' (the radius) must be >= 0, got {eps}")
    return float(eps)


def input_interval(x: Tensor, eps: Union[float, Tensor], lower: Union[float, Tensor, None] = 0.0,
                   upper: Union[float, Tensor, None] = 1.0) -> Interval:
    """The L-inf ball of radius eps (a number, or one per sample) around x, clipped
    to the input domain [lower, upper], as (center, radius).

    ``lower`` and ``upper`` are numbers, None (unbounded), or tensors: one value per
    channel (shape [C]) or any shape broadcastable to x. x must lie in the domain:
    a ball around a point outside it, clipped to the domain, would be about other
    points, so an x outside [lower, upper] (pixels in [0, 255], or normalized inputs
    with the default domain [0, 1]) or holding NaN or inf is a ValueError naming the
    observed range. For a model that normalizes its inputs, put the normalization in
    the model as its first layer and pass x in [0, 1]; or pass the normalized
    domain per channel, ((0 - mean) / std, (1 - mean) / std). The radius is never
    negative."""
    check_floating("input_interval", "x", x)
    if x.dim() < 1:
        raise ValueError("input_interval: argument 'x' must have a batch dimension, got a 0-d tensor")
    eps = _check_eps(eps, x)
    lower, upper = _check_domain(x, lower, upper)
    return _ball(x, eps, lower, upper)


def _check_domain(x: Tensor, lower, upper):
    """(lower, upper) as numbers, None or tensors shaped for x, once x is known to lie
    in [lower, upper] (see input_interval)."""
    lower, upper = _domain_bound("lower", lower, x), _domain_bound("upper", upper, x)
    if not torch.compiler.is_compiling():
        if lower is not None and upper is not None and bool((torch.as_tensor(lower) > torch.as_tensor(upper)).any()):
            raise ValueError("input_interval: the input domain has lower > upper")
        _check_in_domain(x, lower, upper)
    return lower, upper


def _ball(x: Tensor, eps, lower, upper) -> Interval:
    """The ball of input_interval for arguments it has checked (_check_eps, _check_domain)."""
    if isinstance(eps, Tensor):
        eps = eps.reshape((-1,) + (1,) * (x.dim() - 1))
    lo, hi = x - eps, x + eps
    if lower is not None:
        lo = torch.clamp(lo, min=lower) if not isinstance(lower, Tensor) else torch.maximum(lo, lower)
    if upper is not None:
        hi = torch.clamp(hi, max=upper) if not isinstance(upper, Tensor) else torch.minimum(hi, upper)
    return (hi + lo) / 2, (hi - lo) / 2


def _check_in_domain(x: Tensor, lower, upper) -> None:
    """A ValueError unless every element of x is finite and in [lower, upper]."""
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x))  # NaN propagates into both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("input_interval: argument 'x' must be finite, got NaN or inf "
                         f"(x lies in [{lo:.4g}, {hi:.4g}])")
    if isinstance(lower, Tensor) or isinstance(upper, Tensor):
        below = bool((x < lower).any()) if lower is not None else False
        above = bool((x > upper).any()) if upper is not None else False
        ok = not (below or above)
        dom = (f"[{_range(lower)}, {_range(upper)}] (per element)")
    else:
        ok = (lower is None or lo >= lower) and (upper is None or hi <= upper)
        dom = f"[{lower}, {upper}]"
    if not ok:
        raise ValueError(
            f"input_interval: argument 'x' must lie in the input domain {dom} given by 'lower' and "
            f"'upper', but x lies in [{lo:.4g}, {hi:.4g}]. A ball clipped to a domain that does not "
            "hold x bounds other points than x's. Scale x to the domain (pixels / 255), pass the "
            "domain of your inputs, or, for a model that normalizes its inputs, make the "
            "normalization the model's first layer and give it inputs in [0, 1]")


def _range(v) -> str:
    if v is None:
        return "None"
    if not isinstance(v, Tensor):
        return str(v)
    lo, hi = (float(t) for t in torch.aminmax(v))
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"


class BoundedModule(nn.Module):
    """Interval bounds of a feed-forward model (see the module docstring). The model
    is shared, not copied: training the BoundedModule trains the model.

    Call it like the model for the plain forward; ``interval(c, r)`` propagates an
    interval; ``ibp_margins(x, y, eps, lower, upper)`` gives the IBP lower bounds of
    the margins z_y - z_j (j != y) over the clipped L-inf ball. The bounds are
    reachable through ``forward`` too (``bounded(x, y, eps, mode="margins")``, see
    forward), so that a BoundedModule wrapped in DistributedDataParallel computes
    them in the wrapper's forward and their gradients are all-reduced.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.layers = _chain(model)
        if not self.layers:
            raise TypeError("BoundedModule: the model has no layers")
        self._fold = isinstance(self.layers[-1][1], nn.Linear)
        self._widest = {}  # input shape -> the widest layer's elements per sample, once seen

    @property
    def num_classes(self) -> Optional[int]:
        """K, when the model ends in a Linear layer (else known only from its output)."""
        return self.layers[-1][1].out_features if self._fold else None

    def forward(self, x: Tensor, y: Optional[Tensor] = None, eps: Union[float, Tensor, None] = None, *,
                mode: str = "logits", method: str = "ibp", beta: float = 1.0, n: int = 1,
                lower: Union[float, Tensor, None] = 0.0, upper: Union[float, Tensor, None] = 1.0,
                bound: str = "margins", _checked: bool = False):
        """The model's forward, or bounds of its margins, by ``mode``:

        - "logits" (the default): ``model(x)``; ``bounded(x)`` is the plain forward.
        - "margins": lower bounds of z_y - z_j (j != y) over the L-inf balls of radii
          r_i = i * eps / n, i = 1..n, around x (clipped to [lower, upper]), all n
          radii in one batched pass, stacked radius-major: [n * N, K - 1], rows
          i * N .. (i + 1) * N - 1 for r_{i+1}. With n = 1 these are
          ``ibp_margins(x, y, eps, lower, upper)`` (method "ibp") or
          ``crown_ibp_margins(self, x, y, eps, lower, upper, beta)`` ("crown-ibp":
          beta * CROWN + (1 - beta) * IBP).
        - "loss": upper bounds of the worst cross-entropy over the same balls, [n * N]
          in the same order: CE(-m, y) of the margins above (``bound="margins"``,
          the default), or bounded directly (``bound="loss"``, loss fusion: see
          ``crown_ibp_loss``; with method "ibp" the two are the same bound).
        - "certified": ``(model(x), margins)``, the clean logits and the margins above
          in one call, which is what ``certified_loss`` computes its loss from; with
          ``bound="loss"``, ``(model(x), loss bounds)`` of mode "loss".

        Wrapped in ``torch.nn.parallel.DistributedDataParallel``, call the wrapper
        (``ddp(x, y, eps, mode="certified", n=4, method="crown-ibp")``) or pass it to
        ``certified_loss``: DDP all-reduces the gradients of work done in its
        forward only. ``_checked`` is internal (certified_loss has checked the
        arguments)."""
        fn = "BoundedModule.forward"
        if mode == "logits":
            if y is not None or eps is not None:
                raise ValueError(f"{fn}: mode 'logits' (the default) takes x alone; pass mode='margins' "
                                 "or mode='certified' for bounds over the ball of radius eps")
            return self.model(x)
        if mode not in ("margins", "loss", "certified"):
            raise ValueError(f"{fn}: argument 'mode' must be 'logits', 'margins', 'loss' or 'certified', "
                             f"got {mode!r}")
        if not _checked:
            check_floating(fn, "x", x)
            if eps is None:
                raise TypeError(f"{fn}: mode {mode!r} needs the labels y and the radius eps")
            self._check_labels(fn, y, x.shape[0])
            eps = _check_eps(eps, x, fn)
            lower, upper = _check_domain(x, lower, upper)
            _check_method(fn, method, beta)
            _check_bound(fn, bound, mode)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{fn}: argument 'n' must be an int >= 1, got {n!r}")
        logits = self.model(x) if mode == "certified" else None
        b = x.shape[0]
        # all radii in one pass: [r_1 x, ..., r_n x] stacked on the batch, r_i = i eps / n
        steps = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
        if isinstance(eps, Tensor):
            radii = (steps[:, None] * (eps / n)[None, :]).reshape(-1)
        else:
            radii = (steps * (eps / n)).repeat_interleave(b)
        c, r = _ball(x.repeat((n,) + (1,) * (x.dim() - 1)), radii, lower, upper)
        ys = y.repeat(n)
        from robustops.bounds import crown  # crown imports this module
        loss = mode == "loss" or bound == "loss"
        fused = method == "crown-ibp" and bound == "loss"  # else margins, and CE(-m, y) for a loss
        if fused:
            fn, spec_rows = crown._crown_ibp_loss, 1
        elif method == "crown-ibp":
            fn, spec_rows = crown._crown_ibp_margins, (self.num_classes or 2) - 1 if beta != 0 else 1
        else:
            fn, spec_rows = (lambda _, c, r, y, beta: self._ibp_margins(c, r, y)), 1
        step = self._rows_per_pass(x, c.shape[0], spec_rows)
        out = torch.cat([fn(self, c[i:i + step], r[i:i + step], ys[i:i + step], beta)
                         for i in range(0, c.shape[0], step)]) if step < c.shape[0] else fn(self, c, r, ys, beta)
        if loss and not fused:
            out = crown.margins_cross_entropy(out)
        return out if logits is None else (logits, out)

    def interval(self, center: Tensor, radius: Tensor, last: Optional[int] = None) -> Interval:
        """Propagate (center, radius) through the layers [0, last)."""
        shape, widest = tuple(center.shape[1:]), 0
        for _, layer in self.layers[:last]:
            center, radius = interval_through(layer, center, radius)
            widest = max(widest, center[0].numel() if center.shape[0] else 0)
        self._note_width(shape, widest)
        return center, radius

    def _note_width(self, shape, widest: int) -> None:
        if widest:
            self._widest[shape] = max(widest, self._widest.get(shape, 0))

    def _rows_per_pass(self, x: Tensor, rows: int, spec_rows: int) -> int:
        """How many of ``rows`` stacked samples go through the network in one pass:
        all, unless the largest temporary (the widest layer's activations, times the
        spec_rows specification rows of a CROWN bound matrix) would pass _CHUNK_BYTES,
        glibc's 32 MB mmap threshold with room to spare, above which every step
        page-faults its blocks afresh. Known from the first call on this input shape."""
        widest = self._widest.get(tuple(x.shape[1:]))
        if widest is None:
            return rows
        per_row = widest * spec_rows * x.element_size()
        return max(1, min(rows, _CHUNK_BYTES // max(per_row, 1)))

    def _check_labels(self, fn: str, y, batch: int) -> None:
        """y's type and shape, and its range when K is known before the forward pass
        (a model ending in a Linear layer); the margins check it otherwise."""
        if self.num_classes is None:
            check_label_shape(fn, y, batch)
        else:
            check_labels(fn, y, batch, self.num_classes)

    def ibp_margins(self, x: Tensor, y: Tensor, eps: Union[float, Tensor], lower=0.0, upper=1.0) -> Tensor:
        """IBP lower bounds of z_y - z_j for j != y over the ball: [N, K - 1]."""
        check_floating("BoundedModule.ibp_margins", "x", x)
        self._check_labels("BoundedModule.ibp_margins", y, x.shape[0])
        return self._ibp_margins(*input_interval(x, eps, lower, upper), y)

    def _ibp_margins(self, c: Tensor, r: Tensor, y: Tensor) -> Tensor:
        """ibp_margins from the input interval (c, r), for checked arguments."""
        *_, center, radius = self._spec_interval(c, r, y)
        return center - radius

    def margins(self, x: Tensor, y: Tensor, eps: Union[float, Tensor], method: str = "ibp", beta: float = 1.0,
                lower: Union[float, Tensor, None] = 0.0, upper: Union[float, Tensor, None] = 1.0) -> Tensor:
        """Lower bounds [N, K - 1] of the margins z_y - z_j (j != y) over the L-inf ball
        of radius ``eps`` (a number or one per sample) around x, clipped to [lower,
        upper]: by IBP (``method="ibp"``) or CROWN-IBP (``"crown-ibp"``: beta * CROWN +
        (1 - beta) * IBP). The one entry point for margin bounds; ``ibp_margins`` and
        ``crown_ibp_margins`` are the same with the method fixed."""
        fn = "BoundedModule.margins"
        check_floating(fn, "x", x)
        _check_method(fn, method, beta)
        self._check_labels(fn, y, x.shape[0])
        c, r = input_interval(x, eps, lower, upper)
        if method == "ibp":
            return self._ibp_margins(c, r, y)
        from robustops.bounds.crown import _crown_ibp_margins  # crown imports this module
        return _crown_ibp_margins(self, c, r, y, beta)

    def _spec_interval(self, c0: Tensor, r0: Tensor, y: Tensor, keep_inputs: bool = False,
                       fn: str = "BoundedModule.ibp_margins"):
        """IBP through the body (every layer but a last Linear) from (c0, r0), and the
        specification of the margins z_y - z_j (j != y) with the last Linear folded in:
        (body, inputs, a [N, K - 1, in], d [N, K - 1], and the margins' IBP interval as
        center and radius [N, K - 1]); ``inputs`` holds each body layer's input interval
        and output shape when ``keep_inputs`` (CROWN's backward pass needs them)."""
        body = [m for _, m in (self.layers[:-1] if self._fold else self.layers)]
        inputs = []
        c, r, widest = c0, r0, 0
        for layer in body:
            ci, ri = c, r
            c, r = interval_through(layer, c, r)
            widest = max(widest, c[0].numel() if c.shape[0] else 0)
            if keep_inputs:
                inputs.append((ci, ri, tuple(c.shape[1:])))
        self._note_width(tuple(c0.shape[1:]), widest)
        if self._fold:
            last = self.layers[-1][1]
            spec = specification(y, last.out_features).to(c0.dtype)
            a = spec.matmul(last.weight)
            d = spec.matmul(last.bias) if last.bias is not None else c0.new_zeros(spec.shape[:2])
        else:
            check_labels(fn, y, c0.shape[0], c.shape[1])
            a = specification(y, c.shape[1]).to(c0.dtype)
            d = c0.new_zeros(a.shape[:2])
        center = torch.bmm(a, c.unsqueeze(-1)).squeeze(-1) + d
        radius = torch.bmm(a.abs(), r.unsqueeze(-1)).squeeze(-1)
        return body, inputs, a, d, center, radius
