"""committee: the committee paper's Table 2 and its Figs. 3-7 on the paper's LeNet:
dropout (Table 1's "Inp" and "All"), a low-pass filter with noise injection (the
paper's three kernels), a denoising autoencoder, their combinations with dropout, a
standard committee of 6 networks, adversarial training in 5 stages on pools of
adversarial examples and the committee of the natural network and the 5 stages; the
error on white-box fast-gradient-sign examples and on Gaussian noise at many mean
absolute distortions dist, on the embedded digits at 28x28, several seeds.

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

Sec. 5.3: the committee of 6 adversarially trained models errs on 36.5% of the
adversarial examples at eps 0.37 (dist 0.2), against 96.1% for a single model and
97.2% for a standard committee of 6; Sec. 6: "an ensemble of models trained on
adversarial noise is more resistant to adversarial noise than any single model we
have tested". Sec. 5.1 (Fig. 3): dropout on every layer ("All") is the most robust
dropout model against adversarial noise (78.88% -> 42.97% at eps 0.2); Fig. 4: input
dropout ("Inp") is the most robust to Gaussian noise. Sec. 5.2 (Figs. 5, 6): the DAE
prepares adversarial examples better than the low-pass filter, the low-pass filter
Gaussian noise better than the DAE.

Reproduced when (fixed before the runs), on the paper's metric (the error at dist on
the FGS test sets), the committee of adversarially trained models against the
baselines, paired over the seeds (robustops.experiments.stats.paired: the 95% t
interval of the per-seed differences excludes 0 on the paper's side):
  1. its error at dist = 0.1 is lower than no defence's (paper: 9.8% vs 73.6%);
  2. its error at dist = 0.2 is lower than no defence's (paper: 36.5% vs 96.1%);
  3. it is the most robust of the adversarially trained models: its error, averaged
     over dist = 0.1 and 0.2, is lower than that of the best single adversarially
     trained stage (per seed, the stage with the lowest such average on the test set,
     which favours the stages; paper: 23.15% against 68.30% for the 5-stage network,
     the only stage it reports, and Sec. 6: more resistant than any single model).
Every part holds: reproduced; some: partly reproduced (naming them); none: not
reproduced. The dropout and preprocessing rows, the standard committee and every
Gaussian-noise curve are reported, not judged.

The network (robustops.models.committee_lenet): the paper's LeNet of two
convolutions, two max-poolings and two fully connected layers with Xavier
initialisation (Sec. 4, Fig. 2); the paper gives no sizes, so they are Caffe's MNIST
LeNet (conv 20 5x5, max pool 2, conv 50 5x5, max pool 2, fc 500, ReLU, fc 10; Caffe's
xavier fillers). Solver (Sec. 4: SGD with momentum and L2 regularisation; no rates
given): Caffe's LeNet solver's, batch 64, lr 0.01, momentum 0.9, weight decay 5e-4,
the rate held fixed (Caffe's "inv" decay is left out: it would have to restart or go
on through the phases of the committee training, which the paper does not say). Every
network of a seed starts from the same weights (the seed's; the standard committee's
other members from seed + 1000 k) and sees the same data order.

The rows:
- no method: the LeNet trained on clean images (the paper's 10,000 iterations; the
  lengths of --quick and --full: below).
- dropout (Inp), dropout (All): Table 1's two models, trained for the paper's 35,000
  and 40,000 iterations; "All" is Table 2's "dropout" row (Sec. 5.1 calls it the most
  robust dropout model). Where each column's dropout acts is our reading of Table 1
  (the units of the named layer: the pixels; conv1's and conv2's maps before their
  pooling; ip1's units after the ReLU; the logits); see committee_lenet.
- low-pass filter 3x3 / 5x5 / 7x7: robustops.defences.LowPassNoise(kernel=3|5|7): the
  paper's three kernels (the Gaussian of variance 7, 1.3, 0.6 sampled over [-3, 3]),
  after Gaussian noise of standard deviation 0.05 (the paper injects noise before the
  filter and gives no level), in front of the no-method LeNet; the 5x5 is the one set
  beside Table 2's "low-pass filter" row and used in the combinations (the paper does
  not say which kernel its Table 2 row uses).
- DAE: a robustops.defences.DenoisingAutoencoder trained first (train_denoiser: input
  dropout 0.2, as the paper; kept at its lowest validation reconstruction error), in
  front of the no-method LeNet.
- low-pass filter 5x5 + dropout (Inp / All), DAE + dropout (Inp / All): the same
  preprocessing in front of the dropout LeNets (Sec. 4.1 stacks the DAE on three
  LeNets: plain, Inp and All; Table 2's "+ dropout" rows are set beside the "All"
  ones).
  Sec. 5.2 feeds pre-processed images "into two different models to be classified, to
  an ordinary LeNet model and to a LeNet regularized with dropout": the preprocessing
  rows reuse the trained LeNets unchanged (our reading; the earlier version of this
  experiment retrained a network on the preprocessed images).
- standard committee (6 models): the no-method LeNet and 5 more trained the same way
  from the seeds seed + 1000, ..., seed + 5000, their probabilities averaged
  (robustops.defences.Committee).
- adversarial training after k stages, committee of adversarially trained models:
  robustops.defences.train_committee with the paper's protocol ("pools"): the
  no-method LeNet (it is the natural phase, member 0) is trained in 5 stages; before
  stage k its snapshot (member k - 1) makes a pool of committee examples of every
  training image (CommitteeExample, eps 0.1, c 1: the paper's eq. 3; the paper gives
  neither, these are the library's defaults), and the stage trains on the clean images
  joined with every pool so far, for a fixed number of iterations (the paper's 5,000;
  batches_per_epoch: an epoch of a stage is as many batches as a clean epoch), with
  the one optimizer throughout; the row "after k stages" is the snapshot after stage
  k, and the committee averages the probabilities of the 6 members (the natural
  network and the 5 snapshots).

Readout (ours; the paper does not say how it picks its networks): 10% of the
training set (common.split_validation, drawn with the seed) is a validation split;
every network is trained on the rest and kept at its best epoch on the validation
analogue of what it trains on (the first best on ties; train_committee's select): a
clean network by its clean validation accuracy; each adversarial stage by its
accuracy on the clean validation images joined with their pools made by the earlier
snapshots, as its training pools are (the stage ends at that epoch, its weights and
optimizer state restored, and the next pool is made from it); the autoencoder by its
validation reconstruction error. (Scoring a stage on committee examples made from
itself instead, as the earlier online version did, picks the first epoch or two of
every stage: the accuracy on those white-box examples falls while a stage fits the
earlier snapshots' pools, and a stage kept after one epoch errs on a third of the
clean test images.) The test set is only evaluated.

Distortion (the paper's eq. 2): dist is the mean absolute change per pixel over the
whole test set, at ONE eps (or sigma) per test set, as the paper (e.g. eps 0.37 for
dist 0.2 on MNIST). A fast-gradient-sign step of size eps clamped to [0, 1] moves each
pixel by min(eps, its room in the sign's direction); the eps for each dist is found by
bisection so that the set's mean absolute distortion is exactly dist (a set that
cannot reach it is moved as far as it goes and flagged ``unreached``). Gaussian noise
likewise: one fixed standard-normal draw z per seed (the same for every row),
x + sigma z clamped to [0, 1], the sigma for each dist bisected. The curves (Figs.
3-7): 16 levels, dist = 0, 0.02, ..., 0.30, for every row and both noise kinds; the
table's dist 0.1 and 0.2 are two of them. The error counts every misclassified image
(clean mistakes included).

White-box: the FGS gradient is taken through the whole defended model, through the
filter, the autoencoder and every committee member (committees are attacked with
output "log_probs"); dropout is off in evaluation. The low-pass rows inject noise at
test time, so their gradient is the expectation over the noise (EOT): the gradient of
-log of the class probability averaged over 8 noise draws (16 at --full; 2 at --tiny)
and the prediction is one fresh draw, as the defence is deployed; evaluation noise is
seeded with the seed.

Where this differs from the paper, knowingly:
- data: the embedded sklearn digits (8x8, upsampled to 28x28: 1,211 training, 135
  validation, 451 test images) stand for MNIST, which cannot be downloaded here
  (--data mnist reads it from files);
- length: --quick trains every network for the paper's number of passes over its
  training set rather than its iterations (the paper's 10,000 / 35,000 / 40,000 /
  5,000 iterations of 64 images make 10.7 / 37.3 / 42.7 / 5.3 passes over MNIST's
  60,000: here 11 / 37 / 43 epochs and 5 stage epochs of 19 batches), so about 1/50
  of its iterations, for the CPU budget; --full runs the paper's iterations (about 526
  / 1,842 / 2,105 epochs and 263 per stage on the digits);
- the autoencoder is C*H*W-500-30 trained with Adam (lr 1e-3, batch 64; 30 epochs at
  --quick, 100 at --full) rather than the paper's 784-1000-500-250-30 trained with
  Nesterov's momentum: that sigmoid stack, trained end to end from random weights,
  stays at the mean image here (its loss at the pixel variance for 30 epochs); its
  test reconstruction error is recorded (``dae_test_mse``);
- the paper's 100 distortion levels are 16 here, and its Figs. 3-7 show selected
  rows; every row gets both curves here;
- the checkpoint selection on a validation split (the paper says nothing of it);
- our readings where the paper is silent (each stated above): the layer sizes and the
  solver's rates (Caffe's LeNet), the fixed learning rate, where each dropout acts,
  the noise level before the filter and the kernel beside Table 2's row, the
  preprocessing in front of the trained networks rather than networks retrained
  behind it, eps and c of the committee examples;
- the human study (Sec. 4.2, 5.4, Fig. 8) and the USPS images are not reproduced.

--quick: the epochs above, 5 stages, 8 EOT draws, 3 seeds, each seed as three tasks
(UNITS) spread over the processes. The committed run took 337 s of wall time on an
otherwise idle 2-core CPU (its record states the time): over the five minutes the
other experiments keep to, by about a tenth; it was left at the paper's passes
rather than cut further.
--full: the paper's iterations (about 49 times the epochs of --quick) and 16 draws;
not run here: from the --quick times, roughly 1.5-2 hours per seed.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from robustops.attacks import FGSM, CommitteeExample, eval_mode
from robustops.data import loader
from robustops.defences import (Committee, DenoisingAutoencoder, LowPassNoise, Preprocessed, train_committee,
                                train_denoiser)
from robustops.experiments.common import (BestCheckpoint, ExperimentResult, Settings, band, load_data, progress_bar,
                                          split_validation)
from robustops.experiments.stats import mean, mean_sd, paired, sd, verdict
from robustops.metrics import mean_abs_distortion
from robustops.models import committee_lenet

CLAIM = ("the committee of a network and its snapshots trained in stages on pools of their own adversarial "
         "examples is far more robust to fast-gradient-sign examples than no defence and than any single "
         "adversarially trained stage; dropout, low-pass filtering with noise and a denoising autoencoder help less")

TABLE_DISTS = [0.0, 0.1, 0.2]
CURVE_DISTS = [round(0.02 * k, 2) for k in range(16)]  # 0, 0.02, ..., 0.30: the curves (Figs. 3-7)
# the paper's iterations (batch 64) of each kind of training (Sec. 4.1, Table 1) and its MNIST training set
PAPER_ITERATIONS = {"natural": 10000, "Inp": 35000, "All": 40000, "stage": 5000}
PAPER_STAGES = 5
MNIST_TRAIN = 60000
BATCH = 64
# scale -> how long ("tiny": one epoch of `batches` batches each; "passes": the paper's passes over
#          its training set; "iterations": the paper's iterations), adversarial stages, autoencoder
#          epochs, batches per epoch (None: all), test images (None: all), EOT draws
SCALE = {"tiny": ("tiny", 2, 1, 2, 64, 2), "quick": ("passes", PAPER_STAGES, 30, None, None, 8),
         "full": ("iterations", PAPER_STAGES, 100, None, None, 16)}
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4   # Caffe's LeNet solver (fixed rate)
LOW_PASS_KERNELS = (3, 5, 7)                    # the paper's three kernels (LowPassNoise(kernel=k))
LOW_PASS_KERNEL = 5                             # the one beside Table 2's row and in the combinations
LOW_PASS_NOISE = 0.05                           # the standard deviation of the noise injected before it
DAE_HIDDEN = (500, 30)                          # the autoencoder's widths after the input
DAE_INPUT_DROPOUT, DAE_LR = 0.2, 1e-3
TRAIN_EPS, TRAIN_C = 0.1, 1.0                   # the committee example of the pools (eq. 3)
EVAL_BATCH = 512
VALIDATION = 0.1                                # the fraction of the training set held out to pick checkpoints
MEMBER_SEED_STEP = 1000                         # the standard committee's k-th member trains from seed + k * this
SIGMA_MAX = 8.0                                 # the largest Gaussian sigma the bisection tries

NO_METHOD = "no method"
INP, ALL = "dropout (Inp)", "dropout (All)"
DAE = "DAE"
ADV_COMMITTEE = "committee of adversarially trained models"
STAGES_GROUP = "adversarial training"


def _low_pass(k: int) -> str:
    return f"low-pass filter {k}x{k}"


LPF = _low_pass(LOW_PASS_KERNEL)
# Table 2 of the paper (error %, dist 0 / 0.1 / 0.2), by the row of ours set beside it
PAPER = {NO_METHOD: (0.83, 73.6, 96.1), ALL: (0.91, 35.7, 98.1), LPF: (1.38, 52.0, 95.0), DAE: (1.27, 52.4, 93.2),
         f"{LPF} + {ALL}": (2.51, 34.8, 88.5), f"{DAE} + {ALL}": (1.56, 21.4, 90.3),
         "standard committee": (0.86, 70.9, 97.2), "adversarial training after 5 stages": (0.87, 44.5, 92.1),
         ADV_COMMITTEE: (0.65, 9.8, 36.5)}
PAPER_NAMES = {NO_METHOD: "No method", ALL: "Dropout", LPF: "Low-pass filter", DAE: "DAE",
               f"{LPF} + {ALL}": "Low-pass filter + dropout", f"{DAE} + {ALL}": "DAE + dropout",
               "standard committee": "Standard committee",
               "adversarial training after 5 stages": "Adversarial training after 5 stages",
               ADV_COMMITTEE: "Committee of models trained on adv. examples"}


def _stage_name(k: int) -> str:
    return f"adversarial training after {k} stage{'s' if k > 1 else ''}"


def _standard_name(members: int) -> str:
    return f"standard committee ({members} models)"


def _paper_row(name: str) -> Optional[Tuple[float, float, float]]:
    """The paper's Table 2 numbers set beside our row ``name`` (None: none)."""
    if name.startswith("standard committee"):
        return PAPER["standard committee"]
    return PAPER.get(name)


