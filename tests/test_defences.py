"""robustops.defences: the adversarial loss, the committee (average, training in
stages, snapshots), dropout per layer, the low-pass-and-noise preprocessing, the
denoising autoencoder, and the SAF paper's mean and random training batches."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from robustops import attacks, defences


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    proto = torch.rand(3, 1, 4, 4, generator=g)
    y = torch.arange(n) % 3
    x = (proto[y] + 0.05 * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)
    return x, y


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def test_adversarial_loss():
    x, y = _data()
    model = _net()
    model.train()
    atk = attacks.FGSM(model, eps=0.05)
    assert_close(defences.adversarial_loss(model, x, y, atk, alpha=1.0), F.cross_entropy(model(x), y))
    assert_close(defences.adversarial_loss(model, x, y, atk, alpha=0.0), F.cross_entropy(model(atk(x, y)), y))
    mixed = defences.adversarial_loss(model, x, y, atk, alpha=0.3)
    assert_close(mixed, 0.3 * F.cross_entropy(model(x), y) + 0.7 * F.cross_entropy(model(atk(x, y)), y))
    assert model.training
    with pytest.raises(ValueError, match="argument 'alpha'"):
        defences.adversarial_loss(model, x, y, atk, alpha=1.5)


def test_fit_trains():
    x, y = _data()
    model = _net()
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    history = defences.fit(model, loader, torch.optim.Adam(model.parameters(), 1e-2), epochs=30, progress=False)
    assert len(history) == 30 and history[-1] < history[0] / 3
    assert (model(x).argmax(1) == y).float().mean() == 1.0


def test_committee_average_and_training_in_stages():
    x, y = _data()
    a, b = _net(0), _net(1)
    committee = defences.Committee([a, b])
    assert_close(committee(x), (a(x).softmax(1) + b(x).softmax(1)) / 2)
    assert_close(defences.Committee([a, b], output="mean")(x), (a(x) + b(x)) / 2)
    # log_probs: the log of the averaged probabilities, finite where a probability underflows
    assert_close(defences.Committee([a, b], output="log_probs")(x), committee(x).log())
    big = [lambda t: torch.tensor([[0.0, -2000.0]]), lambda t: torch.tensor([[0.0, -3000.0]])]
    lp = defences.Committee.forward(types.SimpleNamespace(members=big, output="log_probs"), x[:1])
    assert torch.isfinite(lp).all() and abs(float(lp[0, 1]) - (-2000.0 - math.log(2))) < 1e-3
    with pytest.raises(ValueError, match="'output' must be 'probs', 'log_probs' or 'mean'"):
        defences.Committee([a], output="logits")
    model = _net(2)
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    trained = defences.train_committee(model, loader, lambda m: torch.optim.Adam(m.parameters(), 1e-2), stages=2,
                                       epochs=3, natural_epochs=20, progress=False)
    assert len(trained.members) == 3
    assert all(not m.training for m in trained.members)
    w = [m[1].weight.detach().clone() for m in trained.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    # snapshots are copies: training the model further leaves them as they were
    with torch.no_grad():
        model[1].weight.add_(1.0)
    assert torch.equal(trained.members[2][1].weight, w[2])
    assert (trained(x).argmax(1) == y).float().mean() > 0.9
    with pytest.raises(ValueError, match="argument 'members'"):
        defences.Committee([])


def test_with_dropout():
    model = _net()
    defences.with_dropout(model, {"1": 0.3, "3": 0.1})
    assert isinstance(model[1], nn.Sequential) and isinstance(model[1][1], nn.Dropout) and model[1][1].p == 0.3
    assert model[3][1].p == 0.1
    model.eval()
    x, _ = _data(4)
    assert model(x).shape == (4, 3)
    with pytest.raises(ValueError, match="no submodule named 'fc9'"):
        defences.with_dropout(model, {"fc9": 0.5})
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        defences.with_dropout(_net(), {"1": 1.0})


def test_low_pass_noise():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(defences.LowPassNoise(0.0, 0.0)(x), x)
    const = torch.full((1, 1, 9, 9), 0.4)
    assert_close(defences.LowPassNoise(1.0, 0.0)(const), const)  # the kernel sums to 1
    board = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float().view(1, 1, 16, 16)
    blurred = defences.LowPassNoise(1.0, 0.0)(board)
    assert blurred.std() < 0.05 * board.std()  # the checkerboard is high frequency
    noisy = defences.LowPassNoise(0.0, 0.1)(torch.full((1, 1, 64, 64), 0.5))
    assert abs(float(noisy.std()) - 0.1) < 0.01 and noisy.min() >= 0 and noisy.max() <= 1
    with pytest.raises(ValueError, match="\\[B, C, H, W\\]"):
        defences.LowPassNoise()(x[0])


def test_low_pass_noise_adds_noise_before_the_filter():
    """The committee paper's order: noise first, then the filter (which averages it);
    the same seed gives blur(x + noise), not blur(x) + noise."""
    x = torch.full((1, 1, 32, 32), 0.5, dtype=torch.float64)
    f = defences.LowPassNoise(1.0, 0.1)
    torch.manual_seed(3)
    out = f(x)
    torch.manual_seed(3)
    noise = 0.1 * torch.randn_like(x)
    assert_close(out, _grouped_conv_blur(x + noise, f.kernel.double()).clamp(0, 1))
    # the filter averages the noise away: far below the injected 0.1
    assert float(out.std()) < 0.05


@pytest.mark.parametrize("size,variance", [(3, 7.0), (5, 1.3), (7, 0.6)])
def test_low_pass_paper_kernels(size, variance):
    """The paper's kernels: the Gaussian of the given variance sampled at `size` points
    evenly spaced over [-3, 3], normalized."""
    f = defences.LowPassNoise(noise=0.0, kernel=size)
    t = torch.linspace(-3, 3, size, dtype=torch.float64)
    k = torch.exp(-t ** 2 / (2 * variance))
    assert_close(f.kernel.double(), k / k.sum(), rtol=1e-6, atol=1e-7)
    assert len(f.kernel) == size and "kernel=" in repr(f)
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    assert_close(f(x), _grouped_conv_blur(x, f.kernel.double()).clamp(0, 1), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="'kernel' must be None or one of the paper's kernel sizes"):
        defences.LowPassNoise(kernel=9)


def _grouped_conv_blur(x, kernel):
    """The separable Gaussian filter as two grouped convolutions (the reference)."""
    c, r = x.shape[1], kernel.numel() // 2
    k = kernel.to(x.dtype)
    x = F.pad(x, (r, r, r, r), mode="reflect" if min(x.shape[2:]) > r else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 32, 17), (2, 2, 3, 5), (1, 1, 1, 1)])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_low_pass_filter_matches_grouped_convolutions(shape, sigma):
    torch.manual_seed(0)
    x = torch.rand(shape, dtype=torch.float64)
    f = defences.LowPassNoise(sigma, 0.0)
    # (images smaller than the radius are padded by replication, larger ones by reflection)
    assert_close(f(x), _grouped_conv_blur(x, f.kernel.double()).clamp(0, 1), rtol=1e-6, atol=1e-7)
    xg = x[:1].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: f(t * 0.5 + 0.25), (xg,))
    assert f(x.float()).dtype == torch.float32 and f(x.bfloat16()).dtype == torch.bfloat16


def test_denoising_autoencoder():
    dae = defences.DenoisingAutoencoder()
    assert [m.out_features for m in dae.encoder if isinstance(m, nn.Linear)] == [1000, 500, 250, 30]
    assert [m.out_features for m in dae.decoder if isinstance(m, nn.Linear)] == [250, 500, 1000, 784]
    out = dae(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    small = defences.DenoisingAutoencoder((16, 12, 6))
    x, y = _data()
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    history = defences.train_denoiser(small, loader, torch.optim.Adam(small.parameters(), 1e-2), epochs=40,
                                      input_dropout=0.2, progress=False)
    assert history[-1] < history[0] / 2
    pre = defences.Preprocessed(small.eval(), _net())
    assert pre(x).shape == (64, 3)
    with pytest.raises(ValueError, match="expected 784"):
        dae(torch.rand(2, 1, 8, 8))


def test_mean_and_random_training_batches():
    x, y = _data(8)
    g = torch.Generator().manual_seed(0)
    xb, yb = defences.mean_training_batch(x, y, x.mean(0), 5, noise=0.1, nonsense_label=3, generator=g)
    assert xb.shape == (13, 1, 4, 4) and yb.tolist() == y.tolist() + [3] * 5
    assert torch.equal(xb[:8], x) and xb.min() >= 0 and xb.max() <= 1
    assert (xb[8:] - x.mean(0)).abs().max() < 0.6
    with pytest.raises(ValueError, match="'nonsense_label'"):
        defences.mean_training_batch(x, y, x.mean(0), 5)
    same, _ = defences.random_training_batch(x, y, delta=0.2, fraction=0.0, generator=g)
    assert torch.equal(same, x)
    moved, labels = defences.random_training_batch(x, y, delta=0.2, fraction=1.0, generator=g)
    assert torch.equal(labels, y) and (moved - x).abs().max() <= 0.2 + 1e-7 and not torch.equal(moved, x)


def test_fit_warns_on_rbf_outputs_with_the_default_loss():
    import warnings

    from robustops.models.saf import lenet_saf
    from robustops.nn import RBF, HybridLoss

    x, y = _data(8)
    loader = [(x, y)]
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), RBF())
    msg = r"robustops.defences.fit: the model's output layer is an RBF.*robustops.nn.HybridLoss"
    with pytest.warns(UserWarning, match=msg):
        defences.fit(net, loader, torch.optim.SGD(net.parameters(), 0.1), progress=False)
    with pytest.warns(UserWarning, match=msg):
        saf = lenet_saf("rbf", input_size=16, num_classes=3)
        defences.fit(saf, [(torch.rand(2, 1, 16, 16), torch.tensor([0, 2]))],
                     torch.optim.SGD(saf.parameters(), 0.1), epochs=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # with the model's own loss, or a plain output layer: no warning
        defences.fit(net, loader, torch.optim.SGD(net.parameters(), 0.1), progress=False,
                     loss=lambda m, xb, yb: HybridLoss()(m(xb), yb))
        plain = lenet_saf("plain", input_size=16, num_classes=3)
        defences.fit(plain, [], torch.optim.SGD(plain.parameters(), 0.1), progress=False)
        # an RBF as a hidden activation is not the output layer
        hidden = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), RBF(), nn.Linear(3, 3))
        defences.fit(hidden, loader, torch.optim.SGD(hidden.parameters(), 0.1), progress=False)


def test_mean_training_batch_bad_arguments():
    x, y = _data(8)
    fn = "robustops.defences.mean_training_batch"
    with pytest.raises(TypeError, match=f"{fn}: argument 'y' must hold int64 class labels, got torch.float32"):
        defences.mean_training_batch(x, y.float(), x.mean(0), 5, nonsense_label=3)
    with pytest.raises(ValueError, match=rf"{fn}: argument 'y' must have shape \[8\]"):
        defences.mean_training_batch(x, y[:5], x.mean(0), 5, nonsense_label=3)
    with pytest.raises(ValueError, match=f"{fn}: argument 'n_nonsense' must be >= 0, got -1"):
        defences.mean_training_batch(x, y, x.mean(0), -1, nonsense_label=3)
    with pytest.raises(TypeError, match=f"{fn}: argument 'n_nonsense' must be an int, got float"):
        defences.mean_training_batch(x, y, x.mean(0), 2.0, nonsense_label=3)
    with pytest.raises(TypeError, match=f"{fn}: argument 'nonsense_label' must be an int, got float"):
        defences.mean_training_batch(x, y, x.mean(0), 2, nonsense_label=3.0)
    xb, yb = defences.mean_training_batch(x, y, x.mean(0), 0, nonsense_label=3)
    assert torch.equal(xb, x) and torch.equal(yb, y)


def test_fit_needs_a_module():
    with pytest.raises(TypeError, match="robustops.defences.fit: argument 'model' must be an nn.Module, got function"):
        defences.fit(lambda t: t, [], torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1))


# --- train_committee: the paper's protocol (pools) and the old one (online) ---------------------------------

def _committee_setup(n=12, batch=5):
    x, y = _data(n, seed=4)
    loader = [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]  # uneven: 5, 5, 2
    return x, y, loader


def _adam(m):
    return torch.optim.Adam(m.parameters(), 1e-2)


class _RecordingFactory:
    """attack_factory that records the net each attack is made from (and its weights
    then) and every adversarial batch it returns: the paper's committee example."""

    def __init__(self):
        self.nets, self.weights, self.outputs = [], [], []

    def __call__(self, net):
        self.nets.append(net)
        self.weights.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        out = []
        self.outputs.append(out)
        inner = attacks.CommitteeExample(net, 0.1, 1.0)

        def attack(x, y):
            adv = inner(x, y)
            out.append((x.clone(), y.clone(), adv.clone()))
            return adv
        return attack

    def pool(self, k):
        return torch.cat([adv for _, _, adv in self.outputs[k]])


