"""robustops.bang.BANG on the p4 layers (robustops.nn.P4ConvZ2, P4ConvP4): their
weight and bias gradients against equation (6) computed from per-sample gradients,
the forward and the input gradients unchanged, plain training at eps = 0, and models
that mix p4 and plain layers (robustops.models.wang_cnn, symmetric_cnn).

The oracle here runs each sample alone through the plain model (the layers' own
autograd, the p4 filter transform's included) and sums the per-sample gradients
scaled by eq. (3)-(4)'s eta, written out literally. robustops.reference.bang's
torch.func oracle cannot run the p4 layers (their filter transform's autograd is a
C++ function, which functorch transforms refuse), so this loop stands in for it, and
a test checks that the two agree on a plain network.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import robustops
from robustops.bang import BANG
from robustops.models import p4cnn, symmetric_cnn, wang_cnn
from robustops.nn import P4BatchNorm, P4ConvP4, P4ConvZ2, P4Pool
from robustops.reference.bang import bang_gradients
from tests.common import DEVICES

F64 = dict(rtol=1e-10, atol=1e-12)
EXACT = dict(rtol=0, atol=0)


def _loss(out, t):
    return F.cross_entropy(out, t)


def _oracle(model, x, y, layers, eps, beta=1.0, ratio=1.0, misclassified=None, overrides=None):
    """Equation (6), a sample at a time: {parameter name: beta * sum_i eta_i dE_i/dW}
    for the parameters of ``layers``, the plain gradient for the others. E_i is
    sample i's share of the mean batch loss; kappa_i is the gradient of E_i w.r.t.
    the layer's output for that sample alone (the model must not couple samples)."""
    overrides = overrides or {}
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    n = x.shape[0]
    per_sample = {name: [] for name in params}
    kappas = {name: [] for name in layers}
    for i in range(n):
        probes = {}

        def probe(out, name):
            # a zero added to the layer's output: its gradient is kappa_i (also when
            # the next layer works in place)
            probes[name] = torch.zeros_like(out, requires_grad=True)
            return out + probes[name]

        hooks = [modules[name].register_forward_hook(lambda m, a, o, name=name: probe(o, name))
                 for name in layers]
        try:
            loss = _loss(model(x[i:i + 1]), y[i:i + 1]) / n
        finally:
            for h in hooks:
                h.remove()
        grads = torch.autograd.grad(loss, list(params.values()) + [probes[name] for name in layers],
                                    allow_unused=True)
        for name, g in zip(params, grads):
            per_sample[name].append(torch.zeros_like(params[name]) if g is None else g)
        for name, g in zip(layers, grads[len(params):]):
            kappas[name].append(g[0])
    result = {name: torch.stack(gs).sum(0) for name, gs in per_sample.items()}
    mis = torch.zeros(n, dtype=torch.bool) if misclassified is None else misclassified.cpu()
    for layer in layers:
        layer_eps = overrides.get(layer, {}).get("eps", eps)
        layer_beta = overrides.get(layer, {}).get("beta", beta)
        norms = torch.stack([k.double().norm() for k in kappas[layer]]).cpu()
        m = norms.max()
        eps_i = torch.where(mis, torch.tensor(layer_eps * ratio, dtype=torch.float64),
                            torch.tensor(float(layer_eps), dtype=torch.float64))
        eta = []
        for n_i, e_i in zip(norms, eps_i):
            if n_i == 0:
                eta.append(torch.tensor(1.0, dtype=torch.float64))   # eq. (3) undefined: kept as is
            else:
                rho = e_i * (1 - n_i / m)                            # eq. (4)
                eta.append((m / n_i) ** rho)                         # eq. (3)
        for pname in (f"{layer}.weight", f"{layer}.bias"):
            if pname in params and params[pname] is not None:
                g = torch.stack(per_sample[pname])
                w = torch.stack(eta).to(g.dtype).to(g.device).reshape((-1,) + (1,) * (g.dim() - 1))
                result[pname] = layer_beta * (w * g).sum(0)            # eq. (6), times N: the mean loss
    return result