def _epochs(settings: Settings, kind: str, batches_per_epoch: int) -> int:
    """Epochs (of the clean training set) for a training of ``kind`` (PAPER_ITERATIONS'
    keys; for "stage", the epochs of ``batches_per_epoch`` batches of one stage)."""
    mode = SCALE[settings.scale][0]
    if mode == "tiny":
        return 1
    if mode == "passes":  # as many passes over our training set as the paper's iterations make over MNIST's
        return max(1, round(PAPER_ITERATIONS[kind] * BATCH / MNIST_TRAIN))
    return max(1, round(PAPER_ITERATIONS[kind] / batches_per_epoch))


class _Batches:
    """The first ``batches`` batches of every pass over a seeded loader (all of them
    when None): an epoch of the tiny scale."""

    def __init__(self, x: Tensor, y: Tensor, batches: Optional[int], seed: int):
        self.loader, self.batches = loader(x, y, batch_size=BATCH, seed=seed), batches

    def __len__(self) -> int:
        return len(self.loader) if self.batches is None else min(self.batches, len(self.loader))

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
        return torch.cat([model(x[i:i + EVAL_BATCH]).argmax(1) for i in range(0, len(x), EVAL_BATCH)])


def _fgs_curve(model: nn.Module, x: Tensor, y: Tensor, dists: Sequence[float], seed: int = 0,
               draws: int = 8) -> Dict[str, List[float]]:
    """The error of ``model`` (outputs: logits or log-probabilities) on white-box
    fast-gradient-sign examples of the test set at each of ``dists``, each at the one
    eps whose mean absolute distortion over the whole set is that dist (0: the clean
    error), with the measured dist, that eps and whether the set could not reach the
    dist ("unreached", 0 or 1): lists aligned with ``dists``. The gradient is taken
    once (the sign does not depend on eps); a model with test-time noise gets the
    average gradient of ``draws`` noise draws (1 for the others) and a fresh draw for
    every prediction; the noise is seeded by ``seed``."""
    draws = draws if _is_random(model) else 1
    torch.manual_seed(seed)
    n = len(x)
    out: Dict[str, List[float]] = {"error": [], "dist": [], "eps": [], "unreached": []}
    deltas = room = None
    if any(d > 0 for d in dists):
        deltas = [_fgs_delta(model, x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH], draws) for i in range(0, n, EVAL_BATCH)]
        room = torch.cat([d.abs().flatten(1) for d in deltas])
    for dist in dists:
        if dist <= 0:
            error, measured, eps, unreached = float((_predict(model, x) != y).double().mean()), 0.0, 0.0, 0.0
        else:
            eps = _eps_for_set(room, dist)
            x_adv = torch.cat([_step(x[i:i + EVAL_BATCH], deltas[k], eps)
                               for k, i in enumerate(range(0, n, EVAL_BATCH))])
            measured = float(mean_abs_distortion(x, x_adv).mean())
            error = float((_predict(model, x_adv) != y).double().mean())
            unreached = float(float(room.double().mean()) < dist)
        for key, value in (("error", error), ("dist", measured), ("eps", eps), ("unreached", unreached)):
            out[key].append(value)
    return out


