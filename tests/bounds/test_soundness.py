"""An attack on robustops' own bounds: a certified bound is a promise, so these
tests try to break it.

Random feed-forward networks of every layer type the bounds support (Linear,
Conv2d with random stride / padding / dilation / groups, BatchNorm1d/2d with
random statistics, ReLU, mReLU, RBF, AvgPool2d, MaxPool2d, Flatten, Identity,
Dropout; a Linear or an RBF as the last layer), random inputs in random domains
(scalar, per channel, unbounded; inputs on the domain's edges), random radii
(scalar, zero, one per sample), and for IBP and CROWN-IBP at beta 0, 0.5 and 1:

- every sampled point of the clipped ball (uniform, corners, and the iterates of a
  PGD attack that minimizes each margin minus its bound, and of one that maximizes
  the loss minus its bound) has true margins (float64) no lower than the bound, a
  cross-entropy no higher than crown_ibp_loss's bound (loss fusion), and every
  layer's output inside IBP's interval;
- the activations' linear relaxations hold at dense points of random intervals;
- verified error is never below clean error, and radius 0 gives the clean margins;
- NaN in any weight, bias or statistic is never verified, nor is an infinite weight.

The tolerance is float64 rounding (1e-9 relative): the guarantee is exact
arithmetic's; rounding is not certified. test_mutations shows that the attack
catches a relaxation or an interval image weakened by a small amount.

Every test records how many points it checked (user property `soundness_points`);
the conftest sums them in the run's summary.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import pytest
import torch
from torch import Tensor, nn

import robustops
import torch.nn.functional as F

from robustops.bounds import (BoundedModule, clean_error, crown_ibp_loss, crown_ibp_margins, input_interval,
                              verified_error)
from robustops.bounds import crown as crown_mod
from robustops.bounds import ibp as ibp_mod
from robustops.bounds import rules as rules_mod
from robustops.bounds.rules import BoundRule
from robustops.reference import interval as ref_interval
from robustops.reference import saf as ref_saf

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Thousands of tiny float64 ops: one intra-op thread. With two (torch's default
    here) beside another pytest-xdist worker, OpenMP's spinning threads of the two
    processes fight over the two cores and every op waits (10-50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
RTOL = 1e-9  # float64 rounding; the guarantee is exact arithmetic's

NETWORKS = 24        # random networks per test
SAMPLES = 6          # inputs per network
UNIFORM, CORNERS = 24, 16   # sampled points per input
PGD_RESTARTS, PGD_STEPS = 2, 12
BETAS = (0.0, 0.5, 1.0)


def _activation(g: torch.Generator) -> nn.Module:
    k = int(torch.randint(0, 3, (1,), generator=g))
    return (nn.ReLU(), robustops.nn.MReLU(), robustops.nn.RBF())[k]


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return bool(torch.rand((), generator=g) < p)


def randomize(net: nn.Module, g: torch.Generator, weighted=(nn.Linear, nn.Conv2d)) -> None:
    """Draw the random networks' parameters from ``g``: the ``weighted`` layers' weights
    scaled up (larger than the default init: more mixed units) and their biases in
    [-1, 1]; batch norm's statistics, scales (negative too) and shifts."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, weighted):
                m.weight.mul_(1 + 2 * torch.rand((), generator=g, dtype=DT))
                if m.bias is not None:
                    m.bias.uniform_(-1, 1, generator=g)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.3, 2.0, generator=g)
                m.weight.uniform_(-1.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)