def _recording_fit(monkeypatch):
    """Replace defences.fit by the real one that first records one pass over its
    loader (the data it trains on) and, after training, the model's weights."""
    calls = []
    real_fit = defences.fit

    def fit(model, loader, optimizer, epochs=1, loss=None, device=None, progress=None):
        batches = list(loader)
        out = real_fit(model, loader, optimizer, epochs, loss=loss, device=device, progress=progress)
        calls.append({"batches": batches, "loss": loss, "epochs": epochs,
                      "after": {k: v.detach().clone() for k, v in model.state_dict().items()}})
        return out

    monkeypatch.setattr(defences, "fit", fit)
    return calls


def _same_weights(net, state):
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_train_committee_pools_are_made_from_the_stage_snapshots():
    """Stage k's pool: the committee example of every training example, made from the
    snapshot taken at the start of stage k (member k - 1, member 0 the natural net)."""
    x, y, loader = _committee_setup()
    record = _RecordingFactory()
    model = _net(5)
    trained = defences.train_committee(model, loader, _adam, stages=3, epochs=2, natural_epochs=3,
                                       attack_factory=record, progress=False)
    assert len(record.nets) == 3
    for k in range(3):
        snapshot = trained.members[k]
        assert record.nets[k] is snapshot and record.nets[k] is not model
        assert _same_weights(snapshot, record.weights[k])  # the snapshot did not move since
        pool = record.pool(k)
        assert pool.shape == x.shape  # one example per training example
        assert torch.equal(torch.cat([xb for xb, _, _ in record.outputs[k]]), x)
        assert torch.equal(torch.cat([yb for _, yb, _ in record.outputs[k]]), y)
        assert_close(pool, attacks.CommitteeExample(snapshot, 0.1, 1.0)(x, y))
        assert [len(xb) for xb, _, _ in record.outputs[k]] == [5, 5, 2]  # made in chunks of the loader's batch
    # later snapshots make different pools (the model moved)
    assert not torch.equal(record.pool(0), record.pool(2))


