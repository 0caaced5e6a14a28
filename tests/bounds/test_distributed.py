"""Certified training under DistributedDataParallel, and the forward modes of
BoundedModule that make it work.

DDP all-reduces the gradients of work done in the wrapped module's forward only.
BoundedModule.forward reaches the bounds (mode "margins") and the clean logits with
them (mode "certified"), and certified_loss computes both in one forward call, so
``certified_loss(DDP(BoundedModule(model)), ...)`` trains as a single process would
on the concatenated batch. Two gloo processes on CPU, each with half the batch,
check that after one SGD step; a second run that computes the same loss around the
wrapper (on ``ddp.module``) shows the check fails when the all-reduce is skipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.testing import assert_close

from robustops.bounds import BoundedModule, certified_loss, crown_ibp_margins, verified_error
from tests.common import spawn_ranks

N = 12
EPS = 0.1
# (method, beta, bound) with N = 4 GM radii and kappa = 0.5
CONFIGS = {"ibp": ("ibp", 1.0, "margins"), "crown-ibp": ("crown-ibp", 0.5, "margins"),
           "crown-ibp-loss": ("crown-ibp", 0.5, "loss")}
STEP = dict(n=4, weights="gm", kappa=0.5)
LR = 0.5


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 16),
                         nn.ReLU(), nn.Linear(16, 5)).to(dtype)


def _batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(N, 2, 5, 5, generator=g, dtype=dtype)
    # the two halves differ (dark and bright inputs), so a rank's own gradient is far
    # from the global one
    x[:N // 2] *= 0.5
    x[N // 2:] = 0.5 + 0.5 * x[N // 2:]
    return x, torch.randint(0, 5, (N,), generator=g)


def _step(bounded, params, x, y, method, beta, bound):
    """One certified_loss step with SGD; the parameters after it."""
    opt = torch.optim.SGD(params, lr=LR)
    opt.zero_grad()
    certified_loss(bounded, x, y, EPS, method=method, beta=beta, bound=bound, **STEP).loss.backward()
    opt.step()
    return [p.detach().clone() for p in params]


def _worker(rank, world, port, out_dir, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        x, y = _batch()
        part = slice(rank * N // world, (rank + 1) * N // world)
        out = {}
        for name, config in CONFIGS.items():
            model = _model()
            ddp = nn.parallel.DistributedDataParallel(BoundedModule(model))
            # "forward": through the wrapper; "bypass": the same loss on the wrapped
            # module, around DDP's forward (the fault the test must catch)
            bounded = ddp if path == "forward" else ddp.module
            out[name] = _step(bounded, list(model.parameters()), x[part], y[part], *config)
        if path == "forward":
            other = nn.parallel.DistributedDataParallel(_model())
            try:
                certified_loss(other, x[part], y[part], EPS)
            except TypeError as e:
                out["type_error"] = str(e)
            out["verified_error"] = (verified_error(ddp, x[part], y[part], EPS),
                                     verified_error(ddp.module, x[part], y[part], EPS))
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # neither rank tears down its connections while the other works
    finally:
        dist.destroy_process_group()


def _run(tmp_path, path):
    return spawn_ranks(_worker, tmp_path, path)


def _single(config):
    model = _model()
    x, y = _batch()
    return _step(BoundedModule(model), list(model.parameters()), x, y, *config)


distributed = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


@distributed
def test_ddp_step_equals_single_process_on_the_concatenated_batch(tmp_path):
    ranks = _run(tmp_path, "forward")
    start = [p.detach() for p in _model().parameters()]
    for name, config in CONFIGS.items():
        single = _single(config)
        for i, (p0, p1, p, s) in enumerate(zip(ranks[0][name], ranks[1][name], single, start)):
            assert not torch.equal(p, s), f"{name}: parameter {i} did not move"
            # DDP averages the ranks' gradients: both ranks hold the same numbers
            assert_close(p0, p1, rtol=0, atol=0)
            assert_close(p0, p, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}, parameter {i}: {m}")
    assert "wrap the BoundedModule instead" in ranks[0]["type_error"]
    for r in ranks:
        assert r["verified_error"][0] == r["verified_error"][1]


@distributed
def test_bounds_around_the_wrapper_are_not_all_reduced(tmp_path):
    """certified_loss on ddp.module computes the same loss outside DDP's forward: DDP
    then skips the all-reduce without a word, each rank steps with its own half's
    gradient, and the check above fails, which is what makes it meaningful."""
    ranks = _run(tmp_path, "bypass")
    for name, config in CONFIGS.items():
        single = _single(config)
        for i, (p0, p1, p) in enumerate(zip(ranks[0][name], ranks[1][name], single)):
            assert not torch.allclose(p0, p1, rtol=1e-6, atol=1e-9), f"{name}, parameter {i}"
            assert not torch.allclose(p0, p, rtol=1e-6, atol=1e-9), f"{name}, parameter {i}"


@distributed
def test_readme_torchrun_example(tmp_path):
    """The README's train.py runs under torchrun with two processes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "README.md")) as f:
        scripts = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if b.startswith("# train.py")]
    assert len(scripts) == 1
    (tmp_path / "train.py").write_text(scripts[0])
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("verified error") == 1, run.stdout


