"""bang: a regular LeNet against BANG-trained LeNets (several eps and beta) on the
embedded digits at 28x28 (or MNIST / CIFAR-10 files): accuracy, FGS and HC1 success
rates, PASS and L-inf of the HC1 examples (the BANG paper's Table 1 layout), and the
flip rate under Gaussian noise over training (its Figure 3).

Claim (Rozsa, Guenther & Boult 2018, "Towards robust deep neural networks with
BANG"): balancing each sample's contribution to the weight update makes the network
more robust to adversarial perturbations at a similar accuracy: the perturbations
that fool it must be larger (higher L-inf, lower PASS) and fewer attacks succeed, and
it is more stable under Gaussian noise.

Judged here, fixed before the runs: the BANG model at the paper's MNIST setting (eps
= 0.815, beta = 1) needs larger perturbations than the regular model, that is, both
the mean L-inf of its successful HC1 examples and the mean eps of its successful FGS
examples are larger.

Training: the paper's LeNet (robustops.models.lenet_saf("plain"); Caffe's LeNet for
1-channel images, cifar10_quick for 3-channel ones), SGD with momentum 0.9 and
weight decay 5e-4 (Caffe's LeNet solver), the same seed, data order and epochs for
every model; BANG (robustops.bang.BANG) on every conv and linear layer, misclassified
samples told to BANG each step (ratio 1, as on MNIST).

Evaluation on the test set: FGS is robustops.attacks.FGSLineSearch (the smallest eps
along the gradient sign that flips the label, up to 1, as Rozsa et al. use it); HC1
is robustops.attacks.HotCold (the smallest step towards the closest wrong class).
Success rates count the correctly classified images; L-inf, eps and PASS are means
over the successful examples. PASS (robustops.metrics.pass_score) needs the
``metrics`` extra (OpenCV, scikit-image); without it the column says "-". The noise
flip rate is the fraction of Gaussian-noise copies (sigma = NOISE_SIGMA) of the
first test images (200 with 10 draws each at --quick, all with 100 at --full) whose
prediction differs from the clean image's, after every epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from robustops.attacks import FGSLineSearch, HotCold
from robustops.bang import BANG
from robustops.curves import noise_curve
from robustops.data import loader
from robustops.experiments.common import ExperimentResult, Settings, accuracy, load_data, progress_bar
from robustops.models import cifar_saf, lenet_saf

CLAIM = ("BANG-trained networks need larger adversarial perturbations to be fooled than regularly trained "
         "ones, at a similar accuracy, and flip less under Gaussian noise")

# name -> (eps, beta); eps = None is regular training
MODELS = {
    "regular": (None, 1.0),
    "BANG eps=0.5, beta=1": (0.5, 1.0),
    "BANG eps=0.815, beta=1": (0.815, 1.0),
    "BANG eps=0.815, beta=0.5": (0.815, 0.5),
    "BANG eps=1.0, beta=1": (1.0, 1.0),
}
JUDGED = "BANG eps=0.815, beta=1"
NOISE_SIGMA = 0.3
# scale -> (epochs, batches per epoch or None, test images attacked or None, (test images, draws per
#           image) of the per-epoch noise flip rate, line-search grid and bisections of the attacks)
SCALE = {"tiny": (1, 2, 16, (16, 2), (8, 2)), "quick": (15, None, None, (200, 10), (25, 10)),
         "full": (40, None, None, (None, 100), (100, 20))}


def _model(shape, classes):
    channels, h, w = shape
    build = lenet_saf if channels == 1 else cifar_saf
    return build("plain", in_channels=channels, num_classes=classes, input_size=(h, w))


def _mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].double().mean()) if bool(mask.any()) else math.nan


def _pass(x, x_adv, mask):
    try:
        from robustops.metrics import pass_score

        return _mean(pass_score(x[mask], x_adv[mask]), torch.ones(int(mask.sum()), dtype=torch.bool)) \
            if bool(mask.any()) else math.nan
    except ImportError:  # the metrics extra is not installed
        return None


def evaluate(model, x, y, grid: int = 50, refine: int = 10) -> dict:
    """Accuracy, and FGS and HC1 with their success rates, mean L-inf / eps and PASS
    (over the successful examples) on (x, y); the attacks' line searches take
    ``grid`` steps up to 1, then ``refine`` bisections."""
    fgs = FGSLineSearch(model, max_step=1.0, grid=grid, refine=refine).evaluate(x, y)
    hc = HotCold(model, max_step=1.0, grid=grid, refine=refine).evaluate(x, y)
    ok = hc.success.to(x.device)
    return {"accuracy": accuracy(model, x, y),
            "fgs_success": fgs.success_rate, "fgs_eps": _mean(fgs.extra["step"], fgs.success),
            "fgs_linf": _mean(fgs.linf, fgs.success),
            "hc1_success": hc.success_rate, "hc1_linf": _mean(hc.linf, hc.success),
            "hc1_pass": _pass(x, hc.x_adv, ok)}


def _fmt(v, digits=4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def run(settings: Settings) -> ExperimentResult:
    epochs, batches, attacked, (noisy, draws), search = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "bang", digits_size=28)
    x_train, y_train, x_test, y_test = data_set[1:5]
    x_eval, y_eval = x_test[:attacked], y_test[:attacked]  # [:None] is all
    x_noisy, y_noisy = x_test[:noisy], y_test[:noisy]
    results = {}
    bar = progress_bar(settings, len(MODELS) * epochs, "bang")
    for name, (eps, beta) in MODELS.items():
        torch.manual_seed(settings.seed)
        model = _model(data_set.shape, data_set.classes).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        bang = BANG(model, eps=eps, beta=beta, ratio=1.0) if eps is not None else None
        history = {"epoch": [], "accuracy": [], "noise_flip": []}
        for epoch in range(1, epochs + 1):
            model.train()
            for k, (xb, yb) in enumerate(loader(x_train, y_train, batch_size=64, seed=settings.seed + epoch)):
                if batches is not None and k >= batches:
                    break
                logits = model(xb)
                if bang is not None:
                    bang.observe(logits, yb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            history["epoch"].append(epoch)
            history["accuracy"].append(accuracy(model, x_test, y_test))
            curve = noise_curve(model, x_noisy, y_noisy, [NOISE_SIGMA], draws=draws, seed=settings.seed, progress=False)
            history["noise_flip"].append(curve.series["flip"][0])
            bar.update()
        if bang is not None:
            bang.remove()
        model.eval()
        results[name] = {"eps": eps, "beta": beta, **evaluate(model, x_eval, y_eval, *search), "history": history}
    bar.close()

    rows = ["| training | accuracy | FGS success | FGS mean eps | HC1 success | HC1 PASS | HC1 L-inf | "
            f"noise flip rate (sigma={NOISE_SIGMA:g}) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        rows.append(f"| {name} | {_fmt(r['accuracy'])} | {_fmt(r['fgs_success'])} | {_fmt(r['fgs_eps'])} | "
                    f"{_fmt(r['hc1_success'])} | {_fmt(r['hc1_pass'])} | {_fmt(r['hc1_linf'])} | "
                    f"{_fmt(r['history']['noise_flip'][-1])} |")
    regular, judged = results["regular"], results[JUDGED]
    holds = bool(judged["hc1_linf"] > regular["hc1_linf"] and judged["fgs_eps"] > regular["fgs_eps"])

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        for name, r in results.items():
            a.plot(r["history"]["epoch"], r["history"]["noise_flip"], marker="o", label=name)
            b.plot(r["history"]["epoch"], r["history"]["accuracy"], marker="o", label=name)
        a.set_xlabel("epoch")
        a.set_ylabel(f"flip rate under Gaussian noise (sigma={NOISE_SIGMA:g})")
        a.set_title("noise flip rate during training")
        a.legend(fontsize=7)
        b.set_xlabel("epoch")
        b.set_ylabel("test accuracy")
        b.set_title(f"test accuracy during training ({data_set.name})")
        b.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("bang", CLAIM, "\n".join(rows),
                            {"data": data_set.name, "epochs": epochs, "noise_sigma": NOISE_SIGMA,
                             "judged": JUDGED, "attacked_images": len(x_eval),
                             "noise_images": len(x_noisy), "noise_draws": draws, "models": results}, holds, plot)
