"""What every experiment shares: the registry, the settings, the outputs."""

from __future__ import annotations

import copy
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

from robustops.experiments.stats import Verdict

# name -> module (robustops.experiments.<module>) with run(settings) -> ExperimentResult
EXPERIMENTS: Dict[str, str] = {"bang": "bang", "saf": "saf", "committee": "committee", "certified": "certified",
                               "certified_ablation": "certified_ablation",
                               "symmetry": "symmetry", "bench": "bench"}

SCALES = ("tiny", "quick", "full")
DATASETS = ("digits", "mnist", "cifar10", "cifar100")
# scale -> the number of seeds a run takes by default (--seeds N overrides it)
DEFAULT_SEEDS = {"tiny": 1, "quick": 3, "full": 5}
# torch's intra-op threads per seed, unless --threads says otherwise: a fixed number, not
# the machine's, so that the same command gives the same numbers on every machine (the
# order of floating-point sums, and so the trained weights, depend on it). One thread
# per seed is also the fastest use of a small CPU for these small networks: the seeds
# run side by side in separate processes (--jobs), which does not change any number.
DEFAULT_THREADS = 1


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
    threads: int = DEFAULT_THREADS  # torch's intra-op threads per seed (part of what fixes the numbers)
    seeds: Optional[int] = None    # how many seeds: seed, seed + 1, ... (None: DEFAULT_SEEDS[scale])
    jobs: Optional[int] = None     # seeds run side by side in this many processes (None: as many as
    #                                the CPUs allow at `threads` each); changes no number

    def seed_list(self) -> List[int]:
        """The seeds this run trains: seed, seed + 1, ..., seed + seeds - 1."""
        count = DEFAULT_SEEDS[self.scale] if self.seeds is None else self.seeds
        return [self.seed + i for i in range(count)]


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


def split_validation(x: Tensor, y: Tensor, fraction: float = 0.1, seed: int = 0):
    """(x_train, y_train, x_val, y_val): a random ``fraction`` of (x, y) held out, drawn
    with ``seed``, to pick a checkpoint by (never the test set)."""
    if not 0 < fraction < 1:
        raise ValueError(f"split_validation: 'fraction' must be in (0, 1), got {fraction!r}")
    n_val = max(1, int(round(len(x) * fraction)))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def caffe_lr(optimizer: torch.optim.Optimizer, policy: str, **kw) -> torch.optim.lr_scheduler.LambdaLR:
    """Caffe's learning-rate policies as a torch scheduler stepped once per iteration:
    "inv" (lr = base_lr (1 + gamma iter)^-power; kw gamma, power), "multistep" (base_lr
    times gamma for every milestone iteration passed; kw milestones, gamma) and
    "fixed"."""
    if policy == "inv":
        gamma, power = float(kw["gamma"]), float(kw["power"])
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1.0 + gamma * it) ** -power)
    if policy == "multistep":
        milestones, gamma = [int(m) for m in kw["milestones"]], float(kw["gamma"])
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: gamma ** sum(it >= m for m in milestones))
    if policy == "fixed":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    raise ValueError(f"caffe_lr: 'policy' must be 'inv', 'multistep' or 'fixed', got {policy!r}")


def band(ax, x: Sequence[float], per_seed: Sequence[Sequence[Optional[float]]], label: str, **kw) -> None:
    """Plot the mean over the seeds of ``per_seed`` (one sequence per seed, aligned
    with ``x``) as a line with markers, and mean +- sd as a shaded band."""
    from robustops.experiments.stats import mean as _mean, sd as _sd

    columns = list(zip(*per_seed))
    m = [_mean(c) for c in columns]
    s = [_sd(c) if len(c) > 1 else 0.0 for c in columns]
    s = [0.0 if math.isnan(v) else v for v in s]
    line, = ax.plot(x, m, marker="o", markersize=3, label=label, **kw)
    ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=line.get_color(),
                    alpha=0.2, linewidth=0)