def test_train_committee_each_stage_trains_on_clean_data_and_every_pool(monkeypatch):
    x, y, loader = _committee_setup()
    calls = _recording_fit(monkeypatch)
    record = _RecordingFactory()
    defences.train_committee(_net(6), loader, _adam, stages=3, epochs=2, natural_epochs=3, attack_factory=record,
                             progress=False, shuffle=False)
    assert len(calls) == 4
    assert calls[0]["batches"] is not None and calls[0]["epochs"] == 3
    assert [len(b[0]) for b in calls[0]["batches"]] == [5, 5, 2]  # natural: the loader as it is
    for k in range(1, 4):
        seen_x = torch.cat([b[0] for b in calls[k]["batches"]])
        seen_y = torch.cat([b[1] for b in calls[k]["batches"]])
        assert calls[k]["epochs"] == 2 and calls[k]["loss"] is None  # plain cross-entropy on the joined set
        assert seen_x.shape[0] == (k + 1) * len(x)
        assert torch.equal(seen_x, torch.cat([x] + [record.pool(j) for j in range(k)]))
        assert torch.equal(seen_y, y.repeat(k + 1))
        assert max(len(b[0]) for b in calls[k]["batches"]) == 5  # the loader's batch size
    # an explicit batch_size; shuffled: the same examples each epoch in a new order, the order seeded
    calls.clear()
    record = _RecordingFactory()
    defences.train_committee(_net(6), loader, _adam, stages=2, epochs=1, natural_epochs=3, attack_factory=record,
                             progress=False, batch_size=7)
    seen_x = torch.cat([b[0] for b in calls[2]["batches"]])
    seen_y = torch.cat([b[1] for b in calls[2]["batches"]])
    joined = torch.cat([x, record.pool(0), record.pool(1)])
    assert [len(b[0]) for b in calls[2]["batches"]] == [7, 7, 7, 7, 7, 1]
    assert not torch.equal(seen_x, joined)
    key = torch.randn(16, dtype=x.dtype)
    order = (seen_x.flatten(1) @ key).argsort()
    expected = (joined.flatten(1) @ key).argsort()
    assert torch.equal(seen_x[order], joined[expected]) and torch.equal(seen_y[order], y.repeat(3)[expected])
    first = defences.train_committee(_net(6), loader, _adam, stages=2, epochs=2, natural_epochs=3, progress=False,
                                     seed=3)
    again = defences.train_committee(_net(6), loader, _adam, stages=2, epochs=2, natural_epochs=3, progress=False,
                                     seed=3)
    assert all(_same_weights(a, b.state_dict()) for a, b in zip(first.members, again.members))


