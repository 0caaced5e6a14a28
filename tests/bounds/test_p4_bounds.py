"""Bounds through the rotation-equivariant (p4) layers and the pyramid pooling heads.

A p4 convolution is a Conv2d with the transformed filter over the input's
[N, C_in * s, H, W] view, P4BatchNorm is a BatchNorm2d of the C * 4 planes with each
channel's statistics repeated, the p4 spatial pools are 2-D pools of those planes,
and the rotation pool is a (4, 1) pool of the [N, C, 4, H * W] view. So for random
small p4 networks of every layer type (float64), this file builds the expanded plain
network explicitly (Conv2d, BatchNorm2d, MaxPool2d / AvgPool2d between Flatten and
Unflatten layers) and checks:

- the IBP and CROWN-IBP margins of the p4 network equal the expanded network's (1e-12);
- no sampled point, box corner or PGD iterate of the ball beats a bound, and every
  layer's output lies in its IBP interval (the helpers of test_soundness);
- CROWN through an all-affine network (p4 convolutions, P4BatchNorm, the average
  pools and pyramid heads) is the exact minimum over the box (dense Jacobian);
- the max-type and average pools' interval images are tight (attained at the box's
  lower and upper corners);
- certified_loss trains symmetric_cnn and wang_cnn one step with IBP, and their
  average-pooling variants with CROWN-IBP; CROWN-IBP through a max-type pool is a
  TypeError naming the layer; NaN in a p4 weight or statistic is never verified;
- the checks have teeth: a max-type pool bounded as if it were an average, or a p4
  convolution's radius through the filter without its absolute value, is caught.

The pyramid heads (a concatenation of pools) have no chain of plain layers to expand
into: they stay as they are in the expanded network and are checked by the exact
affine and tightness tests instead.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest
import torch
from torch import Tensor, nn

import robustops
from robustops.bounds import BoundedModule, certified_loss, crown_ibp_margins, input_interval, verified_error
from robustops.bounds import ibp as ibp_mod
from robustops.bounds import rules as rules_mod
from robustops.bounds.rules import BoundRule
from robustops.models.p4 import symmetric_cnn, wang_cnn
from robustops.nn import (P4AvgPool2d, P4BatchNorm, P4ConvP4, P4ConvZ2, P4MaxPool2d, P4Pool,
                          P4SpatialPyramidPool, SpatialPyramidPool)
from robustops.nn.p4 import _P4Conv
from tests.bounds.test_soundness import attack_bounds, random_problem, randomize

DT = torch.float64
TOL = 1e-12
NETWORKS = 32
BETAS = (0.0, 0.5, 1.0)
P4_LAYERS = (_P4Conv, P4BatchNorm, P4Pool, P4MaxPool2d, P4AvgPool2d)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many tiny float64 ops beside another pytest-xdist worker: one intra-op thread
    (see test_soundness)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return bool(torch.rand((), generator=g) < p)


def _int(g: torch.Generator, lo: int, hi: int) -> int:
    """An int in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _activation(g: torch.Generator) -> nn.Module:
    return (nn.ReLU(), robustops.nn.MReLU(), robustops.nn.RBF())[_int(g, 0, 2)]


def _conv_params(g: torch.Generator, hw: int) -> Tuple[int, int, int, int, int]:
    """(kernel, stride, padding, dilation, output side) with an output side >= 1."""
    k, stride, pad = _int(g, 1, 3), _int(g, 1, 2), _int(g, 0, 1)
    dil = 2 if k > 1 and hw >= 6 and _coin(g, 0.3) else 1
    span = dil * (k - 1) + 1
    if hw + 2 * pad < span:
        pad = span
    return k, stride, pad, dil, (hw + 2 * pad - span) // stride + 1


def _levels(g: torch.Generator, hw: int) -> Tuple[int, ...]:
    choices = [lv for lv in ((1,), (2,), (1, 2), (1, 2, 3), (3, 1)) if max(lv) <= hw]
    return choices[_int(g, 0, len(choices) - 1)]


