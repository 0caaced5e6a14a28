"""Experiments: each paper's headline comparison, run with robustops' own modules on
the embedded digits (and on MNIST / CIFAR files the user points at). From the
command line::

    python -m robustops.experiments NAME [--quick | --tiny] [--out DIR] [--seed N]
    robustops NAME ...                        (the console script)

Each run writes NAME.md (a table in the paper's layout), NAME.png (its plot) and
NAME.json (the raw results and the run's configuration) to the output directory.
Seeds are fixed. ``--quick`` finishes in a few minutes on a 2-core CPU; ``--tiny``
(a few batches) is what the tests run.
"""

from __future__ import annotations

from robustops.experiments.common import EXPERIMENTS, ExperimentResult, run, write_outputs

__all__ = ["EXPERIMENTS", "ExperimentResult", "run", "write_outputs"]
