"""Benchmarks of CROWN-IBP certified training (robustops.bounds.crown_ibp_margins and
crown_ibp_loss, whose backward bound runs robustops.ops.crown_relax / crown_relu):
the CROWN-IBP training step of the two small CNNs of bench/interval.py.

The networks (``mnist_cnn``, ``cifar_cnn``), their batches (256, inputs uniform in
[0, 1], labels uniform in 0..9), their seeded weights, the plain step the CROWN-IBP
steps are set against and the checks' data are the interval family's (see
bench/interval.py's docstring): the records compare with its ibp_step.

Model-level record, float32, timed as a StepCase (variants in alternating slices of
about 50 ms, timing.time_interleaved; the ratio to the baseline is the median of the
per-cycle ratios):

crown_ibp_step
    One training step with ``certified_loss(bounded, x, y, eps, n=1, kappa=0,
    method="crown-ibp", beta=0.5)`` (bounds, robust loss, backward, SGD with
    momentum 0.9; kappa = 0 skips the clean pass) in two variants against the plain
    step (cross-entropy, backward, SGD): "CROWN-IBP", ``bound="margins"`` (the K - 1
    margin lower bounds, K - 1 CROWN backward rows per sample, then the robust
    cross-entropy), and "CROWN-IBP loss fusion", ``bound="loss"`` (crown_ibp_loss:
    an upper bound of the worst cross-entropy over the ball, one backward row per
    sample). Targets (issue 16): the margins' step <= 12x the plain step (10x before;
    12x: the arithmetic floor estimated earlier); the loss fusion step <= 4x, so as
    to lead auto_LiRPA 0.7.1's loss-fusion mode, measured by hand on this machine at
    6.9x (mnist_cnn) and 5.3x (cifar_cnn, DM-small) the plain step, by 1.5x. Checked
    (float64): crown_ibp_margins with beta = 0 are the IBP margins; with beta = 1
    they are sound (no larger than the margins of the network at x and at random
    corners and points of the clipped ball); crown_ibp_loss with beta = 0 is the
    robust cross-entropy of the IBP margins, and with beta = 1 it is sound (no
    smaller than the network's cross-entropy at the same points); both losses reach
    every parameter. The check also reports the mean over the samples of the fused
    bound and of the margins' bound (the robust cross-entropy of the beta = 1
    margins) at eps: how much looser loss fusion is on these untrained nets.

    The steps time SGD at lr 0 (the same work, the weights stay put; the check takes
    one step at lr 0.01), as bench/interval.py and bench/bang.py do. The check runs
    on the first CHECK_BATCH samples of the batch, in float64.

Timing budget (quick suite, min_run_time 1 s): fewer slices than bang_step
(STEP_TIME x min_run_time seconds per variant instead of run.STEP_TIME x) and one
warm-up call (WARMUP): the targets (12x, 4x) are coarse next to bang_step's 1.05x,
and a CROWN-IBP step takes most of a second on a 2-core machine (a CROWN-IBP variant
then runs two slices of one step each). The interval family, this record then part
of it, took about 3 minutes of the quick suite there with two crown_ibp_step
variants; the loss fusion variant adds its warm-up, calibration and slices
(STEP_TIME x min_run_time seconds) per net, and its check a few float64 passes.

No op cases: crown_relax and crown_relu are timed inside the step (the ops' own
tests: tests/ops/test_crown.py, tests/ops/test_crown_relu.py).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from robustops.bounds import BoundedModule, certified_loss, crown_ibp_loss, crown_ibp_margins, robust_cross_entropy

from bench.cases import Case, Config, StepCase
from bench.checks import CorrectnessError, no_tf32
# The interval family's nets, data, plain step and step machinery: the CROWN-IBP step
# is timed on the same nets and against the same plain step as its ibp_step.
from bench.interval import (CHECK_BATCH, F64, NETS, PLAIN, SEED, STEP_KAPPA, Net, _ball, _check_data,
                            _net_info, _plain_step, _train_info, _train_step, _training_steps)
from bench.targets import Target, step_ratio_of

FAMILY = "crown"
OPS = ("crown_ibp_step",)

# Seconds of interleaved slices per variant, as a multiple of the run's
# min_run_time, and the warm-up calls of every variant.
STEP_TIME = 1.0
WARMUP = 1

CROWN_BETA = 0.5
# Sampled points of the ball in the CROWN soundness check (per sample).
SOUNDNESS_POINTS = 16

# Variants of the record (and PLAIN, the baseline).
CROWN_STEP = "CROWN-IBP"
CROWN_LOSS_STEP = "CROWN-IBP loss fusion"


# --------------------------------------------------------------------------- targets

# cpu, float32.
TARGETS = [
    Target("crown_ibp_step", f"step time {CROWN_STEP} / {PLAIN}", step_ratio_of(CROWN_STEP), 12.0,
           at_least=False, numel=None, size=net.label)
    for net in NETS
] + [
    Target("crown_ibp_step", f"step time {CROWN_LOSS_STEP} / {PLAIN}",
           step_ratio_of(CROWN_LOSS_STEP), 4.0, at_least=False, numel=None, size=net.label)
    for net in NETS
]


def cases(config: Config) -> Iterator[Case]:
    """None: the family's ops are timed inside its training step."""
    return iter(())