def random_p4_network(seed: int, allow_max: bool = True) -> Tuple[nn.Module, Tuple[int, ...], int]:
    """A random p4 network of every layer type (the max-type pools only if allow_max),
    its input shape and its number of classes."""
    g = torch.Generator().manual_seed(seed)
    mode = lambda: "max" if allow_max and _coin(g) else "mean"  # noqa: E731
    classes = _int(g, 2, 5)
    c_in, side = _int(g, 1, 2), _int(g, 6, 9)
    ch = _int(g, 1, 3)
    k, s, p, d, hw = _conv_params(g, side)
    layers: List[nn.Module] = [P4ConvZ2(c_in, ch, k, stride=s, padding=p, dilation=d, bias=_coin(g, 0.8))]
    for _ in range(_int(g, 1, 2)):
        if _coin(g):
            layers.append(P4BatchNorm(ch))
        layers.append(_activation(g))
        if _coin(g, 0.6):
            out = _int(g, 1, 3)
            k, s, p, d, hw = _conv_params(g, hw)
            layers.append(P4ConvP4(ch, out, k, stride=s, padding=p, dilation=d, bias=_coin(g, 0.8)))
            ch = out
            if _coin(g, 0.5):
                layers.append(_activation(g))
        if hw >= 3 and _coin(g, 0.5):
            if allow_max and _coin(g):
                layers.append(P4MaxPool2d(2))
                hw //= 2
            elif _coin(g):
                layers.append(P4AvgPool2d(2))
                hw //= 2
            else:  # padding (counted in the average)
                layers.append(P4AvgPool2d(3, stride=2, padding=1))
                hw = (hw + 2 - 3) // 2 + 1
    head = _int(g, 0, 3)
    if head == 0:
        layers.append(nn.Flatten())
        width = ch * 4 * hw * hw
    elif head == 1:
        layers.append(P4Pool(mode()))
        if _coin(g):
            out = _int(g, 1, 3)
            layers += [nn.Conv2d(ch, out, 3, padding=1), _activation(g)]
            ch = out
        layers.append(nn.Flatten())
        width = ch * hw * hw
    elif head == 2:
        spp = SpatialPyramidPool(_levels(g, hw), mode())
        layers += [P4Pool(mode()), spp]
        width = spp.output_size(ch)
    else:
        spp = P4SpatialPyramidPool(_levels(g, hw), mode())
        layers.append(spp)
        width = spp.output_size(ch)
    for _ in range(_int(g, 0, 1)):
        out = _int(g, 3, 8)
        layers += [nn.Linear(width, out), _activation(g)]
        width = out
    layers.append(nn.Linear(width, classes))
    if _coin(g, 0.15):
        layers.append(robustops.nn.RBF())  # no folding of the specification
    net = nn.Sequential(*layers).to(DT)
    randomize(net, g, weighted=(nn.Linear, nn.Conv2d, _P4Conv))
    return net.eval(), (c_in, side, side), classes


