"""committee: preprocessing defences (dropout, a low-pass filter with noise injection, a
denoising autoencoder, their combinations), a standard committee, adversarial training
in stages and the committee of the adversarially trained stages, on the embedded digits
at 28x28, several seeds: the error on fast-gradient-sign adversarial examples of mean
absolute distortion dist = 0 (clean), 0.1 and 0.2 (the adversarial committee paper's
Table 2 layout).

Paper (Uličný, Lundström & Byttner, "Robustness of Deep Convolutional Neural Networks
for Image Recognition"), Table 2, error (%) on the MNIST test set at dist = 0 / 0.1 /
0.2:

    no method                                       0.83   73.6   96.1
    dropout                                         0.91   35.7   98.1
    low-pass filter                                 1.38   52.0   95.0
    DAE                                             1.27   52.4   93.2
    low-pass filter + dropout                       2.51   34.8   88.5
    DAE + dropout                                   1.56   21.4   90.3
    standard committee                              0.86   70.9   97.2
    adversarial training after 5 stages             0.87   44.5   92.1
    committee of models trained on adv. examples    0.65    9.8   36.5

and Sec. 5.3: "an ensemble of models trained on adversarial noise is more resistant to
adversarial noise than any single model we have tested".

Reproduced when (fixed before the runs), on the paper's metric (the error at dist), the
committee of adversarially trained models against the baselines, paired over the
seeds (robustops.experiments.stats.paired: the 95% t interval of the per-seed
differences excludes 0 on the paper's side):
  1. its error at dist = 0.1 is lower than no defence's (paper: 9.8% vs 73.6%);
  2. its error at dist = 0.2 is lower than no defence's (paper: 36.5% vs 96.1%);
  3. it is the most robust: its error, averaged over dist = 0.1 and 0.2, is lower than
     that of the best single adversarially trained stage (per seed, the stage with the
     lowest such average on the test set, which favours the stages; paper: 23.15% vs
     68.30% for the 5-stage network, the only stage it reports).
Every part holds: reproduced; some: partly reproduced (naming them); none: not
reproduced. The preprocessing rows and the standard committee are reported, not
judged.

The rows. Every classifier is the same small CNN (two 5x5 stride-2 convolutions, 16
and 32 channels, a 100-unit hidden layer), trained with Adam (lr 1e-3, batch 64) from
the seed, so the rows of a seed differ only by their defence:

- no method: the CNN on clean images.
- dropout: robustops.defences.with_dropout, p = 0.25 after the second convolution
  (its ReLU) and 0.5 after the hidden layer (off at test time, as dropout is).
- low-pass filter: robustops.defences.LowPassNoise (Gaussian noise of standard
  deviation 0.05, then a Gaussian filter of sigma 1 pixel: the paper's order, in
  training and at test time) in front of the CNN, which is trained on the noisy,
  filtered images. (The paper's own three kernels are LowPassNoise(kernel=3|5|7); the
  next issue's protocol uses them.)
- DAE: a robustops.defences.DenoisingAutoencoder trained first (train_denoiser, input
  dropout 0.2), frozen, in front of the CNN, which is trained on its reconstructions.
  Its widths are C*H*W-500-30 rather than the paper's 784-1000-500-250-30: that
  sigmoid stack, trained from random weights with Adam, does not get past the mean
  image here (its loss stays at the pixel variance for 30 epochs), where one hidden
  layer reconstructs the digits (the test MSE is recorded as ``dae_test_mse``).
- dropout + low-pass filter, dropout + DAE, low-pass filter + DAE (the filter first):
  the combinations, built and trained the same way.
- standard committee: ``stages + 1`` CNNs trained independently on clean images from
  the seeds seed, seed + 1000, seed + 2000, ... (the first is the "no method" model),
  averaged as robustops.defences.Committee (the mean of their probabilities): a
  committee as such, without adversarial training, the same size as the adversarial
  one.
- adversarial training after k stages: the staged training of
  robustops.defences.train_committee(protocol="online") (not yet the paper's pools
  joined with the clean data, the library's default now), run epoch by epoch here so that each snapshot
  can be picked on the validation split: the "no method" network (its weights and its
  Adam state at its picked epoch) is trained ``stages`` times for a few epochs on its
  own adversarial examples (the paper's committee example CommitteeExample(eps = 0.1,
  c = 1), made from the model as it is at each batch), with the same optimizer
  throughout; the row is the snapshot after stage k.
- committee of adversarially trained models: the Committee of the "no method"
  network and the ``stages`` stage snapshots (probabilities averaged).

Readout: no last-epoch noise. 10% of the training set (common.split_validation, drawn
with the seed) is held out as a validation split; every network is trained on the
rest and kept at its best epoch on the validation split (common.BestCheckpoint; the
first best on ties): the clean networks (and the clean phase of the adversarial
training) by their accuracy on the clean validation images; each adversarial stage,
which trains on its own committee examples, by its accuracy on the committee examples
of the validation images (made from the network being scored); the autoencoder by its
reconstruction error on the validation images. The test set is only evaluated.

Hitting dist (the paper's eq. 2). dist is robustops.metrics.mean_abs_distortion
averaged over the whole test set at one eps per set, as the paper (e.g. eps 0.37 for
dist 0.2 on MNIST). A fast-gradient-sign step of size eps clamped to [0, 1] moves each
pixel by min(eps, its room in the sign's direction), so the set's dist is below eps;
the eps here is found by bisection so that the set's mean absolute distortion is
exactly the column's dist: x_adv = x + sign(g) min(eps, room) = clamp(x + eps sign(g),
0, 1), the same eps for every image of the set (so an image with little room moves
less than dist, one with more room more). A set whose full room (eps = 1) is below
the target is moved as far as it goes and flagged ``unreached``. The table reports
the measured dist and the eps it took. The error is the error rate on the adversarial
test set (images misclassified clean count as errors unless the step happens to
correct them).

White-box. The gradient g is taken through the whole defended model: through the
filter, the autoencoder and every committee member (committees are attacked with
output "log_probs": the loss is the negative log of the averaged probability).
Dropout is off in evaluation. The noise of the low-pass defence is random at test
time, so its gradient is the expectation over the noise (EOT): the gradient of -log
of the class probability averaged over 8 noise draws of the same image (16 at the
full scale); the prediction on the adversarial image is then one fresh noise draw, as
the defence is deployed. Evaluation noise is seeded with the seed. (The tiny scale, a
smoke test, evaluates only the first 64 test images with 2 draws.)

--quick: 15 clean epochs per network, 4 adversarial stages of 2 epochs, 30 autoencoder
epochs; about 1.5 minutes for its 3 seeds on an otherwise idle 2-core CPU (two at a
time).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops.attacks import FGSM, CommitteeExample, eval_mode
from robustops.data import loader
from robustops.defences import (Committee, DenoisingAutoencoder, LowPassNoise, Preprocessed, fit, train_denoiser,
                                with_dropout)
from robustops.experiments.common import (BestCheckpoint, ExperimentResult, Settings, load_data, progress_bar,
                                          split_validation)
from robustops.experiments.stats import mean, mean_sd, paired, sd, verdict
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
VALIDATION = 0.1                    # the fraction of the training set held out to pick checkpoints
MEMBER_SEED_STEP = 1000             # the standard committee's k-th member trains from seed + k * this

NO_METHOD = "no method"
ADV_COMMITTEE = "committee of adversarially trained models"
STAGES_GROUP = "adversarial training"
# Table 2 of the paper (error %, dist 0 / 0.1 / 0.2), the rows quoted in the verdict
PAPER = {"no method": (0.83, 73.6, 96.1), "adversarial training after 5 stages": (0.87, 44.5, 92.1),
         "committee": (0.65, 9.8, 36.5)}


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


def _eps_for_set(room: Tensor, dist: float, iterations: int = 60) -> float:
    """The one eps >= 0 for which the set's mean absolute distortion, the mean over
    every pixel of every image of min(eps, room), is ``dist`` (bisection on [0, 1];
    ``room`` [N, P] is how far each pixel can move in its sign's direction). 1 when
    even the full room is below dist."""
    room = room.double()
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if float(room.clamp(max=mid).mean()) < dist:
            lo = mid
        else:
            hi = mid
    return hi


def _fgs_delta(model: nn.Module, x: Tensor, y: Tensor, draws: int = 1) -> Tensor:
    """sign(g) * room: the fast-gradient-sign step with every pixel moved as far as it
    goes (g the input gradient of the cross-entropy of ``model``'s outputs, logits or
    log-probabilities, averaged over ``draws`` noise draws when draws > 1)."""
    attacked = model if draws == 1 else _Expected(model, draws)
    return FGSM(attacked, eps=1.0)(x, y) - x


def _step(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """x + sign(g) min(eps, room) = clamp(x + eps sign(g), 0, 1)."""
    return (x + delta.sign() * delta.abs().clamp(max=eps)).clamp(0, 1)


def _fgs_at_dist(model: nn.Module, x: Tensor, y: Tensor, dist: float,
                 draws: int = 1) -> Tuple[Tensor, float, bool]:
    """Fast-gradient-sign examples of the set x at one eps, the one whose mean absolute
    distortion over the set is ``dist`` (the paper's eq. 2; see the module
    docstring). Returns (x_adv, eps, whether the set could not reach dist)."""
    delta = _fgs_delta(model, x, y, draws)
    room = delta.abs().flatten(1)
    eps = _eps_for_set(room, dist)
    return _step(x, delta, eps), eps, float(room.double().mean()) < dist


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with eval_mode(model):
        return model(x).argmax(1)


def _error_at_dist(model: nn.Module, x: Tensor, y: Tensor, dist: float, seed: int = 0,
                   draws: int = 8) -> Dict[str, float]:
    """The error of ``model`` (outputs: logits or log-probabilities) on white-box
    fast-gradient-sign examples of the test set at the one eps whose mean absolute
    distortion over the whole set is ``dist`` (0: the clean error), with the measured
    dist, that eps and whether the set could not reach dist ("unreached", 0 or 1). A
    model with test-time noise gets the average gradient of ``draws`` noise draws (1
    for the others); the noise is seeded by ``seed``."""
    draws = draws if _is_random(model) else 1
    torch.manual_seed(seed)
    n = len(x)
    if dist <= 0:
        wrong = sum(int((_predict(model, x[i:i + BATCH]) != y[i:i + BATCH]).sum()) for i in range(0, n, BATCH))
        return {"error": wrong / n, "dist": 0.0, "eps": 0.0, "unreached": 0.0}
    deltas = [_fgs_delta(model, x[i:i + BATCH], y[i:i + BATCH], draws) for i in range(0, n, BATCH)]
    room = torch.cat([d.abs().flatten(1) for d in deltas])
    eps = _eps_for_set(room, dist)
    wrong, measured = 0, 0.0
    for k, i in enumerate(range(0, n, BATCH)):
        xb, yb = x[i:i + BATCH], y[i:i + BATCH]
        x_adv = _step(xb, deltas[k], eps)
        measured += float(mean_abs_distortion(xb, x_adv).sum())
        wrong += int((_predict(model, x_adv) != yb).sum())
    return {"error": wrong / n, "dist": measured / n, "eps": eps,
            "unreached": float(float(room.double().mean()) < dist)}


class _Checkpoint(BestCheckpoint):
    """common.BestCheckpoint that also keeps the optimizer's state at the best epoch
    (the adversarial stages continue the "no method" network's training from there)."""

    def __init__(self, mode: str, optimizer: torch.optim.Optimizer):
        super().__init__(mode)
        self.optimizer, self.optimizer_state = optimizer, None

    def update(self, model: nn.Module, score: float, step: int) -> bool:
        better = super().update(model, score, step)
        if better:
            self.optimizer_state = copy.deepcopy(self.optimizer.state_dict())
        return better

    def restore(self, model: nn.Module) -> nn.Module:
        super().restore(model)
        self.optimizer.load_state_dict(self.optimizer_state)
        return model


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """The fraction of (x, y) that ``model`` (outputs: logits or log-probabilities)
    classifies correctly, in eval mode (a random defence draws its noise)."""
    hits = sum(int((_predict(model, x[i:i + BATCH]) == y[i:i + BATCH]).sum()) for i in range(0, len(x), BATCH))
    return hits / len(x)


def _committee_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """The accuracy of ``model`` on the committee examples (the adversarial stages'
    training examples) of (x, y) made from ``model`` itself."""
    x_adv = torch.cat([CommitteeExample(model, TRAIN_EPS, TRAIN_C)(x[i:i + BATCH], y[i:i + BATCH])
                       for i in range(0, len(x), BATCH)])
    return _accuracy(model, x_adv, y)


def _train_picked(model: nn.Module, batches, optimizer: torch.optim.Optimizer, epochs: int,
                  score: Callable[[nn.Module], float], loss=None) -> Tuple[int, List[float]]:
    """Train ``model`` epoch by epoch (robustops.defences.fit, ``loss`` as there),
    score it on the validation split after each epoch (``score``, higher is better)
    and restore the best epoch's weights and optimizer state (the first best on
    ties). Returns (the picked epoch, 1-based; the scores of every epoch)."""
    checkpoint = _Checkpoint("max", optimizer)
    scores = []
    for epoch in range(1, epochs + 1):
        fit(model, batches, optimizer, 1, loss=loss, progress=False)
        model.eval()
        s = score(model)
        scores.append(s)
        checkpoint.update(model, s, epoch)
    checkpoint.restore(model)
    model.eval()
    return checkpoint.step, scores


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _stage_name(k: int) -> str:
    return f"adversarial training after {k} stage{'s' if k > 1 else ''}"


def run_seed(settings: Settings, seed: int) -> dict:
    """Train every row of the table from ``seed`` (checkpoints picked on the validation
    split) and evaluate it on the test set (one seed's results)."""
    epochs, stages, stage_epochs, dae_epochs, batches, n_test, draws = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "committee", digits_size=28)
    x_train, y_train, x_val, y_val = split_validation(data_set.x_train, data_set.y_train, VALIDATION, seed)
    x_test, y_test = data_set.x_test[:n_test], data_set.y_test[:n_test]
    n_pixels = 1
    for s in data_set.shape:
        n_pixels *= s

    groups: Dict[str, str] = {}
    models: Dict[str, nn.Module] = {}
    picked: Dict[str, object] = {}   # row -> the epoch picked (committees: one per member)
    # the autoencoder, 7 rows, the standard committee's other members, the stages, the evaluations
    bar = progress_bar(settings, 1 + 7 + stages + stages + (9 + stages), f"committee seed {seed}")

    def net(model_seed: int, dropout: bool = False) -> nn.Module:
        torch.manual_seed(model_seed)
        model = _net(*data_set.shape, data_set.classes).to(device)
        return with_dropout(model, DROPOUT) if dropout else model

    def trained(model: nn.Module, preprocess: Optional[nn.Module] = None, model_seed: int = seed):
        """(the network trained on clean images and kept at its best validation accuracy,
        its optimizer (its state at that epoch), its batches, the picked epoch)."""
        full = model if preprocess is None else Preprocessed(preprocess, model)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        source = _Batches(x_train, y_train, batches, model_seed)
        epoch, _ = _train_picked(full, source, optimizer, epochs, lambda m: _accuracy(m, x_val, y_val))
        bar.update()
        return full, optimizer, source, epoch

    def low_pass() -> LowPassNoise:
        return LowPassNoise(*LOW_PASS).to(device)

    # the autoencoder: kept at its lowest reconstruction error on the validation images
    torch.manual_seed(seed)
    dae = DenoisingAutoencoder((n_pixels,) + DAE_HIDDEN).to(device)
    dae_optimizer = torch.optim.Adam(dae.parameters(), lr=LR)
    dae_batches = _Batches(x_train, y_train, batches, seed)
    dae_checkpoint = BestCheckpoint("min")
    for epoch in range(1, dae_epochs + 1):
        train_denoiser(dae, dae_batches, dae_optimizer, 1, input_dropout=DAE_INPUT_DROPOUT, progress=False)
        dae.eval()
        with torch.no_grad():
            val_mse = float(((dae(x_val) - x_val) ** 2).mean())
        dae_checkpoint.update(dae, val_mse, epoch)
    dae_checkpoint.restore(dae)
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
    clean_state = None
    for name, group, build in rows:
        models[name], optimizer, source, picked[name] = build()
        groups[name] = group
        if name == NO_METHOD:
            clean_state = (optimizer, source)

    member_seeds = [seed + k * MEMBER_SEED_STEP for k in range(1, stages + 1)]
    others = [trained(net(s), model_seed=s) for s in member_seeds]
    members = [models[NO_METHOD]] + [m for m, _, _, _ in others]
    standard = f"standard committee ({len(members)} models)"
    models[standard], groups[standard] = Committee(members, output="log_probs"), "standard committee"
    picked[standard] = [picked[NO_METHOD]] + [e for _, _, _, e in others]

    # the adversarial stages: the "no method" network at its picked epoch, with its Adam state and
    # its batches, trained on the committee examples of the model as it is at each batch
    clean_optimizer, source = clean_state
    adversarial = copy.deepcopy(models[NO_METHOD])
    optimizer = torch.optim.Adam(adversarial.parameters(), lr=LR)
    optimizer.load_state_dict(copy.deepcopy(clean_optimizer.state_dict()))
    attack = CommitteeExample(adversarial, TRAIN_EPS, TRAIN_C)
    adv_members, adv_epochs = [models[NO_METHOD]], [picked[NO_METHOD]]
    for k in range(1, stages + 1):
        epoch, _ = _train_picked(adversarial, source, optimizer, stage_epochs,
                                 lambda m: _committee_accuracy(m, x_val, y_val),
                                 loss=lambda m, x, y: F.cross_entropy(m(attack(x, y)), y))
        name = _stage_name(k)
        models[name], groups[name], picked[name] = copy.deepcopy(adversarial).eval(), STAGES_GROUP, epoch
        adv_members.append(models[name])
        adv_epochs.append(epoch)
        bar.update()
    models[ADV_COMMITTEE], groups[ADV_COMMITTEE] = (Committee(adv_members, output="log_probs"),
                                                    "adversarial committee")
    picked[ADV_COMMITTEE] = adv_epochs

    results = {}
    for name, model in models.items():
        model.eval()
        evaluated = {str(d): _error_at_dist(model, x_test, y_test, d, seed=seed, draws=draws) for d in DISTS}
        results[name] = {"group": groups[name], "random": _is_random(model), "picked_epoch": picked[name],
                         "error": {d: r["error"] for d, r in evaluated.items()},
                         "dist": {d: r["dist"] for d, r in evaluated.items()},
                         "eps": {d: r["eps"] for d, r in evaluated.items()},
                         "unreached": {d: r["unreached"] for d, r in evaluated.items()}}
        bar.update()
    bar.close()
    return {"rows": results, "dae_test_mse": dae_mse, "dae_picked_epoch": dae_checkpoint.step,
            "dae_sizes": [n_pixels, *DAE_HIDDEN], "member_seeds": member_seeds, "training_images": len(x_train),
            "validation_images": len(x_val), "test_images": len(x_test)}


def _attacked_mean(row_errors: Dict[str, float]) -> float:
    """The error averaged over the attacked dists (0.1 and 0.2)."""
    return mean([row_errors[str(d)] for d in DISTS if d > 0])


def summarize(settings: Settings, runs: List[dict]) -> ExperimentResult:
    epochs, stages, stage_epochs, dae_epochs, batches, _, draws = SCALE[settings.scale]
    names = list(runs[0]["rows"])
    attacked = [str(d) for d in DISTS if d > 0]
    stage_rows = [n for n in names if runs[0]["rows"][n]["group"] == STAGES_GROUP]

    def col(name: str, key: str, d: str) -> list:
        return [r["rows"][name][key][d] for r in runs]

    head = ("| method | " + " | ".join(f"error at dist={d:g}" for d in DISTS)
            + " | measured dist | FGS eps (one per set) |")
    lines = [head, "|---|" + "---:|" * (len(DISTS) + 2)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(mean_sd(col(name, "error", str(v)), 4) for v in DISTS)
                     + " | " + " / ".join(mean_sd(col(name, "dist", v), 4) for v in attacked)
                     + " | " + " / ".join(mean_sd(col(name, "eps", v), 3) for v in attacked) + " |")
    table = "\n".join(lines)

    # per seed, the single stage with the lowest error averaged over the attacked dists (on the test set)
    best_stage = [min(stage_rows, key=lambda n: _attacked_mean(r["rows"][n]["error"])) for r in runs]
    best_stage_error = [_attacked_mean(r["rows"][n]["error"]) for r, n in zip(runs, best_stage)]
    committee_mean = [_attacked_mean(r["rows"][ADV_COMMITTEE]["error"]) for r in runs]
    p_none, p_stage, p_comm = PAPER["no method"], PAPER["adversarial training after 5 stages"], PAPER["committee"]
    parts = [
        paired(f"the committee of adversarially trained models has a lower error than no defence at dist {d}",
               f"{p_comm[i + 1]:.1f}% vs {p_none[i + 1]:.1f}% (Table 2)", col(NO_METHOD, "error", d),
               col(ADV_COMMITTEE, "error", d), "less", f"error at dist {d}", 4)
        for i, d in enumerate(attacked)]
    parts.append(paired(
        "it is the most robust: a lower error (averaged over dist 0.1 and 0.2) than the best single adversarially "
        "trained stage",
        f"{(p_comm[1] + p_comm[2]) / 2:.2f}% vs {(p_stage[1] + p_stage[2]) / 2:.2f}% for the 5-stage network "
        "(Table 2; Sec. 5.3: more resistant than any single model tested)",
        best_stage_error, committee_mean, "less", "mean error at dist 0.1 and 0.2", 4))
    result_verdict = verdict(parts)

    paper = ("Table 2 of Uličný et al. (error on the MNIST test set at dist = 0 / 0.1 / 0.2): no method "
             f"{p_none[0]}% / {p_none[1]}% / {p_none[2]}%, adversarial training after 5 stages {p_stage[0]}% / "
             f"{p_stage[1]}% / {p_stage[2]}%, the committee of the 6 adversarially trained models {p_comm[0]}% / "
             f"{p_comm[1]}% / {p_comm[2]}% (the preprocessing rows: 34.8–52.4% at 0.1, 88.5–98.1% at 0.2; the "
             "standard committee 70.9% / 97.2%); Sec. 5.3: the committee is more resistant to adversarial noise "
             "than any single model tested.")
    criterion = ("the committee of adversarially trained models against the baselines, paired over the seeds, each "
                 "part holding when the 95% t interval of the per-seed differences excludes 0 on the paper's side: "
                 "a lower error than no defence at dist 0.1; at dist 0.2; and a lower error averaged over the two "
                 "than the best single adversarially trained stage (per seed, the stage with the lowest such "
                 "average on the test set). All parts: reproduced; some: partly; none: not reproduced. The "
                 "preprocessing rows and the standard committee are reported, not judged.")
    scale_note = "" if batches is None else f", {batches} batches per epoch"
    protocol = (f"The same small CNN (two 5x5 stride-2 convolutions, 16 and 32 channels, a 100-unit hidden layer) "
                f"behind each defence on {settings.data} ({runs[0]['training_images']} training images, "
                f"{runs[0]['validation_images']} held out as a validation split, {runs[0]['test_images']} test "
                f"images); Adam (lr {LR:g}, batch 64), {_count(epochs, 'clean epoch')} per network{scale_note}, the "
                f"autoencoder ({'-'.join(str(s) for s in runs[0]['dae_sizes'])}) "
                f"{_count(dae_epochs, 'epoch')}; {_count(stages, 'adversarial stage')} of "
                f"{_count(stage_epochs, 'epoch')} on the network's own committee examples (eps {TRAIN_EPS:g}, "
                f"c {TRAIN_C:g}) after its clean training; committees of {stages + 1} members. Every network is kept "
                "at its best epoch on the validation split (clean networks: clean accuracy; each adversarial stage: "
                "accuracy on its own committee examples of the validation images; the autoencoder: reconstruction "
                "error), not at its last. White-box fast-gradient-sign examples at one eps per set, bisected so that "
                f"the set's mean absolute distortion is each dist exactly (the paper's eq. 2), gradients through every preprocessing and committee member, {draws} noise draws "
                "(EOT) for the random low-pass defence. The best single stage per seed (part 3): "
                + ", ".join(f"seed {s}: {n}" for s, n in zip(settings.seed_list(), best_stage)) + ".")

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        styles = {"baseline": "-", "preprocessing": "--", "standard committee": "-.", STAGES_GROUP: ":",
                  "adversarial committee": "-"}
        pre = iter(plt.get_cmap("tab10")([0, 1, 4, 5, 6, 8, 9]))   # no red, no green: the committee and stages
        stage = iter(plt.get_cmap("Greens")([0.4 + 0.6 * k / max(1, stages - 1) for k in range(stages)]))
        colors = {"baseline": lambda: "k", "preprocessing": lambda: next(pre), "standard committee": lambda: "tab:gray",
                  STAGES_GROUP: lambda: next(stage), "adversarial committee": lambda: "tab:red"}
        fig, ax = plt.subplots(figsize=(9, 5))
        for name in names:
            group = runs[0]["rows"][name]["group"]
            errors = [col(name, "error", str(v)) for v in DISTS]
            m = [mean(e) for e in errors]
            s = [0.0 if len(runs) < 2 else sd(e) for e in errors]
            ax.errorbar(DISTS, m, yerr=s, marker="o", ls=styles[group], color=colors[group](), label=name,
                        lw=2.5 if name == ADV_COMMITTEE else 1.2, capsize=3)
        ax.set_xlabel("dist (mean absolute distortion of the FGS examples)")
        ax.set_ylabel("error")
        ax.set_xticks(DISTS)
        ax.set_ylim(0, 1)
        ax.set_title(f"white-box FGS error against dist ({settings.data}; mean ± sd over {len(runs)} "
                     f"seed{'s' if len(runs) > 1 else ''})")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("committee", CLAIM, table,
                            {"data": settings.data, "dists": DISTS, "epochs": epochs, "stages": stages,
                             "stage_epochs": stage_epochs, "dae_epochs": dae_epochs, "batches": batches,
                             "dropout": DROPOUT, "low_pass": {"sigma": LOW_PASS[0], "noise": LOW_PASS[1]},
                             "dae_sizes": runs[0]["dae_sizes"], "train_attack": {"eps": TRAIN_EPS, "c": TRAIN_C},
                             "eot_draws": draws, "validation_fraction": VALIDATION, "rows": names,
                             "best_stage": best_stage, "paper_table2": PAPER},
                            plot=plot, verdict=result_verdict, paper=paper, criterion=criterion, protocol=protocol)