def test_train_committee_members_are_the_natural_net_and_the_stage_snapshots(monkeypatch):
    x, y, loader = _committee_setup()
    calls = _recording_fit(monkeypatch)
    model = _net(7)
    trained = defences.train_committee(model, loader, _adam, stages=5, epochs=1, natural_epochs=2, progress=False)
    assert isinstance(trained, defences.Committee)
    assert len(trained.members) == 6  # the paper: 5 stages, a committee of 6
    assert len(calls) == 6
    for member, call in zip(trained.members, calls):  # member k: the weights right after phase k
        assert _same_weights(member, call["after"])
        assert not member.training and member is not model
    assert len({id(m) for m in trained.members}) == 6
    with torch.no_grad():  # copies: training the model further leaves them as they were
        model[1].weight.add_(1.0)
    assert _same_weights(trained.members[5], calls[5]["after"])
    none = defences.train_committee(_net(7), loader, _adam, stages=0, natural_epochs=2, progress=False)
    assert len(none.members) == 1


def _old_train_committee(model, loader, optimizer_factory, stages, epochs, attack_factory, natural_epochs):
    """train_committee as it was before the pools protocol."""
    import copy
    optimizer = optimizer_factory(model)
    defences.fit(model, loader, optimizer, natural_epochs, progress=False)
    members = [copy.deepcopy(model).eval()]
    attack = attack_factory(model)
    for _ in range(stages):
        defences.fit(model, loader, optimizer, epochs, progress=False,
                     loss=lambda m, x, y: F.cross_entropy(m(attack(x, y)), y))
        members.append(copy.deepcopy(model).eval())
    return members