def _bang_grads(model, x, y, **kw):
    mis = kw.pop("misclassified", None)
    bang = BANG(model, **kw)
    if mis is not None:
        bang.set_misclassified(mis)
    model.zero_grad()
    _loss(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    bang.remove()
    return grads


def _assert_grads(got, expected, tol=F64):
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.isfinite(got[name]).all(), name
        assert_close(got[name], expected[name], **tol, msg=lambda m: f"{name}: {m}")


# Two p4 layers (a lifting one, then a p4 one) with the same settings, then a plain head.
P4S = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=0),
    dict(kernel_size=2, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=2, dilation=2),
    dict(kernel_size=1, stride=1, padding=0, bias=False),
    dict(kernel_size=4, stride=3, padding=1, bias=False),
]


def _p4_net(kw, in_channels=3, hw=(9, 7), device="cpu", dtype=torch.float64):
    torch.manual_seed(0)
    z2 = P4ConvZ2(in_channels, 4, **kw)
    p4 = P4ConvP4(4, 5, **kw)
    with torch.no_grad():
        out = p4(z2(torch.zeros(1, in_channels, *hw))).shape
    return nn.Sequential(z2, nn.Tanh(), p4, nn.ReLU(), nn.Flatten(), nn.Linear(out[1:].numel(), 6)).to(
        device=device, dtype=dtype)


def _data(n=8, c=3, hw=(9, 7), classes=6, device="cpu", dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, *hw, generator=g, dtype=torch.float64)
    x[: n // 2] *= 2.5  # uneven per-sample gradient norms: etas far from 1
    return x.to(device=device, dtype=dtype), torch.randint(0, classes, (n,), generator=g).to(device)


def test_the_loop_oracle_agrees_with_the_torch_func_oracle():
    """On a network of plain layers, the per-sample loop here equals
    robustops.reference.bang.bang_gradients (what tests/test_bang.py checks against)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(4 * 5 * 4, 7), nn.ReLU(), nn.Linear(7, 6)).double()
    x, y = _data()
    mis = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0], dtype=torch.bool)
    kw = dict(eps=0.8, beta=0.6, ratio=0.5, misclassified=mis, overrides={"3": {"eps": 0.3, "beta": 1.5}})
    _assert_grads(_oracle(model, x, y, ["0", "3", "5"], **kw),
                  bang_gradients(model, x, y, _loss, ["0", "3", "5"], **kw))


def test_p4_layers_have_rules():
    assert isinstance(robustops.bang.rule_for(P4ConvZ2(1, 1, 3)), robustops.bang.P4ConvRule)
    assert isinstance(robustops.bang.rule_for(P4ConvP4(1, 1, 3)), robustops.bang.P4ConvRule)
    model = _p4_net(P4S[0])
    bang = BANG(model)
    assert set(bang.layers) == {"0", "2", "5"}
    bang.remove()
    # P4CNN: all p4, nothing but its 6 p4 convolutions to wrap
    model = p4cnn(5, channels=2)
    with BANG(model) as bang:
        assert list(bang.layers) == [f"features.{i}" for i in (0, 3, 7, 10, 13, 16)]
    assert all("forward" not in vars(m) for m in model.modules())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 2, 8])
@pytest.mark.parametrize("kw", P4S, ids=[str(i) for i in range(len(P4S))])
def test_weight_and_bias_gradients_match_equation_6(kw, batch, device):
    model = _p4_net(kw, device=device)
    x, y = _data(n=batch, device=device)
    got = _bang_grads(model, x, y, eps=0.8, beta=0.7)
    expected = _oracle(model, x, y, ["0", "2", "5"], eps=0.8, beta=0.7)
    _assert_grads(got, expected)
    if batch > 1:
        # and BANG changed them, so the comparison means something
        plain = _bang_grads(model, x, y, eps=0.0)
        for name in ("0.weight", "2.weight"):
            assert not torch.allclose(got[name], plain[name]), name


@pytest.mark.parametrize("device", DEVICES)
def test_misclassified_per_layer_settings_and_eval_mode(device):
    """Per-layer eps and beta, the misclassified samples' ratio, and the eval mode
    (where the p4 layers cache their expanded filter): the oracle's gradients."""
    model = _p4_net(dict(kernel_size=3, padding=1), hw=(8, 8), device=device)
    x, y = _data(n=7, hw=(8, 8), device=device)
    mis = torch.tensor([1, 0, 0, 1, 1, 0, 0], dtype=torch.bool, device=device)
    kw = dict(eps=0.9, beta=0.4, ratio=0.5, misclassified=mis,
              overrides={"0": {"eps": 0.2, "beta": 2.0}, "2": {"beta": 0.5}})
    for mode in (True, False):
        model.train(mode)
        _assert_grads(_bang_grads(model, x, y, **kw), _oracle(model, x, y, ["0", "2", "5"], **kw))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_input_gradients_are_those_of_the_plain_model(training, device):
    """Wrapping changes neither the output nor the gradient passed down the network
    (bit for bit): BANG scales only the weight and bias gradients."""
    model = _p4_net(P4S[1], device=device).train(training)
    x, y = _data(device=device)
    out, inputs = {}, {}
    for mode in ("plain", "bang"):
        bang = BANG(model, eps=0.9, beta=0.3) if mode == "bang" else None
        xg = x.clone().requires_grad_()
        seen = []
        hooks = [m.register_full_backward_hook(lambda mod, gi, go: seen.append(gi[0])) for m in model]
        model.zero_grad()
        out[mode] = model(xg)
        _loss(out[mode], y).backward()
        for h in hooks:
            h.remove()
        inputs[mode] = [g for g in seen if g is not None] + [xg.grad]
        if bang:
            bang.remove()
    assert_close(out["bang"], out["plain"], **EXACT)
    assert len(inputs["plain"]) == len(inputs["bang"]) == len(model) + 1
    for a, b in zip(inputs["plain"], inputs["bang"]):
        assert_close(a, b, **EXACT)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [P4S[0], P4S[3], P4S[5]], ids=["0", "3", "5"])