def _error_at_dist(model: nn.Module, x: Tensor, y: Tensor, dist: float, seed: int = 0,
                   draws: int = 8) -> Dict[str, float]:
    """_fgs_curve at the one level ``dist``: {"error", "dist", "eps", "unreached"}."""
    return {k: v[0] for k, v in _fgs_curve(model, x, y, [dist], seed, draws).items()}


def _sigma_for_set(x: Tensor, z: Tensor, dist: float, iterations: int = 50) -> float:
    """The one sigma in [0, SIGMA_MAX] for which the set's mean absolute distortion of
    clamp(x + sigma z, 0, 1) is ``dist`` (bisection: it grows with sigma); SIGMA_MAX
    when even that is below dist."""
    x, z = x.double(), z.double()
    lo, hi = 0.0, SIGMA_MAX
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if float(((x + mid * z).clamp(0, 1) - x).abs().mean()) < dist:
            lo = mid
        else:
            hi = mid
    return hi


def _gaussian_noise(x: Tensor, seed: int) -> Tensor:
    """The standard-normal draw z of the Gaussian curves (seeded: the same for every model)."""
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)


def _gaussian_sigmas(x: Tensor, dists: Sequence[float], seed: int = 0) -> List[float]:
    """The sigma of each of ``dists`` for the set x and the seed's z (0 for dist 0):
    the same for every model, so computed once."""
    z = _gaussian_noise(x, seed)
    return [_sigma_for_set(x, z, dist) if dist > 0 else 0.0 for dist in dists]


