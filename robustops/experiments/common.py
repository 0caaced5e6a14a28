"""What every experiment shares: the registry, the settings, the outputs."""

from __future__ import annotations

import importlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

# name -> module (robustops.experiments.<module>) with run(settings) -> ExperimentResult
EXPERIMENTS: Dict[str, str] = {"symmetry": "symmetry", "certified": "certified"}

SCALES = ("tiny", "quick", "full")


@dataclass
class Settings:
    """A run's configuration, recorded in its JSON."""

    scale: str = "quick"
    seed: int = 0
    out: str = "experiments_out"
    data_root: Optional[str] = None
    device: str = "cpu"
    progress: Optional[bool] = None


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


def write_outputs(result: ExperimentResult, out_dir) -> List[Path]:
    """NAME.md, NAME.json and (when the experiment has a plot and matplotlib is
    installed) NAME.png in out_dir; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{result.name}.md"
    verdict = {True: "holds in this run", False: "does not hold in this run", None: "not judged"}[result.holds]
    md.write_text(f"# {result.name}\n\nClaim: {result.claim}\n\nDirection: {verdict}.\n\n{result.table}\n\n"
                  f"Settings: `{json.dumps(result.settings)}`; {result.seconds:.1f} s.\n")
    js = out / f"{result.name}.json"
    js.write_text(json.dumps({"name": result.name, "claim": result.claim, "holds": result.holds,
                              "settings": result.settings, "seconds": result.seconds,
                              "environment": {"torch": torch.__version__, "python": platform.python_version(),
                                              "machine": platform.machine()},
                              "results": result.data}, indent=2))
    paths = [md, js]
    if result.plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:  # pragma: no cover - matplotlib is an optional extra
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
    module = importlib.import_module(f"robustops.experiments.{EXPERIMENTS[name]}")
    start = time.perf_counter()
    result = module.run(settings)
    result.seconds = time.perf_counter() - start
    result.settings = asdict(settings)
    write_outputs(result, settings.out)
    return result