def expand(net: nn.Sequential, shape) -> nn.Sequential:
    """The expanded plain network of a p4 network: every p4 convolution a Conv2d with
    the transformed filter, P4BatchNorm a BatchNorm2d with repeated statistics, the p4
    pools 2-D pools, over [N, C * 4, H, W] or [N, C, 4, H * W] views made by Flatten
    and Unflatten layers. Other layers (the pyramid heads too) are shared as they are."""
    layers: List[nn.Module] = []
    x = torch.zeros((1,) + tuple(shape), dtype=DT)
    with torch.no_grad():
        for layer in net:
            y = layer(x)
            if isinstance(layer, _P4Conv):
                conv = nn.Conv2d(layer.in_channels * layer.in_rotations, layer.out_channels * 4, layer.kernel_size,
                                 layer.stride, layer.padding, layer.dilation, bias=layer.bias is not None).to(DT)
                conv.weight.copy_(layer.transformed_filter())
                if layer.bias is not None:
                    conv.bias.copy_(layer.bias.repeat_interleave(4))
                layers += ([nn.Flatten(1, 2)] if layer.in_rotations == 4 else []) + \
                    [conv, nn.Unflatten(1, (layer.out_channels, 4))]
            elif isinstance(layer, P4BatchNorm):
                bn = nn.BatchNorm2d(layer.num_features * 4, eps=layer.eps).to(DT).eval()
                for name in ("running_mean", "running_var", "weight", "bias"):
                    getattr(bn, name).copy_(getattr(layer, name).repeat_interleave(4))
                layers += [nn.Flatten(1, 2), bn, nn.Unflatten(1, (layer.num_features, 4))]
            elif isinstance(layer, (P4MaxPool2d, P4AvgPool2d)):
                pool = (nn.MaxPool2d if isinstance(layer, P4MaxPool2d) else nn.AvgPool2d)(
                    layer.kernel_size, layer.stride, layer.padding)
                layers += [nn.Flatten(1, 2), pool, nn.Unflatten(1, (x.shape[1], 4))]
            elif isinstance(layer, P4Pool):
                pool = (nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d)((4, 1))
                layers += [nn.Flatten(3, 4), pool, nn.Flatten(2, 3), nn.Unflatten(2, tuple(x.shape[-2:]))]
            else:
                layers.append(layer)
            x = y
    plain = nn.Sequential(*layers).eval()
    assert not any(isinstance(m, P4_LAYERS) for m in plain.modules())
    return plain


def _has_max(net: nn.Module) -> bool:
    return any(ibp_mod.is_max_pool(m) for m in net.modules())


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(((a - b).abs() <= TOL * (1 + b.abs())).all()) and bool((torch.isnan(a) == torch.isnan(b)).all())


# ------------------------------------------------------------------ the expanded network


@pytest.mark.parametrize("block", range(3))
def test_bounds_equal_the_expanded_networks(block):
    kinds = set()
    for seed in range(block * NETWORKS, (block + 1) * NETWORKS):
        net, shape, classes = random_p4_network(seed, allow_max=seed % 3 != 0)
        plain = expand(net, shape)
        kinds |= _kinds(net)
        x, y, eps, lower, upper = random_problem(seed, shape, classes)
        with torch.no_grad():
            assert _close(net(x), plain(x)), seed
            p4b, plainb = BoundedModule(net), BoundedModule(plain)
            got, want = p4b.ibp_margins(x, y, eps, lower, upper), plainb.ibp_margins(x, y, eps, lower, upper)
            assert _close(got, want), (seed, (got - want).abs().max())
            if not _has_max(net):
                for beta in BETAS[1:]:
                    got = crown_ibp_margins(p4b, x, y, eps, lower, upper, beta)
                    want = crown_ibp_margins(plainb, x, y, eps, lower, upper, beta)
                    assert _close(got, want), (seed, beta, (got - want).abs().max())
    # every layer type of both pool modes went through the comparison
    assert {"P4ConvZ2", "P4ConvP4", "P4BatchNorm", "P4MaxPool2d", "P4AvgPool2d", "P4Pool-max",
            "P4Pool-mean"} <= kinds, kinds


def test_crown_ibp_gradients_equal_the_expanded_networks():
    """The backward bound's gradient reaches the p4 weights as the expanded
    network's reaches the expanded filter: their adjoint filter transform."""
    net, shape, classes = random_p4_network(5, allow_max=False)
    x, y, eps, lower, upper = random_problem(5, shape, classes)
    plain = expand(net, shape)
    convs = [m for m in net if isinstance(m, _P4Conv)]
    plain_convs = [m for m in plain if isinstance(m, nn.Conv2d) and m.out_channels % 4 == 0][:len(convs)]
    crown_ibp_margins(BoundedModule(net), x, y, 0.05, lower, upper, 0.7).sum().backward()
    crown_ibp_margins(BoundedModule(plain), x, y, 0.05, lower, upper, 0.7).sum().backward()
    for p4, conv in zip(convs, plain_convs):
        w = p4.weight.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(robustops.ops.p4_filter(w), w, conv.weight.grad)
        assert _close(p4.weight.grad, grad)


