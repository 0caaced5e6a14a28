"""saf: plain, RBF and mReLU networks, each as it is and with random training (-r),
mean training (-m), both (-r-m, the paper's headline) and adversarial training (-a),
at the SAF paper's protocol, several seeds: the error on clean, adversarial, noisy
and nonsense samples over the paper's 13 strengths beta (its Table 2 layout), with
the PSNR row.

Paper (Zhao & Griffin 2016, "Suppressing the Unusual: towards Robust CNNs using
Symmetric Activation Functions"), Table 2 (MNIST error rates):

    beta                 clean  0.01  0.02  0.03  0.04  0.05  0.10  0.15  0.20  0.25  0.30  0.40  0.50
    adversarial plain    0.009 0.013 0.023 0.041 0.071 0.118 0.537 0.836 0.914 0.934 0.943 0.948 0.944
    adversarial mReLU-r-m 0.015 0.016 0.017 0.019 0.020 0.022 0.030 0.039 0.051 0.073 0.110 0.252 0.463
    nonsense plain       0.979 0.982 0.981 0.974 0.958 0.937 0.979 0.993 0.991 0.991 0.993 0.994 0.997
    nonsense mReLU-r-m   0.000 0.002 0.017 0.146 0.270
    noisy plain          0.009 0.008 0.008 0.009 0.009 0.010 0.013 0.027 0.109 0.234 0.372 0.686 0.817
    noisy mReLU-r-m      0.015 0.016 0.016 0.016 0.016 0.016 0.017 0.018 0.020 0.023 0.027 0.039 0.059

(PSNR 40.00 dB at beta 0.01 ... 20.00 dB at 0.1 ... 6.02 dB at 0.5); Table 4 gives the
same for CIFAR-10 (beta 0.01 to 0.15).

Reproduced when (fixed before the runs), plain against mReLU-r-m on the paper's own
metric (error rates), paired over the seeds (robustops.experiments.stats.paired: the
95% t interval of the per-seed differences excludes 0 on the paper's side):
  1. adversarial error at beta 0.1 (CIFAR: 0.02) lower for mReLU-r-m;
  2. adversarial error at beta 0.3 (CIFAR: 0.1) lower;
  3. noisy error at beta 0.3 (CIFAR: 0.1) lower;
  4. nonsense error on the unattacked nonsense samples lower;
  5. nonsense error on nonsense samples pushed by eq. 10 at beta 0.02 lower;
  6. clean error not more than 1 point higher (the paper: "marginally more errors").
Every part: reproduced; some: partly reproduced (naming them); none: not reproduced.
The other rows (RBF, the single tricks, -a) are reported, not judged.

Models (robustops.models.lenet_saf; cifar_saf for CIFAR-10, the paper's Tables 1 and
3): plain is the ReLU network with linear outputs and no activation after the
convolutions, trained with cross-entropy; RBF and mReLU have batch norm and the
symmetric activation after each convolution and an RBF on the outputs, trained with
robustops.nn.HybridLoss (eq. 7, p = 2; a3 = 0 on MNIST, 1/9 on CIFAR-10).
- -r, random training (robustops.defences.random_training_batch): uniform noise in
  [-0.1, 0.1] on a random half of every batch (the paper leaves delta and the
  fraction open).
- -m, mean training (robustops.defences.mean_training_batch): one extra output, the
  nonsense class; every batch of B images is joined by max(1, B // classes) copies of
  the training mean image plus Gaussian noise (sd 0.1), labelled nonsense.
- -r-m: both, random noise first, then the mean copies.
- -a, adversarial training (our reading; the paper names it without details):
  Goodfellow et al.'s objective, half the loss on the batch and half on its
  fast-gradient-sign examples at eps 0.1 (MNIST; CIFAR 0.02) made from the live
  network with its own training loss.
Solver (not the paper's, knowingly): Adam (lr 1e-3), batches of 64 (MatConvNet's
default is 100), 20 epochs at --full (the paper's epoch count;
MatConvNet's SGD defaults over the digits' 19 batches per epoch did not train the
symmetric networks: 73% test accuracy for mReLU after 15 epochs); --quick: 6 (plain)
and 10 (RBF, mReLU, which leave their plateau later).
CIFAR-10: the paper's 45 (plain) and 90 (robust) epochs with random horizontal
flips at --full, a tenth at --quick. Readout (ours: the paper presumably keeps the
last epoch, of a longer run on far more data): 10% of the training set is held out
and the epoch with the lowest validation error is the one evaluated (never the test
set), since the last epoch of these short runs on the digits swings more than the
effects judged.

Evaluation on the test set (prediction: the argmax over all outputs, the nonsense
class included; a prediction of it is an error on a digit image, and the fraction
of such rejections is reported apart):
- adversarial samples: eq. 10 (robustops.attacks.FGSMaxL1) with the network's own
  training loss, towards the meaningful classes only (targets exclude the nonsense
  output): X + beta sign(-grad), for all 13 beta from one direction per image.
- noisy samples: robustops.curves.gaussian_noisy, sigma = beta (the PSNR row pins
  it), the same draw for every network.
- nonsense samples: robustops.curves.gaussian_nonsense (stationary Gaussian noise
  scaled to cover [0, 1]), pushed by eq. 10 towards the most attractive meaningful
  class at each beta (robustops.curves.nonsense_samples); the nonsense error is the
  fraction NOT called nonsense (robustops.curves.nonsense_flags), by the paper's
  rule: a network with a nonsense class (-m) calls a sample nonsense when that class
  wins, one without when every confidence is below 0.5. The paper's 10,000 nonsense
  samples at --full, 200 at --quick.
- PSNR (robustops.metrics.psnr): the mean per-image PSNR of the adversarial and
  noisy images.

--full has not been run here; from the --quick per-network times it should take about
an hour on a 2-core CPU (75 networks, each with 10,000 nonsense samples). --quick
(45 networks) took 312 s on an idle 2-core CPU, just over the 5-minute goal (448 s while
other work shared it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops.attacks import eval_mode
from robustops.curves import eq10_direction, gaussian_noisy, gaussian_nonsense, nonsense_flags, nonsense_samples
from robustops.data import loader
from robustops.defences import mean_training_batch, random_training_batch
from robustops.experiments.common import (BestCheckpoint, ExperimentResult, Settings, band, load_data,
                                          split_validation)
from robustops.experiments.stats import mean_sd, paired, verdict
from robustops.metrics import psnr
from robustops.models import cifar_saf, lenet_saf
from robustops.nn import HybridLoss

CLAIM = ("CNNs with symmetric activation functions (mReLU, RBF), trained with random and mean training, are much "
         "more robust than plain CNNs to adversarial, noisy and nonsense samples, at a small cost in clean accuracy")

THRESHOLD = 0.5
RANDOM_DELTA, RANDOM_FRACTION, MEAN_NOISE = 0.1, 0.5, 0.1
ACTIVATIONS = {"plain": "plain", "RBF": "rbf", "mReLU": "mrelu"}
TRICKS = ("", "-r", "-m", "-r-m", "-a")
MODELS = [f"{a}{t}" for a in ACTIVATIONS for t in TRICKS]
HEADLINE = ("plain", "mReLU-r-m")

# the paper's Table 2 (MNIST) and Table 4 (CIFAR-10): betas, PSNR, and the rows it gives
PAPER = {
    "mnist": {
        "betas": [0.01, 0.02, 0.03, 0.04, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50],
        "adversarial": {"plain": [0.009, 0.013, 0.023, 0.041, 0.071, 0.118, 0.537, 0.836, 0.914, 0.934, 0.943,
                                  0.948, 0.944],
                        "mReLU-r-m": [0.015, 0.016, 0.017, 0.019, 0.020, 0.022, 0.030, 0.039, 0.051, 0.073, 0.110,
                                      0.252, 0.463]},
        "nonsense": {"plain": [0.979, 0.982, 0.981, 0.974, 0.958, 0.937, 0.979, 0.993, 0.991, 0.991, 0.993, 0.994,
                               0.997],
                     "mReLU-r-m": [0.000, 0.002, 0.017, 0.146, 0.270]},
        "noisy": {"plain": [0.009, 0.008, 0.008, 0.009, 0.009, 0.010, 0.013, 0.027, 0.109, 0.234, 0.372, 0.686,
                            0.817],
                  "mReLU-r-m": [0.015, 0.016, 0.016, 0.016, 0.016, 0.016, 0.017, 0.018, 0.020, 0.023, 0.027, 0.039,
                                0.059]},
        "judged": {"adversarial": (0.10, 0.30), "noisy": 0.30, "nonsense": 0.02},
    },
    "cifar10": {
        "betas": [0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.045, 0.050, 0.075, 0.100, 0.150],
        "adversarial": {"plain": [0.217, 0.591, 0.719, 0.800, 0.850, 0.885, 0.905, 0.918, 0.928, 0.933, 0.941,
                                  0.938, 0.922],
                        "mReLU-r-m": [0.226, 0.255, 0.278, 0.309, 0.344, 0.388, 0.430, 0.468, 0.506, 0.541, 0.677,
                                      0.751, 0.816]},
        "nonsense": {"plain": [0.937, 0.679, 0.742, 0.779, 0.804, 0.821, 0.835, 0.843, 0.849, 0.857, 0.880, 0.889,
                               0.916],
                     "mReLU-r-m": [0.000, 0.008, 0.111, 0.281]},
        "noisy": {"plain": [0.217, 0.218, 0.221, 0.227, 0.231, 0.234, 0.241, 0.253, 0.266, 0.280, 0.357, 0.461,
                            0.656],
                  "mReLU-r-m": [0.226, 0.226, 0.225, 0.225, 0.225, 0.225, 0.225, 0.224, 0.223, 0.223, 0.220, 0.230,
                                0.295]},
        "judged": {"adversarial": (0.02, 0.10), "noisy": 0.10, "nonsense": 0.02},
    },
}
# scale -> (epochs on MNIST-like data (plain, robust), fraction of the CIFAR epochs, batches per epoch
#           (None: all), test images (None: all), nonsense images)
SCALE = {"tiny": ((1, 1), 0.02, 2, 16, 16), "quick": ((6, 10), 0.1, None, None, 200),
         "full": ((20, 20), 1.0, None, None, 10000)}
CIFAR_EPOCHS = (45, 90)


def _key(settings: Settings) -> str:
    return "cifar10" if settings.data == "cifar10" else "mnist"


def units(settings: Settings) -> List[str]:
    """The networks of the table: each one is trained and evaluated on its own."""
    return list(MODELS)


def _epochs(settings: Settings, kind: str) -> int:
    (plain, robust), fraction = SCALE[settings.scale][:2]
    if _key(settings) == "cifar10":
        return max(1, round(CIFAR_EPOCHS[kind != "plain"] * fraction))
    return plain if kind == "plain" else robust


def _build(kind: str, shape, classes: int) -> nn.Module:
    channels, height, width = shape
    net = lenet_saf if channels == 1 else cifar_saf
    return net(kind, in_channels=channels, num_classes=classes, input_size=(height, width))


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch: int = 512) -> Tensor:
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def _mean_psnr(x: Tensor, x_new: Tensor) -> Optional[float]:
    values = psnr(x, x_new)
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else None


def _fgs_examples(model: nn.Module, loss, xb: Tensor, yb: Tensor, eps: float) -> Tensor:
    """Fast-gradient-sign examples of the batch against the live network (training mode)."""
    x = xb.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(loss(model(x), yb), x)
    return (xb + eps * grad.sign()).clamp(0, 1).detach()


def run_unit(settings: Settings, seed: int, name: str) -> Dict:
    """Train network ``name`` (e.g. "mReLU-r-m") from ``seed`` and evaluate it."""
    key = _key(settings)
    paper = PAPER[key]
    betas = paper["betas"]
    _, _, batches, n_test, n_nonsense = SCALE[settings.scale]
    device = torch.device(settings.device)
    data = load_data(settings, "saf", digits_size=28, supported=("digits", "mnist", "cifar10"))
    x_train, y_train, x_val, y_val = split_validation(data.x_train, data.y_train, 0.1, seed=seed)
    x_test, y_test = data.x_test[:n_test], data.y_test[:n_test]
    classes = data.classes
    activation, _, tricks = name.partition("-")
    kind = ACTIVATIONS[activation]
    random_training, mean_training, adversarial = "r" in tricks.split("-"), "m" in tricks.split("-"), tricks == "a"
    nonsense_class = classes if mean_training else None
    meaningful = list(range(classes))
    torch.manual_seed(seed)
    model = _build(kind, data.shape, classes + mean_training).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    output = "softmax" if kind == "plain" else "identity"
    a3 = 1 / 9 if key == "cifar10" else 0.0
    loss = (lambda out, t: F.cross_entropy(out, t)) if kind == "plain" else HybridLoss(a3=a3)
    train_eps = 0.02 if key == "cifar10" else 0.1
    gen = torch.Generator(device=device).manual_seed(seed * 1000 + 2)
    mean_image = x_train.mean(0)
    best = BestCheckpoint("min")
    history = []
    for epoch in range(_epochs(settings, kind)):
        model.train()
        for k, (xb, yb) in enumerate(loader(x_train, y_train, batch_size=64, seed=seed * 1000 + epoch)):
            if batches is not None and k >= batches:
                break
            if key == "cifar10":  # the paper's random horizontal flips
                flip = torch.rand(len(xb), generator=gen, device=device) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            if random_training:
                xb, yb = random_training_batch(xb, yb, RANDOM_DELTA, RANDOM_FRACTION, generator=gen)
            if mean_training:
                xb, yb = mean_training_batch(xb, yb, mean_image, max(1, len(xb) // classes), MEAN_NOISE,
                                             nonsense_class, generator=gen)
            if adversarial:
                x_adv = _fgs_examples(model, loss, xb, yb, train_eps)
                value = 0.5 * loss(model(xb), yb) + 0.5 * loss(model(x_adv), yb)
            else:
                value = loss(model(xb), yb)
            opt.zero_grad()
            value.backward()
            opt.step()
        val_error = float((_predict(model, x_val) != y_val).float().mean())
        history.append(val_error)
        best.update(model, val_error, epoch + 1)
    best.restore(model)
    model.eval()

    attack_loss = None if kind == "plain" else HybridLoss(a3=a3, reduction="none")
    direction, zero = eq10_direction(model, x_test, y_test, attack_loss, meaningful, batch_size=512)
    reject = nonsense_class if nonsense_class is not None else -1
    clean_pred = _predict(model, x_test)
    out: Dict = {"kind": kind, "tricks": tricks, "best_epoch": best.step, "validation_error": history,
                 "clean": float((clean_pred != y_test).float().mean()),
                 "clean_rejected": float((clean_pred == reject).float().mean()),
                 "zero_gradient": float(zero.float().mean()), "adversarial": [], "adversarial_rejected": [],
                 "adversarial_psnr": [], "noisy": [], "noisy_rejected": [], "noisy_psnr": []}
    for i, beta in enumerate(betas):
        x_adv = (x_test + beta * direction).clamp(0, 1)
        noise_gen = torch.Generator(device=device).manual_seed(seed * 1000 + 100 + i)  # same for every network
        x_noisy = gaussian_noisy(x_test, beta, generator=noise_gen)
        for what, images in (("adversarial", x_adv), ("noisy", x_noisy)):
            pred = _predict(model, images)
            out[what].append(float((pred != y_test).float().mean()))
            out[f"{what}_rejected"].append(float((pred == reject).float().mean()))
            out[f"{what}_psnr"].append(_mean_psnr(x_test, images))
    nonsense_gen = torch.Generator(device=device).manual_seed(seed * 1000 + 3)
    x_nonsense = gaussian_nonsense(n_nonsense, data.shape, generator=nonsense_gen, device=device)
    pushed = nonsense_samples(model, x_nonsense, [0.0] + betas, loss_fn=attack_loss, targets=meaningful)
    # the paper's rule: a network with a nonsense class calls a sample nonsense when that class
    # wins; one without, when every confidence is below THRESHOLD
    threshold = 0.0 if nonsense_class is not None else THRESHOLD
    out["nonsense"] = [1.0 - float(nonsense_flags(model, pushed[b], threshold, output, nonsense_class)
                                   .float().mean()) for b in [0.0] + betas]
    return out


def _judged_index(betas: List[float], beta: float) -> int:
    return min(range(len(betas)), key=lambda i: abs(betas[i] - beta))


def summarize(settings: Settings, runs: List[Dict]) -> ExperimentResult:
    key = _key(settings)
    paper = PAPER[key]
    betas = paper["betas"]
    names = list(runs[0])

    def col(name: str, what: str, i: Optional[int] = None) -> list:
        return [r[name][what] if i is None else r[name][what][i] for r in runs]

    # (a) the paper's layout for its two rows, the paper's numbers beside ours
    head = "| input | model | clean | " + " | ".join(f"{b:g}" for b in betas) + " |"
    lines = ["Table 2 layout (the paper's error rates, then ours as mean ± sd):", "", head,
             "|---|---|" + "---:|" * (len(betas) + 1)]
    lines.append("| PSNR (noisy, ours) | | - | " + " | ".join(
        mean_sd([r[names[0]]["noisy_psnr"][i] for r in runs], 1) for i in range(len(betas))) + " |")
    for what in ("adversarial", "nonsense", "noisy"):
        for model in HEADLINE:
            ref = paper[what][model]
            lines.append(f"| {what} | {model} (paper) | " + " | ".join(f"{v:.3f}" for v in ref)
                         + " | " * (len(betas) + 1 - len(ref)) + " |")
            if what == "nonsense":
                ours = [mean_sd(col(model, "nonsense", i)) for i in range(len(betas) + 1)]
            else:
                ours = [mean_sd(col(model, "clean"))] + [mean_sd(col(model, what, i)) for i in range(len(betas))]
            lines.append(f"| {what} | {model} (ours) | " + " | ".join(ours) + " |")
    # (b) every network at a few strengths
    show = [_judged_index(betas, b) for b in ((0.1, 0.2, 0.3) if key == "mnist" else (0.02, 0.05, 0.1))]
    head = ("| model | clean error | " + " | ".join(f"adversarial, beta {betas[i]:g}" for i in show) + " | "
            + " | ".join(f"noisy, beta {betas[i]:g}" for i in show) + " | nonsense, unattacked | "
            f"nonsense, beta {betas[show[0]]:g} | adversarial rejected, beta {betas[show[1]]:g} | best epoch |")
    lines += ["", "Every network (error rates; rejected: the fraction of adversarial digit images predicted as the "
                  "nonsense class, part of the error):", "", head, "|---|" + "---:|" * (2 * len(show) + 5)]
    for name in names:
        cells = ([mean_sd(col(name, "clean"))] + [mean_sd(col(name, "adversarial", i)) for i in show]
                 + [mean_sd(col(name, "noisy", i)) for i in show]
                 + [mean_sd(col(name, "nonsense", 0)), mean_sd(col(name, "nonsense", show[0] + 1)),
                    mean_sd(col(name, "adversarial_rejected", show[1])), mean_sd(col(name, "best_epoch"), 1)])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    base, method = HEADLINE
    judged = paper["judged"]
    parts = []
    if base in names and method in names:
        for beta in judged["adversarial"]:
            i = _judged_index(betas, beta)
            parts.append(paired(f"adversarial error at beta {beta:g} lower", f"{paper['adversarial'][base][i + 1]:.3f} "
                                f"vs {paper['adversarial'][method][i + 1]:.3f}", col(base, "adversarial", i),
                                col(method, "adversarial", i), "less", "error"))
        i = _judged_index(betas, judged["noisy"])
        parts.append(paired(f"noisy error at beta {judged['noisy']:g} lower",
                            f"{paper['noisy'][base][i + 1]:.3f} vs {paper['noisy'][method][i + 1]:.3f}",
                            col(base, "noisy", i), col(method, "noisy", i), "less", "error"))
        parts.append(paired("nonsense error on unattacked nonsense samples lower",
                            f"{paper['nonsense'][base][0]:.3f} vs {paper['nonsense'][method][0]:.3f}",
                            col(base, "nonsense", 0), col(method, "nonsense", 0), "less", "error"))
        i = _judged_index(betas, judged["nonsense"])
        parts.append(paired(f"nonsense error on nonsense samples pushed at beta {judged['nonsense']:g} lower",
                            f"{paper['nonsense'][base][i + 1]:.3f} vs {paper['nonsense'][method][i + 1]:.3f}",
                            col(base, "nonsense", i + 1), col(method, "nonsense", i + 1), "less", "error"))
        parts.append(paired("clean error not more than 1 point higher",
                            f"{paper['adversarial'][base][0]:.3f} vs {paper['adversarial'][method][0]:.3f}",
                            col(base, "clean"), col(method, "clean"), "less", "error", against=0.01))
        for part in parts:
            part.name = f"{method} vs {base}: {part.name}"
    result_verdict = verdict(parts) if parts else None

    epochs = {kind: _epochs(settings, kind) for kind in ("plain", "rbf")}
    protocol = (f"{len(names)} networks on {settings.data} "
                f"({'lenet_saf' if key == 'mnist' else 'cifar_saf'}), Adam lr 1e-3, batches of 64, "
                f"{epochs['plain']} epochs (plain) and {epochs['rbf']} (RBF, mReLU), the epoch with the lowest "
                f"error on a 10% validation split evaluated; {len(betas)} strengths beta from {betas[0]:g} to "
                f"{betas[-1]:g}; {SCALE[settings.scale][4]} nonsense samples per network and seed.")
    paper_text = (f"Table {'2' if key == 'mnist' else '4'} of Zhao & Griffin (error rates, plain vs mReLU-r-m): "
                  + "; ".join(f"{p.name.split(': ', 1)[1]}: {p.paper}" for p in parts) + ".")
    criterion = ("plain vs mReLU-r-m, paired over the seeds, each part holding when the 95% t interval of the "
                 "per-seed differences excludes 0 on the paper's side: lower adversarial error at two strengths, "
                 "lower noisy error, lower nonsense error unattacked and pushed by eq. 10, clean error not more "
                 "than 1 point higher. All parts: reproduced; some: partly; none: not reproduced.")

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharey=True)
        shown = [n for n in ("plain", "plain-r-m", "RBF", "RBF-r-m", "mReLU", "mReLU-r-m") if n in names]
        for name in shown:
            band(axes[0], [0.0] + betas, [[r[name]["clean"]] + r[name]["adversarial"] for r in runs], name)
            band(axes[1], [0.0] + betas, [r[name]["nonsense"] for r in runs], name)
            band(axes[2], [0.0] + betas, [[r[name]["clean"]] + r[name]["noisy"] for r in runs], name)
        for ax, title in zip(axes, ("adversarial (eq. 10)", "nonsense (Gaussian, pushed by eq. 10)",
                                    "noisy (Gaussian, sigma = beta)")):
            ax.set(xlabel="beta", title=f"{title}, {settings.data}")
        axes[0].set_ylabel(f"error (mean ± sd over {len(runs)} seeds)")
        axes[2].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("saf", CLAIM, table,
                            {"data": settings.data, "betas": betas, "models": names, "threshold": THRESHOLD,
                             "random_training": {"delta": RANDOM_DELTA, "fraction": RANDOM_FRACTION},
                             "mean_training": {"noise": MEAN_NOISE}, "paper": paper},
                            plot=plot, verdict=result_verdict, paper=paper_text, criterion=criterion,
                            protocol=protocol)