def random_network(seed: int, allow_maxpool: bool = True) -> Tuple[nn.Module, Tuple[int, ...], int]:
    """A random supported network, its input shape and its number of classes."""
    g = torch.Generator().manual_seed(seed)
    classes = int(torch.randint(2, 6, (1,), generator=g))
    layers: List[nn.Module] = []
    if _coin(g):  # convolutional
        c = int(torch.randint(1, 4, (1,), generator=g))
        size = int(torch.randint(6, 11, (1,), generator=g))
        shape = (c, size, size)
        ch, hw = c, size
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            groups = 2 if ch % 2 == 0 and _coin(g, 0.3) else 1
            out = groups * int(torch.randint(1, 4, (1,), generator=g))
            k = int(torch.randint(1, 4, (1,), generator=g))
            stride = int(torch.randint(1, 3, (1,), generator=g))
            pad = int(torch.randint(0, 2, (1,), generator=g))
            dil = 2 if k > 1 and hw >= 7 and _coin(g, 0.3) else 1
            span = dil * (k - 1) + 1
            if hw + 2 * pad < span:
                pad = span
            layers.append(nn.Conv2d(ch, out, k, stride=stride, padding=pad, dilation=dil, groups=groups,
                                    bias=_coin(g, 0.8)))
            ch, hw = out, (hw + 2 * pad - span) // stride + 1
            if _coin(g, 0.4):
                layers.append(nn.BatchNorm2d(ch))
            layers.append(_activation(g))
            if hw >= 2 and _coin(g, 0.5):
                if allow_maxpool and _coin(g):
                    layers.append(nn.MaxPool2d(2))
                else:
                    layers.append(nn.AvgPool2d(2))
                hw //= 2
        layers.append(nn.Flatten())
        width = ch * hw * hw
    else:
        shape = (int(torch.randint(2, 9, (1,), generator=g)),)
        width = shape[0]
    for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
        out = int(torch.randint(3, 12, (1,), generator=g))
        layers.append(nn.Linear(width, out, bias=_coin(g, 0.8)))
        width = out
        if _coin(g, 0.4):
            layers.append(nn.BatchNorm1d(width))
        layers.append(_activation(g))
        if _coin(g, 0.2):
            layers.append(nn.Dropout(0.3) if _coin(g) else nn.Identity())
    layers.append(nn.Linear(width, classes))
    if _coin(g, 0.2):
        layers.append(robustops.nn.RBF())  # the SAF networks' RBF outputs: no folding
    net = nn.Sequential(*layers).to(DT)
    randomize(net, g)
    return net.eval(), shape, classes


def random_problem(seed: int, shape, classes: int):
    """x in a random domain (some elements on its edges), labels, eps, lower, upper."""
    g = torch.Generator().manual_seed(10_000 + seed)
    kind = int(torch.randint(0, 4, (1,), generator=g))
    if kind == 0:
        lower, upper = 0.0, 1.0
    elif kind == 1:  # normalized inputs: one domain per channel
        mean = torch.rand(shape[0], generator=g, dtype=DT)
        std = 0.2 + torch.rand(shape[0], generator=g, dtype=DT)
        lower, upper = (0 - mean) / std, (1 - mean) / std
    elif kind == 2:
        lower, upper = -1.0, 2.0
    else:
        lower, upper = None, None
    lo = torch.as_tensor(-3.0 if lower is None else lower, dtype=DT)
    hi = torch.as_tensor(3.0 if upper is None else upper, dtype=DT)
    if lo.dim() == 1 and len(shape) > 1:
        lo, hi = lo.reshape(-1, *([1] * (len(shape) - 1))), hi.reshape(-1, *([1] * (len(shape) - 1)))
    u = torch.rand((SAMPLES,) + tuple(shape), generator=g, dtype=DT)
    x = lo + u * (hi - lo)
    edge = torch.rand(x.shape, generator=g) < 0.15  # on the edges of the domain
    x = torch.where(edge & (torch.rand(x.shape, generator=g) < 0.5), lo.expand_as(x), x)
    x = torch.where(edge & (x != lo), hi.expand_as(x), x)
    y = torch.randint(0, classes, (SAMPLES,), generator=g)
    which = int(torch.randint(0, 3, (1,), generator=g))
    if which == 0:  # from 0.001 to 0.3, log-uniform: narrow and wide intervals inside
        eps = 10 ** float(-3 + 2.5 * torch.rand((), generator=g, dtype=DT))
    elif which == 1:  # one radius per sample, one of them 0
        eps = 10 ** (-3 + 2.5 * torch.rand(SAMPLES, generator=g, dtype=DT))
        eps[0] = 0
    else:
        eps = 0.0
    return x, y, eps, lower, upper