def _gaussian_curve(model: nn.Module, x: Tensor, y: Tensor, dists: Sequence[float], seed: int = 0,
                    sigmas: Optional[Sequence[float]] = None) -> Dict[str, List[float]]:
    """The error of ``model`` on the test set plus Gaussian noise at each of ``dists``:
    x + sigma z clamped to [0, 1], z one standard-normal draw seeded by ``seed`` (the
    same for every model), sigma bisected so that the set's mean absolute distortion
    is the dist (``sigmas``: _gaussian_sigmas(x, dists, seed), computed here when
    None); with the measured dist, the sigma and "unreached". A model with test-time
    noise draws it afresh for every prediction (seeded by ``seed``)."""
    z = _gaussian_noise(x, seed)
    sigmas = _gaussian_sigmas(x, dists, seed) if sigmas is None else list(sigmas)
    torch.manual_seed(seed)
    out: Dict[str, List[float]] = {"error": [], "dist": [], "sigma": [], "unreached": []}
    for dist, sigma in zip(dists, sigmas):
        noisy = (x + sigma * z).clamp(0, 1)
        measured = float(mean_abs_distortion(x, noisy).mean())
        out["error"].append(float((_predict(model, noisy) != y).double().mean()))
        out["dist"].append(measured)
        out["sigma"].append(sigma)
        out["unreached"].append(float(measured < dist - 1e-6))
    return out


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """The fraction of (x, y) that ``model`` (outputs: logits or log-probabilities)
    classifies correctly, in eval mode."""
    return float((_predict(model, x) == y).double().mean())


def _committee_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """The accuracy of ``model`` on the committee examples (the pools' examples) of
    (x, y) made from ``model`` itself."""
    x_adv = torch.cat([CommitteeExample(model, TRAIN_EPS, TRAIN_C)(x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH])
                       for i in range(0, len(x), EVAL_BATCH)])
    return _accuracy(model, x_adv, y)


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


# the independent parts of a seed, run as separate tasks (spread evenly over the processes) and merged
# by summarize: the paper's committee; the standard committee and the preprocessing of the plain LeNet
# (which trains the plain LeNet again: the same weights as the committee's member 0); the dropout LeNets
# and the preprocessing in front of them (both of the last two train the same autoencoder)
UNITS = ("committee", "standard", "dropout")


def units(settings: Settings) -> List[str]:
    return list(UNITS)


def _row_order(stages: int) -> List[str]:
    """Every row of the table, in order."""
    return ([NO_METHOD, INP, ALL] + [_low_pass(k) for k in LOW_PASS_KERNELS] + [DAE]
            + [f"{pre} + {d}" for pre in (LPF, DAE) for d in (INP, ALL)] + [_standard_name(stages + 1)]
            + [_stage_name(k) for k in range(1, stages + 1)] + [ADV_COMMITTEE])


