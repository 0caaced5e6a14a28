"""Benchmarks of the symmetric activation functions: robustops.ops.mrelu and .rbf.

Each op is compared with its pure-PyTorch reference (robustops.reference.saf),
run eagerly and through torch.compile(dynamic=False), and with the textbook
composite a user would write without robustops (relu(1 - |x|) and exp(-x * x),
differentiated by torch's autograd), through torch.compile. The composite is the
stronger baseline for mReLU: the reference's backward selects with torch.where,
and Inductor (torch 2.13, CPU) then saves boolean masks for the backward, whose
vectorized store is slow. Both are elementwise and
memory-bound: a forward reads x and writes y (2 N itemsize bytes, the same as a
copy), a forward+backward also reads the output gradient and x and writes the
input gradient (5 N itemsize bytes). The autograd formula saves only x.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

import robustops
from robustops.reference import saf as reference

from bench.cases import (
    CLONE, COMPILED, COMPILED_COMPOSITE, EAGER, FORWARD, FORWARD_BACKWARD, ROBUSTOPS, Case, Config,
    randn,
)
from bench.targets import Target, fraction_of, saved_ratio_of, speedup_of

FAMILY = "saf"
OPS = ("mrelu", "rbf")

# cpu, float32, N = 2^24 (see bench/targets.Target for the defaults).
TARGETS = [
    target
    for op in OPS
    for target in (
        Target(op, f"{FORWARD} bandwidth / {CLONE} bandwidth",
               fraction_of(FORWARD, ROBUSTOPS, CLONE), 0.90),
        Target(op, f"{FORWARD_BACKWARD} speedup vs {COMPILED}",
               speedup_of(FORWARD_BACKWARD, COMPILED), 1.00),
        Target(op, f"{FORWARD_BACKWARD} speedup vs {COMPILED_COMPOSITE}",
               speedup_of(FORWARD_BACKWARD, COMPILED_COMPOSITE), 1.00),
        Target(op, "saved for backward / input bytes",
               saved_ratio_of(ROBUSTOPS), 1.00, at_least=False),
    )
]


COMPOSITES: dict[str, Callable] = {
    "mrelu": lambda x: torch.relu(1 - x.abs()),
    "rbf": lambda x: torch.exp(-x * x),
}


def _inputs(numel: int, dtype: torch.dtype, device: torch.device) -> Callable[[], dict]:
    def make() -> dict:
        # Standard normal: about 2/3 of the values fall in (-1, 1), where mReLU's
        # derivative is non-zero, and the rest exercise the flat parts.
        return {"x": randn(numel, dtype, device, seed=1), "g": randn(numel, dtype, device, seed=2)}
    return make


def cases(config: Config) -> Iterator[Case]:
    """mrelu and rbf at every dtype and size of the config."""
    kernels = robustops.extension_info()["ops"]
    for op in OPS:
        notes = []
        if config.device.type not in kernels.get(op, []):
            notes.append(f"robustops.ops.{op} has no compiled {config.device.type} kernel in "
                         "this build: the 'robustops' numbers are the reference fallback's")
        for dtype in config.dtypes:
            itemsize = torch.empty((), dtype=dtype).element_size()
            for numel in config.sizes:
                ref = getattr(reference, op)
                yield Case(
                    family=FAMILY,
                    op=op,
                    dtype=dtype,
                    device=config.device,
                    numel=numel,
                    impls={
                        ROBUSTOPS: getattr(robustops.ops, op),
                        EAGER: ref,
                        # Compiled lazily, on the first call (the correctness check).
                        COMPILED: torch.compile(ref, dynamic=False),
                        COMPILED_COMPOSITE: torch.compile(COMPOSITES[op], dynamic=False),
                    },
                    make_inputs=_inputs(numel, dtype, config.device),
                    bytes_forward=2 * numel * itemsize,
                    bytes_forward_backward=5 * numel * itemsize,
                    input_bytes=numel * itemsize,
                    notes=list(notes),
                )
