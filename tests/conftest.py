"""Shared parametrization of the robustops tests: devices, dtypes, tolerances."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

# Every device the tests run on: CUDA tests are marked and skipped without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def tolerances(dtype: torch.dtype) -> dict:
    """Per-dtype tolerances for a result against an upcast (float64) reference that
    is rounded to the same dtype: one rounding step of that dtype, plus room for the
    float32 rounding of intermediates."""
    return {
        torch.float64: dict(rtol=1e-12, atol=1e-14),
        torch.float32: dict(rtol=2e-6, atol=1e-7),
        torch.float16: dict(rtol=1e-3, atol=1e-5),
        torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
    }[dtype]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


def pytest_terminal_summary(terminalreporter):
    """The number of points the soundness attack on the bounds checked
    (tests/bounds/test_soundness.py records them per test, also under xdist)."""
    points = tests = failed = 0
    for key in ("passed", "failed"):
        for report in terminalreporter.stats.get(key, []):
            if getattr(report, "when", "call") != "call":
                continue
            for name, value in getattr(report, "user_properties", []):
                if name == "soundness_points":
                    points += value
                    tests += 1
                    failed += key == "failed"
    lane = {key: sum(1 for r in terminalreporter.stats.get(key, [])
                     if getattr(r, "when", "call") in ("call", "setup") and "tests/cuda_sim/" in r.nodeid
                     and (key != "skipped" or r.when == "setup"))
            for key in ("passed", "failed", "skipped")}
    if any(lane.values()):
        terminalreporter.write_line(
            f"CUDA kernels in the CPU execution lane: {lane['passed']} cases passed, {lane['failed']} failed, "
            f"{lane['skipped']} skipped (tests/cuda_sim)")
    if tests:
        terminalreporter.write_line(f"soundness of the bounds: {points:,} points checked by {tests} tests, "
                                    f"{'no violations' if not failed else f'{failed} tests found violations'}")


def pytest_report_header(config):
    return "CUDA kernels: " + ("on the GPU" if HAS_CUDA else
                              "no GPU; tests/cuda_sim runs them on CPU threads (the CPU execution lane)")