def test_eps_0_beta_1_is_plain_training(kw, dtype, device):
    model = _p4_net(kw, device=device, dtype=dtype)
    x, y = _data(device=device, dtype=dtype)
    got = _bang_grads(model, x, y, eps=0.0, beta=1.0)
    model.zero_grad()
    _loss(model(x), y).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name in plain:
        assert_close(got[name], plain[name], **EXACT, msg=lambda m: f"{name}: {m}")
    # beta alone scales them
    half = _bang_grads(model, x, y, eps=0.0, beta=0.5)
    for name in plain:
        assert_close(half[name], 0.5 * plain[name], **EXACT)


def test_special_batches():
    """A batch of identical samples (all etas 1) and a sample whose loss gradient is
    zero (eta 1, finite): plain gradients where eta must be 1, the oracle's otherwise."""
    model = _p4_net(P4S[0])
    x, y = _data()
    xs, ys = x[:1].expand(4, -1, -1, -1).contiguous(), y[:1].expand(4).contiguous()
    _assert_grads(_bang_grads(model, xs, ys, eps=0.9), _bang_grads(model, xs, ys, eps=0.0))
    with torch.no_grad():
        model[5].bias.zero_()
        model[5].bias[y[0]] = 1e4
    got = _bang_grads(model, x[:3], y[[0, 0, 0]], eps=0.9)
    _assert_grads(got, _oracle(model, x[:3], y[[0, 0, 0]], ["0", "2", "5"], eps=0.9))


def test_in_place_activation_and_bad_input():
    """An in-place ReLU right after a BANG p4 layer, and the layer's own shape errors."""
    torch.manual_seed(0)
    model = nn.Sequential(P4ConvZ2(2, 3, 3, padding=1), nn.ReLU(inplace=True), P4ConvP4(3, 3, 3),
                          nn.ReLU(inplace=True), P4Pool("mean"), nn.Flatten(), nn.Linear(3 * 4 * 4, 6)).double()
    x, y = _data(n=5, c=2, hw=(6, 6))
    got = _bang_grads(model, x, y, eps=0.8)
    _assert_grads(got, _oracle(model, x, y, ["0", "2", "6"], eps=0.8))
    bang = BANG(model)
    with pytest.raises(ValueError, match=r"P4ConvZ2: the input must have shape \[B, C, H, W\]"):
        model(torch.randn(2, 2, 4, 6, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="P4ConvP4: the input has 2 channels, expected in_channels=3"):
        model[2](torch.randn(2, 2, 4, 6, 6, dtype=torch.float64))
    bang.remove()


def _mixed(build, x_shape):
    """A model of robustops.models with batch norm in eval mode (running statistics
    made up), so that samples stay independent, as the per-sample oracle needs."""
    model = build().double()
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, P4BatchNorm)):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g, dtype=torch.float64))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=torch.float64))
            m.eval()
    return model


