"""Robustness curves: error and flip rates against noise strength and attack strength,
the nonsense-detection rate, and the accuracy on a rotated test set, batched, with a
progress bar (tqdm) for the long ones and an optional plot (matplotlib)::

    noise_curve(model, x, y, sigmas, draws=1000)      Gaussian noise (the BANG paper)
    noise_curve(..., kind="sign")                     sign noise: x + sigma * (+-1)
    attack_curve(model, x, y, strengths)              FGS strength (any robustops attack)
    nonsense_rate(model, shape, n=1000)               noise images flagged as nonsense
    nonsense_flags(model, x)                          which images are flagged as nonsense
    rotated_accuracy(model, x, y, mode="random")      accuracy on the rotated test set

The SAF paper's (Zhao & Griffin, Sec. 5, Table 2) evaluation samples::

    gaussian_noisy(x, sigma, generator)               noisy samples: clamp(x + sigma N(0, 1), 0, 1)
    gaussian_nonsense(n, shape, generator)            nonsense images: Gaussian noise min-max scaled to [0, 1]
    nonsense_samples(model, x, betas, targets=...)    nonsense images pushed by eq. 10 at each beta

    gen = torch.Generator().manual_seed(0)
    noise = gaussian_nonsense(1000, (1, 28, 28), gen)
    pushed = nonsense_samples(model, noise, [0.0, 0.1, 0.2], targets=range(10))   # {beta: images}
    error = {b: 1 - float(nonsense_flags(model, xb, nonsense_class=10).float().mean())
             for b, xb in pushed.items()}                                        # Table 2's nonsense row

Noisy and attacked images are clamped to [0, 1]. The model is put in eval mode while
a curve is measured and each submodule's mode restored after. Results are ``Curve``
objects: the values as plain lists, printable as a table, with ``plot()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from robustops._checks import check_dtype, check_floating, check_int
from robustops.attacks import FGSM, Attack, FGSMaxL1, Loss, eval_mode

__all__ = ["Curve", "noise_curve", "attack_curve", "nonsense_rate", "nonsense_flags", "rotated_accuracy",
           "confidence", "gaussian_noisy", "gaussian_nonsense", "eq10_direction", "nonsense_samples"]


@dataclass
class Curve:
    """A curve: ``series[name][i]`` is the value at ``x[i]``. ``str(curve)`` is a table
    (one row per x, one column per series).

    Attributes:
        name: the curve's title.
        x_label: what x is (the noise strength, the attack strength).
        x: the x values.
        series: {series name: the values at x}, as plain floats.
    """

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
        """Plot every series against x, with markers, a legend and the curve's name as
        the title.

        Args:
            ax: the matplotlib axes to draw on; None: a new figure's.
            **kwargs: passed to ``ax.plot`` for every series.

        Returns:
            The axes.

        Raises:
            ImportError: matplotlib is not installed (``pip install 'robustops[plot]'``).
        """
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


def _rejected(fn: str, out: Tensor, threshold: float, output: str, nonsense_class: Optional[int]) -> Tensor:
    """The nonsense verdict per sample of the outputs ``out`` [B, K]: top confidence
    below ``threshold``, or (``nonsense_class`` not None) the argmax is that class."""
    flags = confidence(out, output) < threshold
    if nonsense_class is not None:
        if nonsense_class >= out.shape[1]:
            raise ValueError(f"robustops.curves.{fn}: argument 'nonsense_class' must be a class of the model, in "
                             f"[0, {out.shape[1]}), got {nonsense_class}")
        flags |= out.argmax(1) == nonsense_class
    return flags


def _nonsense_class(fn: str, nonsense_class) -> Optional[int]:
    return None if nonsense_class is None else check_int(f"robustops.curves.{fn}", "nonsense_class",
                                                         nonsense_class, minimum=0)


@torch.no_grad()
def nonsense_rate(model: nn.Module, shape: Sequence[int], n: int = 1000, threshold: float = 0.5,
                  kind: str = "uniform", output: str = "softmax", seed: int = 0, batch_size: int = 1024,
                  device=None, dtype=torch.float32, nonsense_class: Optional[int] = None) -> float:
    """The fraction of ``n`` noise images (``kind`` "uniform" in [0, 1], or "gaussian":
    0.5 + 0.25 N(0, 1) clamped) that the model flags as nonsense: top confidence (see
    ``confidence``, ``output``) below ``threshold`` (the SAF paper's rule for a model
    without a nonsense class, threshold 0.5), or, for a model with a nonsense output
    (mean training), its argmax is ``nonsense_class`` (None: the model has none; an
    index outside the model's outputs is a ValueError naming 'nonsense_class')."""
    if kind not in ("uniform", "gaussian"):
        raise ValueError(f"robustops.curves.nonsense_rate: argument 'kind' must be 'uniform' or 'gaussian', "
                         f"got {kind!r}")
    nonsense_class = _nonsense_class("nonsense_rate", nonsense_class)
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
            flagged += int(_rejected("nonsense_rate", model(x), threshold, output, nonsense_class).sum())
    return flagged / n if n else math.nan


@torch.no_grad()
def nonsense_flags(model: nn.Module, x: Tensor, threshold: float = 0.5, output: str = "softmax",
                   nonsense_class: Optional[int] = None, batch_size: int = 1024) -> Tensor:
    """Which of the images ``x`` [N, ...] the model flags as nonsense (a bool tensor
    [N] on x's device), by nonsense_rate's rule: top confidence below ``threshold``, or
    the argmax is ``nonsense_class`` (None: the model has no nonsense output). The
    nonsense error of Table 2 of the SAF paper is 1 - the mean flag over the nonsense
    samples (``nonsense_samples``)."""
    _check_data("nonsense_flags", x, None)
    nonsense_class = _nonsense_class("nonsense_flags", nonsense_class)
    with eval_mode(model):
        flags = [_rejected("nonsense_flags", model(x[i:i + batch_size]), threshold, output, nonsense_class)
                 for i in range(0, len(x), batch_size)]
    return torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool, device=x.device)


