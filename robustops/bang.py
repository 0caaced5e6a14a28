"""BANG, Batch Adjusted Network Gradients (Rozsa, Günther, Boult 2018), as a
drop-in for an existing model and training loop.

BANG balances how much each sample of a batch contributes to a layer's weight
update. For a layer with output y, kappa_i = dE/dy_i is the gradient of the batch
loss w.r.t. sample i's output, n_i = ||kappa_i||_2 and m = max_j n_j. Then::

    eta_i = (m / n_i)^rho_i,     rho_i = eps_i (1 - n_i / m),

and the layer's weight and bias gradients are formed from eta_i * kappa_i instead
of kappa_i, then multiplied by beta. The gradient passed further down the network is
formed from the unscaled kappa. eps_i is eps for correctly classified samples and
ratio * eps for misclassified ones. A sample with n_i = 0 keeps eta_i = 1.

Usage::

    bang = robustops.bang.BANG(model, eps=0.815, beta=1.0, ratio=1.0)
    for x, y in loader:
        logits = model(x)
        bang.observe(logits, y)          # optional: which samples are misclassified
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()                  # the BANG layers scale their weight gradients
        optimizer.step()
    bang.remove()                        # the plain model again

Per-layer settings: ``BANG(model, overrides={"fc1": {"eps": 0.5}})`` or
``bang.configure("fc1", beta=0.5)``. ``bang.disable()`` / ``bang.enable()`` switch
it off and on, ``with bang.paused(): ...`` for a block. ``BANG(model, layers=[...])``
picks the layers (names or modules); by default every module with a rule.

Layers: nn.Linear, nn.Conv1d/2d/3d and the p4 group convolutions
robustops.nn.P4ConvZ2 and P4ConvP4 have rules. A p4 layer runs as the Conv2d with its
expanded filter (robustops.ops.p4_filter); kappa is the gradient w.r.t. its p4
output [N, C_out, 4, H', W'], and its weight gradient is the adjoint filter
transform of the expanded convolution's weight gradient formed from eta * kappa
(its bias, shared by the 4 rotations of a channel, gets eta_i * kappa_i summed over
rotations and space). So robustops.models' p4 networks (wang_cnn, symmetric_cnn,
p4cnn) get BANG on every convolution and linear layer. A new layer type gets BANG
through ``register_rule(LayerType, rule)`` with a ``BangRule`` (see its docstring):
how to run the layer, its input gradient, its weight gradient summed over the batch,
and its bias gradient per sample. The weight gradient of a sum over samples of
kappa_i x_i products is linear in each, so BANG scales whichever of the input x or
kappa is smaller by eta (mathematically equal); the bias gradient is
sum_i eta_i * (kappa_i summed over its non-channel positions).

torch.compile: a compiled model runs each BANG layer eagerly (a graph break), since
its backward reads BANG's state when it runs. A copy of the model made while BANG
is applied (copy.deepcopy) keeps the BANG forwards, tied to this BANG object; make
copies before applying BANG or after ``remove()``.

Data parallel: under torch.distributed (DistributedDataParallel), m is the max over
the global batch (an all-reduce per layer and step on a process group of its own),
so the result equals a single-process run on the concatenated batch.
"""

from __future__ import annotations

import contextlib
import types
from typing import Dict, Iterable, Iterator, Mapping, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops._checks import check_label_shape
from robustops.nn.p4 import P4ConvP4, P4ConvZ2
from robustops.ops import bang as _ops
from robustops.ops import p4_filter

__all__ = ["BANG", "BangRule", "LinearRule", "ConvRule", "P4ConvRule", "register_rule", "rule_for",
           "misclassified"]


# ----------------------------------------------------------------------------- rules


