"""bang: regular training against BANG (robustops.bang.BANG) at the BANG paper's
protocol, several seeds: the paper's Table 1 metrics (accuracy; FGS success rate,
PASS, L-inf; HC1 success rate, PASS, L-inf) and its Figure 3 (the flip rate under
Gaussian noise at several sigma, at checkpoints through training).

Paper (Rozsa, Guenther & Boult 2018, "Towards Robust Deep Neural Networks with
BANG"), Table 1 (MNIST, LeNet, L-inf in pixel values 0-255):

    R0 (regular)          accuracy 99.16%, FGS rate 90.33%, FGS PASS 0.4072, FGS L-inf 40.51,
                          HC1 rate 99.53%, HC1 PASS 0.7535, HC1 L-inf 122.60
    B1 (beta 1, eps 0.815) accuracy 99.22%, FGS rate  1.68%, FGS PASS 0.7638, FGS L-inf  5.52,
                          HC1 rate 94.19%, HC1 PASS 0.4880, HC1 L-inf 201.84

and Figure 3: after 10k iterations about 20% (R0) against 3% (B1) of the Gaussian
distortions at sigma = 100 (of 255) change the classification. The paper explains the
FGS rate by blank gradients: BANG networks are so confident that the loss gradient
vanishes. Table 2 (CIFAR-10, cifar10_quick): R0 79.59%, FGS rate 96.52%, HC1 PASS
0.9669, HC1 L-inf 18.15; B0 (beta 0.4, eps 0.855) 79.26%, 34.27%, 0.8712, 55.52;
Figure 5: 46.0% against 39.1% flips at sigma = 40.

Reproduced when (fixed before the runs), on the paper's own metrics, R0 against the
paper's headline BANG setting (B1 on MNIST-like data, B0 on CIFAR-10), paired over
the seeds (robustops.experiments.stats.paired: the 95% t interval of the per-seed
differences excludes 0 on the paper's side):
  1. the FGS success rate is lower for BANG;
  2. the mean HC1 L-inf is higher for BANG;
  3. the mean HC1 PASS is lower for BANG;
  4. the flip rate under Gaussian noise at the largest sigma, at the end of training,
     is lower for BANG;
  5. the accuracy is similar: BANG's is not more than 1 point lower (interval above
     -0.01).
Every part holds: reproduced; some: partly reproduced (naming them); none: not
reproduced. The other BANG rows, the FGS blank-gradient fraction and the top-2 logit
gap are reported, not judged.

Protocol. Network: robustops.models.lenet_caffe(dropout=0.5) (Caffe's LeNet plus
the Dropout layer the paper added; one-channel data) or cifar10_quick(dropout=0.5)
(--data cifar10). Solver as the paper (Caffe's LeNet solver): batch 64, SGD with
momentum 0.9, weight decay 5e-4, the "inv" policy (base lr 0.01, gamma 1e-4, power
0.75), 10,000 iterations at --full; --quick runs the same schedule shortened ten
times (1,000 iterations, gamma 1e-3, so the learning rate falls by the same factor).
CIFAR-10: Caffe's cifar10_quick solver (batch 100, weight decay 4e-3), base lr 0.001
divided by 10 after 90% and 95% of 20,000 iterations (the paper's 36 and 38 of 40
epochs); BANG eps for misclassified samples halved (ratio 0.5). Readout: the network
after the last iteration, as the paper (which says it does not select models on a
validation set). The same initialisation, data order and dropout masks for every
network of a seed.

Evaluation on the test set. FGS is robustops.attacks.FGSLineSearch (the smallest
step along the loss gradient's sign that changes the label, up to 1 = the full pixel
range: the paper's only constraint is [0, 255]); HC1 is robustops.attacks.HotCold.
Success rates are over the correctly classified images (a blank gradient is a
failure); PASS (robustops.metrics.pass_score: ECC alignment, then SSIM with the
11x11 Gaussian window; it needs the metrics extra) and L-inf are means over the
successful examples. Noise (Figure 3): the test images that the regular network and
the judged BANG network (the paper's pair) both classify correctly at every
checkpoint, at most SCALE[2] per class (20 at --quick, the paper's 100 at --full);
each gets SCALE[3] Gaussian copies at each sigma (10 at --quick, 20 at --full: the
paper's 1000 would take hours here) and the flip rate is the fraction whose
prediction differs from the clean image's; checkpoints: 4 at --quick, 20 at --full
(every 500 iterations, as the paper).

Where this differs from the paper, knowingly: the data (the embedded 8x8 digits,
upsampled to 28x28, forced: MNIST is not downloadable here; --data mnist trains on
all 60,000 training images where the paper held 10,000 out for validation); the
images are not rounded to whole pixel values (the paper's attacks work on discrete
values in [0, 255]); HC1's step is capped at 1 along its direction scaled to unit
L-inf (pixels with smaller gradients may not saturate; a larger cap changed neither
the rate nor the mean L-inf at --quick); Caffe's doubled learning rate for biases is
not used; on CIFAR-10 the inputs are in [0, 1] without Caffe's mean subtraction on
the 0-255 scale, which cifar10_quick's fillers were tuned for.

--full has not been run here; from the --quick per-network times (about 25 ms per
iteration with one thread), it should take about 20 minutes per seed (4 networks of
10,000 iterations and the noise at 20 checkpoints), so about 1 hour for its 5 seeds two
at a time. --quick (3 seeds): 229 s measured on an idle 2-core CPU (441 s while other
work shared it).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

from robustops.attacks import FGSLineSearch, HotCold
from robustops.bang import BANG
from robustops.curves import noise_curve
from robustops.data import loader
from robustops.experiments.common import (ExperimentResult, Settings, accuracy, band, caffe_lr, load_data,
                                          progress_bar)
from robustops.experiments.stats import mean_sd, paired, verdict

CLAIM = ("BANG-trained networks are far more robust to adversarial perturbations (FGS fails on them, HC1 needs "
         "larger perturbations) and to Gaussian noise than regularly trained ones, at a similar accuracy")

# Table 1 / Table 2 rows quoted from the paper: accuracy, FGS rate, FGS PASS, FGS L-inf (0-255),
# HC1 rate, HC1 PASS, HC1 L-inf (0-255)
PAPER_ROWS = {
    "mnist": {"R0": (0.9916, 0.9033, 0.4072, 40.51, 0.9953, 0.7535, 122.60),
              "B0": (0.9916, 0.0351, 0.6806, 8.34, 0.9513, 0.5359, 187.86),
              "B1": (0.9922, 0.0168, 0.7638, 5.52, 0.9419, 0.4880, 201.84),
              "B4": (0.9911, 0.0152, 0.8220, 4.19, 0.9768, 0.4669, 203.50)},
    "cifar10": {"R0": (0.7959, 0.9652, 0.9553, 4.08, 0.9897, 0.9669, 18.15),
                "B0": (0.7926, 0.3427, 0.9511, 4.11, 0.9594, 0.8712, 55.52)},
}
PAPER_NOISE = {"mnist": "about 20% (R0) against 3% (B1) at sigma 100/255 after 10k iterations (Fig. 3)",
               "cifar10": "46.0% (R0) against 39.1% (B0) at sigma 40/255 at the end (Fig. 5)"}

# the paper's settings per data set: the network, the solver, the rows (name -> (eps, beta) or
# None: regular), the judged BANG row, the noise levels (of 255)
CONFIG = {
    "mnist": dict(net="lenet_caffe", batch=64, base_lr=0.01, weight_decay=5e-4, policy="inv", gamma=1e-4, power=0.75,
                  iterations=10000, ratio=1.0, judged="B1", sigmas=(20, 40, 60, 80, 100),
                  rows={"R0": None, "B0": (0.785, 1.0), "B1": (0.815, 1.0), "B4": (0.84, 1.5)}),
    "cifar10": dict(net="cifar10_quick", batch=100, base_lr=0.001, weight_decay=4e-3, policy="multistep",
                    milestones=(0.9, 0.95),
                    gamma=0.1, iterations=20000, ratio=0.5, judged="B0", sigmas=(10, 20, 30, 40),
                    rows={"R0": None, "B0": (0.855, 0.4)}),
}
# scale -> (fraction of the paper's iterations, checkpoints, noise images per class, draws per image
#           and sigma, noise levels used (every k-th of the config's, always the largest), rows,
#           line-search grid and bisections, test images attacked (None: all))
SCALE = {"tiny": (0.0004, 2, 2, 2, 2, ("R0", "judged"), (4, 2), 16),
         "quick": (0.1, 4, 20, 10, 2, ("R0", "judged", "B4"), (25, 10), None),
         "full": (1.0, 20, 100, 20, 1, None, (50, 12), None)}


def _config(settings: Settings) -> dict:
    return CONFIG["cifar10" if settings.data == "cifar10" else "mnist"]


def _rows(settings: Settings) -> Dict[str, object]:
    config = _config(settings)
    names = SCALE[settings.scale][5]
    if names is None:
        return dict(config["rows"])
    wanted = [config["judged"] if n == "judged" else n for n in names]
    return {n: config["rows"][n] for n in config["rows"] if n in wanted}


def _sigmas(settings: Settings) -> List[float]:
    every = SCALE[settings.scale][4]
    levels = list(_config(settings)["sigmas"])
    picked = levels[::-1][::every][::-1]
    return [s / 255 for s in picked]


def _build(config: dict, shape, classes: int) -> torch.nn.Module:
    from robustops import models

    channels, h, w = shape
    return getattr(models, config["net"])(dropout=0.5, in_channels=channels, num_classes=classes,
                                          input_size=(h, w))


def _mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].double().mean()) if bool(mask.any()) else math.nan


def _pass(x, x_adv, mask):
    from robustops.metrics import pass_score  # needs the metrics extra (OpenCV, scikit-image)

    if not bool(mask.any()):
        return math.nan
    return float(pass_score(x[mask], x_adv[mask]).double().mean())


@torch.no_grad()
def _top2_gap(model, x, batch: int = 512) -> List[float]:
    """Quantiles (10, 25, 50, 75, 90%) of the gap between the two largest logits."""
    model.eval()
    gaps = torch.cat([model(x[i:i + batch]).topk(2, dim=1).values.diff(dim=1).neg().flatten()
                      for i in range(0, len(x), batch)]).double()
    return [float(v) for v in torch.quantile(gaps, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64))]


def evaluate(model, x, y, grid: int = 25, refine: int = 10) -> dict:
    """Table 1's metrics on (x, y): accuracy; FGS and HC1 success rates, mean PASS
    and mean L-inf (over the successful examples); FGS's blank-gradient fraction
    (over the correctly classified images) and the top-2 logit gap quantiles."""
    model.eval()
    fgs = FGSLineSearch(model, max_step=1.0, grid=grid, refine=refine).evaluate(x, y)
    hc = HotCold(model, max_step=1.0, grid=grid, refine=refine).evaluate(x, y)
    correct = fgs.correct
    return {"accuracy": int(correct.sum()) / len(x),  # the attacks classify x already
            "fgs_success": fgs.success_rate, "fgs_pass": _pass(x, fgs.x_adv, fgs.success.to(x.device)),
            "fgs_linf": _mean(fgs.linf, fgs.success),
            "fgs_blank_gradient": float(fgs.zero_gradient[correct].float().mean()) if bool(correct.any())
            else math.nan,
            "hc1_success": hc.success_rate, "hc1_pass": _pass(x, hc.x_adv, hc.success.to(x.device)),
            "hc1_linf": _mean(hc.linf, hc.success), "top2_gap_quantiles": _top2_gap(model, x)}


def run_seed(settings: Settings, seed: int) -> dict:
    """Train every row of the table from ``seed`` and evaluate it (one seed's results)."""
    config = _config(settings)
    fraction, checkpoints, per_class, draws, _, _, (grid, refine), attacked = SCALE[settings.scale]
    device = torch.device(settings.device)
    data = load_data(settings, "bang", digits_size=28, supported=("digits", "mnist", "cifar10"))
    x_train, y_train, x_test, y_test = data[1:5]
    iterations = max(2, int(round(config["iterations"] * fraction)))
    marks = sorted({max(1, round(iterations * (k + 1) / checkpoints)) for k in range(checkpoints)})
    sigmas = _sigmas(settings)
    rows = _rows(settings)
    states: Dict[str, List[dict]] = {}
    results: Dict[str, dict] = {}
    bar = progress_bar(settings, len(rows) * iterations, f"bang seed {seed}")
    for name, row in rows.items():
        torch.manual_seed(seed)
        model = _build(config, data.shape, data.classes).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=config["base_lr"], momentum=0.9,
                              weight_decay=config["weight_decay"])
        if config["policy"] == "inv":  # shortened schedules keep the same lr decay over the run
            sched = caffe_lr(opt, "inv", gamma=config["gamma"] / fraction, power=config["power"])
        else:
            sched = caffe_lr(opt, "multistep", milestones=[m * iterations for m in config["milestones"]],
                             gamma=config["gamma"])
        bang = BANG(model, eps=row[0], beta=row[1], ratio=config["ratio"]) if row is not None else None
        history = {"iteration": [], "accuracy": []}
        states[name] = []
        it, epoch = 0, 0
        while it < iterations:
            for xb, yb in loader(x_train, y_train, batch_size=config["batch"], seed=seed * 1000 + epoch):
                model.train()
                logits = model(xb)
                if bang is not None:
                    bang.observe(logits, yb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                it += 1
                bar.update()
                if it in marks:
                    history["iteration"].append(it)
                    history["accuracy"].append(accuracy(model, x_test, y_test))
                    states[name].append(copy.deepcopy(model.state_dict()))
                if it >= iterations:
                    break
            epoch += 1
        if bang is not None:
            bang.remove()
        model.eval()
        x_eval, y_eval = x_test[:attacked], y_test[:attacked]
        results[name] = {"eps": None if row is None else row[0], "beta": None if row is None else row[1],
                         "final_loss": float(loss.detach()), **evaluate(model, x_eval, y_eval, grid, refine),
                         "history": history}
    bar.close()

    # Figure 3: the images the regular and the judged network both classify correctly at every
    # checkpoint (the paper's pair; the other rows are measured on the same images)
    model = _build(config, data.shape, data.classes).to(device).eval()
    ok = torch.ones(len(x_test), dtype=torch.bool, device=device)
    with torch.no_grad():
        for name in ("R0", config["judged"]):
            for state in states[name]:
                model.load_state_dict(state)
                ok &= torch.cat([model(x_test[i:i + 512]).argmax(1) for i in range(0, len(x_test), 512)]) == y_test
    chosen = torch.cat([ok.logical_and(y_test == c).nonzero().flatten()[:per_class] for c in range(data.classes)])
    x_noise, y_noise = x_test[chosen], y_test[chosen]
    for name in rows:
        flips = []  # [checkpoint][sigma]
        for state in states[name]:
            model.load_state_dict(state)
            if len(x_noise):
                curve = noise_curve(model, x_noise, y_noise, sigmas, draws=draws, seed=seed, progress=False)
                flips.append(curve.series["flip"])
            else:
                flips.append([math.nan] * len(sigmas))
        results[name]["history"]["noise_flip"] = flips
        results[name]["noise_flip"] = flips[-1]
    return {"iterations": iterations, "checkpoints": marks, "sigmas": sigmas, "noise_images": len(x_noise),
            "noise_draws": draws, "attacked_images": len(x_test[:attacked]), "rows": results}


def _paper_table(key: str, rows) -> str:
    head = ("| paper row | beta | eps | accuracy | FGS rate | FGS PASS | FGS L-inf (of 255) | HC1 rate | HC1 PASS | "
            "HC1 L-inf (of 255) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in PAPER_ROWS[key].items():
        eb = CONFIG[key]["rows"].get(name)
        beta, eps = ("-", "-") if eb is None else (f"{eb[1]:g}", f"{eb[0]:g}")
        if name not in rows:
            continue
        lines.append(f"| {name} | {beta} | {eps} | {100 * v[0]:.2f}% | {100 * v[1]:.2f}% | {v[2]:.4f} | {v[3]:.2f} | "
                     f"{100 * v[4]:.2f}% | {v[5]:.4f} | {v[6]:.2f} |")
    return "\n".join(lines)


def summarize(settings: Settings, runs: List[dict]) -> ExperimentResult:
    config = _config(settings)
    key = "cifar10" if settings.data == "cifar10" else "mnist"
    rows = list(runs[0]["rows"])
    sigmas = runs[0]["sigmas"]
    judged = config["judged"]

    def col(name: str, metric: str, i=None) -> list:
        return [r["rows"][name][metric] if i is None else r["rows"][name][metric][i] for r in runs]

    head = ("| training | beta | eps | accuracy | FGS rate | FGS PASS | FGS L-inf (of 255) | FGS blank gradients | "
            "HC1 rate | HC1 PASS | HC1 L-inf (of 255) | median top-2 logit gap | "
            + " | ".join(f"noise flips, sigma {255 * s:.0f}/255" for s in sigmas) + " |")
    lines = [head, "|---|---:|---:|" + "---:|" * (9 + len(sigmas))]
    for name in rows:
        r0 = runs[0]["rows"][name]
        beta, eps = ("-", "-") if r0["eps"] is None else (f"{r0['beta']:g}", f"{r0['eps']:g}")
        cells = [mean_sd(col(name, "accuracy"), 4), mean_sd(col(name, "fgs_success"), 4),
                 mean_sd(col(name, "fgs_pass"), 4), mean_sd(col(name, "fgs_linf"), 1, 255),
                 mean_sd(col(name, "fgs_blank_gradient"), 4), mean_sd(col(name, "hc1_success"), 4),
                 mean_sd(col(name, "hc1_pass"), 4), mean_sd(col(name, "hc1_linf"), 1, 255),
                 mean_sd(col(name, "top2_gap_quantiles", 2), 1)]
        cells += [mean_sd(col(name, "noise_flip", i), 4) for i in range(len(sigmas))]
        lines.append(f"| {name} | {beta} | {eps} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    p = PAPER_ROWS[key]
    parts = [
        paired("FGS succeeds less often on the BANG network (FGS rate)",
               f"{100 * p['R0'][1]:.2f}% vs {100 * p[judged][1]:.2f}%", col("R0", "fgs_success"),
               col(judged, "fgs_success"), "less", "FGS rate", 4),
        paired("HC1 needs larger perturbations on the BANG network (HC1 L-inf)",
               f"{p['R0'][6]:.2f} vs {p[judged][6]:.2f} (of 255)", col("R0", "hc1_linf"), col(judged, "hc1_linf"),
               "greater", "HC1 L-inf (of 255)", 2, 255),
        paired("HC1 examples of the BANG network are less similar to their originals (HC1 PASS)",
               f"{p['R0'][5]:.4f} vs {p[judged][5]:.4f}", col("R0", "hc1_pass"), col(judged, "hc1_pass"), "less",
               "HC1 PASS", 4),
        paired(f"the BANG network flips less under Gaussian noise (sigma {255 * sigmas[-1]:.0f}/255, end of "
               "training)", PAPER_NOISE[key], col("R0", "noise_flip", -1), col(judged, "noise_flip", -1), "less",
               "flip rate", 4),
        paired("at a similar accuracy (not more than 1 point lower)",
               f"{100 * p['R0'][0]:.2f}% vs {100 * p[judged][0]:.2f}%", col("R0", "accuracy"),
               col(judged, "accuracy"), "greater", "accuracy", 4, against=-0.01),
    ]
    for part in parts:  # name the compared rows
        part.name = f"{part.name}: R0 vs {judged}"
    result_verdict = verdict(parts)

    iterations = runs[0]["iterations"]
    schedule = "the paper's schedule" if settings.scale == "full" else "the paper's schedule shortened"
    protocol = (f"{'cifar10_quick' if key == 'cifar10' else 'Caffe LeNet'} with dropout 0.5 on {settings.data} "
                f"({schedule}: {iterations} iterations of batch {config['batch']}, "
                + (f"inv policy from lr {config['base_lr']:g}" if config["policy"] == "inv" else
                   f"lr {config['base_lr']:g}, divided by 10 at 90% and 95%")
                + f"), read after the last iteration as the paper; {runs[0]['attacked_images']} test images "
                f"attacked; noise: {runs[0]['noise_images']} images (seed {settings.seed}) correct for every "
                f"network at every checkpoint, {runs[0]['noise_draws']} draws per image and sigma. "
                f"The paper's rows for the settings trained here:\n\n{_paper_table(key, rows)}")
    paper = (f"Table {'2' if key == 'cifar10' else '1'} of Rozsa et al.: regular training (R0) against BANG "
             f"({judged} judged here): FGS rate {100 * p['R0'][1]:.2f}% vs {100 * p[judged][1]:.2f}%, HC1 L-inf "
             f"{p['R0'][6]:.2f} vs {p[judged][6]:.2f} (of 255), HC1 PASS {p['R0'][5]:.4f} vs {p[judged][5]:.4f}, "
             f"accuracy {100 * p['R0'][0]:.2f}% vs {100 * p[judged][0]:.2f}%; noise flips {PAPER_NOISE[key]}.")
    criterion = ("R0 against " + judged + ", paired over the seeds, each part holding when the 95% t interval of "
                 "the per-seed differences excludes 0 on the paper's side: lower FGS rate, higher HC1 L-inf, lower "
                 "HC1 PASS, lower flip rate at the largest sigma at the end of training, and an accuracy not more "
                 "than 1 point lower. All parts: reproduced; some: partly; none: not reproduced.")

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        marks = runs[0]["checkpoints"]
        for name in rows:
            band(axes[0], marks, [[f[-1] for f in r["rows"][name]["history"]["noise_flip"]] for r in runs], name)
            band(axes[1], [255 * s for s in sigmas], [r["rows"][name]["noise_flip"] for r in runs], name)
            band(axes[2], marks, [r["rows"][name]["history"]["accuracy"] for r in runs], name)
        axes[0].set(xlabel="iteration", ylabel=f"flip rate at sigma {255 * sigmas[-1]:.0f}/255",
                    title="Gaussian noise during training (Fig. 3)")
        axes[1].set(xlabel="sigma (of 255)", ylabel="flip rate", title="Gaussian noise, end of training")
        axes[2].set(xlabel="iteration", ylabel="test accuracy", title=f"accuracy ({settings.data})")
        for ax in axes:
            ax.legend(fontsize=7)
        fig.suptitle(f"mean ± sd over {len(runs)} seeds", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("bang", CLAIM, table,
                            {"data": settings.data, "judged": judged, "paper_rows": PAPER_ROWS[key],
                             "sigmas": sigmas, "rows": rows}, plot=plot, verdict=result_verdict, paper=paper,
                            criterion=criterion, protocol=protocol)
