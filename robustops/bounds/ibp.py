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

from robustops import ops
from robustops._checks import check_floating, check_label_shape, check_labels
from robustops.nn.p4 import (P4AvgPool2d, P4BatchNorm, P4ConvP4, P4ConvZ2, P4MaxPool2d, P4Pool,
                             P4SpatialPyramidPool, SpatialPyramidPool, _P4Conv)
from robustops.nn.saf import RBF, MReLU

__all__ = ["BoundedModule", "Interval", "input_interval", "specification"]

Interval = Tuple[Tensor, Tensor]  # (center, radius)

_ACTIVATIONS = {nn.ReLU: ops.interval_relu, MReLU: ops.interval_mrelu, RBF: ops.interval_rbf}
_SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, MReLU, RBF, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout,
              nn.AvgPool2d, nn.MaxPool2d, nn.BatchNorm1d, nn.BatchNorm2d,
              P4ConvZ2, P4ConvP4, P4BatchNorm, P4Pool, P4MaxPool2d, P4AvgPool2d,
              SpatialPyramidPool, P4SpatialPyramidPool)
# the p4 and SPP layers that take a maximum (monotone, no linear relaxation) or an
# average (affine, non-negative weights), by their mode
_P4_POOLS = (P4Pool, SpatialPyramidPool, P4SpatialPyramidPool)


# what to use instead of a tensor method or function in a bounded model's forward
_HINTS = {**{m: " (use an nn.Flatten layer instead)" for m in ("flatten", "view", "reshape")},
          **{f: " (use an nn.ReLU layer instead)" for f in ("relu", "relu_")},
          "max_pool2d": " (use an nn.MaxPool2d layer instead)", "avg_pool2d": " (use an nn.AvgPool2d layer instead)",
          "linear": " (use an nn.Linear layer instead)", "conv2d": " (use an nn.Conv2d layer instead)"}


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _SUPPORTED) or super().is_leaf_module(m, qualname)


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
        if node.op == "call_module" and isinstance(modules[node.target], _SUPPORTED):
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
                        + ", ".join(t.__name__ for t in _SUPPORTED))
    return layers


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> Tuple[Tensor, Tensor]:
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


def is_max_pool(layer: nn.Module) -> bool:
    """Whether the layer takes maxima (MaxPool2d, P4MaxPool2d, and the rotation and
    pyramid pools in mode "max"): monotone, bounded by IBP only."""
    if isinstance(layer, (nn.MaxPool2d, P4MaxPool2d)):
        return True
    return isinstance(layer, _P4_POOLS) and layer.mode == "max"


def p4_conv_view(layer: _P4Conv, x: Tensor) -> Tensor:
    """A p4 convolution's input as the expanded Conv2d's: [N, C_in * s, H, W] (checked)."""
    layer._check(x)
    return x.reshape(x.shape[0], layer.in_channels * layer.in_rotations, x.shape[-2], x.shape[-1])


def p4_bias(layer: _P4Conv) -> Optional[Tensor]:
    """The expanded Conv2d's bias: each output channel's bias for its 4 rotations."""
    return layer.bias.repeat_interleave(4) if layer.bias is not None else None


def interval_through(layer: nn.Module, c: Tensor, r: Tensor) -> Interval:
    """The IBP image of (c, r) under one supported layer."""
    # validate_args=False: radii are >= 0 by construction here (input_interval
    # checks the ball, |W| r >= 0), and the kernels map a negative radius to NaN
    if isinstance(layer, nn.Linear):
        return ops.interval_linear(c, r, layer.weight, layer.bias, validate_args=False)
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise TypeError("BoundedModule: Conv2d needs numeric zero padding, got "
                            f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}")
        return ops.interval_conv2d(c, r, layer.weight, layer.bias, layer.stride, layer.padding,
                                   layer.dilation, layer.groups, validate_args=False)
    for kind, op in _ACTIVATIONS.items():
        if type(layer) is kind or isinstance(layer, kind):
            return op(c, r, validate_args=False)
    if isinstance(layer, _P4Conv):
        # the Conv2d with the transformed filter over the [N, C_in * s, H, W] view
        w = layer.transformed_filter()
        cc, rc = ops.interval_conv2d(p4_conv_view(layer, c), p4_conv_view(layer, r), w, p4_bias(layer),
                                     layer.stride, layer.padding, layer.dilation, 1, validate_args=False)
        shape = (c.shape[0], layer.out_channels, 4) + tuple(cc.shape[-2:])
        return cc.view(shape), rc.view(shape)
    if isinstance(layer, (nn.Flatten, nn.Unflatten)):
        return layer(c), layer(r)
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return c, r
    if is_max_pool(layer):
        lo, hi = layer(c - r), layer(c + r)
        return (hi + lo) / 2, (hi - lo) / 2
    if isinstance(layer, (nn.AvgPool2d, P4AvgPool2d) + _P4_POOLS):  # averages (mode "mean")
        return layer(c), layer(r)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, P4BatchNorm)):
        if isinstance(layer, P4BatchNorm):
            layer._check_input_dim(c)
        scale, shift = _bn_affine(layer)
        return c * _channel_view(scale, c.dim()) + _channel_view(shift, c.dim()), \
            r * _channel_view(scale.abs(), c.dim())
    raise TypeError(f"BoundedModule: unsupported layer {type(layer).__name__}")


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
        if not self._fold:
            c, r = self.interval(c, r)
            n, k = c.shape
            check_labels("BoundedModule.ibp_margins", y, n, k)
            others = torch.ones(n, k, dtype=torch.bool, device=c.device)
            others[torch.arange(n, device=c.device), y] = False
            lo_y = (c - r).gather(1, y[:, None])
            return lo_y - (c + r)[others].reshape(n, k - 1)
        c, r = self.interval(c, r, last=-1)
        last = self.layers[-1][1]
        spec = specification(y, last.out_features).to(last.weight.dtype)
        w = spec.matmul(last.weight)  # [N, K-1, in]
        center = torch.bmm(w, c.unsqueeze(-1)).squeeze(-1)
        if last.bias is not None:
            center = center + spec.matmul(last.bias)
        radius = torch.bmm(w.abs(), r.unsqueeze(-1)).squeeze(-1)
        return center - radius