# ------------------------------------------------------------------ soundness by sampling


def _kinds(net: nn.Module) -> set:
    return {type(m).__name__ + (f"-{m.mode}" if hasattr(m, "mode") else "") for m in net}


def attack_p4_network(seed: int, methods=("ibp",) + tuple(f"crown-ibp-{b}" for b in BETAS)) -> Tuple[int, int]:
    """(points checked, violations) for the random p4 network and problem of `seed`:
    sampled points, corners and PGD iterates against the margins' bounds, and every
    layer's output against its IBP interval."""
    torch.manual_seed(seed)
    net, shape, classes = random_p4_network(seed, allow_max=seed % 2 == 0)
    x, y, eps, lower, upper = random_problem(seed, shape, classes)
    return attack_bounds(net, x, y, eps, lower, upper, seed, methods, not _has_max(net))


@pytest.mark.parametrize("block", range(3))
def test_no_point_of_the_ball_beats_the_p4_bounds(block, record_property):
    checked = violations = 0
    for seed in range(100 + block * NETWORKS, 100 + (block + 1) * NETWORKS):
        n, v = attack_p4_network(seed)
        checked += n
        violations += v
    record_property("soundness_points", checked)
    assert violations == 0, f"{violations} of {checked} points beat a bound"
    assert checked >= 2500


def test_the_random_networks_hold_every_layer_type():
    """The attacked networks hold every p4 layer and head in both modes, some with a
    max-type layer (IBP only) and most without (CROWN-IBP checked too)."""
    nets = [random_p4_network(seed, allow_max=seed % 2 == 0)[0] for seed in range(100, 100 + 3 * NETWORKS)]
    kinds = set().union(*map(_kinds, nets))
    assert {"P4ConvZ2", "P4ConvP4", "P4BatchNorm", "P4MaxPool2d", "P4AvgPool2d", "P4Pool-max", "P4Pool-mean",
            "SpatialPyramidPool-max", "SpatialPyramidPool-mean", "P4SpatialPyramidPool-max",
            "P4SpatialPyramidPool-mean", "ReLU", "MReLU", "RBF"} <= kinds, kinds
    with_max = sum(map(_has_max, nets))
    assert len(nets) // 5 <= with_max <= len(nets) // 2, with_max


def _affine_network(seed: int) -> Tuple[nn.Module, Tuple[int, ...], int]:
    """Every affine p4 layer and head, no activation: CROWN is exact on it."""
    g = torch.Generator().manual_seed(seed)
    head = seed % 3
    layers = [P4ConvZ2(2, 2, 3, padding=1), P4BatchNorm(2), P4ConvP4(2, 3, 2, stride=2, bias=False),
              P4AvgPool2d(3, stride=1, padding=1)]
    if head == 0:
        layers += [P4SpatialPyramidPool((1, 2, 3), "mean")]
        width = 3 * (1 + 1 + 3)
    elif head == 1:
        layers += [P4Pool("mean"), SpatialPyramidPool((1, 2), "mean")]
        width = 3 * 5
    else:
        layers += [P4Pool("mean"), nn.Flatten()]
        width = 3 * 16
    net = nn.Sequential(*layers, nn.Linear(width, 4)).to(DT).eval()
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5, generator=g)
        bn.running_var.uniform_(0.3, 2.0, generator=g)
        bn.weight.uniform_(-1.5, 1.5, generator=g)
    return net, (2, 8, 8), 4


