"""python -m robustops.experiments NAME [options] (and the `robustops` console script)."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import torch

from robustops.experiments.common import (DATASETS, DEFAULT_SEEDS, DEFAULT_THREADS, EXPERIMENTS, Settings, run,
                                          verdict_line)

BENCH = "bench"  # the experiment that runs the benchmark suite, which only a source checkout has
SMOKE_TEST = "a --tiny run is a smoke test (a few batches): it judges nothing"
NO_PLOT = "no plot: install matplotlib (pip install robustops[plot])"


def _version() -> str:
    """robustops' installed version (its metadata), else robustops.__version__."""
    try:
        return importlib.metadata.version("robustops")
    except importlib.metadata.PackageNotFoundError:
        import robustops

        return getattr(robustops, "__version__", "unknown")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    """A seed torch.manual_seed takes, with room for the experiments' seed + epoch: 64-bit signed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -2 ** 63 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"expected an integer from -2**63 to 2**63 - 1 (a 64-bit seed), "
                                         f"got {value}")
    return value


def _device(text: str) -> str:
    """A device string torch accepts, of a device this machine has."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device torch knows (cpu, cuda, cuda:N, mps, ...)") \
            from None
    kind = device.type
    if kind == "cpu":
        return text
    if kind == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:
        module = getattr(torch, kind, None)
        if not callable(getattr(module, "is_available", None)):
            raise argparse.ArgumentTypeError(f"{text!r}: the experiments run on cpu or an accelerator "
                                             f"(cuda, mps, ...), not on {kind!r}")
        available = bool(module.is_available())
        count = module.device_count() if available and callable(getattr(module, "device_count", None)) else 1
    if not available:
        why = ""
        if kind == "cuda":
            why = (f" (torch {torch.__version__} is a CPU build)" if torch.version.cuda is None
                   else " (torch finds no CUDA GPU)")
        raise argparse.ArgumentTypeError(f"{text!r}: {kind} is not available on this machine{why}; "
                                         "use --device cpu")
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} {kind} device"
                                         f"{'' if count == 1 else 's'} (index 0 to {count - 1})")
    return text


def _output_dir(parser: argparse.ArgumentParser, out: str) -> None:
    """Make the output directory (with its parents) and check that a file can be written
    in it, before any experiment runs; argparse errors otherwise."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        parser.error(f"argument --out: {out!r} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        where = f": {e.filename}" if e.filename and str(e.filename) != str(path) else ""
        parser.error(f"argument --out: cannot create or write to the directory {out!r} "
                     f"({e.strerror or e}{where})")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="robustops", description="Run one of robustops' experiments.")
    parser.add_argument("--version", action="version", version=f"robustops {_version()}")
    parser.add_argument("name", choices=sorted(EXPERIMENTS) + ["all"],
                        help="the experiment; all: every one in turn, the benchmark suite last (skipped "
                             "outside a source checkout)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_const", dest="scale", const="quick",
                       help="a few minutes on a 2-core CPU (the default)")
    scale.add_argument("--tiny", action="store_const", dest="scale", const="tiny",
                       help="a few batches: a smoke test (the tests), judging nothing")
    scale.add_argument("--full", action="store_const", dest="scale", const="full", help="the longer run")
    parser.add_argument("--out", default="experiments_out", help="output directory (default: experiments_out)")
    parser.add_argument("--seed", type=_seed, default=0, help="the first seed (default 0)")
    parser.add_argument("--seeds", type=_positive_int, default=None,
                        help="how many seeds: --seed, --seed + 1, ... (default: "
                             + ", ".join(f"{n} at --{s}" for s, n in DEFAULT_SEEDS.items()) + ")")
    parser.add_argument("--jobs", type=_positive_int, default=None,
                        help="run the seeds side by side in this many processes (default: as many as the CPUs "
                             "allow at --threads each); changes no number")
    parser.add_argument("--data", choices=DATASETS, default="digits",
                        help="the data set (default: the embedded digits; the others are read from --data-root)")
    parser.add_argument("--data-root", default=None, help="the directory of the MNIST / CIFAR files")
    parser.add_argument("--limit", type=_positive_int, default=None,
                        help="use the first N training and N test images (default: all)")
    parser.add_argument("--device", type=_device, default="cpu",
                        help="a device torch has here (default: cpu)")
    parser.add_argument("--threads", type=_positive_int, default=DEFAULT_THREADS,
                        help=f"torch's intra-op threads per seed (default {DEFAULT_THREADS}, whatever the machine: "
                             "the numbers depend on it, so it is fixed and recorded)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    if args.data != "digits" and any(name != BENCH for name in names):
        if args.data_root is None:
            parser.error(f"argument --data-root: --data {args.data} reads its files from a directory; "
                         "pass it as --data-root DIR")
        if not Path(args.data_root).is_dir():
            parser.error(f"argument --data-root: no directory {args.data_root!r}")
    skipped = []
    if BENCH in names:
        from robustops.experiments import bench

        if bench._source_root() is None:
            note = (f"{BENCH}: the benchmark suite (bench/) needs a source checkout of robustops: it ships with "
                    f"the source tree, not the installed package; run `robustops {BENCH}` or `make bench` in one")
            if args.name != "all":
                parser.error(note)
            names.remove(BENCH)
            skipped.append(note.replace(f"{BENCH}: ", f"{BENCH}: skipped: ", 1))
    _output_dir(parser, args.out)

    settings = Settings(scale=args.scale or "quick", seed=args.seed, out=args.out, data_root=args.data_root,
                        data=args.data, limit=args.limit, threads=args.threads, seeds=args.seeds, jobs=args.jobs,
                        device=args.device,
                        progress=False if args.no_progress else None)
    for name in names:
        result = run(name, settings)
        verdict = SMOKE_TEST if settings.scale == "tiny" else verdict_line(result)
        print(f"## {name}\n\n{result.table}\n\n{verdict}")
        png = Path(settings.out) / f"{name}.png"
        drew = png in result.files and png.is_file()
        print(f"wrote {settings.out}/{name}.md, .json" + (", .png" if drew else "")
              + f" in {result.seconds:.1f} s" + ("" if drew or result.plot is None else f"; {NO_PLOT}") + "\n")
    for note in skipped:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
