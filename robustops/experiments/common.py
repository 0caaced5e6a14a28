"""What every experiment shares: the registry, the settings, the outputs."""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

# name -> module (robustops.experiments.<module>) with run(settings) -> ExperimentResult
EXPERIMENTS: Dict[str, str] = {"bang": "bang", "saf": "saf", "committee": "committee", "certified": "certified",
                               "symmetry": "symmetry", "bench": "bench"}

SCALES = ("tiny", "quick", "full")
DATASETS = ("digits", "mnist", "cifar10", "cifar100")


@dataclass
class Settings:
    """A run's configuration, recorded in its JSON."""

    scale: str = "quick"
    seed: int = 0
    out: str = "experiments_out"
    data_root: Optional[str] = None
    device: str = "cpu"
    progress: Optional[bool] = None
    data: str = "digits"           # one of DATASETS; all but "digits" read files under data_root
    limit: Optional[int] = None    # use the first `limit` training and test images (None: all)
    threads: Optional[int] = None  # torch's intra-op threads during the run (None: torch's default)


class Data(NamedTuple):
    """A data set as the experiments use it: images in [0, 1], [N, C, H, W]."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int

    @property
    def shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])


def load_data(settings: Settings, experiment: str, digits_size: int = 28,
              supported: Sequence[str] = DATASETS) -> Data:
    """The data set ``settings.data`` for ``experiment``: the embedded digits (resized
    to ``digits_size``), or MNIST / CIFAR-10 / CIFAR-100 read from ``settings.data_root``
    (robustops.data.load_mnist / load_cifar), cut to ``settings.limit`` images per split."""
    from robustops.data import load_cifar, load_digits, load_mnist

    if settings.data not in supported:
        raise ValueError(f"robustops.experiments.{experiment}: 'data' must be one of {tuple(supported)}, "
                         f"got {settings.data!r}")
    if settings.limit is not None and not (isinstance(settings.limit, int) and settings.limit >= 1):
        raise ValueError(f"robustops.experiments.{experiment}: 'limit' must be an int >= 1, got {settings.limit!r}")
    device = torch.device(settings.device)
    if settings.data == "digits":
        train = load_digits("train", size=digits_size, seed=settings.seed, device=device)
        test = load_digits("test", size=digits_size, seed=settings.seed, device=device)
        classes = 10
    else:
        if settings.data_root is None:
            raise ValueError(f"robustops.experiments.{experiment}: data {settings.data!r} is read from files; "
                             "pass their directory as data_root (--data-root DIR)")
        if settings.data == "mnist":
            train, test = (load_mnist(settings.data_root, split, device=device) for split in ("train", "test"))
            classes = 10
        else:
            train, test = (load_cifar(settings.data_root, settings.data, split, device=device)
                           for split in ("train", "test"))
            classes = 10 if settings.data == "cifar10" else 100
    if settings.limit is not None:
        train = tuple(t[:settings.limit] for t in train)
        test = tuple(t[:settings.limit] for t in test)
    return Data(settings.data, train[0], train[1], test[0], test[1], classes)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: Tensor, y: Tensor, batch: int = 512) -> float:
    """The fraction of (x, y) that ``model`` (put in eval mode) classifies correctly (argmax)."""
    model.eval()
    hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def progress_bar(settings: Settings, total: int, desc: str):
    """A tqdm bar over ``total`` steps, shown per settings.progress (None: when a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False,
                disable=None if settings.progress is None else not settings.progress)


@dataclass
class ExperimentResult:
    name: str
    claim: str                     # the paper's claim, as the README states it
    table: str                     # markdown, in the paper's layout
    data: Dict[str, Any]           # raw results (JSON-serializable)
    holds: Optional[bool] = None   # does the claim's direction hold in this run
    plot: Optional[Callable[[Path], None]] = None  # writes the PNG to the given path
    settings: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    files: List[Path] = field(default_factory=list)  # what run() wrote (write_outputs' paths)


def _strict(value):
    """value with every non-finite float replaced by None (NaN and infinities are not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_outputs(result: ExperimentResult, out_dir) -> List[Path]:
    """NAME.md, NAME.json and (when the experiment has a plot and matplotlib is
    installed) NAME.png in out_dir; returns the paths written.

    A tiny run (settings scale "tiny") is a smoke test: NAME.md says so instead of a
    verdict, and NAME.json has "smoke_test": true and "holds": null (the result object
    keeps what the experiment computed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{result.name}.md"
    smoke = result.settings.get("scale") == "tiny"
    if smoke:
        verdict = "not judged: a --tiny run is a smoke test (a few batches) and judges nothing"
    else:
        verdict = {True: "holds in this run", False: "does not hold in this run", None: "not judged"}[result.holds]
    md.write_text(f"# {result.name}\n\nClaim: {result.claim}\n\nDirection: {verdict}.\n\n{result.table}\n\n"
                  f"Settings: `{json.dumps(result.settings)}`; {result.seconds:.1f} s.\n")
    js = out / f"{result.name}.json"
    record = {"name": result.name, "claim": result.claim, "smoke_test": smoke,
              "holds": None if smoke else result.holds, "settings": result.settings,
              "seconds": result.seconds,
              "environment": {"torch": torch.__version__, "python": platform.python_version(),
                              "machine": platform.machine(), "cpus": os.cpu_count()},
              "results": result.data}
    js.write_text(json.dumps(_strict(record), indent=2, allow_nan=False))
    paths = [md, js]
    if result.plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:  # matplotlib is an optional extra (robustops[plot]): no PNG
            return paths
        png = out / f"{result.name}.png"
        result.plot(png)
        paths.append(png)
    return paths


def run(name: str, settings: Optional[Settings] = None) -> ExperimentResult:
    """Run experiment ``name`` and write its outputs to settings.out."""
    if name not in EXPERIMENTS:
        raise ValueError(f"robustops.experiments: unknown experiment {name!r}; there are {sorted(EXPERIMENTS)}")
    settings = settings or Settings()
    if settings.scale not in SCALES:
        raise ValueError(f"robustops.experiments: 'scale' must be one of {SCALES}, got {settings.scale!r}")
    if settings.data not in DATASETS:
        raise ValueError(f"robustops.experiments: 'data' must be one of {DATASETS}, got {settings.data!r}")
    if settings.threads is not None and not (isinstance(settings.threads, int) and settings.threads >= 1):
        raise ValueError(f"robustops.experiments: 'threads' must be an int >= 1, got {settings.threads!r}")
    module = importlib.import_module(f"robustops.experiments.{EXPERIMENTS[name]}")
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    try:
        result = module.run(settings)
    finally:
        torch.set_num_threads(threads)
    result.seconds = time.perf_counter() - start
    result.settings = asdict(settings)
    result.files = write_outputs(result, settings.out)
    return result
