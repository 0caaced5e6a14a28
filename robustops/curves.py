"""Robustness curves: error and flip rates against noise strength and attack strength,
the nonsense-detection rate, and the accuracy on a rotated test set, batched, with a
progress bar (tqdm) for the long ones and an optional plot (matplotlib).

    noise_curve(model, x, y, sigmas, draws=1000)      Gaussian noise (the BANG paper)
    noise_curve(..., kind="sign")                     sign noise: x + sigma * (+-1)
    attack_curve(model, x, y, strengths)              FGS strength (any robustops attack)
    nonsense_rate(model, shape, n=1000)               noise images flagged as nonsense
    rotated_accuracy(model, x, y, mode="random")      accuracy on the rotated test set

Noisy and attacked images are clamped to [0, 1]. The model is put in eval mode while
a curve is measured and each submodule's mode restored after. Results are ``Curve``
objects: the values as plain lists, printable as a table, with ``plot()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from robustops.attacks import FGSM, Attack, eval_mode

__all__ = ["Curve", "noise_curve", "attack_curve", "nonsense_rate", "rotated_accuracy", "confidence"]


@dataclass
class Curve:
    """A curve: ``series[name][i]`` is the value at ``x[i]``."""

    name: str
    x_label: str
    x: List[float]
    series: Dict[str, List[float]] = field(default_factory=dict)

    def __str__(self) -> str:
        names = list(self.series)
        head = [self.x_label] + names
        rows = [[f"{v:g}"] + [f"{self.series[n][i]:.4f}" for n in names] for i, v in enumerate(self.x)]
        widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(head)]
        lines = [self.name, "  ".join(h.rjust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)

    def plot(self, ax=None, **kwargs):
        """Plot every series against x (matplotlib, imported here); returns the axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - matplotlib is installed with the tests
            raise ImportError("robustops.curves.Curve.plot needs matplotlib: pip install 'robustops[plot]'") from e
        if ax is None:
            _, ax = plt.subplots()
        for name, ys in self.series.items():
            ax.plot(self.x, ys, marker="o", label=name, **kwargs)
        ax.set_xlabel(self.x_label)
        ax.set_title(self.name)
        ax.legend()
        return ax


def _progress(iterable, total: int, desc: str, progress: Optional[bool]):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not progress if progress is not None else None,
                leave=False)


