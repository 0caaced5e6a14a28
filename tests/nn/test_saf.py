"""robustops.nn.MReLU, RBF and HybridLoss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import robustops
from robustops.nn import RBF, HybridLoss, MReLU
from tests.common import DEVICES


@pytest.mark.parametrize("device", DEVICES)
def test_modules_apply_the_ops(device):
    x = torch.randn(4, 5, device=device)
    assert_close(MReLU()(x), robustops.ops.mrelu(x))
    assert_close(RBF()(x), robustops.ops.rbf(x))


def test_hybrid_loss_hand_computed():
    y = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=torch.float64)
    t = torch.tensor([0, 2])
    loss = HybridLoss(a1=1, a2=1, a3=1, p=2, reduction="none")(y, t)
    # Sample 0: -ln(0.5 / 1) + (1 - 0.5)^2 + (0.25^2 + 0.25^2)
    # Sample 1: -ln(0.7 / 1) + (1 - 0.7)^2 + (0.1^2 + 0.2^2)
    expected = torch.tensor([math.log(2) + 0.25 + 0.125, -math.log(0.7) + 0.09 + 0.05], dtype=torch.float64)
    assert_close(loss, expected)
    weighted = HybridLoss(a1=2, a2=0.5, a3=3, p=3, reduction="none")(y, t)
    expected = torch.tensor([
        2 * math.log(2) + 0.5 * 0.5**3 + 3 * 2 * 0.25**3,
        -2 * math.log(0.7) + 0.5 * 0.3**3 + 3 * (0.1**3 + 0.2**3),
    ], dtype=torch.float64)
    assert_close(weighted, expected)
    assert_close(HybridLoss(a3=1, reduction="mean")(y, t), HybridLoss(a3=1, reduction="none")(y, t).mean())
    assert_close(HybridLoss(a3=1, reduction="sum")(y, t), HybridLoss(a3=1, reduction="none")(y, t).sum())


def test_hybrid_loss_default_is_cross_entropy_on_log_y_plus_quadratic():
    z = torch.randn(6, 10, dtype=torch.float64)
    y = torch.exp(-z * z)
    t = torch.randint(0, 10, (6,))
    expected = torch.nn.functional.cross_entropy(-z * z, t) + ((1 - y.gather(1, t[:, None])) ** 2).mean()
    assert_close(HybridLoss()(y, t), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_hybrid_loss_is_finite_for_nonsense_inputs(dtype, device):
    """Pre-activations far from every class centre: every RBF output is tiny or 0."""
    for z in (torch.full((4, 10), 30.0), torch.full((4, 10), 9.0), torch.randn(4, 10) * 1e3):
        z = z.to(device=device, dtype=dtype).requires_grad_()
        y = robustops.ops.rbf(z)
        loss = HybridLoss(a1=1, a2=1, a3=1)(y, torch.arange(4, device=device))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_hybrid_loss_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        HybridLoss(reduction="avg")
    with pytest.raises(ValueError, match="'p' must be >= 1"):
        HybridLoss(p=0.5)
    with pytest.raises(ValueError, match="'a2' must be >= 0"):
        HybridLoss(a2=-1)
    loss = HybridLoss()
    with pytest.raises(ValueError, match="'input' must have shape"):
        loss(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="'target' must have shape"):
        loss(torch.rand(3, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="'target' must hold class indices"):
        loss(torch.rand(3, 4), torch.rand(3))
    assert "a1=1.0" in repr(loss)


def test_hybrid_loss_bad_labels():
    loss = HybridLoss()
    y = torch.rand(3, 4)
    # a negative label would index from the end, one >= C out of bounds
    for bad, lo, hi in ((-1, -1, 2), (4, 0, 4), (9, 0, 9)):
        for dtype in (torch.int64, torch.int32):
            target = torch.tensor([0, bad, 2], dtype=dtype)
            with pytest.raises(ValueError, match=rf"HybridLoss: argument 'target' must hold class labels in "
                                                 rf"\[0, 4\), got values in \[{lo}, {hi}\]"):
                loss(y, target)
    with pytest.raises(TypeError, match="HybridLoss: argument 'target' must hold class indices, got torch.float32"):
        loss(y, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="HybridLoss: argument 'target' must hold class indices, got torch.bool"):
        loss(y, torch.tensor([True, False, True]))
    with pytest.raises(TypeError, match="HybridLoss: argument 'target' must be a Tensor of class indices, got list"):
        loss(y, [0, 1, 2])
    with pytest.raises(ValueError, match=r"HybridLoss: argument 'target' must have shape \(3,\), got \(3, 1\)"):
        loss(y, torch.tensor([[0], [1], [2]]))
    with pytest.raises(TypeError, match="HybridLoss: argument 'input' must be a Tensor, got list"):
        loss(y.tolist(), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="HybridLoss: argument 'input' must be a floating-point tensor"):
        loss(y.long(), torch.tensor([0, 1, 2]))
    # in range, any integer dtype: the same loss
    assert_close(loss(y, torch.tensor([0, 3, 2], dtype=torch.uint8)), loss(y, torch.tensor([0, 3, 2])))