def true_margins(net: nn.Module, points: Tensor, y: Tensor) -> Tensor:
    """z_y - z_j for j != y at points [P, N, ...]: [P, N, K - 1]."""
    p, n = points.shape[:2]
    z = net(points.reshape((p * n,) + tuple(points.shape[2:]))).reshape(p, n, -1)
    k = z.shape[-1]
    m = z.gather(2, y.expand(p, n)[..., None]) - z
    keep = torch.ones(n, k, dtype=torch.bool)
    keep[torch.arange(n), y] = False
    return m[:, keep].reshape(p, n, k - 1)


def _violations(values: Tensor, bound: Tensor) -> Tensor:
    """values below bound by more than float64 rounding (NaN bounds are no promise)."""
    slack = RTOL * (1 + bound.abs() + values.abs())
    return (values < bound - slack) & torch.isfinite(bound)


def sample_points(c: Tensor, r: Tensor, g: torch.Generator) -> Tensor:
    """[UNIFORM + CORNERS, N, ...] points of the box [c - r, c + r]."""
    shape = (UNIFORM,) + tuple(c.shape)
    uniform = c + r * (2 * torch.rand(shape, generator=g, dtype=DT) - 1)
    signs = 2 * torch.randint(0, 2, (CORNERS,) + tuple(c.shape), generator=g).to(DT) - 1
    return torch.cat([uniform, c + r * signs])


def true_losses(net: nn.Module, points: Tensor, y: Tensor) -> Tensor:
    """CE(z, y) at points [P, N, ...]: [P, N]."""
    p, n = points.shape[:2]
    z = net(points.reshape((p * n,) + tuple(points.shape[2:])))
    return F.cross_entropy(z, y.repeat(p), reduction="none").reshape(p, n)


def margin_gap(net: nn.Module, bound: Tensor, y: Tensor):
    """PGD's objective against margin bounds: the smallest margin minus its bound."""
    return lambda x: (true_margins(net, x[None], y)[0] - torch.nan_to_num(bound)).amin(1).sum()


def loss_gap(net: nn.Module, bound: Tensor, y: Tensor):
    """PGD's objective against loss bounds: the bound minus the loss."""
    return lambda x: (torch.nan_to_num(bound) - true_losses(net, x[None], y)[0]).sum()


def pgd_points(c: Tensor, r: Tensor, objective, g: torch.Generator) -> Tensor:
    """The iterates of a PGD attack on the box that minimizes ``objective`` (of the
    points [N, ...]; margin_gap, loss_gap), from random starts: [PGD_RESTARTS *
    PGD_STEPS, N, ...]."""
    out = []
    lo, hi = c - r, c + r
    step = (2 * r / PGD_STEPS * 2).clamp(min=0)
    for _ in range(PGD_RESTARTS):
        x = (c + r * (2 * torch.rand(c.shape, generator=g, dtype=DT) - 1)).requires_grad_(True)
        for _ in range(PGD_STEPS):
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(objective(x), x)
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x - step * grad.sign(), lo), hi)
            out.append(x.detach())
            x.requires_grad_(True)
    return torch.stack(out)


def layer_outputs(bounded: BoundedModule, points: Tensor) -> List[Tensor]:
    flat = points.reshape((-1,) + tuple(points.shape[2:]))
    outs = []
    for _, layer in bounded.layers:
        flat = layer(flat)
        outs.append(flat.reshape(points.shape[:2] + tuple(flat.shape[1:])))
    return outs


def attack_network(seed: int, methods=("ibp",) + tuple(f"crown-ibp-{b}" for b in BETAS)) -> Tuple[int, int]:
    """(points checked, violations) for the random network and problem of `seed`."""
    torch.manual_seed(seed)
    net, shape, classes = random_network(seed, allow_maxpool="ibp" in methods)
    x, y, eps, lower, upper = random_problem(seed, shape, classes)
    crown = not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    return attack_bounds(net, x, y, eps, lower, upper, seed, methods, crown)


