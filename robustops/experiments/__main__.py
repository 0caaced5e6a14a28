"""python -m robustops.experiments NAME [options] (and the `robustops` console script)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from robustops.experiments.common import DATASETS, EXPERIMENTS, Settings, run


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="robustops", description="Run one of robustops' experiments.")
    parser.add_argument("name", choices=sorted(EXPERIMENTS) + ["all"],
                        help="the experiment; all: every one in turn, the benchmark suite last")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_const", dest="scale", const="quick",
                       help="a few minutes on a 2-core CPU (the default)")
    scale.add_argument("--tiny", action="store_const", dest="scale", const="tiny", help="a few batches (tests)")
    scale.add_argument("--full", action="store_const", dest="scale", const="full", help="the longer run")
    parser.add_argument("--out", default="experiments_out", help="output directory (default: experiments_out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=DATASETS, default="digits",
                        help="the data set (default: the embedded digits; the others are read from --data-root)")
    parser.add_argument("--data-root", default=None, help="the directory of the MNIST / CIFAR files")
    parser.add_argument("--limit", type=int, default=None,
                        help="use the first N training and N test images (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's intra-op threads (default: torch's; 1 is faster for these small "
                             "networks on a busy machine)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings(scale=args.scale or "quick", seed=args.seed, out=args.out, data_root=args.data_root,
                        data=args.data, limit=args.limit, threads=args.threads, device=args.device,
                        progress=False if args.no_progress else None)
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    for name in names:
        result = run(name, settings)
        verdict = {True: "holds", False: "does not hold", None: "not judged"}[result.holds]
        print(f"## {name}\n\n{result.table}\n\nthe claim's direction {verdict} in this run")
        print(f"wrote {settings.out}/{name}.md, .json" + (", .png" if result.plot else "")
              + f" in {result.seconds:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