@pytest.mark.parametrize("seed", range(3))
def test_crown_through_affine_p4_layers_is_the_exact_minimum(seed):
    """On an all-affine network, min over the box of C z(x) = C z(c) - |C J| r, with
    the network's Jacobian J computed densely by autograd: CROWN (beta 1) must give
    exactly that (every linear rule, the pyramid heads' included)."""
    net, shape, classes = _affine_network(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((3,) + shape, generator=g, dtype=DT)
    y = torch.tensor([0, 1, 3])
    eps = 0.07
    c, r = input_interval(x, eps)
    got = crown_ibp_margins(BoundedModule(net), x, y, eps)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda t: net(t.reshape((1,) + shape))[0], c[i].flatten())
        spec = robustops.bounds.specification(y[i:i + 1], classes)[0].to(DT)
        exact = spec @ net(c[i:i + 1])[0] - (spec @ jac).abs() @ r[i].flatten()
        assert _close(got[i], exact), (got[i], exact)
    # and IBP is sound but looser
    assert (BoundedModule(net).ibp_margins(x, y, eps) <= got + TOL).all()


@pytest.mark.parametrize("layer", [P4MaxPool2d(2), P4AvgPool2d(3, 2, 1), P4Pool("max"), P4Pool("mean"),
                                   P4SpatialPyramidPool((1, 2, 3), "max"), P4SpatialPyramidPool((1, 2, 3), "mean")],
                         ids=repr)
def test_the_pools_interval_images_are_tight(layer):
    """Monotone pools: the image of the box is [f(l), f(u)], attained at its corners."""
    g = torch.Generator().manual_seed(0)
    c = torch.randn(3, 2, 4, 6, 6, generator=g, dtype=DT)
    r = torch.rand(3, 2, 4, 6, 6, generator=g, dtype=DT) * 0.5
    oc, orad = ibp_mod.interval_through(layer, c, r)
    assert _close(oc - orad, layer(c - r)) and _close(oc + orad, layer(c + r))
    plain = SpatialPyramidPool((1, 2), layer.mode) if isinstance(layer, P4Pool) else None
    if plain is not None:  # the plain pyramid head on the rotation-pooled map
        pc, pr = ibp_mod.interval_through(plain, oc, orad)
        assert _close(pc - pr, plain(layer(c - r))) and _close(pc + pr, plain(layer(c + r)))


# ------------------------------------------------------------------ certified training of the p4 models


def _avg_variant(net: nn.Sequential) -> nn.Sequential:
    """The model with its spatial max pools replaced by average pools of the same
    size (its rotation and pyramid pools built in mode "mean"): every layer linear or
    an activation, so CROWN-IBP applies."""
    swap = {nn.MaxPool2d: lambda m: nn.AvgPool2d(m.kernel_size, m.stride, m.padding),
            P4MaxPool2d: lambda m: P4AvgPool2d(m.kernel_size, m.stride, m.padding)}
    return nn.Sequential(*[swap[type(m)](m) if type(m) in swap else m for m in net])


