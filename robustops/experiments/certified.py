"""certified: IBP, CROWN-IBP, GM-CROWN-IBP and GRT-CROWN-IBP certified training at one
large eps_train, evaluated at several smaller eps_eval: standard (clean) error and
verified error (the GM paper's Table 3 layout), on the embedded digits (8x8).

Claim (Liang et al. 2023): training with the global, monotonically decreasing
robustness loss over N sub-perturbations (GM) gives lower verified errors than plain
IBP / CROWN-IBP training at the perturbations below eps_train, where the plain methods
are only trained at eps_train itself. Judged here: GM-CROWN-IBP's verified error,
averaged over the eps_eval below eps_train, is below CROWN-IBP's.

A sample counts as verified at eps when the IBP or the CROWN-IBP (beta = 1) lower
bound of every margin is positive (both bounds are sound).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustops.bounds import (BoundedModule, certified_loss, clean_error, linear_schedule, smoothed_schedule)
from robustops.bounds.crown import crown_ibp_margins
from robustops.data import loader
from robustops.experiments.common import ExperimentResult, Settings, load_data, progress_bar

CLAIM = ("GM training over sub-perturbations gives lower verified errors below eps_train than plain "
         "IBP / CROWN-IBP training at eps_train")

EPS_TRAIN = 0.3
EPS_EVAL = [0.05, 0.1, 0.2, 0.3]
N_SUB = 4
# scale -> (epochs, batches per epoch or None)
SCALE = {"tiny": (2, 2), "quick": (30, None), "full": (100, None)}
METHODS = {  # name -> (bound method, sub-perturbations, weights)
    "IBP": ("ibp", 1, "gm"),
    "CROWN-IBP": ("crown-ibp", 1, "gm"),
    "GM-CROWN-IBP": ("crown-ibp", N_SUB, "gm"),
    "GRT-CROWN-IBP": ("crown-ibp", N_SUB, "uniform"),
}


def _net(channels: int = 1, height: int = 8, width: int = 8, classes: int = 10) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * (height // 2) * (width // 2), 100), nn.ReLU(),
                         nn.Linear(100, classes))


@torch.no_grad()
def _verified_error(bounded: BoundedModule, x, y, eps: float) -> float:
    ibp = bounded.ibp_margins(x, y, eps).amin(1)
    crown = crown_ibp_margins(bounded, x, y, eps, beta=1.0).amin(1)
    return float(((ibp <= 0) & (crown <= 0)).float().mean())


def run(settings: Settings) -> ExperimentResult:
    epochs, batches = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "certified", digits_size=8)
    x_train, y_train, x_test, y_test = data_set[1:5]
    per_epoch = len(range(0, len(x_train), 64)) if batches is None else batches
    total = epochs * per_epoch
    ramp_end = max(1, int(0.6 * total))  # eps, kappa and beta reach their final values at 60%
    data = {}
    bar = progress_bar(settings, len(METHODS) * epochs, "certified")
    for name, (method, n, weights) in METHODS.items():
        torch.manual_seed(settings.seed)
        model = _net(*data_set.shape, data_set.classes).to(device)
        bounded = BoundedModule(model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = 0
        for epoch in range(epochs):
            model.train()
            for k, (xb, yb) in enumerate(loader(x_train, y_train, batch_size=64, seed=settings.seed + epoch)):
                if batches is not None and k >= batches:
                    break
                eps = smoothed_schedule(step, 0, ramp_end, 0.0, EPS_TRAIN)
                kappa = linear_schedule(step, 0, ramp_end, 1.0, 0.5)
                beta = linear_schedule(step, 0, ramp_end, 1.0, 0.0) if method == "crown-ibp" else 0.0
                out = certified_loss(bounded, xb, yb, eps, n=n, weights=weights, kappa=kappa, method=method,
                                     beta=beta)
                opt.zero_grad()
                out.loss.backward()
                opt.step()
                step += 1
            bar.update()
        model.eval()
        data[name] = {"standard_error": clean_error(model, x_test, y_test),
                      "verified_error": {str(e): _verified_error(bounded, x_test, y_test, e) for e in EPS_EVAL}}
    bar.close()
    head = "| method | standard error | " + " | ".join(f"verified error at eps={e:g}" for e in EPS_EVAL) + " |"
    rows = [head, "|---|---:|" + "---:|" * len(EPS_EVAL)]
    for name, d in data.items():
        rows.append(f"| {name} (eps_train={EPS_TRAIN:g}) | {d['standard_error']:.4f} | "
                    + " | ".join(f"{d['verified_error'][str(e)]:.4f}" for e in EPS_EVAL) + " |")
    below = [str(e) for e in EPS_EVAL if e < EPS_TRAIN]

    def mean_below(name: str) -> float:
        return sum(data[name]["verified_error"][e] for e in below) / len(below)

    holds = mean_below("GM-CROWN-IBP") < mean_below("CROWN-IBP")

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, d in data.items():
            ax.plot(EPS_EVAL, [d["verified_error"][str(e)] for e in EPS_EVAL], marker="o", label=name)
        ax.set_xlabel("eps_eval")
        ax.set_ylabel("verified error")
        ax.set_title(f"verified error, trained at eps_train={EPS_TRAIN:g} ({data_set.name})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("certified", CLAIM, "\n".join(rows),
                            {"data": data_set.name, "eps_train": EPS_TRAIN, "eps_eval": EPS_EVAL, "n_sub": N_SUB,
                             "epochs": epochs, "methods": data}, holds, plot)
