"""Benchmarks of spatial pyramid pooling (robustops.ops.spatial_pyramid_pool).

spp_max, spp_mean
    ``robustops.ops.spatial_pyramid_pool(x, (1, 2, 4), mode)`` (mode "max" /
    "mean"; [B, C, H, W] -> [B, 21 C], every level pooled in one pass over each
    plane) against
      eager reference   ``robustops.reference.spp.spatial_pyramid_pool``: one
                        adaptive pool per level (F.adaptive_max_pool2d /
                        adaptive_avg_pool2d to n x n), flattened and concatenated;
      compiled reference  the same through torch.compile(dynamic=False), in the
                        full suite only;
      global pool       ``F.adaptive_max_pool2d(x, 1)`` / ``adaptive_avg_pool2d(x, 1)``:
                        one global pool, the cheapest level alone, the limit (timed
                        for comparison, not checked);
    at the feature-map shapes of the models robustops ships:
      symmetric_cnn head  [64, 128, 8, 8]: robustops.models.symmetric_cnn (width 16)
                        on 32x32 inputs, batch 64: its head pools 2w = 32 p4 channels
                        of 8x8, seen as 128 planes (what P4SpatialPyramidPool hands
                        the op)
      p4cnn-sized       [128, 40, 7, 7]: 10 p4 channels (40 planes) of 7x7, batch 128
      large             [64, 256, 16, 16]
      odd               [32, 64, 13, 13]: 13 is not divisible by 2 or 4, so the bins
                        of levels 2 and 4 overlap
    Inputs and output gradients standard normal (no ties: the maximum of a bin is
    unique). forward: under torch.no_grad; forward+backward: the input's gradient
    from the output's (the global pool's from a gradient of its own shape, [B, C,
    1, 1]). Memory-bound in principle: a forward reads x and writes the output
    ((N_in + N_out) itemsize bytes; max also writes the argmax indices, not
    counted), a forward+backward also reads the output gradient and writes the
    input's (2 (N_in + N_out) itemsize). Target: forward >= 3x the eager
    reference's speed (max and mean).

    Checked before timing (a case that fails is not timed): in float64, on the
    first CHECK_BATCH samples, the output equals the reference's (max: exactly;
    mean: rtol = atol = 1e-12) and so does the input gradient (rtol = atol =
    1e-12); at the run's dtype, on the timed data, the max output equals the
    reference's exactly (the same first maxima); then the generic check at the
    run's dtype (TOLERANCES).

Dtypes: float32 and, in the full suite, bfloat16 (cpu) or float16 and bfloat16
(cuda). Timed with blocked_autorange(min_run_time = OP_TIME x the run's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

import robustops
from robustops.reference import spp as reference

from bench.cases import COMPILED, EAGER, FORWARD, ROBUSTOPS, Case, Config, dtype_name
from bench.checks import CorrectnessError
from bench.targets import Target, speedup_of

FAMILY = "spp"
OPS = ("spp_max", "spp_mean")
MODES = {"spp_max": "max", "spp_mean": "mean"}
LEVELS = (1, 2, 4)

# The cases' dtypes, among the run's.
DTYPES = {"cpu": (torch.float32, torch.bfloat16),
          "cuda": (torch.float32, torch.float16, torch.bfloat16)}

GLOBAL_POOL = "global pool"  # the limit: one adaptive pool to 1 x 1

# Seconds per measurement of a case, as a multiple of the run's min_run_time.
OP_TIME = 0.15

SEED = 0
# The float64 check runs on the first CHECK_BATCH samples.
CHECK_BATCH = 4
F64 = dict(rtol=1e-12, atol=1e-12)

# assert_close tolerances at the run's dtype. The max values are the same elements
# (exact); an input's gradient is a sum of at most one output gradient per level
# (standard normal: below about 8 in magnitude), which the kernel adds in a fixed
# level order in float32 (rounded once for half types) and autograd as its graph
# accumulates, rounding at every addition: atol about 8 eps (one ulp at 8). The
# means sum a bin in another order than adaptive_avg_pool2d (rtol).
TOLERANCES = {torch.float32: dict(rtol=2e-6, atol=1e-6),
              torch.float16: dict(rtol=2e-3, atol=8e-3),
              torch.bfloat16: dict(rtol=1.6e-2, atol=6.25e-2)}


@dataclass(frozen=True)
class Shape:
    name: str
    shape: tuple[int, int, int, int]

    @property
    def label(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.shape))}"

    @property
    def numel(self) -> int:
        b, c, h, w = self.shape
        return b * c * h * w

    @property
    def out_numel(self) -> int:
        b, c, _, _ = self.shape
        return b * c * sum(n * n for n in LEVELS)


SHAPES = (
    Shape("symmetric_cnn head", (64, 128, 8, 8)),
    Shape("p4cnn-sized", (128, 40, 7, 7)),
    Shape("large", (64, 256, 16, 16)),
    Shape("odd", (32, 64, 13, 13)),
)


# --------------------------------------------------------------------------- targets

# cpu, float32.
TARGETS = [
    Target(op, f"{FORWARD} speedup vs {EAGER}", speedup_of(FORWARD, EAGER), 3.0,
           numel=s.numel, size=s.label)
    for op in OPS for s in SHAPES
]


# --------------------------------------------------------------------------- cases


def _robustops(mode: str) -> Callable[[Tensor], Tensor]:
    return lambda x: robustops.ops.spatial_pyramid_pool(x, LEVELS, mode)


def _reference(mode: str) -> Callable[[Tensor], Tensor]:
    def spp(x: Tensor) -> Tensor:
        return reference.spatial_pyramid_pool(x, LEVELS, mode)
    return spp


def _global_pool(mode: str) -> Callable[[Tensor], Tensor]:
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return lambda x: pool(x, 1)


def _backward(y: Tensor, g: Tensor, g1: Tensor) -> None:
    """Backward from an output: the pyramid's [B, 21 C] with g, the global pool's
    [B, C, 1, 1] with g1."""
    y.backward(g if y.dim() == 2 else g1)


def _data(shape: Shape, dtype: torch.dtype, device: torch.device) -> dict:
    b, c, _, _ = shape.shape
    gen = torch.Generator(device=device).manual_seed(SEED + 1)
    x = torch.randn(shape.shape, generator=gen, device=device).to(dtype)
    g = torch.randn(b, c * sum(n * n for n in LEVELS), generator=gen, device=device).to(dtype)
    g1 = torch.randn(b, c, 1, 1, generator=gen, device=device).to(dtype)
    return {"x": x, "g": g, "g1": g1}


def _assert(what: str, actual, expected, tolerances: dict) -> None:
    try:
        torch.testing.assert_close(actual, expected, **tolerances)
    except AssertionError as e:
        raise CorrectnessError(f"{what}: {e}") from e


def _check(op: str, shape: Shape, data: dict) -> None:
    """The float64 check, and the max values at the run's dtype (see the module
    docstring)."""
    mode = MODES[op]
    what = f"{op} {shape.label}"
    mine, ref = _robustops(mode), _reference(mode)
    x = data["x"][:CHECK_BATCH].double()
    g = data["g"][:CHECK_BATCH].double()
    outs, grads = [], []
    for fn in (mine, ref):
        xs = x.clone().requires_grad_()
        y = fn(xs)
        y.backward(g)
        outs.append(y.detach())
        grads.append(xs.grad)
    _assert(f"{what}: float64, the output disagrees with the reference's", outs[0], outs[1],
            dict(rtol=0, atol=0) if mode == "max" else F64)
    _assert(f"{what}: float64, the input gradient disagrees with the reference's", grads[0],
            grads[1], F64)
    if mode == "max":
        with torch.no_grad():
            a, e = mine(data["x"]), ref(data["x"])
        if not torch.equal(a, e):
            raise CorrectnessError(f"{what} {dtype_name(a.dtype)}: the max values differ from "
                                   f"the reference's (max difference "
                                   f"{(a.float() - e.float()).abs().max().item():.3g})")


def _inputs(op: str, shape: Shape, dtype: torch.dtype, device: torch.device
            ) -> Callable[[], dict]:
    def make() -> dict:
        data = _data(shape, dtype, device)
        _check(op, shape, data)  # raises CorrectnessError: the case is not timed
        return data
    return make


def cases(config: Config) -> Iterator[Case]:
    """spp_max and spp_mean at every shape of SHAPES, in the run's dtypes among
    DTYPES."""
    min_run_time = OP_TIME * config.min_run_time
    dev = config.device
    kernels = robustops.extension_info()["ops"]
    for dtype in config.dtypes:
        if dtype not in DTYPES.get(dev.type, ()):
            continue
        itemsize = torch.empty((), dtype=dtype).element_size()
        for op in OPS:
            mode = MODES[op]
            notes = [f"levels {LEVELS}; {GLOBAL_POOL}: F.adaptive_"
                     f"{'max' if mode == 'max' else 'avg'}_pool2d(x, 1) (timed for comparison, "
                     "not checked). Timed with blocked_autorange(min_run_time="
                     f"{min_run_time:g}) (OP_TIME x the run's). Also checked before timing: in "
                     "float64 the output and input gradient equal the reference's"
                     + (" (the output exactly), and at the run's dtype the max values are the "
                        "reference's exactly." if mode == "max" else " (rtol=atol=1e-12).")]
            if dev.type not in kernels.get(op, []):
                notes.append(f"robustops has no compiled {dev.type} kernel of {op} in this "
                             "build: the 'robustops' numbers are the reference fallback's")
            for shape in SHAPES:
                impls = {ROBUSTOPS: _robustops(mode), EAGER: _reference(mode)}
                if config.full:  # compiled lazily, on the first call (the correctness check)
                    impls[COMPILED] = torch.compile(_reference(mode), dynamic=False)
                impls[GLOBAL_POOL] = _global_pool(mode)
                n_in, n_out = shape.numel, shape.out_numel
                yield Case(
                    family=FAMILY, op=op, dtype=dtype, device=dev,
                    numel=n_in, label=shape.label,
                    impls=impls,
                    unchecked=frozenset({GLOBAL_POOL}),
                    make_inputs=_inputs(op, shape, dtype, dev),
                    forward_expr="f(x)",
                    backward_stmt="x.grad = None; backward(f(x), g, g1)",
                    env={"backward": _backward},
                    bytes_forward=(n_in + n_out) * itemsize,
                    bytes_forward_backward=2 * (n_in + n_out) * itemsize,
                    input_bytes=n_in * itemsize,
                    limit_numel=(n_in + n_out) // 2,
                    tolerances=TOLERANCES[dtype],
                    min_run_time=min_run_time,
                    notes=notes,
                )