MIXED = {
    "wang_cnn": (lambda: wang_cnn(3, 5, width=2, levels=(1, 2)), (3, 12, 12), ["0", "4", "8", "11", "16", "18"]),
    "symmetric_cnn": (lambda: symmetric_cnn(3, 5, width=2, levels=(1, 2)), (3, 8, 8),
                      ["0", "3", "7", "10", "15", "17"]),
}


@pytest.mark.parametrize("name", list(MIXED))
def test_a_training_step_of_a_model_mixing_p4_and_plain_layers(name):
    """BANG wraps every p4, Conv2d and Linear layer of the model; one SGD step's
    gradients are finite and equal the oracle's (so the step lands where eq. (6)'s
    step lands), and they differ from plain training."""
    build, shape, layers = MIXED[name]
    torch.manual_seed(0)
    model = _mixed(build, shape)
    x, y = _data(n=6, c=shape[0], hw=shape[1:], classes=5)
    expected = _oracle(model, x, y, layers, eps=0.855, beta=0.4, ratio=0.5,
                       misclassified=torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.bool))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bang = BANG(model, eps=0.855, beta=0.4, ratio=0.5)
    assert sorted(bang.layers, key=int) == layers
    assert {type(model[int(n)]) for n in layers} >= {P4ConvZ2, nn.Linear}
    logits = model(x)
    bang.set_misclassified(torch.tensor([0, 1, 0, 0, 1, 0], dtype=torch.bool))
    loss = _loss(logits, y)
    opt.zero_grad()
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    bang.remove()
    _assert_grads(got, expected)
    for n, p in model.named_parameters():
        assert_close(p.detach(), start[n] - 0.1 * expected[n], **F64)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(start[n])
    plain = _bang_grads(model, x, y, eps=0.0)
    assert not torch.allclose(got["0.weight"], plain["0.weight"])


@pytest.mark.parametrize("device", DEVICES)
def test_autocast(device):
    """Under autocast the BANG p4 layers compute in the autocast dtype, like the plain
    layers (the same output dtype), and their gradients are as close to float32
    BANG's as the plain model's bfloat16 gradients are to its float32 ones."""
    model = _p4_net(P4S[0], device=device, dtype=torch.float32)
    x, y = _data(device=device, dtype=torch.float32)

    def grads(eps, autocast):
        bang = BANG(model, eps=eps) if eps is not None else None
        model.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            out = model(x)
            assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
            loss = _loss(out, y)
        loss.backward()
        if bang:
            bang.remove()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_error = {n: (a - b).abs().max() for (n, a), b in zip(grads(None, True).items(),
                                                                grads(None, False).values())}
    reference, got = grads(0.8, False), grads(0.8, True)
    for name in got:
        scale = reference[name].abs().max()
        assert (got[name] - reference[name]).abs().max() <= 2 * plain_error[name] + 0.005 * scale, name


def test_compiled_training_step_matches_eager():
    """torch.compile: the BANG p4 layers run eagerly inside the compiled model, and
    three BANG steps land where the eager ones do."""
    def train(compiled):
        model = _p4_net(P4S[0], dtype=torch.float32)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        bang = BANG(model, eps=0.9, beta=0.5, ratio=0.5)
        forward = torch.compile(model) if compiled else model
        x, y = _data(dtype=torch.float32)
        for step in range(3):
            xs, ys = x[step:step + 5], y[step:step + 5]
            logits = forward(xs)
            bang.observe(logits, ys)
            opt.zero_grad()
            _loss(logits, ys).backward()
            opt.step()
        bang.remove()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(train(True), train(False)):
        assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_error_names_the_p4_layers():
    with pytest.raises(ValueError, match=r"it wraps Linear, Conv1d, Conv2d, Conv3d, P4ConvZ2, P4ConvP4 and"):
        BANG(nn.Sequential(P4Pool(), nn.ReLU()))