def attack_bounds(net: nn.Module, x: Tensor, y: Tensor, eps, lower, upper, seed: int, methods,
                  crown: bool) -> Tuple[int, int]:
    """(points checked, violations): sampled points, corners and PGD iterates of the
    ball against the margin bounds of every method and the loss bounds
    (crown_ibp_loss) of every CROWN-IBP one (those only when ``crown``), and every
    layer's output against its IBP interval. PGD attacks the tightest margin bounds
    and the tightest loss bounds."""
    bounded = BoundedModule(net)
    c, r = input_interval(x, eps, lower, upper)
    assert (r >= 0).all()
    g = torch.Generator().manual_seed(20_000 + seed)
    violations = 0
    # the IBP intervals of every layer, and the margin bounds of every method
    intervals = []
    ci, ri = c, r
    for _, layer in bounded.layers:
        ci, ri = ibp_mod.interval_through(layer, ci, ri)
        intervals.append((ci, ri))
    bounds, losses = {}, {}
    for method in methods:
        if method == "ibp":
            bounds[method] = bounded.ibp_margins(x, y, eps, lower, upper)
        elif crown:
            beta = float(method.split("-")[-1])
            bounds[method] = crown_ibp_margins(bounded, x, y, eps, lower, upper, beta=beta)
            losses[method] = crown_ibp_loss(bounded, x, y, eps, lower, upper, beta=beta)
    tightest = torch.stack(list(bounds.values())).amax(0)
    parts = [sample_points(c, r, g), pgd_points(c, r, margin_gap(net, tightest, y), g)]
    if losses:
        parts.append(pgd_points(c, r, loss_gap(net, torch.stack(list(losses.values())).amin(0), y), g))
    with torch.no_grad():
        points = torch.cat(parts)
        margins = true_margins(net, points, y)
        for bound in bounds.values():
            violations += int(_violations(margins, bound[None]).any(-1).sum())
        ce = true_losses(net, points, y)
        for bound in losses.values():
            violations += int(_violations(-ce, -bound[None]).sum())
        for out, (ci, ri) in zip(layer_outputs(bounded, points), intervals):
            violations += int((_violations(out, (ci - ri)[None]) | _violations(-out, -(ci + ri)[None]))
                              .reshape(out.shape[0], -1).any(1).sum())
    return points.shape[0] * points.shape[1], violations


@pytest.mark.parametrize("block", range(4))
def test_no_point_of_the_ball_beats_the_bounds(block, record_property):
    checked = violations = 0
    for seed in range(block * NETWORKS, (block + 1) * NETWORKS):
        n, v = attack_network(seed)
        checked += n
        violations += v
    record_property("soundness_points", checked)
    assert violations == 0, f"{violations} of {checked} points beat a bound"
    assert checked >= 2500


# ------------------------------------------------------------------ the relaxations


def attack_relaxation(relax=None, seed: int = 0, intervals: int = 4000, points: int = 64) -> Tuple[int, int]:
    """(points checked, violations) of a_lo x + b_lo <= f(x) <= a_up x + b_up on dense
    points of random intervals [l, u] (widths from 0 to 6, some on the kinks and the
    inflection points, some degenerate), for ReLU, mReLU and RBF."""
    relax = relax or crown_mod.relaxation
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor([-1.0, 0.0, 1.0, 1 / math.sqrt(2), -1 / math.sqrt(2)], dtype=DT)
    l = torch.rand(intervals, generator=g, dtype=DT) * 8 - 4
    w = torch.rand(intervals, generator=g, dtype=DT) ** 2 * 6
    pick = torch.randint(0, len(special), (intervals,), generator=g)
    l = torch.where(torch.rand(intervals, generator=g) < 0.2, special[pick], l)
    w = torch.where(torch.rand(intervals, generator=g) < 0.05, torch.zeros_like(w), w)
    u = l + w
    t = torch.linspace(0, 1, points, dtype=DT)[:, None]
    xs = l + t * (u - l)
    checked = violations = 0
    for layer, f in ((nn.ReLU(), torch.relu), (robustops.nn.MReLU(), ref_saf.mrelu), (robustops.nn.RBF(), ref_saf.rbf)):
        a_lo, b_lo, a_up, b_up = relax(layer, l, u)
        fx = f(xs)
        low, up = a_lo * xs + b_lo, a_up * xs + b_up
        slack = RTOL * (1 + fx.abs())
        violations += int(((low > fx + slack) | (up < fx - slack)).sum())
        checked += xs.numel()
    return checked, violations


