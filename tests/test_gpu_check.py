"""tools/gpu_check.py (make gpu-check): a clear failure without a GPU, and its
per-family summary of a JUnit report."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "gpu_check.py")


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: make gpu-check runs for real")
def test_without_a_gpu_it_fails_at_once_and_says_why():
    proc = subprocess.run([sys.executable, TOOL], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    why = "is a CPU build" if torch.version.cuda is None else "no GPU is visible"
    assert why in proc.stderr and "gpu-check:" in proc.stderr
    assert "build" not in proc.stdout  # nothing was started


def test_family_summary(tmp_path):
    junit = tmp_path / "pytest.xml"
    junit.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.ops.test_saf" name="test_against_reference[cuda-float32]"/>'
        '<testcase classname="tests.ops.test_saf" name="test_against_reference[cpu-float32]"/>'
        '<testcase classname="tests.ops.test_bang" name="test_x[cuda]"><failure message="x"/></testcase>'
        '<testcase classname="tests.ops.test_p4" name="test_y[cuda]"><skipped message="s"/></testcase>'
        '<testcase classname="tests.test_readme" name="test_z"/>'
        '</testsuite></testsuites>')
    counts = _tool().family_summary(str(junit))
    assert counts["saf"] == dict(passed=2, failed=0, skipped=0, cuda=1)
    assert counts["bang"]["failed"] == 1 and counts["p4"]["skipped"] == 1
    assert counts["other"]["passed"] == 1