MODELS = {
    "symmetric_cnn-max": lambda: symmetric_cnn(1, 10, width=2),
    "symmetric_cnn-mean": lambda: _avg_variant(symmetric_cnn(1, 10, width=2, mode="mean")),
    "wang_cnn-max": lambda: wang_cnn(1, 10, width=2),
    "wang_cnn-mean": lambda: _avg_variant(wang_cnn(1, 10, width=2, rotation_pool="mean", spp_mode="mean")),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_certified_loss_trains_the_p4_models(name):
    torch.manual_seed(0)
    net = MODELS[name]().train()
    bounded = BoundedModule(net)
    x = torch.rand(6, 1, 16, 16)
    y = torch.randint(0, 10, (6,))
    methods = ["ibp"] if _has_max(net) else ["ibp", "crown-ibp"]
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for method in methods:
        opt.zero_grad()
        out = certified_loss(bounded, x, y, 0.02, n=2, kappa=0.5, method=method, beta=0.5)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        for p in net.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all()
        p4 = [m for m in net.modules() if isinstance(m, _P4Conv)]
        assert p4 and all(m.weight.grad.abs().sum() > 0 for m in p4), method
        opt.step()
    net.eval()
    err = verified_error(bounded, x, y, 0.0)
    assert err == pytest.approx(robustops.bounds.clean_error(net, x, y))
    if "crown-ibp" in methods:
        assert verified_error(bounded, x, y, 0.01, method="crown-ibp") >= err


@pytest.mark.parametrize("name,layer", [("symmetric_cnn-max", "P4MaxPool2d"), ("wang_cnn-max", "P4Pool(mode='max')")])
def test_crown_ibp_through_the_models_max_pools_is_refused(name, layer):
    net = MODELS[name]()
    bounded = BoundedModule(net)
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    first = next(n for n, m in bounded.layers if ibp_mod.is_max_pool(m))
    pattern = rf"CROWN-IBP: {layer.replace('(', '[(]').replace(')', '[)]')} has no linear relaxation here " \
              rf"\(layer '{first}'\); use IBP"
    with pytest.raises(TypeError, match=pattern):
        crown_ibp_margins(bounded, x, y, 0.01)
    with pytest.raises(TypeError, match=pattern):
        certified_loss(bounded, x, y, 0.01, method="crown-ibp")


@pytest.mark.parametrize("layer", [P4MaxPool2d(2), P4Pool("max"), SpatialPyramidPool((1, 2), "max"),
                                   P4SpatialPyramidPool((1, 2), "max")], ids=repr)
def test_crown_ibp_through_each_max_type_layer_is_refused(layer):
    """Each max-type layer is named; with beta 0 (IBP only) the bound is IBP's."""
    front = [P4ConvZ2(1, 2, 3), nn.ReLU()]
    if isinstance(layer, P4MaxPool2d):
        head = [layer, nn.Flatten()]
        width = 2 * 4 * 3 * 3
    elif isinstance(layer, P4Pool):
        head = [layer, nn.Flatten()]
        width = 2 * 6 * 6
    elif isinstance(layer, SpatialPyramidPool):
        head = [P4Pool("mean"), layer]
        width = 2 * 5
    else:
        head = [layer]
        width = 2 * 2
    net = nn.Sequential(*front, *head, nn.Linear(width, 3)).to(DT).eval()
    bounded = BoundedModule(net)
    x, y = torch.rand(2, 1, 8, 8, dtype=DT), torch.tensor([0, 2])
    kind = type(layer).__name__ + ("" if isinstance(layer, P4MaxPool2d) else "(mode='max')")
    index = [m for _, m in bounded.layers].index(layer)
    with pytest.raises(TypeError, match=rf"{kind.replace('(', '[(]').replace(')', '[)]')} has no linear "
                                        rf"relaxation here \(layer '{index}'\); use IBP for such models"):
        crown_ibp_margins(bounded, x, y, 0.05)
    assert _close(crown_ibp_margins(bounded, x, y, 0.05, beta=0.0), bounded.ibp_margins(x, y, 0.05))


def test_a_p4_layer_on_the_wrong_input_is_named():
    bounded = BoundedModule(nn.Sequential(P4ConvP4(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4 * 4, 3)).to(DT))
    x, y = torch.rand(2, 1, 6, 6, dtype=DT), torch.tensor([0, 2])
    with pytest.raises(ValueError, match=r"P4ConvP4: the input must have shape \[B, C, 4, H, W\]"):
        bounded.ibp_margins(x, y, 0.05)
    bounded = BoundedModule(nn.Sequential(P4ConvZ2(1, 2, 3), P4BatchNorm(3), nn.Flatten(),
                                          nn.Linear(2 * 4 * 4 * 4, 3)).to(DT))
    with pytest.raises(ValueError, match="P4BatchNorm: the input has 2 channels, expected num_features=3"):
        bounded.ibp_margins(x, y, 0.05)


@pytest.mark.parametrize("seed", range(4))
def test_nan_in_a_p4_tensor_is_never_verified(seed):
    net, shape, classes = random_p4_network(200 + seed, allow_max=seed % 2 == 0)
    x, y, _, lower, upper = random_problem(200 + seed, shape, classes)
    if lower is None:
        lower, upper = -3.0, 3.0
    bounded = BoundedModule(net)
    methods = ["ibp"] if _has_max(net) else ["ibp", "crown-ibp"]
    g = torch.Generator().manual_seed(seed)
    tensors = [(n, t) for m in net.modules() if isinstance(m, (_P4Conv, P4BatchNorm))
               for n, t in list(m.named_parameters()) + list(m.named_buffers()) if t.is_floating_point()]
    assert tensors
    for name, t in tensors:
        saved = t.detach().clone()
        with torch.no_grad():
            t.view(-1)[int(torch.randint(0, t.numel(), (1,), generator=g))] = float("nan")
        try:
            for method in methods:
                assert verified_error(bounded, x, y, 0.05, lower, upper, method=method) == 1.0, (name, method)
        finally:
            with torch.no_grad():
                t.copy_(saved)
            for m in net.modules():
                if isinstance(m, _P4Conv):
                    m.clear_filter_cache()


# ------------------------------------------------------------------ the checks have teeth


def _as_average(layer: nn.Module) -> nn.Module:
    """The average pool of the same shape as a max-type pool."""
    if isinstance(layer, P4MaxPool2d):
        return P4AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, P4SpatialPyramidPool):
        return P4SpatialPyramidPool(layer.levels, "mean")
    if isinstance(layer, SpatialPyramidPool):
        return SpatialPyramidPool(layer.levels, "mean")
    return P4Pool("mean")


