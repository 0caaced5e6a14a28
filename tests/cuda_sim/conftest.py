"""The CPU execution lane of the CUDA sources (tools/build_cuda_sim.py): the library
is loaded once; without it the lane's tests skip, unless ROBUSTOPS_REQUIRE_CUDA_SIM=1
(`make test` builds it and sets that), when its absence is an error."""

from __future__ import annotations

import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _library() -> str:
    import sysconfig

    suffix = sysconfig.get_config_var("SHLIB_SUFFIX") or ".so"
    return os.environ.get("ROBUSTOPS_CUDA_SIM_LIBRARY",
                          os.path.join(ROOT, "build", "cuda_sim", "robustops_cuda_sim" + suffix))


@pytest.fixture(scope="session")
def sim():
    """torch.ops.robustops_cuda_sim: the CUDA host functions and kernels, run on CPU threads."""
    path = _library()
    if not os.path.exists(path):
        if os.environ.get("ROBUSTOPS_REQUIRE_CUDA_SIM", "0") not in ("", "0"):
            raise FileNotFoundError(f"the CUDA execution lane {path} was not built: run "
                                    "python tools/build_cuda_sim.py (make test does)")
        pytest.skip("the CUDA execution lane is not built (python tools/build_cuda_sim.py)")
    if not hasattr(torch.ops, "robustops_cuda_sim") or not hasattr(torch.ops.robustops_cuda_sim, "mrelu"):
        torch.ops.load_library(path)
    return torch.ops.robustops_cuda_sim


@pytest.fixture(params=[None, 3], ids=["grid=full", "grid<=3"])
def grid_cap(request, monkeypatch):
    """Every case twice: with the kernels' own grids, and with every grid dimension
    capped at 3 blocks, so that small inputs run the grid-stride loops."""
    if request.param is None:
        monkeypatch.delenv("ROBUSTOPS_CUDA_SIM_MAX_BLOCKS", raising=False)
    else:
        monkeypatch.setenv("ROBUSTOPS_CUDA_SIM_MAX_BLOCKS", str(request.param))
    return request.param
