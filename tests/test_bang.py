"""robustops.bang.BANG: the BANG layers against equation (6) computed from
per-sample gradients (robustops.reference.bang.bang_gradients), and the API."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import robustops
from robustops.bang import BANG
from robustops.reference.bang import bang_gradients
from tests.common import DEVICES

F64 = dict(rtol=1e-10, atol=1e-12)


def _loss(out, t):
    return F.cross_entropy(out, t)


def _net(conv_kw=None, device="cpu"):
    conv_kw = conv_kw or dict(kernel_size=3, stride=1, padding=1)
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, **conv_kw)
    with torch.no_grad():
        out = conv(torch.zeros(1, 4, 9, 9)).shape
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(out[1:].numel(), 12), nn.ReLU(),
                         nn.Linear(12, 5)).double().to(device)


def _data(n=10, device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, 9, 9, generator=g, dtype=torch.float64).to(device)
    return x, torch.randint(0, 5, (n,), generator=g).to(device)


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


CONVS = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=0),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, padding=2, dilation=2, groups=2),
    dict(kernel_size=4, padding="same"),
    dict(kernel_size=3, padding="valid", bias=False),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("conv", CONVS, ids=[str(i) for i in range(len(CONVS))])
def test_weight_and_bias_gradients_match_equation_6(conv, device):
    model = _net(conv, device)
    x, y = _data(device=device)
    layers = ["0", "3", "5"]
    got = _bang_grads(model, x, y, eps=0.8, beta=0.7)
    expected = bang_gradients(model, x, y, _loss, layers, eps=0.8, beta=0.7)
    assert got.keys() == expected.keys()
    for name in got:
        assert_close(got[name], expected[name], **F64, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_misclassified_and_per_layer_settings(device):
    model = _net(device=device)
    x, y = _data(device=device)
    mis = torch.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1, 0], dtype=torch.bool, device=device)
    overrides = {"3": {"eps": 0.2, "beta": 2.0}, "5": {"beta": 0.5}}
    got = _bang_grads(model, x, y, eps=0.9, beta=0.4, ratio=0.5, misclassified=mis, overrides=overrides)
    expected = bang_gradients(model, x, y, _loss, ["0", "3", "5"], eps=0.9, beta=0.4, ratio=0.5,
                              misclassified=mis, overrides=overrides)
    for name in got:
        assert_close(got[name], expected[name], **F64, msg=lambda m: f"{name}: {m}")
    # and it differs from plain training, so the comparison means something
    plain = _bang_grads(model, x, y, eps=0.0, beta=1.0)
    assert not torch.allclose(got["0.weight"], plain["0.weight"])


def test_observe_marks_the_misclassified_samples():
    model = _net()
    x, y = _data()
    bang = BANG(model, eps=0.9, ratio=0.25)
    logits = model(x)
    mask = bang.observe(logits, y)
    assert mask.dtype == torch.bool and (mask == (logits.argmax(1) != y)).all()
    model.zero_grad()
    _loss(logits, y).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    bang.remove()
    expected = bang_gradients(model, x, y, _loss, ["0", "3", "5"], eps=0.9, ratio=0.25, misclassified=mask)
    for name in got:
        assert_close(got[name], expected[name], **F64)


@pytest.mark.parametrize("device", DEVICES)
def test_input_gradients_are_those_of_the_plain_model(device):
    model = _net(device=device)
    x, y = _data(device=device)
    grads = {}
    inputs = {}
    for mode in ("plain", "bang"):
        bang = BANG(model, eps=0.9, beta=0.3) if mode == "bang" else None
        xg = x.clone().requires_grad_()
        # the gradient w.r.t. the input of every layer: hooks on each layer's input
        seen = []
        hooks = [m.register_full_backward_hook(lambda mod, gi, go: seen.append(gi[0])) for m in model]
        model.zero_grad()
        _loss(model(xg), y).backward()
        for h in hooks:
            h.remove()
        inputs[mode] = [g for g in seen if g is not None] + [xg.grad]
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters()}
        if bang:
            bang.remove()
    assert len(inputs["plain"]) == len(inputs["bang"]) == len(model) + 1 - 0
    for a, b in zip(inputs["plain"], inputs["bang"]):
        assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(grads["plain"]["3.weight"], grads["bang"]["3.weight"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eps_0_beta_1_is_plain_training(dtype, device):
    model = _net(device=device).to(dtype)
    x, y = _data(device=device)
    x = x.to(dtype)
    plain = _bang_grads(model, x, y, eps=0.0, beta=1.0)  # BANG layers, eps 0
    model.zero_grad()
    _loss(model(x), y).backward()
    for name, p in model.named_parameters():
        assert_close(plain[name], p.grad, rtol=0, atol=0) if dtype == torch.float64 else \
            assert_close(plain[name], p.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_special_batches(device):
    """Batch of one, a sample with zero gradient, all-equal norms: finite, and what
    eta = 1 means (plain gradients) where it must be 1."""
    model = _net(device=device)
    x, y = _data(device=device)
    plain = _bang_grads(model, x[:1], y[:1], eps=0.0)
    one = _bang_grads(model, x[:1], y[:1], eps=0.9)
    for name in plain:
        assert_close(one[name], plain[name], rtol=0, atol=0)
    # identical samples: identical norms, eta = 1
    xs, ys = x[:1].expand(4, -1, -1, -1).contiguous(), y[:1].expand(4).contiguous()
    same = _bang_grads(model, xs, ys, eps=0.9)
    ref = _bang_grads(model, xs, ys, eps=0.0)
    for name in same:
        assert_close(same[name], ref[name])
    # a sample whose loss gradient is zero: a hugely confident correct prediction
    model2 = copy.deepcopy(model)
    with torch.no_grad():
        model2[5].bias.zero_()
        model2[5].bias[y[0]] = 1e4
    got = _bang_grads(model2, x[:3], y[[0, 0, 0]], eps=0.9)
    expected = bang_gradients(model2, x[:3], y[[0, 0, 0]], _loss, ["0", "3", "5"], eps=0.9)
    for name in got:
        assert torch.isfinite(got[name]).all()
        assert_close(got[name], expected[name], **F64)


def test_linear_with_extra_dims_and_conv1d():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.Flatten(1), nn.Unflatten(1, (4, 7)),
                          nn.Linear(7, 6), nn.Flatten(), nn.Linear(24, 3)).double()
    x = torch.randn(6, 3, 7, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    got = _bang_grads(model, x, y, eps=0.7)
    expected = bang_gradients(model, x, y, _loss, ["0", "3", "5"], eps=0.7)
    for name in got:
        assert_close(got[name], expected[name], **F64)


def test_extension_point_for_a_new_layer_type():
    class Scale(nn.Module):
        """y = x * w (per feature): a layer type robustops knows nothing about."""

        def __init__(self, features):
            super().__init__()
            self.weight = nn.Parameter(torch.linspace(0.5, 1.5, features, dtype=torch.float64))

        def forward(self, x):
            return x * self.weight

    class ScaleRule(robustops.bang.BangRule):
        def forward(self, ctx, x, weight, bias):
            return x * weight

        def input_grad(self, ctx, x, weight, kappa):
            return kappa * weight

        def weight_grad(self, ctx, x, weight, kappa):
            return (kappa * x).sum(0)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), Scale(8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 3, (7,))
    with pytest.raises(TypeError, match="has no BANG rule"):
        BANG(model, layers=["1"])
    robustops.bang.register_rule(Scale, ScaleRule())
    try:
        got = _bang_grads(model, x, y, eps=0.8)
        expected = bang_gradients(model, x, y, _loss, ["0", "1", "3"], eps=0.8)
        for name in got:
            assert_close(got[name], expected[name], **F64)
    finally:
        robustops.bang._RULES.pop(Scale)


def test_enable_disable_remove_and_state_dict():
    model = _net()
    x, y = _data()
    keys = list(model.state_dict())
    types = [type(m) for m in model.modules()]
    bang = BANG(model, eps=0.9, beta=0.5)
    assert list(model.state_dict()) == keys and [type(m) for m in model.modules()] == types
    assert set(bang.layers) == {"0", "3", "5"}

    def grads():
        model.zero_grad()
        _loss(model(x), y).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    on = grads()
    bang.disable()
    off = grads()
    with bang.paused():
        pass
    bang.enable()
    with bang.paused():
        paused = grads()
    assert bang.enabled
    assert not torch.allclose(on["0.weight"], off["0.weight"])
    for name in off:
        assert_close(off[name], paused[name], rtol=0, atol=0)
    assert bang.remove() is model
    assert all("forward" not in vars(m) for m in model.modules())
    for name, g in grads().items():
        assert_close(g, off[name], rtol=0, atol=0)
    # a context manager that removes itself
    with BANG(model, layers=["3"]) as b2:
        assert "forward" in vars(model[3]) and "forward" not in vars(model[0])
        assert "eps=0.815" in repr(b2)
    assert "forward" not in vars(model[3])
    # evaluation (no grad) runs the plain forward
    bang = BANG(model)
    with torch.no_grad():
        assert_close(model(x), bang.remove()(x))


def test_configure_and_settings():
    model = _net()
    bang = BANG(model, eps=0.8, beta=1.0, overrides={"3": {"eps": 0.1}})
    bang.configure(model[5], beta=0.3)
    assert bang.settings() == {"0": {"eps": 0.8, "beta": 1.0}, "3": {"eps": 0.1, "beta": 1.0},
                               "5": {"eps": 0.8, "beta": 0.3}}
    bang.remove()


def test_bad_arguments():
    model = _net()
    with pytest.raises(ValueError, match="'eps' must be a number >= 0"):
        BANG(model, eps=-0.1)
    with pytest.raises(ValueError, match="'beta' must be a number > 0"):
        BANG(model, beta=0)
    with pytest.raises(ValueError, match="'ratio' must be a number >= 0"):
        BANG(model, ratio=-1)
    with pytest.raises(ValueError, match="no module named 'fc9'"):
        BANG(model, layers=["fc9"])
    with pytest.raises(TypeError, match="has no BANG rule"):
        BANG(model, layers=["1"])
    with pytest.raises(TypeError, match="'model' must be an nn.Module"):
        BANG("model")
    bang = BANG(model)
    with pytest.raises(RuntimeError, match="applied to it twice"):
        BANG(model)
    with pytest.raises(ValueError, match="'beta' must be a number > 0"):
        bang.configure("3", beta=-2)
    with pytest.raises(ValueError, match="not one of its layers"):
        bang.configure("1", eps=0.1)
    with pytest.raises(TypeError, match="'mask' must be a 1-d bool tensor"):
        bang.set_misclassified(torch.ones(10))
    x, y = _data()
    bang.set_misclassified(torch.ones(7, dtype=torch.bool))
    with pytest.raises(ValueError, match="has 7 entries but the batch at layer '5' has 10"):
        _loss(model(x), y).backward()
    bang.observe(None)
    with pytest.raises(ValueError, match=r"'targets' must have shape \(10,\)"):
        bang.observe(model(x), y[:3])
    with pytest.raises(ValueError, match="needs a batch"):
        model[5](torch.randn(12, dtype=torch.float64))
    bang.remove()


def test_compiled_training_step_matches_eager():
    def train(compiled):
        model = _net().float()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        bang = BANG(model, eps=0.9, beta=0.5, ratio=0.5)
        forward = torch.compile(model) if compiled else model
        x, y = _data()
        x = x.float()
        losses = []
        for step in range(3):
            xs, ys = x[step:step + 8], y[step:step + 8]
            logits = forward(xs)
            bang.observe(logits, ys)
            loss = _loss(logits, ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        bang.remove()
        return losses, [p.detach().clone() for p in model.parameters()]

    eager_losses, eager_params = train(False)
    compiled_losses, compiled_params = train(True)
    assert_close(compiled_losses, eager_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(compiled_params, eager_params):
        assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast(device):
    """Under autocast the BANG layers compute in the autocast dtype, like the plain
    layers, and their gradients are close to float32 BANG's."""
    dtype = torch.bfloat16
    model = _net(device=device).float()
    x, y = _data(device=device)
    x = x.float()
    reference = _bang_grads(model, x, y, eps=0.8)
    bang = BANG(model, eps=0.8)
    model.zero_grad()
    with torch.autocast(device, dtype=dtype):
        out = model(x)
        assert out.dtype == dtype
        loss = _loss(out, y)
    loss.backward()
    bang.remove()
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32
        assert_close(p.grad, reference[name], rtol=0.1, atol=0.02 * reference[name].abs().max().item())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_models_on_cuda(dtype):
    model = _net(device="cuda")
    x, y = _data(device="cuda")
    reference = _bang_grads(model.float(), x.float(), y, eps=0.8)
    got = _bang_grads(model.to(dtype), x.to(dtype), y, eps=0.8)
    for name in got:
        assert got[name].dtype == dtype and torch.isfinite(got[name]).all()
        assert_close(got[name].float(), reference[name], rtol=0.05, atol=0.02 * reference[name].abs().max().item())