def _train(settings: Settings, seed: int, unit: str) -> dict:
    """Train the networks of one unit of one seed (checkpoints picked on the validation
    split). Returns {"rows": {name: (model, group, picked epoch(s))}, "data": (x_test,
    y_test), "adversarial": the Committee train_committee returned (unit "committee"),
    "record": what run_unit records besides the evaluations}."""
    if unit not in UNITS:
        raise ValueError(f"robustops.experiments.committee: unknown unit {unit!r}; there are {UNITS}")
    _, stages, dae_epochs, batches, n_test, _ = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "committee", digits_size=28)
    x_train, y_train, x_val, y_val = split_validation(data_set.x_train, data_set.y_train, VALIDATION, seed)
    x_test, y_test = data_set.x_test[:n_test], data_set.y_test[:n_test]
    channels, height, width = data_set.shape
    n_pixels = channels * height * width
    per_epoch = len(_Batches(x_train, y_train, batches, seed))
    epochs = {kind: _epochs(settings, kind, per_epoch) for kind in PAPER_ITERATIONS}
    record = {"epochs": epochs, "batches_per_epoch": per_epoch, "training_images": len(x_train),
              "validation_images": len(x_val), "test_images": len(x_test)}
    bar = progress_bar(settings, {"committee": 1, "standard": stages + 2, "dropout": 3}[unit],
                       f"committee seed {seed}, {unit} (training)")
    val_pools: List[Tensor] = []   # the validation images' pools, made by members 0, 1, ... as the training pools

    def net(dropout: Optional[str], model_seed: int) -> nn.Module:
        torch.manual_seed(model_seed)
        return committee_lenet(dropout, in_channels=channels, num_classes=data_set.classes,
                               input_size=(height, width)).to(device)

    def select(model: nn.Module, phase: int, members: List[nn.Module]) -> float:
        """The validation analogue of each phase's training set: the clean validation
        images (phase 0); for stage k, the clean validation images joined with their
        pools of committee examples made by members 0 .. k - 1."""
        for member in members[len(val_pools):]:
            val_pools.append(torch.cat([CommitteeExample(member, TRAIN_EPS, TRAIN_C)(
                x_val[i:i + EVAL_BATCH], y_val[i:i + EVAL_BATCH]) for i in range(0, len(x_val), EVAL_BATCH)]))
        joined = [x_val] + val_pools[:len(members)]
        return _accuracy(model, torch.cat(joined), y_val.repeat(len(joined)))

    def natural(dropout: Optional[str], kind: str, model_seed: int) -> Tuple[nn.Module, int]:
        """A LeNet trained on clean images only: train_committee's natural phase, alone."""
        trained = train_committee(net(dropout, model_seed), _Batches(x_train, y_train, batches, model_seed), _sgd,
                                  stages=0, natural_epochs=epochs[kind], progress=False, select=select)
        bar.update()
        return trained.members[0], trained.picked_epochs[0]

    def autoencoder() -> nn.Module:
        """The autoencoder, kept at its lowest reconstruction error on the validation images."""
        torch.manual_seed(seed)
        dae = DenoisingAutoencoder((n_pixels,) + DAE_HIDDEN).to(device)
        optimizer = torch.optim.Adam(dae.parameters(), lr=DAE_LR)
        source = _Batches(x_train, y_train, batches, seed)
        checkpoint = BestCheckpoint("min")
        for epoch in range(1, dae_epochs + 1):
            train_denoiser(dae, source, optimizer, 1, input_dropout=DAE_INPUT_DROPOUT, progress=False)
            dae.eval()
            with torch.no_grad():
                checkpoint.update(dae, float(((dae(x_val) - x_val) ** 2).mean()), epoch)
        checkpoint.restore(dae)
        dae.eval().requires_grad_(False)
        with torch.no_grad():
            record.update(dae_test_mse=float(((dae(x_test) - x_test) ** 2).mean()),
                          dae_picked_epoch=checkpoint.step, dae_sizes=[n_pixels, *DAE_HIDDEN])
        bar.update()
        return dae

    def low_pass(k: int = LOW_PASS_KERNEL) -> LowPassNoise:
        return LowPassNoise(noise=LOW_PASS_NOISE, kernel=k).to(device)

    rows: Dict[str, tuple] = {}
    adversarial = None
    if unit == "committee":
        # the paper's committee: the natural LeNet (member 0, the "no method" row) and its stages
        adversarial = train_committee(net(None, seed), _Batches(x_train, y_train, batches, seed), _sgd,
                                      stages=stages, epochs=epochs["stage"], natural_epochs=epochs["natural"],
                                      attack_factory=lambda m: CommitteeExample(m, TRAIN_EPS, TRAIN_C),
                                      progress=False, batch_size=BATCH, seed=seed, select=select,
                                      batches_per_epoch=per_epoch)
        bar.update()
        members, picked = list(adversarial.members), list(adversarial.picked_epochs)
        rows[NO_METHOD] = (members[0], "baseline", picked[0])
        for k in range(1, stages + 1):
            rows[_stage_name(k)] = (members[k], STAGES_GROUP, picked[k])
        rows[ADV_COMMITTEE] = (Committee(members, output="log_probs"), "adversarial committee", picked)
        record["stage_validation_scores"] = adversarial.selection_scores[1:]
    elif unit == "standard":
        plain, plain_epoch = natural(None, "natural", seed)   # the committee unit's member 0, trained again
        for k in LOW_PASS_KERNELS:
            rows[_low_pass(k)] = (Preprocessed(low_pass(k), plain), "preprocessing", plain_epoch)
        rows[DAE] = (Preprocessed(autoencoder(), plain), "preprocessing", plain_epoch)
        member_seeds = [seed + k * MEMBER_SEED_STEP for k in range(1, stages + 1)]
        others = [natural(None, "natural", s) for s in member_seeds]
        rows[_standard_name(stages + 1)] = (Committee([plain] + [m for m, _ in others], output="log_probs"),
                                            "standard committee", [plain_epoch] + [e for _, e in others])
        record["member_seeds"] = member_seeds
    else:
        inp, inp_epoch = natural("Inp", "Inp", seed)
        every, every_epoch = natural("All", "All", seed)
        rows[INP], rows[ALL] = (inp, "dropout", inp_epoch), (every, "dropout", every_epoch)
        dae = autoencoder()
        for pre_name, pre in ((LPF, low_pass), (DAE, lambda: dae)):
            for name, model, epoch in ((INP, inp, inp_epoch), (ALL, every, every_epoch)):
                rows[f"{pre_name} + {name}"] = (Preprocessed(pre(), model), "preprocessing + dropout", epoch)
    bar.close()
    return {"rows": rows, "data": (x_test, y_test), "adversarial": adversarial, "record": record}


