"""committee: preprocessing defences (dropout, a low-pass filter with noise injection, a
denoising autoencoder, their combinations), a standard committee, adversarial training
in stages and the committee of the adversarially trained stages, on the embedded digits
at 28x28: the error on fast-gradient-sign adversarial examples of mean absolute
distortion dist = 0 (clean), 0.1 and 0.2 (the adversarial committee paper's Table 2
layout).

Claim (Uličný et al., on the robustness of deep CNNs, adversarial committees):
preprocessing defences help little against fast-gradient-sign adversarial examples;
training on the model's own adversarial examples in stages, and averaging the stage
snapshots as a committee, lowers the error on adversarial examples a lot, and the
committee of adversarially trained models is the most robust. Judged here (stated
before the run): at dist = 0.1 and at dist = 0.2 the committee of adversarially
trained models has a lower error than every row without adversarial training (no
method, each preprocessing defence and combination, the standard committee). Whether
it also beats each single adversarially trained stage is recorded
(``beats_every_stage``) but not part of the verdict.

The rows. Every classifier is the same small CNN (two 5x5 stride-2 convolutions, 16
and 32 channels, a 100-unit hidden layer), trained with Adam (lr 1e-3, batch 64) from
the same seed, so the rows differ only by their defence:

- no method: the CNN on clean images.
- dropout: robustops.defences.with_dropout, p = 0.25 after the second convolution
  (its ReLU) and 0.5 after the hidden layer (off at test time, as dropout is).
- low-pass filter: robustops.defences.LowPassNoise (sigma 1 pixel, then Gaussian noise
  of standard deviation 0.05, in training and at test time) in front of the CNN,
  which is trained on the filtered, noisy images.
- DAE: a robustops.defences.DenoisingAutoencoder trained first (train_denoiser, input
  dropout 0.2), frozen, in front of the CNN, which is trained on its reconstructions.
  Its widths are C*H*W-500-30 rather than the paper's 784-1000-500-250-30: that
  sigmoid stack, trained from random weights with Adam, does not get past the mean
  image here (its loss stays at the pixel variance for 30 epochs), where one hidden
  layer reconstructs the digits (the test MSE is recorded as ``dae_test_mse``).
- dropout + low-pass filter, dropout + DAE, low-pass filter + DAE (the filter first):
  the combinations, built and trained the same way.
- standard committee: ``stages + 1`` CNNs trained independently on clean images from
  the seeds seed, seed + 1, ... (the first is the "no method" model), averaged as
  robustops.defences.Committee (the mean of their probabilities): a committee as
  such, without adversarial training, the same size as the adversarial one.
- adversarial training after k stages: robustops.defences.train_committee trains the
  CNN on clean images, then ``stages`` times for a few epochs on its own adversarial
  examples (the paper's committee example CommitteeExample(eps = 0.1, c = 1), made
  from the model as it is at each batch); the row is the snapshot after stage k.
- committee of adversarially trained models: the Committee train_committee returns
  (the clean snapshot and the ``stages`` stage snapshots, probabilities averaged).

Hitting dist. dist is robustops.metrics.mean_abs_distortion, the mean absolute change
per pixel value. A fast-gradient-sign step of size eps clamped to [0, 1] moves each
pixel by min(eps, its room in the sign's direction), so its dist is below eps and
differs from image to image; the examples here are fast-gradient-sign examples with a
per-image eps, found by bisection, for which the mean absolute distortion of that
image is exactly the column's dist: x_adv = x + sign(g) min(eps, room), which is
clamp(x + eps sign(g), 0, 1). An image whose full room (eps = 1) is below the target
is moved as far as it goes and counted in ``unreached``. The table reports the
measured dist (the mean over the test set) and the mean eps it took. The error is
the error rate on the adversarial test set (images misclassified clean count as
errors unless the step happens to correct them).

White-box. The gradient g is taken through the whole defended model: through the
filter, the autoencoder and every committee member (committees are attacked with
output "log_probs": the loss is the negative log of the averaged probability).
Dropout is off in evaluation. The noise of the low-pass defence is random at test
time, so its gradient is the expectation over the noise (EOT): the gradient of -log
of the class probability averaged over 8 noise draws of the same image (16 at the
full scale); the prediction on the
adversarial image is then one fresh noise draw, as the defence is deployed.
Evaluation noise is seeded. (The tiny scale, a smoke test, evaluates only the first
64 test images with 2 draws.)

"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from robustops.attacks import FGSM, CommitteeExample, eval_mode
from robustops.data import loader
from robustops.defences import (Committee, DenoisingAutoencoder, LowPassNoise, Preprocessed, fit, train_committee,
                                train_denoiser, with_dropout)
from robustops.experiments.common import ExperimentResult, Settings, load_data, progress_bar
from robustops.metrics import mean_abs_distortion

CLAIM = ("preprocessing defences (dropout, low-pass filtering with noise, a denoising autoencoder) help little "
         "against fast-gradient-sign adversarial examples; training in stages on the model's own adversarial "
         "examples lowers their error a lot, and the committee of the adversarially trained stages is the most robust")

DISTS = [0.0, 0.1, 0.2]
# scale -> (clean epochs per model, adversarial stages, epochs per stage, DAE epochs, batches per epoch or None,
#           test images evaluated or None (all), noise draws per gradient for the random (low-pass) defences)
SCALE = {"tiny": (1, 2, 1, 1, 2, 64, 2), "quick": (15, 4, 2, 30, None, None, 8),
         "full": (40, 6, 4, 100, None, None, 16)}
LR = 1e-3
DROPOUT = {"relu2": 0.25, "relu3": 0.5}
LOW_PASS = (1.0, 0.05)              # sigma (pixels), noise standard deviation
DAE_HIDDEN = (500, 30)              # the autoencoder's widths after the input
DAE_INPUT_DROPOUT = 0.2
TRAIN_EPS, TRAIN_C = 0.1, 1.0       # the committee example of the adversarial stages
BATCH = 512                         # evaluation batch

NO_METHOD = "no method"
ADV_COMMITTEE = "committee of adversarially trained models"
# the rows' groups: the verdict compares ADV_COMMITTEE with every row of the first three
PLAIN_GROUPS = ("baseline", "preprocessing", "standard committee")


def _half(n: int) -> int:
    return (n + 1) // 2


def _net(channels: int, height: int, width: int, classes: int) -> nn.Sequential:
    """The classifier of every row: two 5x5 stride-2 convolutions (16, 32 channels),
    a 100-unit hidden layer; named layers, so that with_dropout can address them."""
    h, w = _half(_half(height)), _half(_half(width))
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, 16, 5, stride=2, padding=2)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 32, 5, stride=2, padding=2)), ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(32 * h * w, 100)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(100, classes))]))


class _Batches:
    """The first ``batches`` batches of every pass over a seeded loader (all of them
    when None): an epoch of the tiny scale."""

    def __init__(self, x: Tensor, y: Tensor, batches: Optional[int], seed: int):
        self.loader, self.batches = loader(x, y, batch_size=64, seed=seed), batches

    def __iter__(self):
        return iter(self.loader) if self.batches is None else islice(iter(self.loader), self.batches)


class _Expected(nn.Module):
    """The expectation over a random defence's noise (EOT): log of the class
    probabilities averaged over ``draws`` forward passes of the same images."""

    def __init__(self, model: nn.Module, draws: int):
        super().__init__()
        self.model, self.draws = model, draws

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x.repeat((self.draws,) + (1,) * (x.dim() - 1)))
        return out.log_softmax(1).view(self.draws, x.shape[0], -1).logsumexp(0) - torch.log(
            torch.tensor(float(self.draws), dtype=out.dtype, device=out.device))


def _is_random(model: nn.Module) -> bool:
    """Whether the model injects noise at test time (a LowPassNoise with noise > 0)."""
    return any(isinstance(m, LowPassNoise) and m.noise > 0 for m in model.modules())


def _step_for(room: Tensor, dist: float, iterations: int = 60) -> Tensor:
    """Per image, the eps >= 0 with mean(min(eps, room)) = dist (bisection on [0, 1];
    ``room`` [B, P] is how far each pixel can move in its sign's direction). Images
    whose full room is below dist get eps = 1."""
    room = room.double()
    lo = room.new_zeros(room.shape[0])
    hi = room.new_ones(room.shape[0])
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = torch.minimum(room, mid[:, None]).mean(1) < dist
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return hi


def _fgs_at_dist(model: nn.Module, x: Tensor, y: Tensor, dist: float,
                 draws: int = 1) -> Tuple[Tensor, Tensor, Tensor]:
    """Fast-gradient-sign examples whose mean absolute distortion is ``dist`` per image:
    x + sign(g) min(eps, room) with a per-image eps (see the module docstring); g is
    the input gradient of the cross-entropy of ``model``'s outputs (logits or
    log-probabilities), averaged over ``draws`` noise draws when draws > 1. Returns
    (x_adv, eps per image, whether the image could not reach dist)."""
    attacked = model if draws == 1 else _Expected(model, draws)
    delta = FGSM(attacked, eps=1.0)(x, y) - x     # sign(g) * room: every pixel moved as far as it goes
    room = delta.abs().flatten(1)
    eps = _step_for(room, dist)
    unreached = room.double().mean(1) < dist
    view = (-1,) + (1,) * (x.dim() - 1)
    step = torch.minimum(delta.abs(), eps.to(x.dtype).view(view))
    return (x + delta.sign() * step).clamp(0, 1), eps, unreached


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with eval_mode(model):
        return model(x).argmax(1)


def _error_at_dist(model: nn.Module, x: Tensor, y: Tensor, dist: float, seed: int = 0,
                   draws: int = 8) -> Dict[str, float]:
    """The error of ``model`` (outputs: logits or log-probabilities) on white-box
    fast-gradient-sign examples of mean absolute distortion ``dist`` (0: the clean
    error), with the measured dist, the mean eps and the fraction of images that
    could not reach dist. A model with test-time noise gets the average gradient of
    ``draws`` noise draws (1 for the others); the noise is seeded by ``seed``."""
    draws = draws if _is_random(model) else 1
    torch.manual_seed(seed)
    wrong, measured, steps, unreached = 0, 0.0, 0.0, 0
    for i in range(0, len(x), BATCH):
        xb, yb = x[i:i + BATCH], y[i:i + BATCH]
        if dist > 0:
            x_adv, eps, far = _fgs_at_dist(model, xb, yb, dist, draws)
            measured += float(mean_abs_distortion(xb, x_adv).sum())
            steps += float(eps.sum())
            unreached += int(far.sum())
        else:
            x_adv = xb
        wrong += int((_predict(model, x_adv) != yb).sum())
    n = len(x)
    return {"error": wrong / n, "dist": measured / n, "eps": steps / n, "unreached": unreached / n}


def run(settings: Settings) -> ExperimentResult:
    epochs, stages, stage_epochs, dae_epochs, batches, n_test, draws = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "committee", digits_size=28)
    x_train, y_train, x_test, y_test = data_set[1:5]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    seed = settings.seed
    n_pixels = 1
    for s in data_set.shape:
        n_pixels *= s

    groups: Dict[str, str] = {}
    models: Dict[str, nn.Module] = {}
    # the autoencoder, 7 rows, the standard committee's other members, the adversarial committee, the evaluations
    bar = progress_bar(settings, 1 + 7 + stages + (1 + stages) + (9 + stages), "committee")

    def net(model_seed: int, dropout: bool = False) -> nn.Module:
        torch.manual_seed(model_seed)
        model = _net(*data_set.shape, data_set.classes).to(device)
        return with_dropout(model, DROPOUT) if dropout else model

    def trained(model: nn.Module, preprocess: Optional[nn.Module] = None, model_seed: int = seed) -> nn.Module:
        full = model if preprocess is None else Preprocessed(preprocess, model)
        fit(full, _Batches(x_train, y_train, batches, model_seed), torch.optim.Adam(model.parameters(), lr=LR),
            epochs, progress=False)
        bar.update()
        return full.eval()

    def low_pass() -> LowPassNoise:
        return LowPassNoise(*LOW_PASS).to(device)

    torch.manual_seed(seed)
    dae = DenoisingAutoencoder((n_pixels,) + DAE_HIDDEN).to(device)
    train_denoiser(dae, _Batches(x_train, y_train, batches, seed), torch.optim.Adam(dae.parameters(), lr=LR),
                   dae_epochs, input_dropout=DAE_INPUT_DROPOUT, progress=False)
    dae.eval().requires_grad_(False)
    with torch.no_grad():
        dae_mse = float(((dae(x_test) - x_test) ** 2).mean())
    bar.update()

    rows = [(NO_METHOD, "baseline", lambda: trained(net(seed))),
            ("dropout", "preprocessing", lambda: trained(net(seed, dropout=True))),
            ("low-pass filter", "preprocessing", lambda: trained(net(seed), low_pass())),
            ("DAE", "preprocessing", lambda: trained(net(seed), dae)),
            ("dropout + low-pass filter", "preprocessing", lambda: trained(net(seed, dropout=True), low_pass())),
            ("dropout + DAE", "preprocessing", lambda: trained(net(seed, dropout=True), dae)),
            ("low-pass filter + DAE", "preprocessing", lambda: trained(net(seed), nn.Sequential(low_pass(), dae)))]
    for name, group, build in rows:
        models[name], groups[name] = build(), group

    members = [models[NO_METHOD]] + [trained(net(seed + i), model_seed=seed + i) for i in range(1, stages + 1)]
    standard = f"standard committee ({len(members)} models)"
    models[standard], groups[standard] = Committee(members, output="log_probs"), "standard committee"

    adversarial = train_committee(net(seed), _Batches(x_train, y_train, batches, seed),
                                  lambda m: torch.optim.Adam(m.parameters(), lr=LR), stages=stages,
                                  epochs=stage_epochs, attack_factory=lambda m: CommitteeExample(m, TRAIN_EPS, TRAIN_C),
                                  natural_epochs=epochs, progress=False)
    bar.update(1 + stages)
    for k in range(1, stages + 1):
        name = f"adversarial training after {k} stage{'s' if k > 1 else ''}"
        models[name], groups[name] = adversarial.members[k], "adversarial training"
    models[ADV_COMMITTEE], groups[ADV_COMMITTEE] = (Committee(adversarial.members, output="log_probs"),
                                                    "adversarial committee")

    data = {}
    for name, model in models.items():
        model.eval()
        results = {str(d): _error_at_dist(model, x_test, y_test, d, seed=seed, draws=draws) for d in DISTS}
        data[name] = {"group": groups[name], "random": _is_random(model),
                      "error": {d: r["error"] for d, r in results.items()},
                      "dist": {d: r["dist"] for d, r in results.items()},
                      "eps": {d: r["eps"] for d, r in results.items()},
                      "unreached": {d: r["unreached"] for d, r in results.items()}}
        bar.update()
    bar.close()

    attacked = [str(d) for d in DISTS if d > 0]
    plain = [n for n in data if data[n]["group"] in PLAIN_GROUPS]
    committee_error = data[ADV_COMMITTEE]["error"]
    holds = all(committee_error[d] < data[n]["error"][d] for n in plain for d in attacked)
    stage_rows = [n for n in data if data[n]["group"] == "adversarial training"]
    beats_every_stage = all(committee_error[d] < data[n]["error"][d] for n in stage_rows for d in attacked)
    best_plain = {d: min(plain, key=lambda n: data[n]["error"][d]) for d in attacked}

    head = ("| method | " + " | ".join(f"error at dist={d:g}" for d in DISTS)
            + " | measured dist | mean FGS eps |")
    lines = [head, "|---|" + "---:|" * (len(DISTS) + 2)]
    for name, d in data.items():
        lines.append(f"| {name} | " + " | ".join(f"{d['error'][str(v)]:.4f}" for v in DISTS)
                     + " | " + " / ".join(f"{d['dist'][v]:.4f}" for v in attacked)
                     + " | " + " / ".join(f"{d['eps'][v]:.3f}" for v in attacked) + " |")

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        lines = {"baseline": "-", "preprocessing": "--", "standard committee": "-.", "adversarial training": ":",
                 "adversarial committee": "-"}
        pre = iter(plt.get_cmap("tab10")([0, 1, 4, 5, 6, 8, 9]))   # no red, no green: the committee and stages
        stage = iter(plt.get_cmap("Greens")([0.4 + 0.6 * k / max(1, stages - 1) for k in range(stages)]))
        colors = {"baseline": lambda: "k", "preprocessing": lambda: next(pre), "standard committee": lambda: "tab:gray",
                  "adversarial training": lambda: next(stage), "adversarial committee": lambda: "tab:red"}
        fig, ax = plt.subplots(figsize=(9, 5))
        for name, d in data.items():
            ax.plot(DISTS, [d["error"][str(v)] for v in DISTS], marker="o", ls=lines[d["group"]],
                    color=colors[d["group"]](), label=name, lw=2.5 if name == ADV_COMMITTEE else 1.2)
        ax.set_xlabel("dist (mean absolute distortion of the FGS examples)")
        ax.set_ylabel("error")
        ax.set_xticks(DISTS)
        ax.set_ylim(0, 1)
        ax.set_title(f"white-box FGS error against dist ({data_set.name})")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("committee", CLAIM, "\n".join(lines),
                            {"data": data_set.name, "dists": DISTS, "epochs": epochs, "stages": stages,
                             "stage_epochs": stage_epochs, "dae_epochs": dae_epochs, "batches": batches,
                             "dropout": DROPOUT, "low_pass": {"sigma": LOW_PASS[0], "noise": LOW_PASS[1]},
                             "dae_sizes": [n_pixels, *DAE_HIDDEN], "dae_test_mse": dae_mse,
                             "train_attack": {"eps": TRAIN_EPS, "c": TRAIN_C}, "eot_draws": draws,
                             "test_images": len(x_test),
                             "criterion": f"{ADV_COMMITTEE} below every row of the groups {list(PLAIN_GROUPS)} at "
                                          f"dist {attacked}",
                             "beats_every_stage": beats_every_stage, "best_without_adversarial_training": best_plain,
                             "rows": data}, holds, plot)
