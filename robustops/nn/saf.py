"""Drop-in modules for the symmetric activation functions (Zhao & Griffin 2016)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustops._checks import check_floating, check_labels
from robustops.ops import saf as _ops

__all__ = ["MReLU", "RBF", "HybridLoss"]


class MReLU(nn.Module):
    """The mReLU activation, ``max(1 - |x|, 0)`` elementwise (robustops.ops.mrelu).

    A symmetric activation of the SAF paper (Zhao & Griffin 2016): it peaks at 1 at
    x = 0 and is 0 outside (-1, 1). No parameters.

    Shape:
        input: any shape, floating point (float16, bfloat16, float32, float64);
        output: the same shape and dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Apply mReLU elementwise.

        Args:
            x: a floating-point tensor of any shape.

        Returns:
            ``max(1 - |x|, 0)``, with the shape and dtype of ``x``.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
        """
        return _ops.mrelu(x)


class RBF(nn.Module):
    """The 1-D radial basis function ``exp(-x^2)``, elementwise (robustops.ops.rbf).

    A symmetric activation of the SAF paper (Zhao & Griffin 2016), with outputs in
    (0, 1]; the robust SAF networks put it after their convolutions and on their
    outputs (train those with HybridLoss). No parameters.

    Shape:
        input: any shape, floating point (float16, bfloat16, float32, float64);
        output: the same shape and dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Apply the RBF elementwise.

        Args:
            x: a floating-point tensor of any shape.

        Returns:
            ``exp(-x^2)``, with the shape and dtype of ``x``.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
        """
        return _ops.rbf(x)


_REDUCTIONS = ("none", "mean", "sum")


class HybridLoss(nn.Module):
    r"""The hybrid loss of the SAF paper (eq. 7), on RBF outputs y in [0, 1]:

    .. math::
        L(y, l) = -a_1 \ln\frac{y_l}{\sum_i y_i} + a_2 (1 - y_l)^p + a_3 \sum_{i \ne l} y_i^p

    The first term is a cross-entropy on log y, computed as
    ``logsumexp(log y) - log y_l`` with y clamped below at the dtype's smallest
    normal number, so it stays finite, with finite gradients, when every y is tiny
    or 0 (nonsense inputs far from every class centre). The other two terms pull the
    true class output towards 1 and the others towards 0.

    Args:
        a1, a2, a3: the weights of the three terms (non-negative).
        p: the exponent of the two power terms (p >= 1 keeps their gradients finite
           at y = 0 and y = 1).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``, as in torch's losses.

    Shape:
        input: (N, C) RBF outputs, floating point; target: (N,) integer class
        indices in [0, C) (a ValueError otherwise); output: scalar, or (N,) with
        ``reduction="none"``.
    """

    def __init__(self, a1: float = 1.0, a2: float = 1.0, a3: float = 0.0, p: float = 2.0,
                 reduction: str = "mean"):
        super().__init__()
        for name, value in (("a1", a1), ("a2", a2), ("a3", a3)):
            if not value >= 0:
                raise ValueError(f"HybridLoss: argument '{name}' must be >= 0, got {value}")
        if not p >= 1:
            raise ValueError(f"HybridLoss: argument 'p' must be >= 1, got {p}")
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"HybridLoss: argument 'reduction' must be one of {_REDUCTIONS}, got {reduction!r}"
            )
        self.a1, self.a2, self.a3, self.p = float(a1), float(a2), float(a3), float(p)
        self.reduction = reduction

    def extra_repr(self) -> str:
        """The settings shown in the module's repr: the weights, p and the reduction."""
        return f"a1={self.a1}, a2={self.a2}, a3={self.a3}, p={self.p}, reduction={self.reduction!r}"

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The hybrid loss of ``input`` against ``target``.

        Args:
            input: (N, C) RBF outputs, floating point (values in [0, 1]).
            target: (N,) integer class indices (int64, int32, int16, int8 or uint8) in
                [0, C).

        Returns:
            The loss in the dtype of ``input``, a scalar (``reduction`` "mean" or
            "sum") or the (N,) per-sample losses ("none").

        Raises:
            TypeError: ``input`` is not floating point, or ``target`` is not a tensor of
                integer class indices.
            ValueError: ``input`` is not (N, C), ``target`` is not (N,), or a label is
                outside [0, C).
        """
        check_floating("HybridLoss", "input", input)
        if input.dim() != 2:
            raise ValueError(
                f"HybridLoss: argument 'input' must have shape (N, C), got {tuple(input.shape)}"
            )
        if not isinstance(target, Tensor):
            raise TypeError(f"HybridLoss: argument 'target' must be a Tensor of class indices, "
                            f"got {type(target).__name__}")
        if target.dim() != 1 or target.shape[0] != input.shape[0]:
            raise ValueError(
                f"HybridLoss: argument 'target' must have shape ({input.shape[0]},), "
                f"got {tuple(target.shape)}"
            )
        if target.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16, torch.int8):
            raise TypeError(f"HybridLoss: argument 'target' must hold class indices, got {target.dtype}")
        # in [0, C): a negative index would be taken from the end, one >= C is out of bounds
        # (one synchronization with the device per call; skipped while torch.compile traces)
        target = check_labels("HybridLoss", target.long(), input.shape[0], input.shape[1], name="target")
        y_l = input.gather(1, target[:, None]).squeeze(1)
        loss = input.new_zeros(input.shape[0])
        if self.a1:
            log_y = input.clamp_min(torch.finfo(input.dtype).tiny).log()
            nll = torch.logsumexp(log_y, dim=1) - log_y.gather(1, target[:, None]).squeeze(1)
            loss = loss + self.a1 * nll
        if self.a2:
            loss = loss + self.a2 * (1 - y_l).pow(self.p)
        if self.a3:
            others = torch.ones_like(input).scatter_(1, target[:, None], 0)
            loss = loss + self.a3 * (input.pow(self.p) * others).sum(1)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