def run_unit(settings: Settings, seed: int, unit: str) -> dict:
    """Train the rows of ``unit`` (UNITS) from ``seed`` and evaluate them on the test
    set: the error on FGS examples and on Gaussian noise at every level of
    CURVE_DISTS."""
    draws = SCALE[settings.scale][5]
    trained = _train(settings, seed, unit)
    x_test, y_test = trained["data"]
    at = {str(d): CURVE_DISTS.index(d) for d in TABLE_DISTS}
    sigmas = _gaussian_sigmas(x_test, CURVE_DISTS, seed)
    results = {}
    bar = progress_bar(settings, len(trained["rows"]), f"committee seed {seed}, {unit} (evaluation)")
    for name, (model, group, picked) in trained["rows"].items():
        model.eval()
        fgs = _fgs_curve(model, x_test, y_test, CURVE_DISTS, seed=seed, draws=draws)
        gaussian = _gaussian_curve(model, x_test, y_test, CURVE_DISTS, seed=seed, sigmas=sigmas)
        results[name] = {"group": group, "random": _is_random(model), "picked_epoch": picked,
                         "error": {d: fgs["error"][i] for d, i in at.items()},
                         "dist": {d: fgs["dist"][i] for d, i in at.items()},
                         "eps": {d: fgs["eps"][i] for d, i in at.items()},
                         "unreached": {d: fgs["unreached"][i] for d, i in at.items()},
                         "gaussian_error": {d: gaussian["error"][i] for d, i in at.items()},
                         "fgs": fgs, "gaussian": gaussian}
        bar.update()
    bar.close()
    return {"rows": results, **trained["record"]}


def _merge(run: dict) -> dict:
    """One seed's record from its units' ({unit: run_unit's result}), in place: the
    rows of every unit in the table's order and the units' other records (the same
    for every unit where they share a key). A record that has rows already is left
    as it is."""
    if "rows" in run:
        return run
    parts = [run.pop(unit) for unit in UNITS if unit in run]
    rows = {name: row for part in parts for name, row in part["rows"].items()}
    stages = sum(1 for row in rows.values() if row["group"] == STAGES_GROUP)
    order = _row_order(stages)
    for part in parts:
        run.update({k: v for k, v in part.items() if k != "rows"})
    run["rows"] = {name: rows[name] for name in sorted(rows, key=order.index)}
    return run


def _attacked_mean(row_errors: Dict[str, float]) -> float:
    """The error averaged over the attacked dists of the table (0.1 and 0.2)."""
    return mean([row_errors[str(d)] for d in TABLE_DISTS if d > 0])


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# the panels of the PNG (the paper's figures) and their rows
PANELS = [("dropout", ("Fig. 3", "Fig. 4"), [NO_METHOD, INP, ALL]),
          ("preprocessing", ("Fig. 5", "Fig. 6"), [NO_METHOD, LPF, DAE, f"{LPF} + {INP}", f"{LPF} + {ALL}",
                                                   f"{DAE} + {INP}", f"{DAE} + {ALL}"]),
          ("committees", ("Fig. 7", "not in the paper"), [NO_METHOD, "standard committee", "last stage",
                                                          ADV_COMMITTEE])]


