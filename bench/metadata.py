"""The facts of a run's environment, recorded in its JSON and shown in its report:
versions, commit, extension and compiler flags, CPU, threads, huge pages
(``collect_metadata``), and how busy other processes kept the machine (``CpuLoad``).
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import torch

from bench.cases import ROOT, Config, dtype_name


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _compile_flags(info: dict) -> dict:
    """The extension's compiler flags. extension_info() records the CUDA archs and
    version it was built with; the extra compiler flags come from setup.py (the
    file the build used, read again here)."""
    flags: dict[str, Any] = {
        "cuda_archs": info.get("cuda_archs"),
        "cuda_version": info.get("cuda_version"),
        "torch_version_built": info.get("torch_version_built"),
    }
    try:
        spec = importlib.util.spec_from_file_location("robustops_setup", ROOT / "setup.py")
        setup = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(setup)  # setup() itself only runs under __main__
        flags["cxx"] = setup.cxx_flags()
        flags["nvcc"] = setup.nvcc_flags()
        flags["flags_source"] = "setup.py cxx_flags()/nvcc_flags() (extra to torch's own)"
    except Exception as e:  # noqa: BLE001
        flags["flags_source"] = f"unavailable: {type(e).__name__}: {e}"
    return flags


def _git_commit() -> Optional[str]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


class CpuLoad:
    """How busy the machine was with other processes while we ran: from
    /proc/stat (all CPUs) minus this process's own CPU time and its waited-for
    children's. Benchmarks on a shared machine are only as good as this is small."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> Optional[tuple[float, float, float]]:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle, iowait
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, own

    def others_now(self, seconds: float = 1.0) -> Optional[float]:
        """The share of the CPUs other processes use over the next ``seconds``."""
        a = self._sample()
        time.sleep(seconds)
        b = self._sample()
        if a is None or b is None:
            return None
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / ((b[0] - a[0]) * (os.cpu_count() or 1))

    def summary(self) -> dict:
        end = self._sample()
        out: dict[str, Any] = {"loadavg_end": _read("/proc/loadavg")}
        if self._start is None or end is None:
            return out
        wall = end[0] - self._start[0]
        others = max(0.0, (end[1] - self._start[1]) - (end[2] - self._start[2]))
        cpus = os.cpu_count() or 1
        out.update(wall_s=round(wall, 1), other_processes_cpu_s=round(others, 1),
                   other_processes_share=round(others / (wall * cpus), 3) if wall > 0 else None)
        return out


def collect_metadata(config: Config) -> dict:
    import robustops

    info = robustops.extension_info()
    dev = config.device
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "suite": config.suite,
        "device": dev.type,
        "sizes": list(config.sizes),
        "dtypes": [dtype_name(d) for d in config.dtypes],
        "min_run_time_s": config.min_run_time,
        "torch_version": torch.__version__,
        "robustops_version": robustops.__version__,
        "robustops_commit": _git_commit(),
        "extension_info": info,
        "compile_flags": _compile_flags(info),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "num_threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k) for k in ("THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS",
                                               "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
        "loadavg_start": _read("/proc/loadavg"),
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
    }
    if dev.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(dev)
        meta["cuda_runtime"] = torch.version.cuda
    return meta
