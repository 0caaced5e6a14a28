"""pytest's hooks for the robustops tests: CUDA cases skipped without a GPU, and the
run's summary lines (the soundness points, the CUDA lane's cases). The shared
helpers are in tests/common.py."""

from __future__ import annotations

import pytest

from tests.common import HAS_CUDA


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