def test_a_model_without_layers_bang_can_wrap():
    for model in (nn.Sequential(nn.Flatten(), nn.ReLU()), nn.Identity(), nn.Sequential(nn.ConvTranspose2d(2, 2, 3))):
        with pytest.raises(ValueError, match=r"BANG: argument 'model' has no layer BANG can wrap \(it wraps "
                                             r"Linear, Conv1d, Conv2d, Conv3d"):
            BANG(model)
        assert "forward" not in vars(model)
    with pytest.raises(ValueError, match="BANG: argument 'layers' must name at least one layer"):
        BANG(_net(), layers=[])
    assert all("forward" not in vars(m) for m in _net().modules())


def test_misclassified_needs_integer_labels():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    assert robustops.bang.misclassified(logits, torch.tensor([0, 0])).tolist() == [False, True]
    with pytest.raises(TypeError,
                       match="misclassified: argument 'targets' must hold int64 class labels, got torch.float32"):
        robustops.bang.misclassified(logits, torch.tensor([0.0, 0.0]))
    with pytest.raises(TypeError,
                       match="misclassified: argument 'targets' must be a Tensor of int64 class labels, got list"):
        robustops.bang.misclassified(logits, [0, 0])
    with pytest.raises(TypeError, match="misclassified: argument 'logits' must be a Tensor, got list"):
        robustops.bang.misclassified(logits.tolist(), torch.tensor([0, 0]))
    with pytest.raises(TypeError, match="BANG.observe: argument 'targets' must hold int64 class labels"):
        BANG(_net()).observe(logits, torch.tensor([0.0, 0.0]))
