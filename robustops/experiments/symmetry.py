"""symmetry: a standard CNN against the symmetry-enforced CNN (p4 layers, rotation
pooling, the invariant SPP head) on the embedded digits at 28x28: test accuracy during
training (the symmetry paper's Figure 2) and accuracy on the randomly rotated test set
(its Figure 3), with the accuracy against the rotation angle of the final models.

Claim (Wang et al., "Enhanced robustness by symmetry enforcement"): the
symmetry-enforced network keeps much more of its accuracy on rotated test images
than a standard CNN of comparable size, at a similar clean accuracy. Judged here:
the symmetric model's accuracy on the randomly rotated test set is higher than the
standard model's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from robustops.data import loader, rotate, rotated
from robustops.experiments.common import ExperimentResult, Settings, accuracy, load_data, progress_bar
from robustops.models import standard_cnn, symmetric_cnn

CLAIM = ("the symmetry-enforced CNN keeps its accuracy on rotated test images, where a standard CNN of "
         "comparable size loses much of it")

# scale -> (epochs, standard width (the symmetric model has half as many p4 channels), batches per epoch or None)
SCALE = {"tiny": (1, 4, 2), "quick": (12, 16, None), "full": (30, 32, None)}
ANGLES = list(range(0, 360, 15))


def run(settings: Settings) -> ExperimentResult:
    epochs, width, batches = SCALE[settings.scale]
    device = torch.device(settings.device)
    data_set = load_data(settings, "symmetry", digits_size=28)
    x_train, y_train, x_test, y_test = data_set[1:5]
    channels, side = data_set.shape[0], data_set.shape[1]
    if data_set.shape[1] != data_set.shape[2] or side % 4:
        raise ValueError(f"robustops.experiments.symmetry: needs square images with a side divisible by 4, "
                         f"got {data_set.shape}")
    x_rot, _ = rotated(x_test, mode="random", seed=settings.seed + 1)
    x_p4, _ = rotated(x_test, mode="p4", seed=settings.seed + 1)
    builders = {"standard CNN": lambda: standard_cnn(channels, data_set.classes, input_size=side, width=width),
                "symmetry-enforced CNN": lambda: symmetric_cnn(channels, data_set.classes, width=width // 2)}
    data, models = {}, {}
    bar = progress_bar(settings, len(builders) * epochs, "symmetry")
    for name, build in builders.items():
        torch.manual_seed(settings.seed)
        model = build().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        history = {"epoch": [], "test": [], "rotated": []}
        for epoch in range(1, epochs + 1):
            model.train()
            for k, (xb, yb) in enumerate(loader(x_train, y_train, batch_size=64, seed=settings.seed + epoch)):
                if batches is not None and k >= batches:
                    break
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            history["epoch"].append(epoch)
            history["test"].append(accuracy(model, x_test, y_test))
            history["rotated"].append(accuracy(model, x_rot, y_test))
            bar.update()
        by_angle = [accuracy(model, rotate(x_test, torch.full((len(x_test),), float(a), dtype=torch.float64)),
                              y_test) for a in ANGLES]
        data[name] = {"history": history, "test": history["test"][-1], "rotated": history["rotated"][-1],
                      "rotated_p4": accuracy(model, x_p4, y_test), "by_angle": by_angle,
                      "parameters": sum(p.numel() for p in model.parameters())}
        models[name] = model
    bar.close()
    rows = ["| model | parameters | test accuracy | randomly rotated test set | 90-degree rotations |",
            "|---|---:|---:|---:|---:|"]
    for name, d in data.items():
        rows.append(f"| {name} | {d['parameters']:,} | {d['test']:.4f} | {d['rotated']:.4f} | {d['rotated_p4']:.4f} |")
    std, sym = data["standard CNN"], data["symmetry-enforced CNN"]
    holds = sym["rotated"] > std["rotated"]

    def plot(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        for name, d in data.items():
            a.plot(d["history"]["epoch"], d["history"]["test"], marker="o", label=f"{name}: test")
            a.plot(d["history"]["epoch"], d["history"]["rotated"], marker="x", ls="--", label=f"{name}: rotated")
            b.plot(ANGLES, d["by_angle"], marker="o", label=name)
        a.set_xlabel("epoch")
        a.set_ylabel("accuracy")
        a.set_title("test accuracy during training")
        a.legend(fontsize=7)
        b.set_xlabel("rotation of the test set (degrees)")
        b.set_ylabel("accuracy")
        b.set_title("accuracy against rotation (final models)")
        b.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return ExperimentResult("symmetry", CLAIM, "\n".join(rows),
                            {"data": data_set.name, "angles": ANGLES, "models": data, "epochs": epochs,
                             "width": width}, holds, plot)
