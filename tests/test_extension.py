"""robustops.extension_info(), the fallback to the reference when the compiled
kernels are missing, and the tests' hook onto it (_extension.kernels_disabled)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.testing import assert_close

import robustops
from robustops import _extension

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
def no_kernels():
    """Hide the compiled kernels from the Python face of the saf family."""
    with _extension.kernels_disabled("mrelu", "rbf"):
        yield


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



def _fallback_warnings(record) -> list:
    return [str(w.message) for w in record if issubclass(w.category, robustops.FallbackWarning)]


def test_kernels_disabled_switches_the_named_ops_and_restores_them():
    x = torch.randn(33, dtype=torch.float64)
    assert robustops.ops.saf._mrelu.has_kernel("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        robustops.ops.mrelu(x)  # the kernel: no warning
        with pytest.warns(robustops.FallbackWarning, match="robustops.ops.mrelu: no compiled kernel"):
            with _extension.kernels_disabled("mrelu"):
                assert not robustops.ops.saf._mrelu.has_kernel("cpu")
                assert robustops.ops.saf._rbf.has_kernel("cpu")
                assert_close(robustops.ops.mrelu(x), torch.ops.robustops.mrelu(x))
                robustops.ops.rbf(x)  # not named: its kernel, silently
        robustops.ops.mrelu(x)  # the kernel again: no warning
    assert robustops.ops.saf._mrelu.has_kernel("cpu")


def test_kernels_disabled_without_names_switches_every_op():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with _extension.kernels_disabled():
            robustops.ops.mrelu(x)
            robustops.ops.per_sample_norm(x)
            robustops.ops.spatial_pyramid_pool(x, (1, 2))
    assert len(_fallback_warnings(record)) == 3, _fallback_warnings(record)


def test_kernels_disabled_warns_once_inside_and_restores_the_memo():
    x = torch.randn(8, dtype=torch.float64)
    before = set(_extension._WARNED)
    for _ in range(2):  # the memo is cleared on entry: the first call inside warns every time
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            with _extension.kernels_disabled("rbf"):
                robustops.ops.rbf(x)
                robustops.ops.rbf(x)  # once per (op, device)
        assert len(_fallback_warnings(record)) == 1, _fallback_warnings(record)
        assert _extension._WARNED == before


def test_kernels_disabled_restores_after_an_exception():
    kernels, warned = dict(_extension._COMPILED), set(_extension._WARNED)
    with pytest.raises(KeyError, match="boom"):
        with _extension.kernels_disabled("mrelu", "p4_filter"):
            with pytest.warns(robustops.FallbackWarning):
                robustops.ops.mrelu(torch.zeros(3))
            raise KeyError("boom")
    assert _extension._COMPILED == kernels and _extension._WARNED == warned
    assert robustops.ops.saf._mrelu.has_kernel("cpu")


def test_kernels_disabled_rejects_an_unknown_op():
    kernels = dict(_extension._COMPILED)
    with pytest.raises(ValueError, match=r"kernels_disabled: no op named \['mrleu'\]"):
        with _extension.kernels_disabled("mrelu", "mrleu"):
            pass
    assert _extension._COMPILED == kernels


def test_compiled_function_follows_kernels_disabled():
    """torch.compile guards on the kernel table: a function compiled with the kernels
    is recompiled inside kernels_disabled (the reference), and again after."""
    torch._dynamo.reset()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)

    def f(x):
        return robustops.ops.spatial_pyramid_pool(robustops.ops.mrelu(x), (1, 2))

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, fullgraph=True, backend=counter)
    want = f(x)
    assert_close(compiled(x), want)
    assert counter.frame_count == 1
    with _extension.kernels_disabled():
        with warnings.catch_warnings():
            warnings.simplefilter("error", robustops.FallbackWarning)  # none while compiling
            assert_close(compiled(x), want)
    assert counter.frame_count == 2
    assert_close(compiled(x), want)
    assert counter.frame_count == 2  # the first graph again


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
