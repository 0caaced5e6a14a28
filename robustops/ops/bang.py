"""BANG (Rozsa, Günther, Boult 2018): the Python face of the per-sample gradient
ops.

    per_sample_norm(x)                      ||x_i||_2 over all dims but the first
    bang_eta(norms, eps, ...)               eta_i = (m / n_i)^(eps_i (1 - n_i / m))
    bang_scale(grad, eps, ...)              (eta_i * grad_i, n_i), fused: two passes

Each is robustops::<op> (schema in csrc/ops.cpp, kernels in csrc/cpu/bang.cpp and
csrc/cuda/bang.cu; math in csrc/include/robustops/bang.h) with a fake kernel for
torch.compile and a fallback to robustops.reference.bang. Norms are accumulated in
float64 and returned in float32 (float64 for float64 input): exact for any float32,
float16 or bfloat16 gradient, and for float64 gradients with entries between about
1e-154 and 1e154 (beyond, the squares overflow or vanish in float64). ``eps`` is a number or
one value per sample; with ``misclassified`` (a bool mask) and ``ratio``, the
misclassified samples use ``ratio * eps``. ``max_norm`` is the batch max m when the
batch is part of a larger one (data parallelism); m = max(max_norm, local max).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from robustops._checks import check_floating
from robustops._extension import Op, register
from robustops.reference import bang as _ref

__all__ = ["per_sample_norm", "bang_eta", "bang_scale", "per_sample_eps"]

_per_sample_norm = Op("per_sample_norm", reference=_ref.per_sample_norm)
_bang_eta = Op("bang_eta", reference=_ref.bang_eta)
_bang_scale = Op("bang_scale", reference=_ref.bang_scale)

Number = Union[int, float]


def _check_batch(op: str, arg: str, x) -> None:
    check_floating(f"robustops.ops.{op}", arg, x)
    if x.dim() < 1:
        raise ValueError(f"robustops.ops.{op}: argument '{arg}' must have a batch dimension first, [N, ...]; "
                         "got a 0-d tensor")


def per_sample_eps(op: str, eps: Union[Number, Tensor], n: int, device: torch.device,
                   misclassified: Optional[Tensor] = None, ratio: Number = 1.0,
                   validate_args: bool = True) -> Tensor:
    """eps_i of every sample as a float64 tensor [n]: ``eps`` (a number or [n]
    values, all >= 0), times ``ratio`` where ``misclassified`` is True.

    ``validate_args=False`` skips the check that a tensor ``eps`` is >= 0, the one
    that reads its values (a synchronization on a GPU)."""
    if isinstance(eps, Tensor):
        if eps.shape != (n,):
            raise ValueError(f"robustops.ops.{op}: argument 'eps' must be a number or have shape ({n},), "
                             f"got {tuple(eps.shape)}")
        if not eps.is_floating_point():
            raise TypeError(f"robustops.ops.{op}: argument 'eps' must be floating point, got {eps.dtype}")
        eps_t = eps.to(device=device, dtype=torch.float64)
        if validate_args and not torch.compiler.is_compiling() and bool((eps_t < 0).any()):
            raise ValueError(f"robustops.ops.{op}: argument 'eps' must be >= 0")
    else:
        if not eps >= 0:
            raise ValueError(f"robustops.ops.{op}: argument 'eps' must be >= 0, got {eps}")
        eps_t = torch.full((n,), float(eps), dtype=torch.float64, device=device)
    if not ratio >= 0:
        raise ValueError(f"robustops.ops.{op}: argument 'ratio' must be >= 0, got {ratio}")
    if misclassified is not None:
        if not isinstance(misclassified, Tensor) or misclassified.dtype != torch.bool:
            raise TypeError(f"robustops.ops.{op}: argument 'misclassified' must be a bool tensor, got "
                            f"{getattr(misclassified, 'dtype', type(misclassified).__name__)}")
        if misclassified.shape != (n,):
            raise ValueError(f"robustops.ops.{op}: argument 'misclassified' must have shape ({n},) "
                             f"(one flag per sample), got {tuple(misclassified.shape)}")
        eps_t = torch.where(misclassified.to(device), eps_t * ratio, eps_t)
    return eps_t


def _max_norm(op: str, max_norm, device: torch.device) -> Optional[Tensor]:
    if max_norm is None:
        return None
    if isinstance(max_norm, Tensor):
        if max_norm.numel() != 1:
            raise ValueError(f"robustops.ops.{op}: argument 'max_norm' must hold one value, "
                             f"got shape {tuple(max_norm.shape)}")
        return max_norm.to(device=device, dtype=torch.float64).reshape(())
    return torch.tensor(float(max_norm), dtype=torch.float64, device=device)


def per_sample_norm(x: Tensor) -> Tensor:
    """The L2 norm of every sample x[i] (all dims but the first), accumulated in
    float64; float32 result (float64 for float64 input). Differentiable."""
    _check_batch("per_sample_norm", "x", x)
    return _per_sample_norm.dispatch(x.device.type, x)


def bang_eta(norms: Tensor, eps: Union[Number, Tensor], *, misclassified: Optional[Tensor] = None,
             ratio: Number = 1.0, max_norm: Union[None, Number, Tensor] = None,
             validate_args: bool = True) -> Tensor:
    """BANG's per-sample factor eta_i = (m / n_i)^rho_i, rho_i = eps_i (1 - n_i / m),
    from the per-sample gradient norms n_i ([N]); 1 where n_i = 0.

    ``validate_args=False`` skips the check that a tensor ``eps`` is >= 0 (it reads
    the values: a synchronization on a GPU), for a caller whose eps is so by
    construction (robustops.bang, in the backward pass)."""
    _check_batch("bang_eta", "norms", norms)
    if norms.dim() != 1:
        raise ValueError(f"robustops.ops.bang_eta: argument 'norms' must have shape [N], got {tuple(norms.shape)}")
    eps_t = per_sample_eps("bang_eta", eps, norms.shape[0], norms.device, misclassified, ratio, validate_args)
    m = _max_norm("bang_eta", max_norm, norms.device)
    return _bang_eta.dispatch(norms.device.type, norms, eps_t, m)


def bang_scale(grad: Tensor, eps: Union[Number, Tensor], *, misclassified: Optional[Tensor] = None,
               ratio: Number = 1.0, max_norm: Union[None, Number, Tensor] = None) -> tuple:
    """BANG's per-sample scaling of a gradient [N, ...], fused: returns
    ``(eta_i * grad_i, n_i)`` where n_i = ||grad_i||_2. Two passes over ``grad``
    (norms, then scale). Not differentiable (it is applied to gradients)."""
    _check_batch("bang_scale", "grad", grad)
    eps_t = per_sample_eps("bang_scale", eps, grad.shape[0], grad.device, misclassified, ratio)
    m = _max_norm("bang_scale", max_norm, grad.device)
    return _bang_scale.dispatch(grad.device.type, grad, eps_t, m)


def _blocks_layout_like(grad: Tensor) -> Tensor:
    """An empty tensor in the layout the kernels give the scaled gradient: grad's own
    when it is contiguous or channels-last (every sample's block contiguous), else
    contiguous (csrc/include/robustops/bang_host.h)."""
    formats = [torch.contiguous_format]
    formats += [torch.channels_last] if grad.dim() == 4 else []
    formats += [torch.channels_last_3d] if grad.dim() == 5 else []
    if any(grad.is_contiguous(memory_format=f) for f in formats):
        return torch.empty_like(grad)
    return torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)


@register
def _register() -> None:
    def norm_dtype(x):
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    @torch.library.register_fake("robustops::per_sample_norm")
    def _(x):
        return x.new_empty((x.shape[0],), dtype=norm_dtype(x))

    @torch.library.register_fake("robustops::bang_eta")
    def _(norms, eps, max_norm=None):
        return torch.empty_like(norms, memory_format=torch.contiguous_format)

    @torch.library.register_fake("robustops::bang_scale")
    def _(grad, eps, max_norm=None):
        return _blocks_layout_like(grad), grad.new_empty((grad.shape[0],), dtype=norm_dtype(grad))

    # d n_i / d x_i = x_i / n_i (0 where n_i = 0).
    def save_x_and_norms(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    def norm_backward(ctx, grad):
        x, norms = ctx.saved_tensors
        shape = (-1,) + (1,) * (x.dim() - 1)
        factor = torch.where(norms > 0, grad / norms, torch.zeros_like(norms))
        return (x * factor.reshape(shape).to(x.dtype)).to(x.dtype)

    torch.library.register_autograd("robustops::per_sample_norm", norm_backward,
                                    setup_context=save_x_and_norms)

    def not_differentiable(name):
        def backward(ctx, *grads):
            raise RuntimeError(
                f"robustops::{name} is not differentiable: it is applied to gradients. "
                "Detach its inputs (robustops.bang applies it inside the backward pass).")
        return backward

    for name in ("bang_eta", "bang_scale"):
        torch.library.register_autograd(f"robustops::{name}", not_differentiable(name),
                                        setup_context=lambda ctx, inputs, output: None)
