"""symmetry: the symmetry paper's model (wang_cnn: a standard CNN with one
rotation-equivariant G-convolution and one plain SPP layer) against a standard CNN
with as many parameters, beside the all-p4 symmetric_cnn and a wide standard CNN, on
the embedded digits at 28x28, several seeds: test accuracy during training and on
perturbed test data (the paper's Figure 2), on the randomly rotated test set (its
Figure 3), at other input sizes (the SPP layer's claim), and, beyond the paper, under
FGSM and PGD.

Paper (Wang et al., "Enhanced Robustness by Symmetry Enforcement"), on CIFAR-100. The
paper gives figures only, no numbers, no layer list, widths, optimizer or epochs.
Its model (Sec. II): a standard CNN "by adding a rotation-equivariant layer" (a
G-convolution, Cohen & Welling) "and a scale-equivariant layer" (spatial pyramid
pooling, He et al.). Its claims:
  - Fig. 2 ("test accuracy and training convergence"): the symmetry-enforced CNN
    learns better, with a higher accuracy during training and an improved initial
    generalization on the test set (its test accuracy fluctuates); "on perturbed data,
    the symmetry-enforced model maintains relatively stable accuracy";
  - Fig. 3 ("transformed CIFAR 100 data"): a higher accuracy on the randomly rotated
    test set;
  - the conclusion: the models "demonstrate greater generalizability to inputs that
    are shifted, rotated, or scaled", and the title and introduction claim adversarial
    robustness, which the paper does not test.

Reproduced when (fixed before the runs): wang_cnn (the paper's model) against the
parameter-matched standard CNN, paired over the seeds (robustops.experiments.stats.
paired: the 95% t interval of the per-seed differences lies on the paper's side of
the stated margin):
  1. its accuracy on the randomly rotated test set is higher (Fig. 3);
  2. its accuracy on the upright test set is not more than 1 point lower (the
     interval of the differences lies above -0.01; Fig. 2 shows it higher, which
     this part does not require);
  3. its accuracy is more stable on perturbed data (Fig. 2, our reading of
     "perturbed": Gaussian noise): the drop from its upright accuracy to its accuracy
     on the noisy test set at sigma 0.3 is smaller (the per-seed differences of
     noisy-minus-upright accuracy, wang_cnn minus the standard CNN, above 0).
Every part holds: reproduced; some: partly reproduced (naming them); none: not
reproduced. Reported, not judged: the same comparisons for the all-p4 CNN and the
wide standard CNN; the accuracy over the epochs; the noisy test sets at every sigma;
the other input sizes; FGSM and PGD; the confusion matrices.

The all-p4 CNN (robustops.models.symmetric_cnn: every convolution a p4 layer, and an
SPP head that pools over the rotations and over the orbits of its bins) is invariant
to quarter turns by construction: its accuracy on the quarter-turned test set and at
0, 90, 180 and 270 degrees equals its upright accuracy exactly. That column is a
property of the construction, not a finding, and the table says so. wang_cnn is not
invariant (only its first layer is equivariant).

Models (robustops.models), on 1x28x28 inputs, 10 classes:
  - all-p4 CNN: symmetric_cnn, 12 p4 channels (76,302 parameters);
  - standard CNN, matched: standard_cnn at the width that matched_width picks for the
    all-p4 CNN's count (width 3: 78,738, +3.2%);
  - wang_cnn: at the width that matched_width picks for the matched standard CNN's
    count (width 7: 81,366, +3.3%; +6.6% against the all-p4 CNN);
  - standard CNN, wide: standard_cnn at width 16 (420,794), the earlier, unmatched
    baseline, reported.
matched_width's tolerance is 5% (the run checks it); the table gives every count and
its difference from the matched standard CNN's. 12 is the smallest all-p4 width for
which both matches hold within 5% (the standard CNN's count moves in steps of ~25k,
its flatten + linear head); 15 (all three within 2%) costs half as much again, more
than the --quick budget allows. Where the counts cannot be matched at 12 (3x32x32
inputs), the first wider all-p4 width where they can is used (CIFAR: 15, with the
standard CNN at width 3 and wang_cnn at 9).

Training: from the same seed and data order, Adam (lr 1e-3, batch 64). Readout: 10%
of the training set (common.split_validation, drawn with the seed) is held out; each
network is kept at its epoch with the best accuracy on the upright validation split
(common.BestCheckpoint; the first best on ties). After every epoch the running
training accuracy and loss (train mode), and the upright, randomly rotated and noisy
(sigma 0.3) test accuracies are recorded for the Fig. 2 curves only; they pick
nothing.

Test sets (the picked checkpoints):
  - upright; randomly rotated: every test image turned by its own angle drawn
    uniformly from [0, 360) (robustops.data.rotated, bilinear, zero fill), the angles
    drawn with the seed; quarter-turned likewise from {0, 90, 180, 270}; every image
    turned by one angle, every 45 degrees (--full: 15);
  - noisy: robustops.curves.gaussian_noisy (clamp(x + sigma N(0, 1), 0, 1)) at sigma
    0.1, 0.2, 0.3, 0.5, the same draw for every network of a seed;
  - other input sizes: the test digits resized to 20, 24, 32 and 36 px (load_digits
    at that size: the stored 8x8 images resized as the 28 px ones are; other data:
    bilinear, antialiased). Only wang_cnn and the all-p4 CNN, whose SPP heads give a
    fixed-size output, accept them; the standard CNNs' flatten + linear heads take
    28x28 only, and the table says so (no number is made up for them);
  - zoomed within the frame (every network): the test images scaled by 0.75 and 1.25
    about their centre (bilinear, antialiased), padded with zeros or cropped back to
    28x28;
  - adversarial (beyond the paper): robustops.attacks.FGSM and PGD (L-inf, from a
    random start seeded with the seed, 5 steps of 2.5 eps / 5; --full 20 steps), FGSM
    at eps 0.02, 0.05 and 0.1, PGD at 0.02 and 0.05 (at 0.1 a first run left every
    network near 0), on the picked checkpoints, the network's own cross-entropy; the
    largest L-inf distance of an adversarial image from its original is recorded;
  - the confusion matrices (rows: the true class) on the upright and the randomly
    rotated test sets, in the JSON; the md gives the most frequent confusions on the
    rotated set and the share of its errors that are 6 <-> 9. (An earlier text blamed
    the symmetric model's errors on 6s and 9s turned upside down; no committed
    confusion matrix showed it, and the matrices here replace the claim.)

Deviations from the paper, and why:
  - data: the embedded sklearn digits (1,797 8x8 images, resized to 28x28), the only
    data set here, not CIFAR-100 (--data cifar100 with --data-root runs it where the
    files exist; not run here);
  - the architecture: the paper gives none; wang_cnn is standard_cnn with the first
    convolution a lifting G-convolution followed by rotation pooling, and a plain
    SPP (levels 1, 2, 4) in place of the flatten (robustops/models/p4.py says why);
    the widths are chosen to match the parameter counts (the paper says nothing of
    them);
  - the solver and epochs (the paper gives none): Adam as above, epochs scaled to the
    CPU budget; the validation-split readout is ours;
  - "perturbed data" is unspecified in the paper: Gaussian noise (and the rotated
    test set) is our reading; the input sizes and the attacks are additions.

--quick: 8 epochs, 3 seeds, all 451 test images, 5 PGD steps, every 45 degrees (the
widths above at every scale). --full: 30 epochs, 5 seeds, 20 PGD steps, every 15
degrees; not run here (about 4 times --quick's work per seed). The all-p4 CNN is
three quarters of the work (its p4 planes: 4 per channel). The committed run took
249 s of wall time on an otherwise idle 2-core CPU (its record states the time).
(The parts above were committed before any run, and did not change. Two earlier runs
were over the budget and cut for time: a --seeds 1 run at widths 15, 4 and 9 (all-p4,
standard, wang_cnn; all within 2%), 10 epochs, 10 PGD steps, every 30 degrees took
310 s of CPU time for one seed; a 3-seed run at those widths with 8 epochs, 5 PGD
steps (at 0.02, 0.05 and 0.1), every 45 degrees took 682 s of CPU time (~340 s idle).
That run's verdict was "not reproduced": wang_cnn minus the standard CNN, rotated
+0.0015 [-0.0965, +0.0994], upright +0.0059 [-0.0109, +0.0227], noisy-minus-upright
+0.0599 [-0.0474, +0.1671]; the all-p4 CNN's rotated accuracy again far above both.
So the verdict's one holding part, at these widths, is not robust to the width.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops.attacks import FGSM, PGD
from robustops.curves import gaussian_noisy
from robustops.data import load_digits, loader, rotate, rotated
from robustops.experiments.common import (BestCheckpoint, ExperimentResult, Settings, accuracy, band, load_data,
                                          split_validation)
from robustops.experiments.stats import mean, mean_sd, paired, verdict
from robustops.models import matched_width, parameter_count, standard_cnn, symmetric_cnn, wang_cnn
from robustops.nn import P4SpatialPyramidPool, SpatialPyramidPool

CLAIM = ("a standard CNN with one rotation-equivariant G-convolution and one spatial pyramid pooling layer is more "
         "accurate on randomly rotated test images than a standard CNN, no less accurate on upright ones, and "
         "more stable on perturbed ones")

MATCHED = "standard CNN, matched"
WANG = "wang_cnn (the paper's model)"
SYMMETRIC = "all-p4 CNN (symmetric_cnn)"
WIDE = "standard CNN, wide"
ROWS = [MATCHED, WANG, SYMMETRIC, WIDE]     # the tables' order
UNITS = [SYMMETRIC, WANG, WIDE, MATCHED]    # the slowest network first (spreads the work over the processes)
SHORT = {MATCHED: "the parameter-matched standard CNN", WANG: "wang_cnn", SYMMETRIC: "the all-p4 CNN",
         WIDE: "the wide standard CNN"}   # the names in the comparisons' sentences

# scale -> (epochs, symmetric_cnn's p4 width (the others are matched to it), batches per epoch (None: all),
#           test images (None: all), PGD steps, the step of the angle sweep in degrees)
SCALE = {"tiny": (2, 12, 2, 48, 2, 90), "quick": (8, 12, None, None, 5, 45), "full": (30, 12, None, None, 20, 15)}
WIDE_WIDTH = 16
TOLERANCE = 0.05            # matched_width's: the parameter counts match within 5%
LR = 1e-3
BATCH = 64
VALIDATION = 0.1            # the fraction of the training set held out to pick the checkpoint
SIGMAS = [0.1, 0.2, 0.3, 0.5]
JUDGED_SIGMA = 0.3          # part 3's noisy test set, and the per-epoch noisy curve
UPRIGHT_MARGIN = 0.01       # part 2: not more than 1 point lower
SIZES = [20, 24, 28, 32, 36]
ZOOMS = [0.75, 1.25]
EPS = [0.02, 0.05, 0.1]      # FGSM's
PGD_EPS = [0.02, 0.05]       # PGD's (at 0.1 it leaves every network near 0: no information, and it costs)
PGD_STEP = 2.5              # PGD's alpha = PGD_STEP * eps / steps


def units(settings: Settings) -> List[str]:
    """The networks of a seed: each one is trained and evaluated on its own."""
    return list(UNITS)


def _count(model_fn: Callable[[], nn.Module]) -> int:
    with torch.device("meta"):
        return parameter_count(model_fn())


def builders(settings: Settings, channels: int, side: int, classes: int) -> Dict[str, Callable[[], nn.Module]]:
    """name -> a function that builds the network: the all-p4 CNN at the scale's width
    (or, where the counts cannot be matched there, such as 3x32x32 inputs, the first
    wider one where they can), the matched standard CNN at matched_width's width for
    its count, wang_cnn at matched_width's width for the matched standard CNN's count,
    the wide standard CNN."""
    p4_width = SCALE[settings.scale][1]

    def standard(w):
        return standard_cnn(channels, classes, input_size=side, width=w)

    def wang(w):
        return wang_cnn(channels, classes, width=w)

    for p4_width in range(p4_width, p4_width + 16):  # the first p4 width from the scale's that both match
        target = _count(lambda: symmetric_cnn(channels, classes, width=p4_width))
        try:
            std_width = matched_width(standard, target, TOLERANCE)
            wang_width = matched_width(wang, _count(lambda: standard(std_width)), TOLERANCE)
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"robustops.experiments.symmetry: no all-p4 width from {SCALE[settings.scale][1]} to "
                         f"{p4_width} has a standard CNN and a wang_cnn within {TOLERANCE:.0%} of its parameters "
                         f"({channels}x{side}x{side} inputs, {classes} classes)")
    return {SYMMETRIC: lambda: symmetric_cnn(channels, classes, width=p4_width),
            WANG: lambda: wang(wang_width),
            WIDE: lambda: standard(WIDE_WIDTH),
            MATCHED: lambda: standard(std_width)}


def takes_any_size(model: nn.Module) -> bool:
    """Whether ``model`` has an SPP layer (plain or p4), whose output size does not
    depend on the input's: then it accepts other input sizes; a flatten + linear head
    does not."""
    return any(isinstance(m, (SpatialPyramidPool, P4SpatialPyramidPool)) for m in model.modules())


def zoomed(x: Tensor, factor: float) -> Tensor:
    """The images x [N, C, S, S] scaled by ``factor`` about their centre (bilinear,
    antialiased) and padded with zeros or cropped back to S x S."""
    side = x.shape[-1]
    n = max(1, round(side * factor))
    y = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    if n < side:
        a = (side - n) // 2
        return F.pad(y, (a, side - n - a, a, side - n - a))
    a = (n - side) // 2
    return y[..., a:a + side, a:a + side].contiguous()


def resized_test_set(settings: Settings, x_test: Tensor, size: int) -> Tensor:
    """The test images at ``size`` x ``size``: for the digits, load_digits at that size
    (the stored 8x8 images resized as the 28 px ones are: at 28 it is the test set
    itself); for other data, x_test resized (bilinear, antialiased)."""
    if settings.data == "digits":
        x, _ = load_digits("test", size=size, seed=settings.seed, device=x_test.device)
        return x[:len(x_test)]
    if size == x_test.shape[-1]:
        return x_test
    return F.interpolate(x_test, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1)


def _attacked(attack, x: Tensor, y: Tensor, model: nn.Module, batch: int = 512):
    """(accuracy on the attack's images, the largest L-inf distance from x)."""
    hits, linf = 0, 0.0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        adv = attack(xb, yb)
        linf = max(linf, float((adv - xb).abs().max()))
        with torch.no_grad():
            model.eval()
            hits += int((model(adv).argmax(1) == yb).sum())
    return hits / len(x), linf


@torch.no_grad()
def confusion(model: nn.Module, x: Tensor, y: Tensor, classes: int, batch: int = 512) -> List[List[int]]:
    """The confusion matrix [true class][predicted class] (counts) of ``model`` on (x, y)."""
    model.eval()
    m = torch.zeros(classes, classes, dtype=torch.long)
    for i in range(0, len(x), batch):
        pred = model(x[i:i + batch]).argmax(1).cpu()
        m.index_put_((y[i:i + batch].cpu(), pred), torch.ones_like(pred), accumulate=True)
    return m.tolist()


def run_unit(settings: Settings, seed: int, name: str) -> Dict:
    """Train network ``name`` from ``seed`` (the checkpoint picked on the validation
    split) and evaluate it on every test set (one network of one seed)."""
    start = time.perf_counter()
    epochs, _, batches, n_test, pgd_steps, angle_step = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "symmetry", digits_size=28)
    channels, side = data_set.shape[0], data_set.shape[1]
    if data_set.shape[1] != data_set.shape[2] or side % 4:
        raise ValueError(f"robustops.experiments.symmetry: needs square images with a side divisible by 4, "
                         f"got {data_set.shape}")
    classes = data_set.classes
    x_train, y_train, x_val, y_val = split_validation(data_set.x_train, data_set.y_train, VALIDATION, seed)
    x_test, y_test = data_set.x_test[:n_test], data_set.y_test[:n_test]
    x_rot, _ = rotated(x_test, mode="random", seed=seed)
    x_p4, _ = rotated(x_test, mode="p4", seed=seed)
    noisy = [gaussian_noisy(x_test, s, generator=torch.Generator(device=device).manual_seed(seed * 1000 + 100 + i))
             for i, s in enumerate(SIGMAS)]
    x_noisy = noisy[SIGMAS.index(JUDGED_SIGMA)]

    build = builders(settings, channels, side, classes)[name]
    torch.manual_seed(seed)
    model = build().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    checkpoint = BestCheckpoint("max")
    history = {"epoch": [], "train_loss": [], "train_accuracy": [], "validation": [], "test": [], "rotated": [],
               "noisy": []}
    for epoch in range(1, epochs + 1):
        model.train()
        seen, hits, loss_sum = 0, 0, 0.0
        for k, (xb, yb) in enumerate(loader(x_train, y_train, batch_size=BATCH, seed=seed * 1000 + epoch)):
            if batches is not None and k >= batches:
                break
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(yb)
            hits += int((out.argmax(1) == yb).sum())
            loss_sum += float(loss.detach()) * len(yb)
        val = accuracy(model, x_val, y_val)
        checkpoint.update(model, val, epoch)
        history["epoch"].append(epoch)
        history["train_loss"].append(loss_sum / seen)
        history["train_accuracy"].append(hits / seen)
        history["validation"].append(val)
        history["test"].append(accuracy(model, x_test, y_test))
        history["rotated"].append(accuracy(model, x_rot, y_test))
        history["noisy"].append(accuracy(model, x_noisy, y_test))
    checkpoint.restore(model)
    model.eval()

    angles = list(range(0, 360, angle_step))
    by_angle = [accuracy(model, rotate(x_test, torch.full((len(x_test),), float(a), dtype=torch.float64,
                                                              device=device)), y_test) for a in angles]
    any_size = takes_any_size(model)
    sizes = {str(s): (accuracy(model, resized_test_set(settings, x_test, s), y_test) if any_size or s == side
                      else None) for s in SIZES}
    fgsm, pgd, linf = [], [], {"fgsm": 0.0, "pgd": 0.0}
    for eps in EPS:
        acc, d = _attacked(FGSM(model, eps), x_test, y_test, model)
        fgsm.append(acc)
        linf["fgsm"] = max(linf["fgsm"], d / eps)
    for eps in PGD_EPS:
        acc, d = _attacked(PGD(model, eps, alpha=PGD_STEP * eps / pgd_steps, steps=pgd_steps, seed=seed),
                           x_test, y_test, model)
        pgd.append(acc)
        linf["pgd"] = max(linf["pgd"], d / eps)
    return {"width": model[0].out_channels, "parameters": parameter_count(model), "takes_any_size": any_size,
            "history": history, "picked_epoch": checkpoint.step, "test": accuracy(model, x_test, y_test),
            "rotated": accuracy(model, x_rot, y_test), "rotated_p4": accuracy(model, x_p4, y_test),
            "angles": angles, "by_angle": by_angle,
            "noisy": [accuracy(model, x, y_test) for x in noisy],
            "sizes": sizes, "zoom": [accuracy(model, zoomed(x_test, f), y_test) for f in ZOOMS],
            "fgsm": fgsm, "pgd": pgd, "linf_over_eps": linf,
            "confusion": {"test": confusion(model, x_test, y_test, classes),
                          "rotated": confusion(model, x_rot, y_test, classes)},
            "epochs": epochs, "training_images": len(x_train), "validation_images": len(x_val),
            "test_images": len(x_test), "seconds": time.perf_counter() - start}