def _check_generator(fn: str, generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"robustops.curves.{fn}: argument 'generator' must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")


def _check_unit_interval(fn: str, x: Tensor) -> None:
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"robustops.curves.{fn}: argument 'x' must hold values in [0, 1], got "
                         f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")


def _strength(fn: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"robustops.curves.{fn}: argument '{name}' must be a finite number >= 0, got {value!r}")
    return float(value)


def gaussian_noisy(x: Tensor, sigma: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """The SAF paper's noisy samples: clamp(x + sigma N(0, 1), 0, 1), a fresh standard
    normal per value, in x's dtype and on x's device (``generator``, on that device,
    makes the draw reproducible; None: the global generator). ``x``: images in [0, 1]
    (any shape); ``sigma`` >= 0 is the paper's strength beta.

    PSNR: without clamping the MSE is sigma^2, so the PSNR is 20 log10(1 / sigma) dB,
    the paper's PSNR row (20 dB at beta = 0.1) for images away from 0 and 1. Clamping
    only shortens steps, so it raises the PSNR: a pixel at exactly 0 or 1 keeps half
    of its noise (the half pointing into [0, 1]), MSE sigma^2 / 2, so for MNIST-like
    images, nearly all pixels at 0 or 1, the PSNR is about 3 dB above the row (23.0
    dB at sigma 0.1), and the surviving noise there is one-sided (it brightens the
    background and darkens the strokes)."""
    fn = "gaussian_noisy"
    check_floating(f"robustops.curves.{fn}", "x", x)
    sigma = _strength(fn, "sigma", sigma)
    _check_generator(fn, generator)
    _check_unit_interval(fn, x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp(0, 1)


def gaussian_nonsense(n: int, shape: Sequence[int], generator: Optional[torch.Generator] = None, device=None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` nonsense images ``[n, *shape]``, the SAF paper's "stationary Gaussian noise,
    shifted and scaled to cover the range 0~255" in [0, 1] units: i.i.d. (white, the
    simplest stationary) standard normal noise per value, then each image shifted and
    scaled on its own, over all its channels and pixels, so that its smallest value is
    exactly 0 and its largest exactly 1 (min-max scaling: "cover the range" read as
    spanning the whole range, not as a clamp; the values between are Gaussian-shaped,
    most of them near the middle, about 0.5 +- 0.15 for a 28 x 28 image).

    ``generator`` makes the draw reproducible (None: the global generator); ``device``
    (default: the generator's device, else the CPU) and ``dtype`` (floating point)
    give the images' device and dtype. The noise is drawn in float64 for float64
    images and in float32 otherwise, then scaled and cast (0 and 1 stay exact). An
    image needs at least 2 values (a ValueError naming 'shape')."""
    fn = "robustops.curves.gaussian_nonsense"
    n = check_int(fn, "n", n, minimum=0)
    if isinstance(shape, (int, str, bytes)) or not isinstance(shape, Iterable):
        raise TypeError(f"{fn}: argument 'shape' must be a sequence of ints (one image's shape), got "
                        f"{type(shape).__name__}")
    shape = tuple(check_int(fn, "shape", d, minimum=1) for d in shape)
    if math.prod(shape) < 2:
        raise ValueError(f"{fn}: argument 'shape' must give images of at least 2 values (min-max scaling of one "
                         f"value is undefined), got {list(shape)}")
    dtype = check_dtype(fn, dtype)
    _check_generator("gaussian_nonsense", generator)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    draw = torch.float64 if dtype == torch.float64 else torch.float32
    z = torch.randn((n,) + shape, generator=generator, device=device, dtype=draw)
    view = (-1,) + (1,) * len(shape)
    lo, hi = (v.view(view) for v in torch.aminmax(z.flatten(1), dim=1))
    return ((z - lo) / (hi - lo)).to(dtype)


def eq10_direction(model: nn.Module, x: Tensor, y: Optional[Tensor] = None, loss_fn: Optional[Loss] = None,
                   targets: Optional[Iterable[int]] = None, batch_size: int = 1024) -> Tuple[Tensor, Tensor]:
    """The SAF paper's eq. 10 step as a direction: per pixel +1, -1 or 0, the sign of
    robustops.attacks.FGSMaxL1's step (with ``loss_fn`` and ``targets``; ``y`` None:
    no labels, ``targets`` required) wherever the clamp lets the pixel move, and the
    zero-gradient flag per image. The direction does not depend on beta, so
    clamp(x + beta d, 0, 1) equals FGSMaxL1(model, beta, ...)(x, y) for every beta >= 0.
    Computed once, as sign(x_1 - x) with x_1 the attack at beta = 1, in batches of
    ``batch_size``."""
    attack = FGSMaxL1(model, 1.0, loss_fn=loss_fn, targets=targets)
    steps, zero = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        result = attack.evaluate(xb, None if y is None else y[i:i + batch_size])
        steps.append((result.x_adv - xb).sign())
        zero.append(result.zero_gradient)
    return torch.cat(steps), torch.cat(zero)


def nonsense_samples(model: nn.Module, x: Tensor, betas: Sequence[float], loss_fn: Optional[Loss] = None,
                     targets: Optional[Iterable[int]] = None, batch_size: int = 1024) -> Dict[float, Tensor]:
    """The SAF paper's nonsense samples (eq. 10): the nonsense images ``x`` (e.g.
    ``gaussian_nonsense``) pushed by robustops.attacks.FGSMaxL1 without labels, each
    towards its most attractive class of ``targets`` (None: every output of the model;
    for a mean-trained model pass the meaningful classes, e.g. ``range(K - 1)``),
    with the attack's loss ``loss_fn`` (None: cross-entropy on logits).

    Returns {beta: images} for every beta of ``betas`` (finite, >= 0; beta 0 gives the
    images themselves), the images ``clamp(x + beta d, 0, 1)`` with d the attack's
    step direction (``eq10_direction``, computed once: it does not depend on beta), in
    batches of ``batch_size``. Each equals ``FGSMaxL1(model, beta, loss_fn,
    targets)(x)`` exactly (the tests check this)."""
    fn = "nonsense_samples"
    _check_data(fn, x, None)
    values = [_strength(fn, "betas", b) for b in betas]
    batch_size = check_int(f"robustops.curves.{fn}", "batch_size", batch_size, minimum=1)
    if not len(x):
        return {beta: x.clone() for beta in values}
    if targets is None:
        with eval_mode(model), torch.no_grad():
            targets = range(model(x[:1]).shape[1])
    direction, _ = eq10_direction(model, x, None, loss_fn, targets, batch_size)
    return {beta: (x + beta * direction).clamp(0, 1) for beta in values}


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
