"""BoundedModule.forward splits the stacked N radii x batch rows into passes whose
largest temporary stays under ibp._CHUNK_BYTES (glibc's mmap threshold): the bounds,
the losses and their gradients are those of one pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustops.bounds import BoundedModule, certified_loss
from robustops.bounds import ibp as ibp_mod

DT = torch.float64


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 12),
                         nn.ReLU(), nn.Linear(12, 5)).to(DT)


@pytest.mark.parametrize("method, beta, bound", [("ibp", 1.0, "margins"), ("crown-ibp", 0.5, "margins"),
                                                 ("crown-ibp", 1.0, "loss")])
def test_passes_give_the_one_pass_numbers(method, beta, bound, monkeypatch):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(10, 1, 6, 6, generator=g, dtype=DT), torch.randint(0, 5, (10,), generator=g)
    results = []
    for limit in (1 << 60, 3 * 4 * 36 * 8 * (4 if bound == "margins" and method != "ibp" else 1)):
        monkeypatch.setattr(ibp_mod, "_CHUNK_BYTES", limit)
        model = _model()
        bounded = BoundedModule(model)
        certified_loss(bounded, x, y, 0.1, n=3, method=method, beta=beta, bound=bound)  # learns the widths
        out = certified_loss(bounded, x, y, 0.1, n=3, method=method, beta=beta, bound=bound)
        out.loss.backward()
        results.append((out.per_radius.detach(), [p.grad.clone() for p in model.parameters()]))
        if limit < 1 << 60:
            passes = bounded._rows_per_pass(x, 30, 4 if bound == "margins" and method != "ibp" else 1)
            assert passes == 3, passes  # 3 rows a pass: 10 passes over the 30 stacked rows
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


def test_rows_per_pass():
    bounded = BoundedModule(_model())
    x = torch.rand(4, 1, 6, 6, dtype=DT)
    assert bounded._rows_per_pass(x, 1000, 4) == 1000  # unknown width: one pass
    bounded.ibp_margins(x, torch.zeros(4, dtype=torch.long), 0.1)
    widest = 4 * 36  # the convolution's output per sample
    assert bounded._widest[(1, 6, 6)] == widest
    assert bounded._rows_per_pass(x, 10**9, 4) == ibp_mod._CHUNK_BYTES // (widest * 4 * 8)
    assert bounded._rows_per_pass(x, 7, 4) == 7