def test_train_committee_online_protocol_is_the_old_behaviour():
    x, y, loader = _committee_setup()
    def factory(m):
        return attacks.CommitteeExample(m, 0.1, 1.0)
    expected = _old_train_committee(_net(8), loader, _adam, 2, 2, factory, 3)
    record = _RecordingFactory()
    model = _net(8)
    got = defences.train_committee(model, loader, _adam, stages=2, epochs=2, natural_epochs=3,
                                   attack_factory=record, protocol="online", progress=False)
    assert len(got.members) == 3
    for a, b in zip(got.members, expected):
        assert _same_weights(a, b.state_dict())
    assert record.nets == [model]  # one attack, on the live model
    # per batch, from the model as it was at that batch: 2 stages x 2 epochs x 3 batches, clean inputs only
    assert len(record.outputs[0]) == 12
    assert all(torch.equal(xb, x[i % 3 * 5:i % 3 * 5 + 5]) for i, (xb, _, _) in enumerate(record.outputs[0]))
    # the default factory too
    torch.manual_seed(0)
    default = defences.train_committee(_net(8), loader, _adam, stages=2, epochs=2, natural_epochs=3,
                                       protocol="online", progress=False)
    assert all(_same_weights(a, b.state_dict()) for a, b in zip(default.members, expected))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"stages": -1}, ValueError, "argument 'stages' must be >= 0"),
    ({"stages": 2.0}, TypeError, "argument 'stages' must be an int"),
    ({"epochs": -1}, ValueError, "argument 'epochs' must be >= 0"),
    ({"natural_epochs": "3"}, TypeError, "argument 'natural_epochs' must be an int"),
    ({"protocol": "pool"}, ValueError, "argument 'protocol' must be one of \\('pools', 'online'\\)"),
    ({"batch_size": 0}, ValueError, "argument 'batch_size' must be >= 1"),
    ({"shuffle": 1}, TypeError, "argument 'shuffle' must be a bool"),
    ({"seed": 1.5}, TypeError, "argument 'seed' must be an int"),
    ({"attack_factory": 3}, TypeError, "argument 'attack_factory' must be None or callable"),
    ({"select": 0.5}, TypeError, "argument 'select' must be None or callable"),
    ({"batches_per_epoch": 0}, ValueError, "argument 'batches_per_epoch' must be >= 1"),
    ({"optimizer_factory": None}, TypeError, "argument 'optimizer_factory' must be callable"),
    ({"model": "net"}, TypeError, "argument 'model' must be an nn.Module"),
    ({"loader": []}, ValueError, "argument 'loader' yielded no batches"),
])
def test_train_committee_bad_arguments(kwargs, error, match):
    _, _, loader = _committee_setup()
    args = {"model": _net(9), "loader": loader, "optimizer_factory": _adam, "natural_epochs": 0, "progress": False}
    args.update(kwargs)
    with pytest.raises(error, match=f"robustops.defences.train_committee: {match}"):
        defences.train_committee(**args)