def _check_data(fn: str, x: Tensor, y: Optional[Tensor]) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"robustops.curves.{fn}: argument 'x' must be a floating-point batch [N, ...]")
    if y is not None and (not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != x.shape[:1]):
        raise ValueError(f"robustops.curves.{fn}: argument 'y' must be an int64 tensor of shape [{x.shape[0]}]")


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def noise_curve(model: nn.Module, x: Tensor, y: Tensor, sigmas: Sequence[float], draws: int = 1000,
                kind: str = "gaussian", batch_size: int = 4096, seed: int = 0,
                progress: Optional[bool] = None) -> Curve:
    """Error and flip rates against noise strength: for every sigma, ``draws`` noisy
    copies of every image (``kind`` "gaussian": x + sigma N(0, 1); "sign": x + sigma
    (+-1) with random signs), clamped to [0, 1]. "error": the fraction of noisy copies
    misclassified; "flip": the fraction whose prediction differs from the clean
    image's (over all images and draws). ``progress``: a tqdm bar (None: only on a
    terminal)."""
    _check_data("noise_curve", x, y)
    if kind not in ("gaussian", "sign"):
        raise ValueError(f"robustops.curves.noise_curve: argument 'kind' must be 'gaussian' or 'sign', got {kind!r}")
    if not (isinstance(draws, int) and draws >= 1):
        raise ValueError(f"robustops.curves.noise_curve: argument 'draws' must be an int >= 1, got {draws!r}")
    sigmas = [float(s) for s in sigmas]
    if any(not (s >= 0 and math.isfinite(s)) for s in sigmas):
        raise ValueError(f"robustops.curves.noise_curve: argument 'sigmas' must be finite and >= 0, got {sigmas}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    errors, flips = [], []
    with eval_mode(model):
        clean = _predict(model, x, batch_size)
        per_chunk = max(1, batch_size // draws)  # images per chunk, each with all its draws
        chunks = range(0, len(x), per_chunk)
        for sigma in _progress(sigmas, len(sigmas), f"{kind} noise", progress):
            wrong = flipped = 0
            for i in chunks:
                xi = x[i:i + per_chunk]
                rep = xi.repeat_interleave(draws, 0)
                if kind == "gaussian":
                    noise = torch.randn(rep.shape, generator=gen, device=x.device, dtype=x.dtype)
                else:
                    noise = torch.randint(0, 2, rep.shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1
                pred = _predict(model, (rep + sigma * noise).clamp(0, 1), batch_size)
                wrong += int((pred != y[i:i + per_chunk].repeat_interleave(draws)).sum())
                flipped += int((pred != clean[i:i + per_chunk].repeat_interleave(draws)).sum())
            total = len(x) * draws
            errors.append(wrong / total)
            flips.append(flipped / total)
    return Curve(f"{kind} noise ({draws} draws per image)", "sigma", sigmas, {"error": errors, "flip": flips})


def attack_curve(model: nn.Module, x: Tensor, y: Tensor, strengths: Sequence[float],
                 attack: Callable[[nn.Module, float], Attack] = lambda m, eps: FGSM(m, eps),
                 batch_size: int = 1024, progress: Optional[bool] = None) -> Curve:
    """Success rate (over the correctly classified images) and error rate against
    attack strength: ``attack(model, strength)`` builds the attack (default FGSM with
    eps = strength)."""
    _check_data("attack_curve", x, y)
    strengths = [float(s) for s in strengths]
    success, error = [], []
    for s in _progress(strengths, len(strengths), "attack strength", progress):
        atk = attack(model, s)
        ok = n_correct = wrong = 0
        for i in range(0, len(x), batch_size):
            r = atk.evaluate(x[i:i + batch_size], y[i:i + batch_size])
            ok += int(r.success.sum())
            n_correct += int(r.correct.sum())
            wrong += int((~(r.correct & ~r.success)).sum())
        success.append(ok / n_correct if n_correct else math.nan)
        error.append(wrong / len(x))
    return Curve("attack strength", "strength", strengths, {"success rate": success, "error": error})


def confidence(output: Tensor, kind: str = "softmax") -> Tensor:
    """Top confidence per sample: the largest softmax probability of logits
    ("softmax"), or the largest output itself for models whose outputs are already
    in [0, 1], such as the RBF nets ("identity")."""
    if kind == "softmax":
        return output.softmax(1).amax(1)
    if kind == "identity":
        return output.amax(1)
    raise ValueError(f"robustops.curves.confidence: argument 'kind' must be 'softmax' or 'identity', got {kind!r}")


@torch.no_grad()
def nonsense_rate(model: nn.Module, shape: Sequence[int], n: int = 1000, threshold: float = 0.5,
                  kind: str = "uniform", output: str = "softmax", seed: int = 0, batch_size: int = 1024,
                  device=None, dtype=torch.float32) -> float:
    """The fraction of ``n`` noise images (``kind`` "uniform" in [0, 1], or "gaussian":
    0.5 + 0.25 N(0, 1) clamped) that the model flags as nonsense: top confidence (see
    ``confidence``, ``output``) below ``threshold``."""
    if kind not in ("uniform", "gaussian"):
        raise ValueError(f"robustops.curves.nonsense_rate: argument 'kind' must be 'uniform' or 'gaussian', got {kind!r}")
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    flagged = 0
    with eval_mode(model):
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            size = (m,) + tuple(shape)
            if kind == "uniform":
                x = torch.rand(size, generator=gen, device=device, dtype=dtype)
            else:
                x = (0.5 + 0.25 * torch.randn(size, generator=gen, device=device, dtype=dtype)).clamp(0, 1)
            flagged += int((confidence(model(x), output) < threshold).sum())
    return flagged / n if n else math.nan


@torch.no_grad()
def rotated_accuracy(model: nn.Module, x: Tensor, y: Tensor, mode: str = "random", seed: int = 0,
                     batch_size: int = 1024) -> float:
    """Accuracy on the test set rotated by robustops.data.rotated (``mode`` "random":
    uniform angles; "p4": multiples of 90 degrees)."""
    from robustops.data import rotated

    _check_data("rotated_accuracy", x, y)
    xr, _ = rotated(x, mode=mode, seed=seed)
    with eval_mode(model):
        return float((_predict(model, xr, batch_size) == y).float().mean())