# --------------------------------------------------------------------------- model level


# Training-step variants: (net, model, x, y, lr, **settings) -> step (bench/interval.py's
# _plain_step is the baseline).
def _crown_step(net, model, x, y, lr, bound="margins", **_):
    bounded = BoundedModule(model)
    return _train_step(model, lr, lambda: certified_loss(
        bounded, x, y, net.eps, n=1, kappa=STEP_KAPPA, method="crown-ibp", beta=CROWN_BETA,
        bound=bound).loss)


def _crown_loss_step(net, model, x, y, lr, **_):
    return _crown_step(net, model, x, y, lr, bound="loss")


def _crown_check(net: Net, device: torch.device) -> Callable[[], str]:
    def check() -> str:
        with no_tf32(device):
            model, x, y = _check_data(net, device)
            bounded = BoundedModule(model)
            with torch.no_grad():
                ibp = bounded.ibp_margins(x, y, net.eps)
                crown0 = crown_ibp_margins(bounded, x, y, net.eps, beta=0.0)
                crown = crown_ibp_margins(bounded, x, y, net.eps, beta=1.0)
                fused0 = crown_ibp_loss(bounded, x, y, net.eps, beta=0.0)
                fused = crown_ibp_loss(bounded, x, y, net.eps, beta=1.0)
                # the margins z_y - z_j and the cross-entropy at x and at points of the
                # clipped ball
                l, u = _ball(x, net.eps)
                gen = torch.Generator(device=device).manual_seed(SEED + 7)
                points = [x]
                for k in range(SOUNDNESS_POINTS):
                    t = torch.rand(x.shape, generator=gen, device=device, dtype=x.dtype)
                    points.append(l + (u - l) * (t.round() if k % 2 == 0 else t))
                logits = [model(p) for p in points]
                worst = torch.stack([_margins_of(z, y) for z in logits]).amin(0)
                worst_ce = torch.stack([F.cross_entropy(z, y, reduction="none")
                                        for z in logits]).amax(0)
            try:
                torch.testing.assert_close(crown0, ibp, **F64)
            except AssertionError as e:
                raise CorrectnessError(f"crown_ibp_step {net.label}: crown_ibp_margins(beta=0) "
                                       f"are not the IBP margins: {e}") from e
            slack = (worst - crown).min().item()
            if not slack >= -1e-9:
                raise CorrectnessError(f"crown_ibp_step {net.label}: the CROWN-IBP bound exceeds a "
                                       f"sampled margin by {-slack:.3g}: unsound")
            try:
                torch.testing.assert_close(fused0, robust_cross_entropy(ibp, reduction="none"),
                                           **F64)
            except AssertionError as e:
                raise CorrectnessError(f"crown_ibp_step {net.label}: crown_ibp_loss(beta=0) is not "
                                       f"the robust cross-entropy of the IBP margins: {e}") from e
            loss_slack = (fused - worst_ce).min().item()
            if not loss_slack >= -1e-9:
                raise CorrectnessError(f"crown_ibp_step {net.label}: the loss fusion bound is "
                                       f"below a sampled cross-entropy by {-loss_slack:.3g}: "
                                       "unsound")
            margins_bound = robust_cross_entropy(crown, reduction="none")
            fused_mean, margins_mean = fused.mean().item(), margins_bound.mean().item()
            for bound, what in (("margins", CROWN_STEP), ("loss", CROWN_LOSS_STEP)):
                model.zero_grad()
                certified_loss(bounded, x, y, net.eps, n=1, kappa=STEP_KAPPA, method="crown-ibp",
                               beta=CROWN_BETA, bound=bound).loss.backward()
                missing = [n for n, p in model.named_parameters()
                           if p.grad is None or not bool(torch.isfinite(p.grad).all())]
                if missing:
                    raise CorrectnessError(f"crown_ibp_step {net.label}: the {what} loss gives no "
                                           f"finite gradient for {missing}")
        gap = fused_mean - margins_mean
        comparison = (f"the margins' bound is tighter by {gap:.3g} ({fused_mean / margins_mean:.3g}x)"
                      if gap > 0 else f"the fused bound is the tighter, by {-gap:.3g}")
        return (f"{net.label}, float64, the first {CHECK_BATCH} samples: crown_ibp_margins with "
                "beta=0 equal the IBP margins (assert_close, rtol=atol=1e-10); with beta=1 they "
                f"are below the network's margins at x and at {SOUNDNESS_POINTS} points of the "
                f"clipped ball (corners and uniform points; least slack {slack:.3g}); "
                "crown_ibp_loss with beta=0 equals the robust cross-entropy of the IBP margins "
                "(assert_close, rtol=atol=1e-10); with beta=1 it is above the network's "
                f"cross-entropy at the same points (least slack {loss_slack:.3g}); the CROWN-IBP "
                f"loss (beta={CROWN_BETA}) gives every parameter a finite gradient, with "
                "bound='margins' and bound='loss'. Mean over the samples at eps, beta=1: the "
                f"fused bound {fused_mean:.4g}, the margins' robust cross-entropy "
                f"{margins_mean:.4g}: {comparison}")
    return check