def test_train_committee_select_ends_each_phase_at_its_best_epoch(monkeypatch):
    """select(net, phase, members) scores every epoch of every phase (0: natural, k:
    stage k; members: the snapshots so far) in eval mode; each phase ends at its best
    epoch (the first best on ties): the member and the next pool are the weights after
    that epoch, and the optimizer goes on from its state then."""
    x, y, loader = _committee_setup()
    calls = _recording_fit(monkeypatch)
    optimizers = []

    def adam(m):
        optimizers.append(torch.optim.Adam(m.parameters(), 1e-2))
        return optimizers[-1]

    steps_before = []
    real_fit = defences.fit

    def fit(model, data, optimizer, epochs=1, **kw):  # the optimizer's step count when each epoch starts
        state = optimizer.state_dict()["state"]
        steps_before.append(int(state[0]["step"]) if state else 0)
        return real_fit(model, data, optimizer, epochs, **kw)

    monkeypatch.setattr(defences, "fit", fit)
    scripted = {0: [0.1, 0.5, 0.5, 0.2], 1: [0.3, 0.2, 0.4], 2: [0.9, 0.9, 0.1]}
    seen = []

    snapshots = []

    def select(net, phase, members):
        seen.append((phase, net.training))
        snapshots.append(members)
        return scripted[phase][sum(p == phase for p, _ in seen) - 1]

    record = _RecordingFactory()
    trained = defences.train_committee(_net(10), loader, adam, stages=2, epochs=3, natural_epochs=4,
                                       attack_factory=record, select=select, progress=False, shuffle=False)
    assert seen == [(0, False)] * 4 + [(1, False)] * 3 + [(2, False)] * 3
    assert trained.picked_epochs == [2, 3, 1]
    assert trained.selection_scores == [scripted[0], scripted[1], scripted[2]]
    # the snapshots so far: none in the natural phase, members 0 .. k - 1 in stage k
    assert [len(m) for m in snapshots] == [0] * 4 + [1] * 3 + [2] * 3
    assert all(m[0] is trained.members[0] for m in snapshots[4:]) and snapshots[-1][1] is trained.members[1]
    # fit epoch by epoch: 4 natural, 3 + 3 stage epochs; the weights after each
    assert len(calls) == 10 and all(c["epochs"] == 1 for c in calls)
    after = [c["after"] for c in calls]
    assert _same_weights(trained.members[0], after[1])          # natural epoch 2
    assert _same_weights(trained.members[1], after[4 + 2])      # stage 1, epoch 3
    assert _same_weights(trained.members[2], after[7 + 0])      # stage 2, epoch 1
    # the pools come from the picked snapshots
    assert _same_weights(trained.members[0], record.weights[0])
    assert _same_weights(trained.members[1], record.weights[1])
    # the optimizer resumes at the picked epoch: 3 batches per natural epoch, 5 per stage epoch (24 / 5)
    assert steps_before[:5] == [0, 3, 6, 9, 6]
    assert steps_before[7] == 6 + 3 * 5
    assert int(optimizers[0].state_dict()["state"][0]["step"]) == 6 + 3 * 5 + 1 * 8   # stage 2: 36 / 5
    # the online protocol too; a phase of no epochs is not scored (epoch 0)
    seen.clear()
    online = defences.train_committee(_net(10), loader, _adam, stages=1, epochs=3, natural_epochs=0,
                                      select=select, protocol="online", progress=False)
    assert online.picked_epochs == [0, 3] and seen == [(1, False)] * 3