def _top_confusions(matrices: List[List[List[int]]], k: int = 3) -> tuple:
    """(the mean number of errors, the k most frequent (true, predicted, mean count),
    the share of the errors that are 6 -> 9 or 9 -> 6, None without those classes)."""
    n = len(matrices)
    classes = len(matrices[0])
    total = [[sum(m[i][j] for m in matrices) / n for j in range(classes)] for i in range(classes)]
    errors = sum(total[i][j] for i in range(classes) for j in range(classes) if i != j)
    pairs = sorted(((total[i][j], i, j) for i in range(classes) for j in range(classes) if i != j), reverse=True)
    top = [(i, j, c) for c, i, j in pairs[:k] if c > 0]
    share = None
    if classes >= 10 and errors:
        share = (total[6][9] + total[9][6]) / errors
    return errors, top, share


def summarize(settings: Settings, runs: List[dict]) -> ExperimentResult:
    epochs, p4_width, batches, n_test, pgd_steps, angle_step = SCALE[settings.scale]
    names = [n for n in ROWS if n in runs[0]]
    epochs = len(runs[0][names[0]]["history"]["epoch"])

    def col(name: str, key: str, i=None) -> list:
        return [r[name][key] if i is None else r[name][key][i] for r in runs]

    r0 = runs[0]
    base = r0[MATCHED]["parameters"] if MATCHED in r0 else None

    def params(name: str) -> str:
        p = r0[name]["parameters"]
        return f"{p:,}" + ("" if base is None or name == MATCHED else f" ({(p - base) / base:+.1%})")

    # (a) the headline table
    rows = [f"| model | width | parameters (vs the matched standard CNN) | upright test set | randomly rotated | "
            f"quarter turns | noisy, sigma {JUDGED_SIGMA:g} | epoch picked (per seed) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        p4 = mean_sd(col(name, "rotated_p4"), 4)
        if name == SYMMETRIC:
            p4 += " (= upright by construction, not a finding)"
        rows.append(f"| {name} | {r0[name]['width']} | {params(name)} | {mean_sd(col(name, 'test'), 4)} | "
                    f"{mean_sd(col(name, 'rotated'), 4)} | {p4} | "
                    f"{mean_sd(col(name, 'noisy', SIGMAS.index(JUDGED_SIGMA)), 4)} | "
                    f"{', '.join(str(e) for e in col(name, 'picked_epoch'))} |")
    tables = ["\n".join(rows)]

    # (b) Fig. 2: the test accuracy over the epochs
    shown = sorted({e for e in (1, 2, 3, 5, epochs // 2, epochs) if 1 <= e <= epochs})
    rows = ["Fig. 2: accuracy after the epochs (upright test set; in brackets, the running training accuracy):", "",
            "| model | " + " | ".join(f"epoch {e}" for e in shown) + " |", "|---|" + "---:|" * len(shown)]
    for name in names:
        cells = [f"{mean_sd([r[name]['history']['test'][e - 1] for r in runs], 3)} "
                 f"({mean([r[name]['history']['train_accuracy'][e - 1] for r in runs]):.3f})" for e in shown]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    tables.append("\n".join(rows))

    # (c) perturbed: noise at every sigma, other sizes, zoom
    rows = ["Perturbed test sets (Fig. 2's \"perturbed data\", our reading; other sizes: the SPP layer's claim):", "",
            "| model | upright | " + " | ".join(f"noisy, sigma {s:g}" for s in SIGMAS) + " | "
            + " | ".join(f"{s} px" for s in SIZES if s != 28) + " | "
            + " | ".join(f"zoom {z:g}" for z in ZOOMS) + " |",
            "|---|" + "---:|" * (1 + len(SIGMAS) + len(SIZES) - 1 + len(ZOOMS))]
    for name in names:
        sizes = []
        for s in SIZES:
            if s == 28:
                continue
            values = [r[name]["sizes"][str(s)] for r in runs]
            sizes.append(mean_sd(values, 4) if r0[name]["takes_any_size"] else "takes 28x28 only")
        rows.append(f"| {name} | {mean_sd(col(name, 'test'), 4)} | "
                    + " | ".join(mean_sd(col(name, 'noisy', i), 4) for i in range(len(SIGMAS))) + " | "
                    + " | ".join(sizes) + " | "
                    + " | ".join(mean_sd(col(name, 'zoom', i), 4) for i in range(len(ZOOMS))) + " |")
    tables.append("\n".join(rows))

    # (d) beyond the paper: FGSM and PGD
    rows = [f"Beyond the paper: accuracy under L-inf attacks (FGSM; PGD, {pgd_steps} steps of {PGD_STEP:g} eps / "
            f"{pgd_steps}, random start):", "",
            "| model | " + " | ".join(f"FGSM, eps {e:g}" for e in EPS) + " | "
            + " | ".join(f"PGD, eps {e:g}" for e in PGD_EPS) + " |", "|---|" + "---:|" * (len(EPS) + len(PGD_EPS))]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(mean_sd(col(name, 'fgsm', i), 4) for i in range(len(EPS))) + " | "
                    + " | ".join(mean_sd(col(name, 'pgd', i), 4) for i in range(len(PGD_EPS))) + " |")
    tables.append("\n".join(rows))

    # (e) confusions on the rotated test set
    rows = ["Errors on the randomly rotated test set (mean over the seeds; true -> predicted):", "",
            "| model | errors | most frequent confusions | share of the errors that are 6 <-> 9 |",
            "|---|---:|---|---:|"]
    for name in names:
        errors, top, share = _top_confusions([r[name]["confusion"]["rotated"] for r in runs])
        rows.append(f"| {name} | {errors:.1f} | " + ", ".join(f"{i} -> {j}: {c:.1f}" for i, j, c in top)
                    + f" | {'-' if share is None else f'{share:.1%}'} |")
    tables.append("\n".join(rows))

    # the verdict: wang_cnn against the matched standard CNN
    def drop(name: str) -> list:
        i = SIGMAS.index(JUDGED_SIGMA)
        return [r[name]["noisy"][i] - r[name]["test"] for r in runs]

    def comparison(method_name: str, baseline_name: str) -> list:
        method, baseline = SHORT[method_name], SHORT[baseline_name]
        col_m, col_b = method_name, baseline_name
        return [
            paired(f"{method} is more accurate on the randomly rotated test set than {baseline}",
                   "higher accuracy on randomly rotated CIFAR-100 (Fig. 3; no numbers given)",
                   col(col_b, "rotated"), col(col_m, "rotated"), "greater", "rotated accuracy", 4),
            paired(f"{method} is not more than 1 point less accurate on the upright test set than {baseline}",
                   "higher test accuracy (Fig. 2; no numbers given)",
                   col(col_b, "test"), col(col_m, "test"), "greater", "test accuracy", 4,
                   against=-UPRIGHT_MARGIN),
            paired(f"{method} loses less accuracy to Gaussian noise (sigma {JUDGED_SIGMA:g}) than {baseline}",
                   "\"relatively stable accuracy\" on perturbed data (Fig. 2; no numbers given)",
                   drop(col_b), drop(col_m), "greater", "noisy minus upright accuracy", 4),
        ]

    parts = comparison(WANG, MATCHED) if WANG in names and MATCHED in names else []
    result_verdict = verdict(parts) if parts else None
    others = []
    for method, baseline in ((SYMMETRIC, MATCHED), (WANG, WIDE), (SYMMETRIC, WANG)):
        if method in names and baseline in names:
            others += comparison(method, baseline)
    if others:
        rows = ["Other comparisons (reported, not judged; paired over the seeds):", "",
                "| comparison | this run | direction holds |", "|---|---|---|"]
        rows += [f"| {p.name} | {p.evidence} | {'yes' if p.holds else 'no'} |" for p in others]
        tables.append("\n".join(rows))
    table = "\n\n".join(tables)

    paper = ("Wang et al. give figures only, no numbers (CIFAR-100), and no layer list, widths or training "
             "schedule: Fig. 2, the symmetry-enforced CNN (a standard CNN with one G-convolution and one SPP "
             "layer) reaches a higher test accuracy than the standard CNN, learns faster (its test accuracy "
             "fluctuates), and keeps a \"relatively stable accuracy\" on perturbed data; Fig. 3, it is more "
             "accurate on the randomly rotated test set. Its conclusion claims generalization to shifted, rotated "
             "and scaled inputs and adversarial robustness, which it does not test.")
    criterion = ("wang_cnn (the paper's model) against the parameter-matched standard CNN, paired over the seeds: "
                 "(1) a higher accuracy on the randomly rotated test set (the 95% t interval of the per-seed "
                 "differences above 0); (2) an upright test accuracy not more than 1 point lower (the interval "
                 f"above -{UPRIGHT_MARGIN:g}); (3) a smaller drop from the upright to the noisy test set at sigma "
                 f"{JUDGED_SIGMA:g} (the interval of the differences of noisy-minus-upright accuracy above 0). "
                 "All: reproduced; some: partly; none: not reproduced. The other networks, the accuracy over the "
                 "epochs, the other noise levels, input sizes, attacks and confusions are reported, not judged; "
                 "the all-p4 CNN's quarter-turn accuracy equals its upright accuracy by construction.")
    per_epoch = "" if batches is None else f", {batches} batches per epoch"
    model_text = f"{len(names)} networks: " + "; ".join(
        f"{n} (width {r0[n]['width']}, {r0[n]['parameters']:,} parameters)" for n in names)
    accepts = [n for n in names if r0[n]["takes_any_size"]]
    protocol = (f"{model_text}; the standard CNN's width matched to the all-p4 CNN's count and wang_cnn's to the "
                f"standard CNN's (robustops.models.matched_width, within {TOLERANCE:.0%}). On {settings.data} "
                f"({r0[names[0]]['training_images']} training images, {r0[names[0]]['validation_images']} held out "
                f"as a validation split, {r0[names[0]]['test_images']} test images), from the same seed and data "
                f"order: Adam (lr {LR:g}, batch {BATCH}), {epochs} epoch{'s' if epochs > 1 else ''}{per_epoch}, "
                "each network kept at its epoch with the best validation accuracy (upright images). Test sets: "
                "upright; every image turned by its own random angle in [0, 360) (bilinear, zero fill); every "
                f"image turned by a random quarter turn; every image by one angle, every {angle_step} degrees; "
                f"Gaussian noise at sigma {', '.join(f'{s:g}' for s in SIGMAS)} (clamped to [0, 1]); the digits at "
                f"{', '.join(str(s) for s in SIZES if s != 28)} px (only {' and '.join(accepts) or 'none'} "
                f"accept{'s' if len(accepts) == 1 else ''} other sizes: an SPP head); zoomed by "
                f"{' and '.join(f'{z:g}' for z in ZOOMS)} within the 28 px frame; FGSM at eps "
                f"{', '.join(f'{e:g}' for e in EPS)} and PGD ({pgd_steps} steps) at eps "
                f"{', '.join(f'{e:g}' for e in PGD_EPS)}; the random angles and noise drawn with the seed.")

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
        (a, b, c), (d, e, f) = axes
        xs = r0[names[0]]["history"]["epoch"]
        for i, name in enumerate(names):
            color = f"C{i}"
            band(a, xs, [r[name]["history"]["test"] for r in runs], f"{name}: test", color=color)
            band(a, xs, [r[name]["history"]["train_accuracy"] for r in runs], f"{name}: training", ls=":",
                 color=color)
            band(b, xs, [r[name]["history"]["rotated"] for r in runs], f"{name}: rotated", ls="--", color=color)
            band(b, xs, [r[name]["history"]["noisy"] for r in runs], f"{name}: noisy", ls=":", color=color)
            band(c, [0.0] + SIGMAS, [[r[name]["test"]] + r[name]["noisy"] for r in runs], name, color=color)
            band(d, r0[name]["angles"], [r[name]["by_angle"] for r in runs], name, color=color)
            if r0[name]["takes_any_size"]:
                band(e, SIZES, [[r[name]["sizes"][str(s)] for s in SIZES] for r in runs], name, color=color)
            else:
                e.plot([28], [mean(col(name, "test"))], marker="x", color=color, ls="none",
                       label=f"{name} (28 px only)")
            band(f, [0.0] + EPS, [[r[name]["test"]] + r[name]["fgsm"] for r in runs], f"{name}: FGSM", color=color)
            band(f, [0.0] + PGD_EPS, [[r[name]["test"]] + r[name]["pgd"] for r in runs], f"{name}: PGD", ls="--",
                 color=color)
        a.set(xlabel="epoch", ylabel="accuracy", title=f"Fig. 2: test and training accuracy ({settings.data})")
        b.set(xlabel="epoch", ylabel="accuracy", title=f"perturbed test sets during training (noisy: sigma "
                                                       f"{JUDGED_SIGMA:g})")
        c.set(xlabel="sigma of the Gaussian noise", ylabel="accuracy", title="noisy test sets (picked checkpoints)")
        d.set(xlabel="rotation of the test set (degrees)", ylabel="accuracy", title="accuracy against rotation")
        e.set(xlabel="input size (px)", ylabel="accuracy", title="other input sizes (SPP heads only)")
        f.set(xlabel="eps (L-inf)", ylabel="accuracy", title="FGSM (solid) and PGD (dashed), beyond the paper")
        for ax in axes.flat:
            ax.legend(fontsize=6)
        fig.suptitle(f"mean ± sd over {len(runs)} seed{'s' if len(runs) > 1 else ''}", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("symmetry", CLAIM, table,
                            {"data": settings.data, "epochs": epochs, "p4_width": p4_width, "rows": names,
                             "widths": {n: r0[n]["width"] for n in names},
                             "parameters": {n: r0[n]["parameters"] for n in names}, "tolerance": TOLERANCE,
                             "sigmas": SIGMAS, "judged_sigma": JUDGED_SIGMA, "sizes": SIZES, "zooms": ZOOMS,
                             "eps": EPS, "pgd_eps": PGD_EPS, "pgd_steps": pgd_steps, "angles": r0[names[0]]["angles"],
                             "validation_fraction": VALIDATION,
                             "other_comparisons": [{"name": p.name, "evidence": p.evidence, "holds": p.holds,
                                                    "differences": p.differences} for p in others]},
                            plot=plot, verdict=result_verdict, paper=paper, criterion=criterion, protocol=protocol)