def test_a_max_pool_bounded_as_an_average_is_caught(monkeypatch):
    """Every max-type pool bounded as if it averaged (the average pool's exact image,
    below the maximum's): the sampling attack finds points outside it."""
    seeds = [s for s in range(100, 100 + 2 * NETWORKS, 2) if _has_max(random_p4_network(s)[0])]
    assert seeds
    original = ibp_mod.interval_through

    def through(layer, c, r):
        return original(_as_average(layer) if ibp_mod.is_max_pool(layer) else layer, c, r)

    monkeypatch.setattr(ibp_mod, "interval_through", through)
    assert sum(attack_p4_network(seed, methods=("ibp",))[1] for seed in seeds) > 0


def test_a_p4_radius_without_the_absolute_filter_is_caught(monkeypatch):
    """A p4 convolution's radius through the signed filter (|W| dropped; the radius
    clamped at 0): the comparison with the expanded network and the sampling attack
    both fail."""
    true = robustops.ops.interval_conv2d

    def signed(c, r, w, b, *args, **kwargs):
        oc, _ = true(c, r, w, b, *args, **kwargs)
        return oc, torch.nn.functional.conv2d(r, w, None, *args[:3]).clamp(min=0)

    class Ops:  # robustops.ops as ibp sees it, with the mutated p4 path
        def __getattr__(self, name):
            return getattr(robustops.ops, name)

    ops = Ops()
    ops.interval_conv2d = signed

    def mutated(layer, c, r):
        monkeypatch.setattr(rules_mod, "ops", ops)
        try:
            return rules_mod._p4_conv_interval(layer, c, r)
        finally:
            monkeypatch.setattr(rules_mod, "ops", robustops.ops)

    # the p4 convolutions' rule with the mutated interval image (restored after the test)
    for kind in (P4ConvZ2, P4ConvP4):
        monkeypatch.setitem(rules_mod._RULES, kind, BoundRule(mutated, back=rules_mod._p4_conv_back))
    torch.manual_seed(0)  # the layers' initial weights too: the same network every run
    net, shape, classes = random_p4_network(0)
    x, y, eps, lower, upper = random_problem(3, shape, classes)
    got = BoundedModule(net).ibp_margins(x, y, 0.05, lower, upper)
    assert not _close(got, BoundedModule(expand(net, shape)).ibp_margins(x, y, 0.05, lower, upper))
    assert sum(attack_p4_network(seed, methods=("ibp",))[1] for seed in range(100, 100 + NETWORKS)) > 0