def test_train_committee_without_select_ends_every_phase_at_its_last_epoch():
    _, _, loader = _committee_setup()
    trained = defences.train_committee(_net(11), loader, _adam, stages=2, epochs=2, natural_epochs=3,
                                       progress=False)
    assert trained.picked_epochs == [3, 2, 2] and trained.selection_scores == [[], [], []]


def _training_inputs(model):
    """Every batch ``model`` (or a deep copy of it) sees in train mode, recorded."""
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
    return seen


def test_train_committee_batches_per_epoch_streams_the_joined_set():
    """A stage epoch of batches_per_epoch batches: the stages train a fixed number of
    iterations however large the joined set, each epoch going on where the last one
    stopped, so every example is seen equally often."""
    x, y, loader = _committee_setup()  # 12 examples in batches of 5, 5, 2
    model = _net(12)
    seen = _training_inputs(model)
    record = _RecordingFactory()
    defences.train_committee(model, loader, _adam, stages=2, epochs=2, natural_epochs=1, attack_factory=record,
                             progress=False, shuffle=False, batches_per_epoch=3)
    assert len(seen) == 3 + 2 * 3 + 2 * 3  # the natural epoch (3 batches), then 6 batches per stage
    stage1, stage2 = torch.cat(seen[3:9]), torch.cat(seen[9:15])
    joined1 = torch.cat([x, record.pool(0)])                   # 24 examples: 5 batches per pass
    assert [len(b) for b in seen[3:9]] == [5, 5, 5, 5, 4, 5]   # one pass, then the next pass begins
    assert torch.equal(stage1, torch.cat([joined1, joined1[:5]]))
    joined2 = torch.cat([x, record.pool(0), record.pool(1)])   # 36: the same 6 batches, a fresh stream
    assert torch.equal(stage2, joined2[:30])
    # shuffled: a pass is a permutation of the joined set that carries over from epoch to epoch
    model = _net(12)
    seen = _training_inputs(model)
    record = _RecordingFactory()
    defences.train_committee(model, loader, _adam, stages=1, epochs=4, natural_epochs=1, attack_factory=record,
                             progress=False, batch_size=6, batches_per_epoch=2, seed=5)
    joined = torch.cat([x, record.pool(0)])                    # 24: 4 batches of 6 per pass
    key = torch.randn(16, dtype=x.dtype)
    codes = (joined.flatten(1) @ key).sort().values
    first, second = torch.cat(seen[3:7]), torch.cat(seen[7:11])  # epochs 1-2, epochs 3-4
    assert torch.equal((first.flatten(1) @ key).sort().values, codes)
    assert torch.equal((second.flatten(1) @ key).sort().values, codes)
    assert not torch.equal(first, second)