class BestCheckpoint:
    """The model's weights at its best validation score so far (the first best one on
    ties): ``update(model, score, step)`` after each epoch, ``restore(model)`` at the
    end. ``mode`` "max" (accuracy) or "min" (error, loss)."""

    def __init__(self, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpoint: 'mode' must be 'max' or 'min', got {mode!r}")
        self.mode, self.score, self.step, self.state = mode, None, None, None

    def update(self, model: torch.nn.Module, score: float, step: int) -> bool:
        better = self.score is None or (score > self.score if self.mode == "max" else score < self.score)
        if better:
            self.score, self.step = float(score), step
            self.state = copy.deepcopy(model.state_dict())
        return better

    def restore(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.state is None:
            raise RuntimeError("BestCheckpoint.restore: update() was never called")
        model.load_state_dict(self.state)
        return model


@dataclass
class ExperimentResult:
    """What one experiment run produced: ``run`` returns it, ``write_outputs`` writes it
    as NAME.md, NAME.json and NAME.png.

    Attributes:
        name: the experiment's name (a key of EXPERIMENTS).
        claim: the paper's claim, as the README states it.
        table: markdown, in the paper's layout (mean +- sd over the seeds).
        data: the raw results (JSON-serializable); ``data["seeds"]`` holds the
            per-seed results.
        holds: (bench only) whether the claim holds in this run; None otherwise.
        plot: a function writing the PNG to the path it is given, or None.
        settings: the run's settings (a Settings as a dict), with the seeds it ran.
        seconds: the wall-clock time of the run.
        files: the paths ``run`` wrote (write_outputs' result).
        verdict: the papers' experiments: the verdict computed from the seeds.
        paper: the paper's headline numbers, quoted (markdown).
        criterion: what counts as reproducing them, fixed before the runs.
        protocol: what this run did (markdown, generated from its settings).
    """

    name: str
    claim: str                     # the paper's claim, as the README states it
    table: str                     # markdown, in the paper's layout (mean +- sd over the seeds)
    data: Dict[str, Any]           # raw results (JSON-serializable); "seeds": the per-seed results
    holds: Optional[bool] = None   # (bench only) does the claim hold in this run
    plot: Optional[Callable[[Path], None]] = None  # writes the PNG to the given path
    settings: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    files: List[Path] = field(default_factory=list)  # what run() wrote (write_outputs' paths)
    verdict: Optional[Verdict] = None  # the papers' experiments: computed from the seeds
    paper: str = ""                # the paper's headline numbers, quoted (markdown)
    criterion: str = ""            # what counts as reproducing them, fixed before the runs
    protocol: str = ""             # what this run did (markdown, generated from its settings)


def _strict(value):
    """value with every non-finite float replaced by None (NaN and infinities are not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


SMOKE = "not judged: a --tiny run is a smoke test (a few batches, one seed) and judges nothing"


def verdict_line(result: ExperimentResult) -> str:
    """One line: the verdict (the papers' experiments), the direction (bench), or why none."""
    if result.settings.get("scale") == "tiny":
        return SMOKE
    if result.verdict is not None:
        return f"{result.verdict.value}: {result.verdict.sentence}"
    return {True: "holds in this run", False: "does not hold in this run", None: "not judged"}[result.holds]


def write_outputs(result: ExperimentResult, out_dir) -> List[Path]:
    """NAME.md, NAME.json and (when the experiment has a plot and matplotlib is
    installed) NAME.png in out_dir; returns the paths written.

    NAME.md has, for the papers' experiments: the paper's numbers, the protocol of the
    run, the criterion and the verdict computed from the seeds, the table (mean +- sd
    over the seeds); tools/readme_tables.py copies it into the README. A tiny run
    (settings scale "tiny") is a smoke test: NAME.md says so instead of a verdict, and
    NAME.json has "smoke_test": true and "verdict": null (the result object keeps what
    the experiment computed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{result.name}.md"
    smoke = result.settings.get("scale") == "tiny"
    seeds = result.settings.get("seed_list") or []
    parts = [f"# {result.name}", "", f"Claim: {result.claim}", ""]
    if result.paper:
        parts += ["**The paper.** " + result.paper, ""]
    if result.protocol:
        parts += ["**This run.** " + result.protocol, ""]
    if result.criterion:
        parts += ["**Reproduced when** (stated before the runs): " + result.criterion, ""]
    if result.verdict is not None and not smoke:
        parts += [result.verdict.markdown(), ""]
    else:
        parts += [f"Direction: {verdict_line(result)}.", ""]
    if seeds:
        parts += [f"Mean ± standard deviation over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
                  f"({', '.join(map(str, seeds))}):", ""]
    parts += [result.table, "",
              f"Settings: `{json.dumps({k: v for k, v in result.settings.items() if k != 'seed_list'})}`; "
              f"{result.seconds:.1f} s.", ""]
    md.write_text("\n".join(parts))
    js = out / f"{result.name}.json"
    record = {"name": result.name, "claim": result.claim, "smoke_test": smoke,
              "verdict": None if smoke or result.verdict is None else result.verdict.to_json(),
              "holds": None if smoke else result.holds, "paper": result.paper, "criterion": result.criterion,
              "protocol": result.protocol, "settings": result.settings, "seconds": result.seconds,
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


def _task(module: str, settings: Dict[str, Any], seed: int, unit: Optional[str]) -> Dict[str, Any]:
    """One seed (or one unit of one seed) of an experiment; in a worker process too
    (picklable, module level)."""
    torch.set_num_threads(settings["threads"])
    mod = importlib.import_module(f"robustops.experiments.{module}")
    settings = Settings(**settings)
    return mod.run_seed(settings, seed) if unit is None else mod.run_unit(settings, seed, unit)


def _jobs(settings: Settings, count: int) -> int:
    if settings.jobs is not None:
        return min(settings.jobs, count)
    if settings.device != "cpu":
        return 1  # one accelerator: one task after another
    return max(1, min(count, (os.cpu_count() or 1) // settings.threads))


def _tasks(module, settings: Settings) -> List[tuple]:
    """(seed, unit) pairs: an experiment with ``units(settings)`` (independent parts
    of a seed, such as the networks of a table) is run unit by unit, which spreads
    the work evenly over the processes; others seed by seed (unit None)."""
    units = module.units(settings) if hasattr(module, "units") else [None]
    return [(seed, unit) for seed in settings.seed_list() for unit in units]


def _run_seeds(module_name: str, module, settings: Settings) -> List[Dict[str, Any]]:
    """The per-seed results, in seed order: module.run_seed(settings, seed), or for
    an experiment with units {unit: module.run_unit(settings, seed, unit)}. The tasks
    run side by side in ``jobs`` spawned processes when more than one (the same
    numbers either way: every task seeds itself and runs at settings.threads)."""
    tasks = _tasks(module, settings)
    jobs = _jobs(settings, len(tasks))
    config = asdict(settings)
    if jobs <= 1:
        done = [_task(module_name, config, seed, unit) for seed, unit in tasks]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        config["progress"] = False
        bar = progress_bar(settings, len(tasks), f"{module_name} ({jobs} processes)")
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_task, module_name, config, seed, unit) for seed, unit in tasks]
            done = []
            for f in futures:
                done.append(f.result())
                bar.update()
        bar.close()
    if tasks[0][1] is None:
        return done
    runs: Dict[int, Dict[str, Any]] = {}
    for (seed, unit), result in zip(tasks, done):
        runs.setdefault(seed, {})[unit] = result
    return [runs[seed] for seed in settings.seed_list()]


def run(name: str, settings: Optional[Settings] = None) -> ExperimentResult:
    """Run experiment ``name`` over its seeds and write its outputs to ``settings.out``.

    The seeds run one after another, or side by side in spawned processes
    (``settings.jobs``); either way each seed gives the same numbers. torch's thread
    count is set to ``settings.threads`` for the run and restored after.

    Args:
        name: one of EXPERIMENTS ("bang", "saf", "committee", "certified",
            "certified_ablation", "symmetry", "bench").
        settings: a robustops.experiments.common.Settings (scale "tiny", "quick" or
            "full", seed, output directory, data set, ...); None: the defaults
            (quick, seed 0, the embedded digits, written to experiments_out).

    Returns:
        The ExperimentResult, its ``files`` the paths written (NAME.md, NAME.json and,
        with matplotlib, NAME.png).

    Raises:
        ValueError: an unknown ``name``, scale or data set, or a ``threads``,
            ``seeds`` or ``jobs`` that is not an int >= 1.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"robustops.experiments: unknown experiment {name!r}; there are {sorted(EXPERIMENTS)}")
    settings = settings or Settings()
    if settings.scale not in SCALES:
        raise ValueError(f"robustops.experiments: 'scale' must be one of {SCALES}, got {settings.scale!r}")
    if settings.data not in DATASETS:
        raise ValueError(f"robustops.experiments: 'data' must be one of {DATASETS}, got {settings.data!r}")
    for key in ("threads", "seeds", "jobs"):
        value = getattr(settings, key)
        if (value is not None or key == "threads") and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"robustops.experiments: '{key}' must be an int >= 1, got {value!r}")
    module = importlib.import_module(f"robustops.experiments.{EXPERIMENTS[name]}")
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    try:
        if hasattr(module, "run_seed") or hasattr(module, "run_unit"):
            runs = _run_seeds(EXPERIMENTS[name], module, settings)
            result = module.summarize(settings, runs)
            result.data["seeds"] = {str(seed): r for seed, r in zip(settings.seed_list(), runs)}
        else:
            result = module.run(settings)
    finally:
        torch.set_num_threads(threads)
    result.seconds = time.perf_counter() - start
    result.settings = asdict(settings)
    if hasattr(module, "run_seed") or hasattr(module, "run_unit"):
        result.settings["seed_list"] = settings.seed_list()
        result.settings["jobs_used"] = _jobs(settings, len(_tasks(module, settings)))
    result.files = write_outputs(result, settings.out)
    return result
