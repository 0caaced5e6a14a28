"""Pure-PyTorch reference of BANG (Rozsa, Günther, Boult 2018).

Two things live here:

* the pure-PyTorch version of the fused ops of robustops.ops.bang
  (``per_sample_norm``, ``bang_eta``, ``bang_scale``): the benchmark baseline and
  the fallback when the compiled kernels are missing;
* ``bang_gradients``, equation (6) of the paper computed literally from per-sample
  gradients with torch.func: the oracle the BANG layers are tested against.

For a layer with output y and kappa_i = dE/dy_i (sample i's block of the gradient
of the batch loss E w.r.t. y), n_i = ||kappa_i||_2 and m = max_j n_j::

    eta_i = (m / n_i)^rho_i,   rho_i = eps_i (1 - n_i / m),
    dW    = beta * sum_i eta_i * dE/dW|_i,

where dE/dW|_i is the contribution of sample i to the layer's weight (and bias)
gradient. eta_i = 1 when n_i = 0. Norms are accumulated in float64.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = ["per_sample_norm", "bang_eta", "bang_scale", "bang_gradients"]


def _norm_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def per_sample_norm(x: Tensor) -> Tensor:
    """||x_i||_2 of every sample (dim 0), accumulated in float64; differentiable, with
    the gradient x_i / ||x_i|| (0 for a zero sample), as the compiled op's."""
    n = x.shape[0]
    flat = x.reshape(n, x.numel() // n if n else 0)
    return torch.linalg.vector_norm(flat.double(), dim=1).to(_norm_dtype(x))


def bang_eta(norms: Tensor, eps: Tensor, max_norm: Optional[Tensor] = None) -> Tensor:
    """eta_i from the norms, the per-sample eps and (optionally) a max over a larger
    batch; m = max(max_norm, max_i n_i)."""
    n = norms.double()
    m = n.nan_to_num(0.0).amax() if n.numel() else n.new_zeros(())
    if max_norm is not None:
        m = torch.maximum(m, max_norm.double().reshape(()))
    rho = eps.double() * (1 - n / m)
    eta = torch.exp(rho * (torch.log(m) - torch.log(n)))
    keep = (n > 0) & (m > 0)
    return torch.where(keep, eta, torch.ones_like(eta)).to(norms.dtype)


def bang_scale(grad: Tensor, eps: Tensor, max_norm: Optional[Tensor] = None) -> tuple:
    """(eta_i * grad_i, n_i): the fused op, in plain torch ops."""
    norms = per_sample_norm(grad)
    eta = bang_eta(norms.double(), eps, max_norm)
    compute = torch.float64 if grad.dtype == torch.float64 else torch.float32
    shape = (-1,) + (1,) * (grad.dim() - 1)
    scaled = (grad.to(compute) * eta.to(compute).reshape(shape)).to(grad.dtype)
    return scaled, norms


LayerSpec = Union[str, nn.Module]


def bang_gradients(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    layers: Sequence[str],
    eps: float,
    beta: float = 1.0,
    ratio: float = 1.0,
    misclassified: Optional[Tensor] = None,
    overrides: Optional[Mapping[str, Mapping[str, float]]] = None,
) -> dict:
    """Equation (6), literally: the BANG gradient of every parameter of ``model``.

    ``loss_fn(output, target)`` is the per-sample loss of one sample (a batch of
    one); the batch loss is their mean. ``layers`` names the BANG layers; for each,
    the per-sample gradient w.r.t. its output (kappa_i) and the per-sample gradients
    of its parameters come from torch.func (vmap of grad over the samples, with a
    zero "probe" added to each layer's output), and the layer's parameter gradients
    are beta * sum_i eta_i * grad_i with eps_i = eps (ratio * eps for misclassified
    samples). ``overrides`` maps layer names to their own {"eps", "beta"}. Other
    parameters get the plain gradient. The model must not couple samples (no batch
    norm in training mode). Returns {parameter name: gradient}.
    """
    from torch.func import functional_call, grad, vmap

    overrides = overrides or {}
    modules = dict(model.named_modules())
    params = {k: v.detach() for k, v in model.named_parameters()}
    n = inputs.shape[0]

    # The shape of every BANG layer's output for one sample, for the probes.
    shapes: dict = {}
    hooks = [modules[name].register_forward_hook(
        lambda mod, args, out, name=name: shapes.__setitem__(name, out.shape[1:]))
        for name in layers]
    try:
        with torch.no_grad():
            model(inputs[:1])
    finally:
        for h in hooks:
            h.remove()

    def sample_loss(p, probes, x, t):
        handles = [modules[name].register_forward_hook(
            lambda mod, args, out, name=name: out + probes[name]) for name in layers]
        try:
            out = functional_call(model, p, (x[None],))
        finally:
            for h in handles:
                h.remove()
        return loss_fn(out, t[None]) / n  # this sample's share of the mean batch loss

    probes = {name: inputs.new_zeros((1,) + tuple(shapes[name])) for name in layers}
    per_sample = vmap(grad(sample_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))
    param_grads, kappas = per_sample(params, probes, inputs, targets)

    mis = torch.zeros(n, dtype=torch.bool, device=inputs.device) if misclassified is None else misclassified
    result = {name: g.sum(0) for name, g in param_grads.items()}
    for layer in layers:
        layer_eps = overrides.get(layer, {}).get("eps", eps)
        layer_beta = overrides.get(layer, {}).get("beta", beta)
        eps_i = torch.full((n,), float(layer_eps), dtype=torch.float64, device=inputs.device)
        eps_i = torch.where(mis, eps_i * ratio, eps_i)
        eta = bang_eta(per_sample_norm(kappas[layer]).double(), eps_i)
        prefix = f"{layer}." if layer else ""
        for pname in (f"{prefix}weight", f"{prefix}bias"):
            if pname in param_grads:
                g = param_grads[pname]
                weights = eta.to(g.dtype).reshape((-1,) + (1,) * (g.dim() - 1))
                result[pname] = layer_beta * (weights * g).sum(0)
    return result