def test_relaxations_hold_everywhere(record_property):
    checked, violations = attack_relaxation()
    record_property("soundness_points", checked)
    assert violations == 0 and checked >= 10_000


def test_interval_images_hold_everywhere(record_property):
    """The fused interval activations contain f at dense points of random intervals."""
    g = torch.Generator().manual_seed(3)
    c = torch.rand(3000, generator=g, dtype=DT) * 8 - 4
    r = torch.rand(3000, generator=g, dtype=DT) ** 2 * 3
    r[:100] = 0
    xs = c + torch.linspace(-1, 1, 33, dtype=DT)[:, None] * r
    checked = violations = 0
    for op, f in ((robustops.ops.interval_relu, torch.relu), (robustops.ops.interval_mrelu, ref_saf.mrelu),
                  (robustops.ops.interval_rbf, ref_saf.rbf)):
        oc, orad = op(c, r)
        fx = f(xs)
        violations += int((_violations(fx, oc - orad) | _violations(-fx, -(oc + orad))).sum())
        checked += xs.numel()
    record_property("soundness_points", checked)
    assert violations == 0


# ------------------------------------------------------------------ the promises around the bounds


@pytest.mark.parametrize("seed", range(12))
def test_verified_error_is_never_below_clean_error(seed):
    net, shape, classes = random_network(100 + seed)
    x, y, eps, lower, upper = random_problem(100 + seed, shape, classes)
    bounded = BoundedModule(net)
    clean = clean_error(net, x, y)
    methods = ["ibp"] if any(isinstance(m, nn.MaxPool2d) for m in net.modules()) else ["ibp", "crown-ibp"]
    for method in methods:
        for e in (0.0, eps, 0.5):
            assert verified_error(bounded, x, y, e, lower, upper, method=method) >= clean


@pytest.mark.parametrize("seed", range(12))
def test_radius_zero_gives_the_clean_margins(seed):
    net, shape, classes = random_network(200 + seed)
    x, y, _, lower, upper = random_problem(200 + seed, shape, classes)
    bounded = BoundedModule(net)
    with torch.no_grad():
        want = true_margins(net, x[None], y)[0]
    torch.testing.assert_close(bounded.ibp_margins(x, y, 0.0, lower, upper), want, rtol=1e-10, atol=1e-10)
    if not any(isinstance(m, nn.MaxPool2d) for m in net.modules()):
        for beta in BETAS:
            torch.testing.assert_close(crown_ibp_margins(bounded, x, y, 0.0, lower, upper, beta), want,
                                       rtol=1e-10, atol=1e-10)


def _tensors(net: nn.Module):
    named = [(f"parameter {n}", p) for n, p in net.named_parameters()]
    named += [(f"buffer {n}", b) for n, b in net.named_buffers() if b.is_floating_point()]
    return named


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_never_verified(seed, value):
    net, shape, classes = random_network(300 + seed, allow_maxpool=seed % 2 == 0)
    x, y, _, lower, upper = random_problem(300 + seed, shape, classes)
    if lower is None:
        lower, upper = -3.0, 3.0
    eps = 0.05  # every radius > 0 away from the edges of the domain
    g = torch.Generator().manual_seed(seed)
    for name, t in _tensors(net):
        if value != value or ("weight" in name and "running" not in name):
            broken = net
            saved = t.detach().clone()
            with torch.no_grad():
                flat = t.view(-1)
                flat[int(torch.randint(0, flat.numel(), (1,), generator=g))] = value
            try:
                bounded = BoundedModule(broken)
                methods = ["ibp"] if any(isinstance(m, nn.MaxPool2d) for m in net.modules()) else \
                    ["ibp", "crown-ibp"]
                for method in methods:
                    if value != value:  # NaN: nothing may be verified
                        assert verified_error(bounded, x, y, eps, lower, upper, method=method) == 1.0, name
                    else:  # inf: a verified sample must be one whose margins are positive at every point
                        margins = (bounded.ibp_margins(x, y, eps, lower, upper) if method == "ibp" else
                                   crown_ibp_margins(bounded, x, y, eps, lower, upper))
                        ok = robustops.bounds.verified(margins)
                        c, r = input_interval(x, eps, lower, upper)
                        with torch.no_grad():
                            m = true_margins(net, sample_points(c, r, g), y)
                        assert not (ok & ~((m > 0) & torch.isfinite(m)).all(-1).all(0)).any(), name
            finally:
                with torch.no_grad():
                    t.copy_(saved)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused(value):
    net, shape, classes = random_network(7)
    x, y, eps, _, _ = random_problem(7, shape, classes)
    x = x.clamp(0, 1)
    x.view(-1)[3] = value
    bounded = BoundedModule(net)
    for lower, upper in ((0.0, 1.0), (None, None)):
        with pytest.raises(ValueError, match="'x' must be finite"):
            verified_error(bounded, x, y, 0.1, lower, upper)
        with pytest.raises(ValueError, match="'x' must be finite"):
            crown_ibp_margins(bounded, x, y, 0.1, lower, upper)