def summarize(settings: Settings, runs: List[dict]) -> ExperimentResult:
    """The table, the verdict and the plot from the seeds' records (each merged from
    its units in place, so that the JSON's per-seed record has every row)."""
    mode, stages, dae_epochs, batches, _, draws = SCALE[settings.scale]
    runs = [_merge(r) for r in runs]
    names = list(runs[0]["rows"])
    attacked = [str(d) for d in TABLE_DISTS if d > 0]
    stage_rows = [n for n in names if runs[0]["rows"][n]["group"] == STAGES_GROUP]
    standard = next((n for n in names if n.startswith("standard committee")), None)

    def col(name: str, key: str, d: str) -> list:
        return [r["rows"][name][key][d] for r in runs]

    def pct(values: list) -> str:
        return mean_sd(values, 2, scale=100)

    lines = ["| method | ours: dist 0 | dist 0.1 | dist 0.2 | paper (Table 2): dist 0 | dist 0.1 | dist 0.2 "
             "| Gaussian noise: dist 0.1 | dist 0.2 | FGS eps at dist 0.1 / 0.2 |",
             "|---|" + "---:|" * 9]
    for name in names:
        paper_row = _paper_row(name)
        ours = [pct(col(name, "error", str(d))) for d in TABLE_DISTS]
        theirs = [f"{paper_row[0]:.2f}", f"{paper_row[1]:.1f}", f"{paper_row[2]:.1f}"] if paper_row else ["–"] * 3
        noisy = [pct(col(name, "gaussian_error", d)) for d in attacked] if "gaussian_error" in runs[0]["rows"][name] \
            else ["–"] * len(attacked)
        eps = " / ".join(mean_sd(col(name, "eps", d), 3) for d in attacked)
        lines.append(f"| {name} | " + " | ".join(ours + theirs + noisy + [eps]) + " |")
    beside = "; ".join(f"{ours} ← \"{theirs}\"" for ours, theirs in PAPER_NAMES.items() if ours != NO_METHOD)
    table = ("\n".join(lines) + "\n\nError (%) on the white-box FGS test sets at each dist (one eps per set) and on "
             "the Gaussian-noise test sets (one sigma per set). The paper's Table 2 rows set beside ours: " + beside
             + ". The curves over 16 levels (dist 0 to 0.3) are in the JSON (per seed: rows.*.fgs, rows.*.gaussian; "
             "mean and sd: curves) and the PNG.")

    # per seed, the single stage with the lowest error averaged over the attacked dists (on the test set)
    best_stage = [min(stage_rows, key=lambda n: _attacked_mean(r["rows"][n]["error"])) for r in runs]
    best_stage_error = [_attacked_mean(r["rows"][n]["error"]) for r, n in zip(runs, best_stage)]
    committee_mean = [_attacked_mean(r["rows"][ADV_COMMITTEE]["error"]) for r in runs]
    p_none, p_comm = PAPER[NO_METHOD], PAPER[ADV_COMMITTEE]
    p_stage = PAPER["adversarial training after 5 stages"]
    parts = [
        paired(f"the committee of adversarially trained models has a lower error than no defence at dist {d}",
               f"{p_comm[i + 1]:.1f}% vs {p_none[i + 1]:.1f}% (Table 2)", col(NO_METHOD, "error", d),
               col(ADV_COMMITTEE, "error", d), "less", f"error at dist {d} (points)", 2, scale=100)
        for i, d in enumerate(attacked)]
    parts.append(paired(
        "it is the most robust: a lower error (averaged over dist 0.1 and 0.2) than the best single adversarially "
        "trained stage",
        f"{(p_comm[1] + p_comm[2]) / 2:.2f}% vs {(p_stage[1] + p_stage[2]) / 2:.2f}% for the 5-stage network "
        "(Table 2; Sec. 6: more resistant than any single model tested)",
        best_stage_error, committee_mean, "less", "mean error at dist 0.1 and 0.2 (points)", 2, scale=100))
    result_verdict = verdict(parts)

    paper = ("Table 2 of Uličný et al. (error on the MNIST test set at dist = 0 / 0.1 / 0.2): no method "
             f"{p_none[0]}% / {p_none[1]}% / {p_none[2]}%, adversarial training after 5 stages {p_stage[0]}% / "
             f"{p_stage[1]}% / {p_stage[2]}%, the committee of the 6 adversarially trained models {p_comm[0]}% / "
             f"{p_comm[1]}% / {p_comm[2]}% (dropout, low-pass filter, DAE and their combinations with dropout: "
             "21.4–52.4% at 0.1 and 88.5–98.1% at 0.2; the standard committee of 6: 70.9% / 97.2%): the committee "
             "of adversarially trained models is by far the most robust row; Sec. 6: it is more resistant to "
             "adversarial noise than any single model the paper tested. Figs. 3–7 give the error curves over 100 "
             "distortion levels (adversarial and Gaussian noise).")
    criterion = ("the committee of adversarially trained models against the baselines, paired over the seeds, each "
                 "part holding when the 95% t interval of the per-seed differences excludes 0 on the paper's side: "
                 "a lower error than no defence at dist 0.1; at dist 0.2; and a lower error averaged over the two "
                 "than the best single adversarially trained stage (per seed, the stage with the lowest such "
                 "average on the test set). All parts: reproduced; some: partly; none: not reproduced. The dropout "
                 "and preprocessing rows, the standard committee and the Gaussian-noise curves are reported, not "
                 "judged.")
    first = runs[0]
    ep = first["epochs"]
    scale_note = "" if batches is None else f" ({batches} batches per epoch)"
    how_long = {"tiny": "a smoke test of one epoch per network",
                "passes": "the paper's passes over its training set rather than its iterations",
                "iterations": "the paper's iterations"}[mode]
    picked = "; ".join(f"{name} " + ", ".join(str(r["rows"][name]["picked_epoch"]) for r in runs)
                       for name in (NO_METHOD, INP, ALL) if name in first["rows"])
    stage_picks = "; ".join(str(r["rows"][ADV_COMMITTEE]["picked_epoch"][1:]) for r in runs
                            if isinstance(r["rows"][ADV_COMMITTEE]["picked_epoch"], list))
    protocol = (
        f"The paper's LeNet (robustops.models.committee_lenet: Caffe's MNIST LeNet, xavier) on {settings.data} "
        f"({first['training_images']} training images, {first['validation_images']} held out as a validation split, "
        f"{first['test_images']} test images); SGD (lr {LR:g}, momentum {MOMENTUM:g}, weight decay {WEIGHT_DECAY:g}, "
        f"batch {BATCH}); {how_long}: {_count(ep['natural'], 'epoch')} for a clean network, {ep['Inp']} for "
        f"dropout (Inp), {ep['All']} for dropout (All){scale_note}; robustops.defences.train_committee (the "
        f"paper's pools protocol): {_count(stages, 'stage')} of {_count(ep['stage'], 'epoch')} of "
        f"{first['batches_per_epoch']} batches on the clean images joined with the pools of committee examples "
        f"(eps {TRAIN_EPS:g}, c {TRAIN_C:g}) made by each earlier snapshot; committees of {stages + 1} (the "
        f"natural network and the stages; the standard one: {stages + 1} clean networks). The preprocessing "
        f"(LowPassNoise with the paper's kernels after noise of sd {LOW_PASS_NOISE:g}; the autoencoder "
        f"{'-'.join(str(s) for s in first['dae_sizes'])}, Adam, {_count(dae_epochs, 'epoch')}) sits in front of "
        "the trained LeNets, not retrained. Every network is kept at its best epoch on the validation split (clean "
        "networks: clean accuracy; each stage: accuracy on the clean validation images joined with their pools made "
        "by the earlier snapshots, as its training set; the autoencoder: reconstruction error); the epochs "
        f"picked per seed: {picked}; the stages' {stage_picks}. "
        "White-box fast-gradient-sign examples and Gaussian noise at one eps (sigma) per test set, bisected so "
        f"that the set's mean absolute distortion is each dist exactly (the paper's eq. 2), {len(CURVE_DISTS)} "
        f"levels from 0 to {CURVE_DISTS[-1]:g}; gradients through every preprocessing and committee member, "
        f"{draws} noise draws (EOT) for the random low-pass defence. The best single stage per seed (part 3): "
        + ", ".join(f"seed {s}: {n}" for s, n in zip(settings.seed_list(), best_stage)) + ".")

    curves = {name: {kind: {"mean": [mean([r["rows"][name][kind]["error"][i] for r in runs])
                                     for i in range(len(CURVE_DISTS))],
                            "sd": [_sd([r["rows"][name][kind]["error"][i] for r in runs])
                                   for i in range(len(CURVE_DISTS))]}
                     for kind in ("fgs", "gaussian") if kind in first["rows"][name]}
              for name in names}

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, len(PANELS), figsize=(17, 9), sharex=True, sharey=True)
        palette = plt.get_cmap("tab10")
        colors = {name: palette(i % 10) for i, name in enumerate(
            [NO_METHOD, INP, ALL, LPF, DAE, f"{LPF} + {INP}", f"{LPF} + {ALL}", f"{DAE} + {INP}", f"{DAE} + {ALL}"])}
        colors.update({"standard committee": "tab:gray", "last stage": "tab:green", ADV_COMMITTEE: "tab:red"})
        resolve = {"standard committee": standard, "last stage": stage_rows[-1] if stage_rows else None}
        for column, (title, figures, shown) in enumerate(PANELS):
            for key in shown:
                name = resolve.get(key, key)
                if name not in first["rows"]:
                    continue
                for row, kind in enumerate(("fgs", "gaussian")):
                    if kind not in first["rows"][name]:
                        continue
                    band(axes[row, column], CURVE_DISTS, [r["rows"][name][kind]["error"] for r in runs], name,
                         color=colors[key], lw=2.5 if name == ADV_COMMITTEE else 1.2)
                paper_row = _paper_row(name)
                if paper_row:  # the paper's Table 2 points
                    axes[0, column].plot(TABLE_DISTS, [v / 100 for v in paper_row], "x", color=colors[key], ms=9,
                                         mew=2)
            axes[0, column].set_title(f"FGS, {title} ({figures[0]})", fontsize=10)
            axes[1, column].set_title(f"Gaussian noise, {title} ({figures[1]})", fontsize=10)
            axes[1, column].set_xlabel("dist (mean absolute distortion per pixel, one eps / sigma per set)")
            axes[0, column].legend(fontsize=7, loc="lower right")
        for row in range(2):
            axes[row, 0].set_ylabel(f"error ({settings.data}; mean ± sd over {len(runs)} "
                                    f"seed{'s' if len(runs) > 1 else ''})")
        axes[0, 0].set_ylim(0, 1)
        fig.suptitle("committee paper, Figs. 3–7 (x: the paper's Table 2 at dist 0, 0.1, 0.2)", fontsize=11)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)

    return ExperimentResult("committee", CLAIM, table,
                            {"data": settings.data, "table_dists": TABLE_DISTS, "curve_dists": CURVE_DISTS,
                             "epochs": first["epochs"], "length": mode, "stages": stages, "dae_epochs": dae_epochs,
                             "batches": batches, "solver": {"lr": LR, "momentum": MOMENTUM,
                                                            "weight_decay": WEIGHT_DECAY, "batch": BATCH},
                             "dropout": {"Inp": INP, "All": ALL}, "low_pass": {"kernels": list(LOW_PASS_KERNELS),
                                                                               "kernel": LOW_PASS_KERNEL,
                                                                               "noise": LOW_PASS_NOISE},
                             "dae_sizes": first["dae_sizes"], "train_attack": {"eps": TRAIN_EPS, "c": TRAIN_C},
                             "eot_draws": draws, "validation_fraction": VALIDATION, "rows": names,
                             "best_stage": best_stage, "paper_table2": PAPER, "curves": curves},
                            plot=plot, verdict=result_verdict, paper=paper, criterion=criterion, protocol=protocol)


def _sd(values: List[float]) -> float:
    """The sample standard deviation, 0 for one value."""
    return sd(values) if len(values) > 1 else 0.0