class BangRule:
    """How BANG runs one layer type and forms its gradients: the extension point for
    layer types beyond the built-in ones (LinearRule, ConvRule, P4ConvRule).

    Subclass it, implement ``forward``, ``input_grad``, ``weight_grad`` and
    ``bias_grad_per_sample`` (and ``prepare`` / ``finish`` / ``plain_grads`` where the
    defaults do not fit), and register an instance with ``register_rule(LayerType,
    rule)``. A rule holds no per-call state: one instance serves every layer of its
    types, and what a call needs travels in the context ``prepare`` returns.

    The layer must have a ``weight`` (and may have a ``bias``, None or missing for
    none), and BANG steps in only when its forward is called with the input alone.
    ``prepare`` runs outside BANG's autograd function (so anything it does is
    differentiated normally) and returns the layer's input and a context; the other
    methods get that context, and ``finish`` turns the function's output into the
    layer's (outside it too). Shapes: x is the prepared input, [N, ...]; kappa is
    the gradient w.r.t. ``forward``'s output, [N, ...] (the layer's output, unless
    ``finish`` reshapes it: eta needs only the same numbers per sample).

    Example::

        # ScaledLinear: an nn.Linear subclass whose forward is linear(x * self.scale)
        class ScaledLinearRule(robustops.bang.LinearRule):
            def prepare(self, module, x):
                return x * module.scale, None

        robustops.bang.register_rule(ScaledLinear, ScaledLinearRule())
    """

    def prepare(self, module: nn.Module, x: Tensor) -> Tuple[Tensor, object]:
        """The input BANG's function computes with, and a context for the other methods.

        Runs outside BANG's autograd function, so what it does to x (a reshape, a
        padding) is differentiated as usual. The default passes x through with the
        context None.

        Args:
            module: the layer (an instance of a registered type).
            x: the input of the layer's forward.

        Returns:
            A pair (x, ctx) of the prepared input [N, ...] and the context (any
            object), which every other method of this call receives.

        Raises:
            ValueError: (in the built-in rules) x has no batch dimension or the wrong
                number of dimensions.
        """
        return x, None

    def finish(self, ctx, y: Tensor) -> Tensor:
        """The layer's output from ``forward``'s (a view to the layer's own shape,
        say).

        Runs outside BANG's autograd function, like ``prepare``: kappa is the gradient
        w.r.t. ``forward``'s output, and a view taken here can be modified in place by
        the next layer (a view returned by the function could not). The default
        returns y as it is.

        Args:
            ctx: the context ``prepare`` returned.
            y: ``forward``'s output.

        Returns:
            The layer's output.
        """
        return y

    def forward(self, ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """The layer's computation, run inside BANG's autograd function.

        It is not differentiated: the backward is formed from ``input_grad``,
        ``weight_grad`` and ``bias_grad_per_sample`` (or ``plain_grads``). Under
        autocast, x, weight and bias arrive already cast to the autocast dtype.

        Args:
            ctx: the context ``prepare`` returned.
            x: the prepared input [N, ...].
            weight: the layer's weight.
            bias: the layer's bias, or None.

        Returns:
            The output [N, ...]; kappa in the backward has its shape.

        Raises:
            NotImplementedError: in BangRule itself (a subclass must implement it).
        """
        raise NotImplementedError

    def input_grad(self, ctx, x: Tensor, weight: Tensor, kappa: Tensor) -> Tensor:
        """dE/dx from kappa (unscaled: the gradient passed down the network is the
        plain one).

        Args:
            ctx: the context ``prepare`` returned.
            x: the prepared input [N, ...].
            weight: the layer's weight.
            kappa: the gradient w.r.t. ``forward``'s output, [N, ...].

        Returns:
            The gradient w.r.t. the prepared input, shaped as x.

        Raises:
            NotImplementedError: in BangRule itself.
        """
        raise NotImplementedError

    def weight_grad(self, ctx, x: Tensor, weight: Tensor, kappa: Tensor) -> Tensor:
        """sum_i dE/dW|_i: the plain weight gradient, summed over the batch.

        BANG calls it with x or kappa (whichever is smaller) already scaled per sample
        by beta * eta_i, so it must be linear in each sample's x and kappa.

        Args:
            ctx: the context ``prepare`` returned.
            x: the prepared input [N, ...] (maybe scaled).
            weight: the layer's weight.
            kappa: the gradient w.r.t. ``forward``'s output, [N, ...] (maybe scaled).

        Returns:
            A tensor shaped as ``weight``.

        Raises:
            NotImplementedError: in BangRule itself.
        """
        raise NotImplementedError

    def bias_grad_per_sample(self, ctx, kappa: Tensor) -> Tensor:
        """Each sample's bias gradient: kappa summed over its non-channel dimensions.

        BANG forms the bias gradient as sum_i beta * eta_i * row_i of the result.

        Args:
            ctx: the context ``prepare`` returned.
            kappa: the gradient w.r.t. ``forward``'s output, [N, ...].

        Returns:
            [N, C], C the bias's length.

        Raises:
            NotImplementedError: in BangRule itself.
        """
        raise NotImplementedError

    def plain_grads(self, ctx, x: Tensor, weight: Tensor, kappa: Tensor, needs) -> tuple:
        """(dE/dx, dE/dW, dE/db) as plain autograd forms them, for eps = 0 (every
        eta_i = 1).

        The default builds them from ``input_grad``, ``weight_grad`` and
        ``bias_grad_per_sample``; override it to call the same kernels as the layer's
        own backward, so that BANG with eps = 0 and beta = 1 reproduces plain training
        bit for bit.

        Args:
            ctx: the context ``prepare`` returned.
            x: the prepared input [N, ...].
            weight: the layer's weight.
            kappa: the gradient w.r.t. ``forward``'s output, [N, ...].
            needs: three bools, whether the input, weight and bias gradients are needed.

        Returns:
            A tuple (grad_x, grad_weight, grad_bias), None for each one not needed.
        """
        need_x, need_w, need_b = needs
        return (self.input_grad(ctx, x, weight, kappa) if need_x else None,
                self.weight_grad(ctx, x, weight, kappa) if need_w else None,
                self.bias_grad_per_sample(ctx, kappa).sum(0) if need_b else None)


class LinearRule(BangRule):
    """The rule of nn.Linear (and its subclasses), for inputs [N, ..., in_features]:
    a sample's weight and bias gradients sum over its positions in the middle
    dimensions."""

    def prepare(self, module, x):
        """Check that x has a batch dimension; the context is None (see
        BangRule.prepare).

        Raises:
            ValueError: x has fewer than 2 dimensions.
        """
        if x.dim() < 2:
            raise ValueError(f"BANG: {type(module).__name__} needs a batch: input of shape [N, ..., "
                             f"{module.in_features}], got {tuple(x.shape)}")
        return x, None

    def forward(self, ctx, x, weight, bias):
        """``F.linear(x, weight, bias)``: [N, ..., out_features]."""
        return F.linear(x, weight, bias)

    def input_grad(self, ctx, x, weight, kappa):
        """``kappa @ weight``: [N, ..., in_features]."""
        return kappa.matmul(weight)

    def weight_grad(self, ctx, x, weight, kappa):
        """The sum over samples and positions of kappa x^T: [out_features, in_features]."""
        return kappa.reshape(-1, kappa.shape[-1]).t().mm(x.reshape(-1, x.shape[-1]))

    def bias_grad_per_sample(self, ctx, kappa):
        """kappa summed over the middle dimensions: [N, out_features]."""
        return kappa.reshape(kappa.shape[0], -1, kappa.shape[-1]).sum(1)

    def plain_grads(self, ctx, x, weight, kappa, needs):
        """The plain gradients, the bias's summed over every sample and position at
        once (see BangRule.plain_grads)."""
        need_x, need_w, need_b = needs
        return (self.input_grad(ctx, x, weight, kappa) if need_x else None,
                self.weight_grad(ctx, x, weight, kappa) if need_w else None,
                kappa.reshape(-1, kappa.shape[-1]).sum(0) if need_b else None)


class ConvRule(BangRule):
    """nn.Conv1d, nn.Conv2d and nn.Conv3d (not transposed), any stride, padding
    (numbers, "same", "valid"), padding mode, dilation and groups."""

    def prepare(self, module, x):
        """Apply the layer's non-zero padding modes and the odd part of "same" padding
        to x, and put the convolution's settings in the context (a dict of stride,
        padding, dilation and groups; see BangRule.prepare).

        Raises:
            ValueError: x is not ``[N, C, *spatial]`` for the layer's number of
                spatial dimensions.
        """
        spatial = len(module.kernel_size)
        if x.dim() != spatial + 2:
            raise ValueError(f"BANG: {type(module).__name__} needs a batch: input of shape "
                             f"[N, C, {', '.join('*' * spatial)}], got {tuple(x.shape)}")
        padding = module.padding
        if module.padding_mode != "zeros":
            x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
            padding = (0,) * spatial
        elif padding == "valid":
            padding = (0,) * spatial
        elif padding == "same":
            # As F.conv: total padding dilation * (k - 1), the odd one on the right.
            total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
            left = [t // 2 for t in total]
            if any(t % 2 for t in total):
                pads = []
                for t, lo in reversed(list(zip(total, left))):
                    pads += [lo, t - lo]
                x = F.pad(x, pads)
                padding = (0,) * spatial
            else:
                padding = tuple(left)
        ctx = dict(stride=list(module.stride), padding=list(padding), dilation=list(module.dilation),
                   groups=module.groups)
        return x, ctx

    def forward(self, ctx, x, weight, bias):
        """The convolution with the context's settings: ``[N, C_out, *spatial']``."""
        return torch.ops.aten.convolution(x, weight, bias, ctx["stride"], ctx["padding"],
                                          ctx["dilation"], False, [0] * len(ctx["stride"]), ctx["groups"])

    def _backward(self, ctx, x, weight, kappa, mask, bias_sizes=None):
        return torch.ops.aten.convolution_backward(
            kappa, x, weight, bias_sizes, ctx["stride"], ctx["padding"], ctx["dilation"], False,
            [0] * len(ctx["stride"]), ctx["groups"], mask)

    def input_grad(self, ctx, x, weight, kappa):
        """The convolution's input gradient (aten.convolution_backward), shaped as x."""
        return self._backward(ctx, x, weight, kappa, [True, False, False])[0]

    def weight_grad(self, ctx, x, weight, kappa):
        """The convolution's weight gradient (aten.convolution_backward), shaped as
        ``weight``."""
        return self._backward(ctx, x, weight, kappa, [False, True, False])[1]

    def bias_grad_per_sample(self, ctx, kappa):
        """kappa summed over the spatial dimensions: [N, C_out]."""
        return kappa.sum(dim=tuple(range(2, kappa.dim())))

    def plain_grads(self, ctx, x, weight, kappa, needs):
        """The three gradients from one aten.convolution_backward call, as the
        layer's own backward forms them (see BangRule.plain_grads)."""
        need_x, need_w, need_b = needs
        bias_sizes = [weight.shape[0]] if need_b else None
        return self._backward(ctx, x, weight, kappa, [need_x, need_w, need_b], bias_sizes)


class P4ConvRule(ConvRule):
    """robustops.nn.P4ConvZ2 and P4ConvP4 (any stride, padding, dilation; with or
    without bias).

    A p4 layer is a Conv2d of its input flattened to [N, C_in * s, H, W] (s = 1 for
    P4ConvZ2, 4 for P4ConvP4) with the expanded filter F = p4_filter(W)
    [C_out * 4, C_in * s, k, k] and the bias repeated over the 4 rotations; its output
    [N, C_out * 4, H', W'] is viewed as [N, C_out, 4, H', W'] (``finish``). So kappa
    holds the same numbers as the gradient w.r.t. the layer's output (the same
    norms and eta); the expanded convolution's weight gradient is formed from the
    scaled kappa (or x) as for a Conv2d, and the layer's weight gradient is its image
    under the adjoint of the filter transform (the vjp of p4_filter: linear, so the
    per-sample scaling passes through it). Each sample's bias gradient is its kappa
    summed over rotations and space."""

    def prepare(self, module, x):
        """Check x as the layer does and flatten it to [N, C_in * s, H, W]; the context
        holds the convolution's settings and C_out (see BangRule.prepare).

        Raises:
            TypeError: x is not a floating-point tensor.
            ValueError: x does not have the layer's input shape or channels.
        """
        module._check(x)  # the layer's own shape and dtype errors
        n = x.shape[0]
        flat = x.reshape(n, module.in_channels * module.in_rotations, x.shape[-2], x.shape[-1])
        ctx = dict(stride=[module.stride] * 2, padding=[module.padding] * 2,
                   dilation=[module.dilation] * 2, groups=1, out_channels=module.out_channels)
        return flat, ctx

    def finish(self, ctx, y):
        """View the expanded convolution's [N, C_out * 4, H', W'] output as the p4
        feature map [N, C_out, 4, H', W']."""
        return y.view(y.shape[0], ctx["out_channels"], 4, y.shape[-2], y.shape[-1])

    @staticmethod
    def _filter(ctx, weight):
        # The expanded filter of this forward, kept for its backward (the weight
        # cannot change in place in between: autograd checks the saved weight).
        filt = ctx.get("filter")
        if filt is None:
            filt = ctx["filter"] = p4_filter(weight)
        return filt

    @staticmethod
    def _adjoint(weight, grad_filter):
        """The filter transform's adjoint: the weight's gradient from the expanded
        filter's (the transform's vjp; it is linear, so the vjp does not depend on W)."""
        with torch.enable_grad():
            w = weight.detach().requires_grad_()
            return torch.autograd.grad(p4_filter(w), w, grad_filter)[0]

    def forward(self, ctx, x, weight, bias):
        """The Conv2d of the flattened input with the expanded filter p4_filter(weight)
        and the bias repeated over the 4 rotations: [N, C_out * 4, H', W']."""
        bias4 = None if bias is None else bias.repeat_interleave(4)
        return super().forward(ctx, x, self._filter(ctx, weight), bias4)

    def input_grad(self, ctx, x, weight, kappa):
        """The expanded convolution's input gradient: [N, C_in * s, H, W]."""
        return super().input_grad(ctx, x, self._filter(ctx, weight), kappa)

    def weight_grad(self, ctx, x, weight, kappa):
        """The expanded convolution's weight gradient mapped back through the filter
        transform's adjoint: shaped as ``weight``, [C_out, C_in, s, k, k]."""
        return self._adjoint(weight, super().weight_grad(ctx, x, self._filter(ctx, weight), kappa))

    def bias_grad_per_sample(self, ctx, kappa):
        """kappa summed over the 4 rotations and space: [N, C_out]."""
        n, c = kappa.shape[0], ctx["out_channels"]
        return kappa.reshape(n, c, 4 * kappa.shape[2] * kappa.shape[3]).sum(2)

    def plain_grads(self, ctx, x, weight, kappa, needs):
        """The three gradients from one convolution backward with the expanded filter,
        the weight's through the adjoint transform and the bias's summed over the
        rotations (see BangRule.plain_grads)."""
        need_x, need_w, need_b = needs
        filt = self._filter(ctx, weight)
        grad_x, grad_filter, grad_bias4 = self._backward(ctx, x, filt, kappa, [need_x, need_w, need_b],
                                                         [filt.shape[0]] if need_b else None)
        grad_w = self._adjoint(weight, grad_filter) if need_w else None
        grad_b = grad_bias4.view(-1, 4).sum(1) if need_b else None
        return grad_x, grad_w, grad_b


_RULES: Dict[Type[nn.Module], BangRule] = {}


def register_rule(layer_type: Type[nn.Module], rule: BangRule) -> None:
    """Give ``layer_type`` (and its subclasses without a rule of their own) BANG.

    BANG objects made afterwards wrap the layers of that type by default (and accept
    them in ``layers``); a BANG made before is unchanged. Registering a type again
    replaces its rule.

    Args:
        layer_type: an nn.Module subclass whose instances have a ``weight``.
        rule: a BangRule instance (see BangRule for what to implement).

    Raises:
        TypeError: ``layer_type`` is not an nn.Module subclass, or ``rule`` is not a
            BangRule.
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"register_rule: argument 'layer_type' must be an nn.Module subclass, got {layer_type!r}")
    if not isinstance(rule, BangRule):
        raise TypeError(f"register_rule: argument 'rule' must be a BangRule, got {type(rule).__name__}")
    _RULES[layer_type] = rule


def rule_for(module: nn.Module) -> Optional[BangRule]:
    """The BANG rule that applies to ``module``.

    Args:
        module: a module (an instance, not a type).

    Returns:
        The rule registered for the module's type or, failing that, for its nearest
        base class in the method resolution order; None when there is none (BANG
        cannot wrap the module).
    """
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


register_rule(nn.Linear, LinearRule())
for _conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_rule(_conv, ConvRule())
_P4_RULE = P4ConvRule()
register_rule(P4ConvZ2, _P4_RULE)
register_rule(P4ConvP4, _P4_RULE)


# ----------------------------------------------------------------------------- helpers


def misclassified(logits: Tensor, targets: Tensor) -> Tensor:
    """The bool mask of samples whose top-scoring class is not the target.

    ``targets`` must be int64 class labels [N]; their range is not checked (that would
    synchronize with the device at every training step): a label outside [0, classes)
    simply marks its sample misclassified.

    Args:
        logits: [N, classes] scores (detached here).
        targets: int64 class labels [N].

    Returns:
        A bool tensor [N] on the logits' device, True where ``argmax(logits) !=
        targets``.

    Raises:
        TypeError: ``logits`` is not a tensor, or ``targets`` not an int64 tensor.
        ValueError: ``logits`` is not 2-d, or ``targets`` is not [N].
    """
    return _misclassified("misclassified", logits, targets)


def _misclassified(fn: str, logits: Tensor, targets: Tensor) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{fn}: argument 'logits' must be a Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"{fn}: argument 'logits' must have shape [N, classes], got {tuple(logits.shape)}")
    if isinstance(targets, Tensor) and targets.shape != (logits.shape[0],):
        raise ValueError(f"{fn}: argument 'targets' must have shape ({logits.shape[0]},), "
                         f"got {tuple(targets.shape)}")
    check_label_shape(fn, targets, logits.shape[0], name="targets")  # type and dtype; no device sync
    return logits.detach().argmax(1) != targets


def _check_eps_beta(where: str, eps, beta) -> None:
    if eps is not None and not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"{where}: argument 'eps' must be a number >= 0, got {eps!r}")
    if beta is not None and not (isinstance(beta, (int, float)) and beta > 0):
        raise ValueError(f"{where}: argument 'beta' must be a number > 0, got {beta!r}")


class _Layer:
    """One BANG layer: its module, rule, own settings, and the original forward."""

    def __init__(self, bang: "BANG", name: str, module: nn.Module, rule: BangRule):
        self.bang = bang
        self.name, self.module, self.rule = name, module, rule
        self.eps: Optional[float] = None  # None: the BANG default
        self.beta: Optional[float] = None

    @property
    def effective_eps(self) -> float:
        return self.bang.eps if self.eps is None else self.eps

    @property
    def effective_beta(self) -> float:
        return self.bang.beta if self.beta is None else self.beta

    def eta(self, kappa: Tensor, dtype: torch.dtype, factor: float = 1.0) -> Tensor:
        """factor * eta_i for this layer's kappa, as a [N] tensor of ``dtype``, with
        the batch max over all ranks under torch.distributed."""
        bang = self.bang
        n = kappa.shape[0]
        norms = _ops.per_sample_norm(kappa)
        max_norm = None
        group = bang._group()
        if group is not None:
            max_norm = norms.amax().double() if n else norms.new_zeros((), dtype=torch.float64)
            torch.distributed.all_reduce(max_norm, op=torch.distributed.ReduceOp.MAX, group=group)
        eps = bang._eps_vector(self, n, kappa.device)  # >= 0 by construction: no check, no sync
        eta = _ops.bang_eta(norms, eps, max_norm=max_norm, validate_args=False).to(dtype)
        return eta * factor if factor != 1 else eta


class _BangFunction(torch.autograd.Function):
    """y = layer(x); backward: dE/dx from kappa, dE/dW and dE/db from eta * kappa."""

    @staticmethod
    def forward(x, weight, bias, layer, ctx_data):
        return layer.rule.forward(ctx_data, x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, layer, ctx_data = inputs
        ctx.save_for_backward(x, weight)
        ctx.layer, ctx.ctx_data, ctx.has_bias = layer, ctx_data, bias is not None

    @staticmethod
    def backward(ctx, kappa):
        x, weight = ctx.saved_tensors
        layer, data = ctx.layer, ctx.ctx_data
        rule = layer.rule
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        beta = layer.effective_beta
        if layer.effective_eps != 0:
            grad_x = rule.input_grad(data, x, weight, kappa) if need_x else None
            grad_w = grad_b = None
            if need_w or need_b:
                # beta * eta_i, in the dtype of kappa
                eta = layer.eta(kappa, kappa.dtype, beta)
                n = kappa.shape[0]
                if need_w:
                    # Scale the smaller of x and kappa: mathematically the same product.
                    if x.numel() <= kappa.numel():
                        e = eta.to(x.dtype).reshape((n,) + (1,) * (x.dim() - 1))
                        grad_w = rule.weight_grad(data, x * e, weight, kappa)
                    else:
                        e = eta.reshape((n,) + (1,) * (kappa.dim() - 1))
                        grad_w = rule.weight_grad(data, x, weight, kappa * e)
                if need_b:
                    grad_b = eta.matmul(rule.bias_grad_per_sample(data, kappa))
            return grad_x, grad_w, grad_b, None, None
        # eps = 0: every eta_i is 1, the plain gradients (bit for bit), times beta.
        grad_x, grad_w, grad_b = rule.plain_grads(data, x, weight, kappa, (need_x, need_w, need_b))
        if beta != 1:
            grad_w = None if grad_w is None else grad_w * beta
            grad_b = None if grad_b is None else grad_b * beta
        return grad_x, grad_w, grad_b, None, None


@torch.compiler.disable
def _apply(x: Tensor, weight: Tensor, bias: Optional[Tensor], layer: _Layer, data) -> Tensor:
    # Opaque to torch.compile: the backward reads BANG's state when it runs (this
    # step's misclassified mask, settings changed since the forward), which a graph
    # traced ahead of time would freeze. A compiled model breaks its graph here.
    device = x.device.type
    if torch.is_autocast_enabled(device):
        # What autocast does to linear and convolution layers, done before the
        # function so that what it saves has the dtype its backward computes in.
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device, enabled=False):
            return _BangFunction.apply(x, weight, bias, layer, data)
    return _BangFunction.apply(x, weight, bias, layer, data)


def _bang_forward(layer: _Layer):
    """The forward installed on a BANG layer's module (an instance attribute, so the
    module's class, parameters and state_dict stay as they are)."""
    module = layer.module
    original = type(module).forward

    def forward(self, x, *args, **kwargs):
        if args or kwargs or not layer.bang.enabled or not torch.is_grad_enabled():
            return original(self, x, *args, **kwargs)
        x, data = layer.rule.prepare(self, x)
        return layer.rule.finish(data, _apply(x, self.weight, getattr(self, "bias", None), layer, data))

    return types.MethodType(forward, module)


# ----------------------------------------------------------------------------- BANG


LayerSpec = Union[str, nn.Module]


class BANG:
    """BANG on the layers of ``model`` (see the module docstring).

    Args:
        model: the model; its layers are changed in place (their forward), nothing
            else. ``remove()`` restores them.
        eps: the exponent scale eps (>= 0); the paper uses 0.815 for LeNet on MNIST
            and 0.855 for CIFAR-10. ``eps=0, beta=1`` is plain training.
        beta: the factor of the BANG layers' weight and bias gradients (> 0); the
            paper uses 1.0 (MNIST) and 0.4 (CIFAR-10).
        ratio: misclassified samples (see ``observe``) use ``ratio * eps``; the paper
            uses 1.0 (MNIST) and 0.5 (CIFAR-10).
        layers: the layers to apply BANG to, as names or modules; default: every
            module that has a rule (Linear, Conv1d/2d/3d, robustops.nn.P4ConvZ2 and
            P4ConvP4, and registered types). A
            model with no such module, or an empty ``layers``, is a ValueError (a
            BANG that wraps nothing would silently train the plain model).
        overrides: {layer name: {"eps": ..., "beta": ...}} per-layer settings.
        process_group: under torch.distributed, the group to take the batch max
            over; "auto" (default) makes a group of all ranks when torch.distributed
            is initialized with more than one process (a collective call: every rank
            must construct BANG), None uses the local batch only.
    """

    def __init__(self, model: nn.Module, eps: float = 0.815, beta: float = 1.0, ratio: float = 1.0, *,
                 layers: Optional[Iterable[LayerSpec]] = None,
                 overrides: Optional[Mapping[str, Mapping[str, float]]] = None,
                 process_group="auto"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"BANG: argument 'model' must be an nn.Module, got {type(model).__name__}")
        _check_eps_beta("BANG", eps, beta)
        if not (isinstance(ratio, (int, float)) and ratio >= 0):
            raise ValueError(f"BANG: argument 'ratio' must be a number >= 0, got {ratio!r}")
        self.model = model
        self.eps, self.beta, self.ratio = float(eps), float(beta), float(ratio)
        self.enabled = True
        self._misclassified: Optional[Tensor] = None
        self._eps_cache: Dict[tuple, Tensor] = {}  # per step: (eps, ratio, n, device) -> eps_i
        self.layers: Dict[str, _Layer] = {}

        names = {m: n for n, m in model.named_modules()}
        if layers is None:
            chosen = [(n, m) for n, m in model.named_modules() if rule_for(m) is not None]
        else:
            modules = dict(model.named_modules())
            chosen = []
            for spec in layers:
                if isinstance(spec, str):
                    if spec not in modules:
                        raise ValueError(f"BANG: argument 'layers': no module named {spec!r} in the model")
                    chosen.append((spec, modules[spec]))
                elif isinstance(spec, nn.Module) and spec in names:
                    chosen.append((names[spec], spec))
                else:
                    raise ValueError(f"BANG: argument 'layers': {spec!r} is not a module of the model")
        if not chosen:
            # a BANG with no layer would change nothing: most likely not what was meant
            if layers is not None:
                raise ValueError("BANG: argument 'layers' must name at least one layer, got none")
            wrapped = ", ".join(t.__name__ for t in _RULES)
            raise ValueError(f"BANG: argument 'model' has no layer BANG can wrap (it wraps {wrapped} and "
                             f"their subclasses; robustops.bang.register_rule adds a type), in a "
                             f"{type(model).__name__}")
        for name, module in chosen:
            rule = rule_for(module)
            if rule is None:
                raise TypeError(f"BANG: layer '{name}' ({type(module).__name__}) has no BANG rule; "
                                "robustops.bang.register_rule adds one")
            if getattr(module, "weight", None) is None:
                raise TypeError(f"BANG: layer '{name}' ({type(module).__name__}) has no weight")
            if "forward" in vars(module):
                raise RuntimeError(f"BANG: layer '{name}' already has its forward replaced "
                                   "(is BANG applied to it twice?)")
            self.layers[name] = _Layer(self, name, module, rule)
        for name, settings in (overrides or {}).items():
            self.configure(name, **settings)
        # after every check: "auto" may create a process group (a collective call)
        self._process_group = self._resolve_group(process_group)
        for layer in self.layers.values():
            layer.module.forward = _bang_forward(layer)

    # -- settings ------------------------------------------------------------------

    def configure(self, layer: LayerSpec, *, eps: Optional[float] = None, beta: Optional[float] = None) -> None:
        """Set a layer's own eps and/or beta; the other layers keep theirs.

        Args:
            layer: one of BANG's layers, by name (as in ``model.named_modules()``) or
                as the module.
            eps: the layer's eps (>= 0); None keeps the current one (BANG's, unless
                set before).
            beta: the layer's beta (> 0); None keeps the current one.

        Raises:
            ValueError: ``layer`` is not one of BANG's layers, or a negative ``eps`` or
                non-positive ``beta``.
        """
        _check_eps_beta(f"BANG.configure({layer!r})", eps, beta)
        target = self._layer(layer)
        if eps is not None:
            target.eps = float(eps)
        if beta is not None:
            target.beta = float(beta)

    def _layer(self, spec: LayerSpec) -> _Layer:
        for name, layer in self.layers.items():
            if spec == name or spec is layer.module:
                return layer
        raise ValueError(f"BANG: {spec!r} is not one of its layers ({', '.join(self.layers) or 'none'})")

    def settings(self) -> Dict[str, Dict[str, float]]:
        """The settings in force for every layer.

        Returns:
            {layer name: {"eps": ..., "beta": ...}}, each layer's own value or else
            BANG's.
        """
        return {n: {"eps": l.effective_eps, "beta": l.effective_beta} for n, l in self.layers.items()}

    # -- misclassified samples -------------------------------------------------------

    def observe(self, logits: Optional[Tensor], targets: Optional[Tensor] = None) -> Optional[Tensor]:
        """Mark this step's misclassified samples (top class != target); they use
        ``ratio * eps`` in the next backward passes, until the next ``observe``.

        Call it with the logits of the forward whose backward comes next (the mask
        must match that batch). The label range is not checked (no synchronization
        with the device): a label outside [0, classes) marks its sample
        misclassified.

        Args:
            logits: [N, classes] (detached here), or None to clear the mask.
            targets: int64 class labels [N]; required with ``logits``.

        Returns:
            The bool mask [N] (True: misclassified), or None when cleared.

        Raises:
            TypeError: ``logits`` is not a tensor, or ``targets`` not an int64 tensor.
            ValueError: ``targets`` is missing, ``logits`` is not 2-d, or the shapes
                do not match.
        """
        if logits is None:
            self.set_misclassified(None)
            return None
        if targets is None:
            raise ValueError("BANG.observe: argument 'targets' is required with 'logits'")
        self.set_misclassified(_misclassified("BANG.observe", logits, targets))
        return self._misclassified

    def set_misclassified(self, mask: Optional[Tensor]) -> None:
        """Mark misclassified samples with a mask of one's own (``observe`` computes
        it from logits instead); they use ``ratio * eps`` until the mask changes.

        Args:
            mask: a 1-d bool tensor [N], True for misclassified samples (detached
                here), or None to clear it. Its length must be the batch size of the
                next backward (a ValueError there otherwise).

        Raises:
            TypeError: ``mask`` is not None or a 1-d bool tensor.
        """
        if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 1):
            raise TypeError("BANG.set_misclassified: argument 'mask' must be a 1-d bool tensor, got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        self._misclassified = None if mask is None else mask.detach()
        self._eps_cache.clear()

    def _eps_vector(self, layer: "_Layer", n: int, device: torch.device) -> Tensor:
        """eps_i of every sample for ``layer`` (float64 [n]): its eps, times ratio for
        the misclassified samples. Built once per step and setting."""
        eps = layer.effective_eps
        key = (eps, self.ratio, n, device)
        cached = self._eps_cache.get(key)
        if cached is None:
            mask = self._misclassified
            if mask is not None and mask.shape != (n,):
                raise ValueError(
                    f"BANG: the misclassified mask given to observe() has {mask.shape[0]} entries but "
                    f"the batch at layer '{layer.name}' has {n}: call observe() with this step's "
                    "logits, or bang.observe(None) to clear it")
            cached = _ops.per_sample_eps("BANG", eps, n, device, mask, self.ratio)
            self._eps_cache[key] = cached
        return cached

    # -- on, off, gone -----------------------------------------------------------------

    def enable(self) -> None:
        """Switch BANG back on after ``disable()``: the wrapped layers scale their
        weight and bias gradients again from the next forward on."""
        self.enabled = True

    def disable(self) -> None:
        """Plain training until ``enable()``: the layers stay wrapped, but forwards run
        while disabled build the layers' plain autograd graph."""
        self.enabled = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """A context manager for plain training in a block: BANG is off inside, and its
        on/off state from before is restored after (on an exception too)::

            with bang.paused():
                loss = F.cross_entropy(model(x), y)   # plain gradients
                loss.backward()

        A forward run inside the block is a plain one, so its backward is plain too,
        whenever it runs.

        Yields:
            None.
        """
        was = self.enabled
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = was

    def remove(self) -> nn.Module:
        """Restore every layer's own forward and forget the layers (the BANG object
        wraps nothing after). Leaving a ``with BANG(...)`` block calls it.

        Returns:
            The model, plain again.
        """
        for layer in self.layers.values():
            if "forward" in vars(layer.module):
                del layer.module.forward
        self.layers = {}
        return self.model

    def __enter__(self) -> "BANG":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (f"BANG(eps={self.eps}, beta={self.beta}, ratio={self.ratio}, enabled={self.enabled}, "
                f"layers=[{', '.join(self.layers)}])")

    # -- distributed ---------------------------------------------------------------------

    @staticmethod
    def _resolve_group(group):
        dist = torch.distributed
        if group == "auto":
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                return dist.new_group()
            return None
        return group

    def _group(self):
        return self._process_group