def test_nan_margins_are_never_verified():
    margins = torch.tensor([[1.0, 2.0], [float("nan"), 1.0], [float("inf"), 1.0], [1.0, -0.5], [0.0, 1.0]])
    assert robustops.bounds.verified(margins).tolist() == [True, False, False, False, False]
    loss = robustops.bounds.robust_cross_entropy(margins, reduction="none")
    assert torch.isfinite(loss[[0, 3, 4]]).all() and torch.isnan(loss[[1, 2]]).all()
    assert torch.isnan(robustops.bounds.robust_cross_entropy(margins))


# ------------------------------------------------------------------ the attack has teeth


def probe_network(act: nn.Module, sign: float) -> nn.Module:
    """x -> act(x) -> (sign * act(x), 0): one sample's margin is sign * act(x), so the
    CROWN-IBP bound is the relaxation's own line at the worst end of the interval."""
    net = nn.Sequential(nn.Linear(1, 1), act, nn.Linear(1, 2)).to(DT)
    with torch.no_grad():
        net[0].weight.fill_(1)
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[sign], [0.0]], dtype=DT))
        net[2].bias.zero_()
    return net.eval()


def attack_probes(method: str, intervals: int = 2000, points: int = 33) -> Tuple[int, int]:
    """(points checked, violations) of the margin bounds of the probe networks of ReLU,
    mReLU and RBF, both signs, on random intervals of the one input (centers in
    [-3, 3], radii log-uniform in [1e-3, 3], some on the kinks and inflection points):
    the whole pipeline (input_interval, the interval ops or the relaxations,
    crown_relax, the margins) on every region of every relaxation."""
    g = torch.Generator().manual_seed(5)
    special = torch.tensor([-1.0, 0.0, 1.0, 1 / math.sqrt(2), -1 / math.sqrt(2)], dtype=DT)
    c = torch.rand(intervals, generator=g, dtype=DT) * 6 - 3
    r = 10 ** (-3 + math.log10(3e3) * torch.rand(intervals, generator=g, dtype=DT))
    on = torch.rand(intervals, generator=g) < 0.2  # an end on a special point
    c = torch.where(on, special[torch.randint(0, len(special), (intervals,), generator=g)] + r, c)
    x, y = c[:, None], torch.zeros(intervals, dtype=torch.long)
    t = torch.linspace(-1, 1, points, dtype=DT)[:, None, None]
    grid = x + t * r[:, None]
    checked = violations = 0
    for act in (nn.ReLU(), robustops.nn.MReLU(), robustops.nn.RBF()):
        for sign in (1.0, -1.0):
            bounded = BoundedModule(probe_network(act, sign))
            if method == "ibp":
                bound = bounded.ibp_margins(x, y, r, None, None)
            else:
                bound = crown_ibp_margins(bounded, x, y, r, None, None, beta=float(method.split("-")[-1]))
            with torch.no_grad():
                m = true_margins(bounded.model, grid, y)
            violations += int(_violations(m, bound[None]).sum())
            checked += m.numel()
    return checked, violations


