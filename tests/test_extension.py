"""robustops.extension_info() and the fallback to the reference when the compiled
kernels are missing."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch.testing import assert_close

import robustops
from robustops import _extension
from robustops.ops import saf as saf_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_extension_info_reports_the_build():
    info = robustops.extension_info()
    assert info["loaded"] and info["error"] is None
    assert info["cpu_kernels"]
    assert info["torch_version_built"] == torch.__version__.split("+")[0]
    assert info["torch_version"] == torch.__version__
    for op in ("mrelu", "_mrelu_backward", "rbf", "_rbf_backward"):
        assert "cpu" in info["ops"][op]
    # CUDA kernels are reported exactly when this build has them; the device kernels
    # (not the composite ops, which run anywhere) say the same.
    has_cuda = "cuda" in info["ops"]["mrelu"]
    assert info["cuda_kernels"] == has_cuda
    assert bool(info["cuda_archs"]) == has_cuda and bool(info["cuda_version"]) == has_cuda
    assert info["ops"]["interval_linear"] == ["cpu", "cuda"]


@pytest.fixture
def no_kernels(monkeypatch):
    """Hide the compiled kernels from the Python face of the saf family."""
    monkeypatch.setattr(saf_ops, "_KERNELS", {op: frozenset() for op in saf_ops._KERNELS})
    monkeypatch.setattr(_extension, "_WARNED", set())


@pytest.mark.parametrize("name", ["mrelu", "rbf"])
def test_fallback_gives_the_same_numbers_and_warns_once(name, no_kernels):
    x = torch.randn(257, dtype=torch.float64) * 2
    op = getattr(robustops.ops, name)
    expected = getattr(torch.ops.robustops, name)(x)
    xg = x.clone().requires_grad_()
    with pytest.warns(robustops.FallbackWarning, match=rf"robustops.ops.{name}: no compiled kernel for device 'cpu'"):
        out = op(xg)
    assert_close(out, expected)
    (g,) = torch.autograd.grad(out.sum(), xg)
    assert_close(g, getattr(torch.ops.robustops, f"_{name}_backward")(torch.ones_like(x), x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op(x)  # only the first call warns


_CHILD = r"""
import warnings, torch, robustops
info = robustops.extension_info()
assert not info["loaded"] and "ROBUSTOPS_DISABLE_EXTENSION" in info["error"], info
x = torch.load(r"{inp}")
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    xg = x.clone().requires_grad_()
    outs = {{}}
    for name in ("mrelu", "rbf"):
        y = getattr(robustops.ops, name)(xg)
        (g,) = torch.autograd.grad(y.sum(), xg)
        outs[name] = y.detach()
        outs[name + "_grad"] = g
assert sum(issubclass(i.category, robustops.FallbackWarning) for i in w) == 2, [str(i.message) for i in w]
torch.save(outs, r"{out}")
"""


def test_disabled_extension_runs_the_reference(tmp_path):
    x = torch.randn(1000, dtype=torch.float32) * 2
    torch.save(x, tmp_path / "x.pt")
    code = _CHILD.format(inp=tmp_path / "x.pt", out=tmp_path / "out.pt")
    env = dict(os.environ, ROBUSTOPS_DISABLE_EXTENSION="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    outs = torch.load(tmp_path / "out.pt")
    for name in ("mrelu", "rbf"):
        xg = x.clone().requires_grad_()
        y = getattr(robustops.ops, name)(xg)
        (g,) = torch.autograd.grad(y.sum(), xg)
        assert_close(outs[name], y.detach())
        assert_close(outs[name + "_grad"], g)
