"""saf: plain, RBF and mReLU networks (robustops.models.lenet_saf for one-channel
images, cifar_saf for colour ones), each trained as it is, with random training and
with mean training, on the embedded digits at 28x28: error on clean, adversarial,
noisy and nonsense inputs over a grid of strengths beta, with the PSNR of the
adversarial and noisy images (the SAF paper's Table 2 layout).

Claim (Zhao & Griffin 2016, "Suppressing the Unusual"): CNNs with symmetric
activation functions (mReLU, the 1-D RBF; RBF outputs trained with the hybrid loss)
reject nonsense inputs and are much more robust to adversarial (FGS) and noisy inputs
than plain ReLU CNNs, at a small cost in clean accuracy; mean and random training add
further robustness. Judged here, fixed before the runs: of the two symmetric networks
without extra training (RBF, mReLU), take the one with the lower adversarial error
averaged over the beta grid; the claim's direction holds when that mean adversarial
error is below the plain network's AND its nonsense error is below the plain
network's. The noisy errors and the effect of random and mean training are reported
(``results["comparisons"]``) but are not part of the verdict.

Models. ``plain`` is the ReLU network with linear outputs, trained with cross-entropy;
``RBF`` and ``mReLU`` have batch norm and the symmetric activation after each
convolution and an RBF on the outputs, trained with robustops.nn.HybridLoss() (eq. 7,
a1 = a2 = 1, a3 = 0, p = 2). Every network is trained from the same seed for the same
number of epochs with Adam (lr 1e-3), batches of 64: 10 epochs at the quick scale,
enough for each to reach a clean error of a few % on the digits (the networks with
RBF outputs sit on a plateau near chance for their first few epochs: all their
outputs start close to the flat top of exp(-z^2)).

- random training (robustops.defences.random_training_batch): uniform noise in
  [-0.1, 0.1] on a random half of every batch (the library's defaults).
- mean training (robustops.defences.mean_training_batch): the network gets one extra
  output, the "nonsense" class (index = number of classes); every batch of B images
  is joined by B // classes (at least 1: about as many as an average class) copies of
  the training set's mean image plus Gaussian noise of standard deviation 0.1 (the
  library's default), labelled nonsense. The plain network trains on the 11 logits
  with cross-entropy, the RBF and mReLU networks on the 11 RBF outputs with the same
  hybrid loss (the nonsense output is one more RBF unit).

Prediction: the argmax over all the outputs. On digit images (clean, adversarial,
noisy), a prediction of the nonsense class is an error like any other wrong class
(``adversarial_rejected`` and ``noisy_rejected`` record the fraction of the images
rejected that way). Confidence: the largest softmax probability for the plain
networks, the largest output itself for the RBF-output networks
(robustops.curves.confidence).

Evaluation, on the test set:

- clean error: the fraction of test images misclassified.
- adversarial error at beta: the fraction of x_adv misclassified, x_adv the SAF
  paper's FGS variant (eq. 10, robustops.attacks.FGSMaxL1) against the network as
  trained, with its own training loss: cross-entropy for the plain networks, the
  hybrid loss (reduction "none") for the RBF-output ones; for mean-trained networks
  the wrong classes the attack chooses from include the nonsense class. The attack's
  step direction does not depend on beta: it is computed once per network, as
  sign(x_1 - x) with x_1 the attack at beta = 1 (its step sign wherever the clamp
  lets a pixel move), and x_adv = clamp(x + beta sign(x_1 - x), 0, 1) for each beta,
  which equals FGSMaxL1(model, beta)(x, y) (the tests check this). Images whose input
  gradient is zero are left as they are (``zero_gradient`` records the fraction).
- noisy error at beta: the fraction of clamp(x + beta u, 0, 1) misclassified, u
  uniform in [-1, 1] per pixel, one draw per test image, the same draw for every
  network and every beta (uniform noise, like random training: the paper's noise is
  not pinned down here).
- nonsense error: the fraction of uniform-noise images in [0, 1] (drawn as
  robustops.curves.nonsense_rate draws them, same seed for every network) that the
  network does NOT reject; an image is rejected when its top confidence is below 0.5
  or (mean-trained networks) its prediction is the nonsense class. For networks
  without the nonsense output this is 1 - nonsense_rate(model, shape, n, 0.5).
- PSNR (robustops.metrics.psnr, in dB): the mean over the images that changed of
  the per-image PSNR of x_adv (per network; the table's PSNR row averages the
  networks) and of the noisy images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops.attacks import FGSMaxL1, eval_mode
from robustops.curves import confidence
from robustops.data import loader
from robustops.defences import mean_training_batch, random_training_batch
from robustops.experiments.common import ExperimentResult, Settings, load_data, progress_bar
from robustops.metrics import psnr
from robustops.models import cifar_saf, lenet_saf
from robustops.nn import HybridLoss

CLAIM = ("CNNs with symmetric activation functions (mReLU, RBF) reject nonsense inputs and are much more robust "
         "to adversarial (FGS) and noisy inputs than plain ReLU CNNs, at a small cost in clean accuracy; mean "
         "and random training add further robustness")

BETAS = [0.1, 0.2, 0.3]
THRESHOLD = 0.5                 # top confidence below it: rejected as nonsense
RANDOM_DELTA, RANDOM_FRACTION = 0.1, 0.5
MEAN_NOISE = 0.1
# scale -> (epochs, batches per epoch or None, test images evaluated or None, nonsense images)
SCALE = {"tiny": (1, 2, 16, 32), "quick": (10, None, None, 1000), "full": (30, None, None, 10000)}
ACTIVATIONS = {"plain": "plain", "RBF": "rbf", "mReLU": "mrelu"}
TRAINING = {"": "none", " + random": "random", " + mean": "mean"}
MODELS = {f"{a}{t}": (kind, training) for a, kind in ACTIVATIONS.items() for t, training in TRAINING.items()}


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch: int = 512) -> Tensor:
    """The prediction per image: the argmax over all the outputs (the nonsense class too)."""
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def _mean_psnr(x: Tensor, x_new: Tensor) -> Optional[float]:
    """The mean per-image PSNR (dB) over the images that changed (None: none did)."""
    values = psnr(x, x_new)
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else None


@torch.no_grad()
def _nonsense_error(model: nn.Module, shape: Sequence[int], n: int, output: str,
                    nonsense_class: Optional[int] = None, seed: int = 0, batch_size: int = 1024,
                    device=None) -> float:
    """The fraction of ``n`` uniform-noise images (drawn as robustops.curves.
    nonsense_rate draws them) that are NOT rejected: top confidence >= THRESHOLD and
    the prediction is not ``nonsense_class`` (None: the model has no nonsense output)."""
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    accepted = 0
    with eval_mode(model):
        for i in range(0, n, batch_size):
            x = torch.rand((min(batch_size, n - i),) + tuple(shape), generator=gen, device=device)
            out = model(x)
            ok = confidence(out, output) >= THRESHOLD
            if nonsense_class is not None:
                ok &= out.argmax(1) != nonsense_class
            accepted += int(ok.sum())
    return accepted / n if n else math.nan


def _adversarial_direction(model: nn.Module, x: Tensor, y: Tensor, loss_fn, batch: int = 512):
    """The FGSMaxL1 step sign per pixel (+1, -1 or 0, where the attack moves the pixel
    up, down or not at all) and the zero-gradient flag per image. The step does not
    depend on beta: at beta = 1 the attack sends every pixel it can move to 0 or 1."""
    attack = FGSMaxL1(model, 1.0, loss_fn=loss_fn)
    steps, zero = [], []
    for i in range(0, len(x), batch):
        result = attack.evaluate(x[i:i + batch], y[i:i + batch])
        steps.append((result.x_adv - x[i:i + batch]).sign())
        zero.append(result.zero_gradient)
    return torch.cat(steps), torch.cat(zero)


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, betas: Sequence[float], output: str, loss_fn,
              nonsense_class: Optional[int], n_nonsense: int, noise: Tensor, seed: int) -> Dict:
    """Every error of one network (see the module docstring). ``noise``: the uniform
    draw u in [-1, 1], shaped like x, of the noisy images; ``loss_fn``: the attack's
    loss (None: cross-entropy); ``nonsense_class``: the index of the nonsense output
    (None: the network has none)."""
    direction, zero = _adversarial_direction(model, x, y, loss_fn)
    out: Dict = {"clean": float((_predict(model, x) != y).float().mean()), "adversarial": {},
                 "adversarial_rejected": {}, "adversarial_psnr": {}, "noisy": {}, "noisy_rejected": {},
                 "zero_gradient": float(zero.float().mean())}
    reject = nonsense_class if nonsense_class is not None else -1  # -1: no prediction is a rejection
    for beta in betas:
        key = f"{beta:g}"
        for what, images in (("adversarial", (x + beta * direction).clamp(0, 1)),
                             ("noisy", (x + beta * noise).clamp(0, 1))):
            pred = _predict(model, images)
            out[what][key] = float((pred != y).float().mean())
            out[f"{what}_rejected"][key] = float((pred == reject).float().mean())
        out["adversarial_psnr"][key] = _mean_psnr(x, (x + beta * direction).clamp(0, 1))
    out["nonsense"] = _nonsense_error(model, x.shape[1:], n_nonsense, output, nonsense_class, seed=seed,
                                      device=x.device)
    return out


def _build(kind: str, shape: Sequence[int], classes: int) -> nn.Module:
    channels, height, width = shape
    net = lenet_saf if channels == 1 else cifar_saf
    return net(kind, in_channels=channels, num_classes=classes, input_size=(height, width))


def run(settings: Settings) -> ExperimentResult:
    epochs, batches, n_test, n_nonsense = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "saf", digits_size=28)
    x_train, y_train, x_test, y_test = data_set[1:5]
    if n_test is not None:
        x_test, y_test = x_test[:n_test], y_test[:n_test]
    classes = data_set.classes
    mean_image = x_train.mean(0)
    noise_gen = torch.Generator(device=device).manual_seed(settings.seed + 1)
    noise = torch.rand(x_test.shape, generator=noise_gen, device=device, dtype=x_test.dtype) * 2 - 1
    noisy_psnr = {f"{b:g}": _mean_psnr(x_test, (x_test + b * noise).clamp(0, 1)) for b in BETAS}
    data: Dict[str, Dict] = {}
    bar = progress_bar(settings, len(MODELS) * epochs, "saf")
    for name, (kind, training) in MODELS.items():
        torch.manual_seed(settings.seed)
        nonsense_class = classes if training == "mean" else None
        model = _build(kind, data_set.shape, classes + (training == "mean")).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        output = "softmax" if kind == "plain" else "identity"
        loss = (lambda out, t: F.cross_entropy(out, t)) if kind == "plain" else HybridLoss()
        gen = torch.Generator(device=device).manual_seed(settings.seed + 2)
        for epoch in range(epochs):
            model.train()
            for k, (xb, yb) in enumerate(loader(x_train, y_train, batch_size=64, seed=settings.seed + epoch)):
                if batches is not None and k >= batches:
                    break
                if training == "random":
                    xb, yb = random_training_batch(xb, yb, RANDOM_DELTA, RANDOM_FRACTION, generator=gen)
                elif training == "mean":
                    xb, yb = mean_training_batch(xb, yb, mean_image, max(1, len(xb) // classes), MEAN_NOISE,
                                                 nonsense_class, generator=gen)
                value = loss(model(xb), yb)
                opt.zero_grad()
                value.backward()
                opt.step()
            bar.update()
        attack_loss = None if kind == "plain" else HybridLoss(reduction="none")
        data[name] = _evaluate(model, x_test, y_test, BETAS, output, attack_loss, nonsense_class, n_nonsense,
                               noise, seed=settings.seed + 3)
        data[name].update(kind=kind, training=training)
    bar.close()

    keys = [f"{b:g}" for b in BETAS]

    def mean_adv(name: str) -> float:
        return sum(data[name]["adversarial"][k] for k in keys) / len(keys)

    def mean_noisy(name: str) -> float:
        return sum(data[name]["noisy"][k] for k in keys) / len(keys)

    head = ("| model | clean error | " + " | ".join(f"adversarial error, beta={k} | noisy error, beta={k}"
                                                   for k in keys) + " | nonsense error |")
    rows = [head, "|---|---:|" + "---:|---:|" * len(keys) + "---:|"]
    for name, d in data.items():
        rows.append(f"| {name} | {d['clean']:.4f} | "
                    + " | ".join(f"{d['adversarial'][k]:.4f} | {d['noisy'][k]:.4f}" for k in keys)
                    + f" | {d['nonsense']:.4f} |")
    adv_psnr = {}
    for k in keys:
        values = [d["adversarial_psnr"][k] for d in data.values() if d["adversarial_psnr"][k] is not None]
        adv_psnr[k] = sum(values) / len(values) if values else None

    def db(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.1f} dB"

    rows.append("| PSNR (adversarial: the mean over the networks) | - | "
                + " | ".join(f"{db(adv_psnr[k])} | {db(noisy_psnr[k])}" for k in keys) + " | - |")

    best = min(("RBF", "mReLU"), key=mean_adv)
    holds = mean_adv(best) < mean_adv("plain") and data[best]["nonsense"] < data["plain"]["nonsense"]
    comparisons = {
        "best symmetric network": best,
        "mean adversarial error": {name: mean_adv(name) for name in data},
        "mean noisy error": {name: mean_noisy(name) for name in data},
        "symmetric below plain, adversarial": {a: mean_adv(a) < mean_adv("plain") for a in ("RBF", "mReLU")},
        "symmetric below plain, noisy": {a: mean_noisy(a) < mean_noisy("plain") for a in ("RBF", "mReLU")},
        "symmetric below plain, nonsense": {a: data[a]["nonsense"] < data["plain"]["nonsense"]
                                            for a in ("RBF", "mReLU")},
        "random training lowers the mean adversarial error": {
            a: mean_adv(f"{a} + random") < mean_adv(a) for a in ACTIVATIONS},
        "mean training lowers the nonsense error": {
            a: data[f"{a} + mean"]["nonsense"] < data[a]["nonsense"] for a in ACTIVATIONS},
    }

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
        colors = dict(zip(ACTIVATIONS, ("tab:red", "tab:blue", "tab:green")))
        styles = dict(zip(("none", "random", "mean"), ("-", "--", ":")))
        grid = [0.0] + list(BETAS)
        for name, d in data.items():
            activation = name.split(" ")[0]
            for ax, what in zip(axes, ("adversarial", "noisy")):
                ax.plot(grid, [d["clean"]] + [d[what][k] for k in keys], marker="o", color=colors[activation],
                        ls=styles[d["training"]], label=name)
        for ax, title in zip(axes, ("adversarial (FGS, eq. 10)", "noisy (uniform in [-beta, beta])")):
            ax.set_xlabel("beta")
            ax.set_title(f"{title}, {data_set.name}")
        axes[0].set_ylabel("error")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("saf", CLAIM, "\n".join(rows),
                            {"data": data_set.name, "betas": BETAS, "epochs": epochs, "test_images": len(x_test),
                             "nonsense_images": n_nonsense, "threshold": THRESHOLD,
                             "random_training": {"delta": RANDOM_DELTA, "fraction": RANDOM_FRACTION},
                             "mean_training": {"noise": MEAN_NOISE}, "noisy_psnr": noisy_psnr,
                             "adversarial_psnr": adv_psnr, "models": data, "comparisons": comparisons},
                            holds, plot)
