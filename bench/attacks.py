"""Benchmarks of the attacks (robustops.attacks): throughput against a hand-written
PyTorch loop.

fgsm_attack, pgd_attack
    One attack on a batch of BATCH CIFAR-10-sized images (3x32x32, uniform in [0, 1])
    against the SAF paper's CIFAR-10 net (``robustops.models.cifar_saf``, its Table 3,
    ReLU, seeded weights, in eval mode), with ``robustops.attacks.FGSM(model, eps)``
    and ``robustops.attacks.PGD(model, eps, alpha, steps=PGD_STEPS)`` (seeded random
    start), against the loop a user would write by hand: input.requires_grad_(),
    cross-entropy (summed, as robustops', so that the two compute the same), one
    torch.autograd.grad, the sign step, the clamp (PGD: the projection onto the ball,
    the same seeded random start). An attack is one forward and backward pass (FGSM)
    or PGD_STEPS of them, so robustops should add no overhead: target <= 1.05x the
    hand-written loop's time. The tables report images per second too. Checked
    before timing: the two give the same adversarial batch (torch.equal).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustops import attacks
from robustops.models.saf import cifar_saf

from bench.cases import Case, Config, StepCase
from bench.checks import CorrectnessError
from bench.targets import Target, step_ratio_of

FAMILY = "attacks"
OPS = ("fgsm_attack", "pgd_attack")

BATCH = 128
EPS, ALPHA, PGD_STEPS = 8 / 255, 2 / 255, 10
SEED = 0
HAND, ROBUSTOPS_ATTACK = "hand-written loop", "robustops.attacks"
LABEL = f"cifar_saf {BATCH}x3x32x32"

TARGETS = [
    Target(op, f"attack time {ROBUSTOPS_ATTACK} / {HAND}", step_ratio_of(ROBUSTOPS_ATTACK), 1.05,
           at_least=False, numel=None, size=LABEL)
    for op in OPS
]


def cases(config: Config) -> Iterator[Case]:
    return iter(())


def _setup(device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(SEED)
    model = cifar_saf("plain").to(device).eval()
    g = torch.Generator().manual_seed(SEED)
    x = torch.rand(BATCH, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (BATCH,), generator=g).to(device)
    return model, x, y


def _hand_fgsm(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    return (x + EPS * g.sign()).clamp(0, 1)


def _hand_pgd(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    gen = torch.Generator(device=x.device).manual_seed(SEED)
    noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    x_adv = (x + (2 * noise - 1) * EPS).clamp(0, 1)
    for _ in range(PGD_STEPS):
        xg = x_adv.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        x_adv = torch.min(torch.max(x_adv + ALPHA * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return x_adv


VARIANTS: dict[str, tuple[Callable, Callable]] = {
    "fgsm_attack": (_hand_fgsm, lambda m: attacks.FGSM(m, eps=EPS)),
    "pgd_attack": (_hand_pgd, lambda m: attacks.PGD(m, eps=EPS, alpha=ALPHA, steps=PGD_STEPS, seed=SEED)),
}


def _make_steps(op: str, device: torch.device) -> Callable[[], dict]:
    def make() -> dict:
        model, x, y = _setup(device)
        hand, build = VARIANTS[op]
        atk = build(model)
        return {HAND: lambda: hand(model, x, y), ROBUSTOPS_ATTACK: lambda: atk(x, y)}
    return make


def _check(op: str, device: torch.device) -> Callable[[], str]:
    def check() -> str:
        model, x, y = _setup(device)
        hand, build = VARIANTS[op]
        expected = hand(model, x, y)
        actual = build(model)(x, y)
        if not torch.equal(actual, expected):
            raise CorrectnessError(f"{op}: robustops.attacks and the hand-written loop disagree (largest "
                                   f"difference {(actual - expected).abs().max().item():.3g})")
        return (f"{op} {LABEL}: robustops.attacks and the hand-written loop give the same adversarial batch "
                f"(torch.equal; {(expected != x).float().mean().item():.0%} of the pixels moved)")
    return check


def steps(config: Config) -> list[StepCase]:
    if torch.float32 not in config.dtypes:
        return []
    return [StepCase(family=FAMILY, op=op, dtype=torch.float32, device=config.device, label=LABEL,
                     make_steps=_make_steps(op, config.device), check=_check(op, config.device),
                     baseline=HAND, section="attacks on one batch (images per second = batch / time)",
                     info={"model": "cifar_saf('plain') in eval mode", "batch": BATCH, "eps": EPS,
                           "alpha": ALPHA if op == "pgd_attack" else None,
                           "steps": PGD_STEPS if op == "pgd_attack" else 1},
                     min_run_time=None if op == "fgsm_attack" else 1.0 * config.min_run_time * 2,
                     warmup=2)
            for op in OPS]