# the forward modes, in one process

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_call_is_the_model(dtype):
    model, (x, _) = _model(dtype), _batch(dtype)
    assert torch.equal(BoundedModule(model)(x), model(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
def test_margins_mode_equals_the_margin_functions(dtype, per_sample):
    model, (x, y) = _model(dtype), _batch(dtype)
    bounded = BoundedModule(model)
    eps = torch.linspace(0, 0.2, N, dtype=dtype) if per_sample else EPS
    lower, upper = torch.zeros(2, dtype=dtype), torch.tensor([1.0, 0.9], dtype=dtype)  # per channel
    x = torch.minimum(x, upper.reshape(1, 2, 1, 1))
    assert torch.equal(bounded(x, y, eps, mode="margins", lower=lower, upper=upper),
                       bounded.ibp_margins(x, y, eps, lower, upper))
    for beta in (0.0, 0.5, 1.0):
        assert torch.equal(bounded(x, y, eps, mode="margins", method="crown-ibp", beta=beta, lower=lower,
                                   upper=upper),
                           crown_ibp_margins(bounded, x, y, eps, lower, upper, beta))


@pytest.mark.parametrize("method, beta", [c[:2] for c in CONFIGS.values() if c[2] == "margins"])
def test_n_radii_are_stacked_radius_major(method, beta):
    model, (x, y) = _model(), _batch()
    bounded = BoundedModule(model)
    n = 4
    logits, margins = bounded(x, y, EPS, mode="certified", n=n, method=method, beta=beta)
    assert torch.equal(logits, model(x))
    assert torch.equal(margins, bounded(x, y, EPS, mode="margins", n=n, method=method, beta=beta))
    for i in range(n):
        ref = crown_ibp_margins(bounded, x, y, (i + 1) * (EPS / n), beta=beta) if method == "crown-ibp" \
            else bounded.ibp_margins(x, y, (i + 1) * (EPS / n))
        assert torch.equal(margins[i * N:(i + 1) * N], ref)


@pytest.mark.parametrize("kappa, mode", [(0.5, "certified"), (0.0, "margins")])
def test_certified_loss_is_one_forward_call(kappa, mode):
    """The clean logits and the margins of all N radii come from one call of the
    module's forward: under DDP, one forward per step."""
    model, (x, y) = _model(), _batch()
    bounded = BoundedModule(model)
    calls = []
    bounded.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs["mode"]), with_kwargs=True)
    out = certified_loss(bounded, x, y, EPS, n=4, kappa=kappa, method="crown-ibp", beta=0.5)
    out.loss.backward()
    assert calls == [mode]
    assert (out.clean is None) == (kappa == 0)
    assert all(p.grad is not None for p in model.parameters())


def test_forward_and_certified_loss_errors():
    model, (x, y) = _model(), _batch()
    bounded = BoundedModule(model)
    with pytest.raises(ValueError, match="mode 'logits'.*takes x alone"):
        bounded(x, y, EPS)
    with pytest.raises(ValueError, match="argument 'mode'"):
        bounded(x, y, EPS, mode="bounds")
    with pytest.raises(ValueError, match="argument 'bound'"):
        bounded(x, y, EPS, mode="loss", bound="margin")
    with pytest.raises(ValueError, match="bound='loss' needs mode 'loss' or 'certified'"):
        bounded(x, y, EPS, mode="margins", bound="loss")
    with pytest.raises(ValueError, match="argument 'bound'"):
        certified_loss(bounded, x, y, EPS, bound="logits")
    with pytest.raises(TypeError, match="needs the labels y and the radius eps"):
        bounded(x, y, mode="margins")
    with pytest.raises(ValueError, match="argument 'method'"):
        bounded(x, y, EPS, mode="margins", method="crown")
    with pytest.raises(ValueError, match="argument 'beta'"):
        bounded(x, y, EPS, mode="margins", method="crown-ibp", beta=2.0)
    with pytest.raises(ValueError, match="argument 'n'"):
        bounded(x, y, EPS, mode="margins", n=0)
    with pytest.raises(ValueError, match="argument 'eps'"):
        bounded(x, y, -0.1, mode="certified")
    with pytest.raises(ValueError, match="input domain"):
        bounded(x + 1, y, EPS, mode="margins")
    with pytest.raises(TypeError, match="BoundedModule or a DistributedDataParallel wrapping one, got Sequential"):
        certified_loss(model, x, y, EPS)