@pytest.mark.parametrize("method", ["ibp"] + [f"crown-ibp-{b}" for b in BETAS])
def test_probe_networks_hold_on_every_region(method, record_property):
    checked, violations = attack_probes(method)
    record_property("soundness_points", checked)
    assert violations == 0 and checked >= 10_000


def _weakened_relaxation(kind: str):
    # the registered relaxations as they are now (the mutation test then replaces them)
    registered = {t: rules_mod._RULES[t].relax for t in (nn.ReLU, robustops.nn.MReLU, robustops.nn.RBF)}

    def true(layer, l, u):
        return registered[type(layer)](layer, l, u)
    k = 1 / math.sqrt(2)

    def relax(layer, l, u):
        a_lo, b_lo, a_up, b_up = true(layer, l, u)
        if kind == "mrelu-chord" and isinstance(layer, robustops.nn.MReLU):
            b_lo = b_lo + 1e-3  # the chord (or constant) lower bound raised by 0.001
        if kind == "rbf-concavity" and isinstance(layer, robustops.nn.RBF):
            # the concave region taken 5% wider: the chord used as a lower bound beyond it
            wide = (l >= -1.05 * k) & (u <= 1.05 * k) & ~((l >= -k) & (u <= k))
            fl, fu = ref_saf.rbf(l), ref_saf.rbf(u)
            slope = torch.where(u > l, (fu - fl) / torch.where(u > l, u - l, torch.ones_like(l)), torch.zeros_like(l))
            a_lo = torch.where(wide, slope, a_lo)
            b_lo = torch.where(wide, fl - slope * l, b_lo)
        if kind == "relu-upper" and isinstance(layer, nn.ReLU):
            b_up = b_up * 0.999  # the triangle's upper line lowered by 0.1% of its intercept
        return a_lo, b_lo, a_up, b_up
    return relax


@pytest.mark.parametrize("kind", ["mrelu-chord", "rbf-concavity", "relu-upper"])
def test_mutations_of_a_relaxation_are_caught(kind, monkeypatch):
    """A relaxation weakened by a small amount: the relaxation attack finds points
    that beat it, and so do the probe networks (through crown_ibp_margins) where a
    single neuron can show it. A chord used as a lower bound on a convex stretch
    touches the function at both ends, where a one-neuron probe's bound is
    attained, so the RBF mutation is the relaxation attack's to catch."""
    checked, violations = attack_relaxation(_weakened_relaxation(kind))
    assert violations > 0, f"the weakened relaxation {kind} went unnoticed in {checked} points"
    if kind == "rbf-concavity":
        return
    weak = _weakened_relaxation(kind)
    # every activation's rule with the weakened relaxation (ReLU's without its fused op)
    for act in (nn.ReLU, robustops.nn.MReLU, robustops.nn.RBF):
        rule = rules_mod._RULES[act]
        monkeypatch.setitem(rules_mod._RULES, act, BoundRule(rule.interval, relax=weak))
    checked, violations = attack_probes("crown-ibp-1.0")
    assert violations > 0, f"CROWN-IBP with the weakened relaxation {kind} beat none of {checked} points"


@pytest.mark.parametrize("op", ["interval_relu", "interval_mrelu", "interval_rbf"])
def test_a_shrunk_interval_image_is_caught(op, monkeypatch):
    """An interval image 0.1% too narrow: the probe networks and the random networks'
    layer-by-layer check both find points outside it."""
    def shrunk(layer, c, r):
        oc, orad = getattr(ref_interval, op)(c, r)
        return oc, orad * 0.999
    act = {"interval_relu": nn.ReLU, "interval_mrelu": robustops.nn.MReLU, "interval_rbf": robustops.nn.RBF}[op]
    rule = rules_mod._RULES[act]
    monkeypatch.setitem(rules_mod._RULES, act, BoundRule(shrunk, relax=rule.relax, fused=rule.fused))
    assert attack_probes("ibp")[1] > 0
    assert sum(attack_network(seed, methods=("ibp",))[1] for seed in range(NETWORKS // 2)) > 0