def _margins_of(z: Tensor, y: Tensor) -> Tensor:
    """z_y - z_j for every j != y: [N, K - 1]."""
    n, k = z.shape
    others = torch.ones(n, k, dtype=torch.bool, device=z.device)
    others[torch.arange(n, device=z.device), y] = False
    return (z.gather(1, y[:, None]) - z)[others].reshape(n, k - 1)


def steps(config: Config) -> list[StepCase]:
    """The CROWN-IBP step of both nets, in float32 (none when the run leaves float32
    out)."""
    if torch.float32 not in config.dtypes:
        return []
    dev = config.device
    return [StepCase(
        family=FAMILY, op="crown_ibp_step", dtype=torch.float32, device=dev, label=net.label,
        make_steps=_training_steps(net, dev, {PLAIN: _plain_step, CROWN_STEP: _crown_step,
                                              CROWN_LOSS_STEP: _crown_loss_step}),
        check=_crown_check(net, dev), baseline=PLAIN,
        info={**_net_info(net), **_train_info(),
              "loss": f"{CROWN_STEP}: certified_loss(n=1, method='crown-ibp', "
                      f"beta={CROWN_BETA}, bound='margins'); {CROWN_LOSS_STEP}: the same "
                      "with bound='loss' (crown_ibp_loss)"},
        min_run_time=STEP_TIME * config.min_run_time, warmup=WARMUP) for net in NETS]
