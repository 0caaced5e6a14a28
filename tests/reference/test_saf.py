"""The oracle itself: robustops.reference.saf against the plain formulas and
torch's autograd of them (away from the kinks, where their derivatives agree)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from robustops.reference import saf as ref

NAIVE = {
    "mrelu": lambda x: torch.clamp(1 - x.abs(), min=0),
    "rbf": lambda x: torch.exp(-x * x),
}


@pytest.mark.parametrize("name", sorted(NAIVE))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_matches_the_formula_and_its_autograd(name, dtype):
    x = torch.linspace(-3.05, 3.05, 1001, dtype=dtype)  # misses -1, 0 and 1
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1, y2 = getattr(ref, name)(x1), NAIVE[name](x2)
    assert_close(y1, y2)
    g = torch.randn_like(x)
    assert_close(torch.autograd.grad(y1, x1, g)[0], torch.autograd.grad(y2, x2, g)[0])
    # The second derivative too (double backward through the reference); mReLU's is
    # 0, and its reference first derivative does not even depend on x differentiably.
    def second(f, xx):
        (d,) = torch.autograd.grad(f(xx).sum(), xx, create_graph=True)
        if not d.requires_grad:
            return torch.zeros_like(xx)
        return torch.autograd.grad(d.sum(), xx)[0]

    h2 = second(NAIVE[name], x2)
    assert_close(second(getattr(ref, name), x1), h2)
    if name == "rbf":
        assert_close(ref.rbf_second_derivative(x), h2)
    else:
        assert not h2.any()
