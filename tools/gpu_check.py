"""One command for the day a GPU is lent: `make gpu-check` (or python tools/gpu_check.py).

On a machine with an NVIDIA GPU and a CUDA build of torch it
  1. builds robustops with FORCE_CUDA=1 for the local GPU's architecture
     (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability), MAX_JOBS = the CPUs;
  2. checks that the build has CUDA kernels (robustops.extension_info());
  3. runs the whole test suite with the CUDA tests enabled (pytest -n, a JUnit report);
  4. runs the quick benchmark suite on the GPU (python -m bench.run --device cuda:
     synchronized timing, the card's own copy_ bandwidth as the elementwise limit),
     which writes bench/results/cuda.{json,md,png};
and prints one summary line per op family and a verdict. It exits non-zero on any
failure, and at once, with a message that says what is missing, without a GPU.

    python tools/gpu_check.py [--skip-build] [--skip-bench] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("saf", "bang", "interval", "crown", "p4", "spp")
JUNIT = os.path.join(ROOT, "build", "gpu_check", "pytest.xml")


def _gpu_or_exit() -> str:
    try:
        import torch
    except ImportError:
        sys.exit("gpu-check: torch is not installed (make install, with a CUDA build of torch)")
    if torch.version.cuda is None:
        sys.exit(f"gpu-check: needs a CUDA build of torch and an NVIDIA GPU; torch {torch.__version__} here "
                 "is a CPU build. The CUDA kernels still compile (make check-cuda) and run on the CPU "
                 "(make cuda-sim; tests/cuda_sim) without one.")
    if not torch.cuda.is_available():
        sys.exit(f"gpu-check: torch {torch.__version__} is built with CUDA {torch.version.cuda}, but no GPU "
                 "is visible (nvidia-smi; CUDA_VISIBLE_DEVICES)")
    major, minor = torch.cuda.get_device_capability(0)
    print(f"gpu-check: {torch.cuda.get_device_name(0)} (sm_{major}{minor}), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    return f"{major}.{minor}"


def _run(step: str, cmd, env=None) -> float:
    print(f"gpu-check: {step}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"gpu-check: {step} failed (exit {rc}) after {seconds:.0f} s")
    print(f"gpu-check: {step}: ok in {seconds:.0f} s", flush=True)
    return seconds


def family_summary(junit: str) -> dict:
    """{family: {passed, failed, skipped, cuda}} from a pytest JUnit report, by the
    family named in each test's file or test name."""
    counts = {f: dict(passed=0, failed=0, skipped=0, cuda=0) for f in FAMILIES + ("other",)}
    for case in ET.parse(junit).getroot().iter("testcase"):
        where = (case.get("classname", "") + "." + case.get("name", "")).lower()
        family = next((f for f in FAMILIES if f in where), "other")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        counts[family][outcome] += 1
        counts[family]["cuda"] += "cuda" in case.get("name", "") and outcome == "passed"
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-build", action="store_true", help="use the installed build")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    arch = _gpu_or_exit()
    start = time.perf_counter()
    py = sys.executable
    if not args.skip_build:
        env = dict(os.environ, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(args.jobs))
        _run("build", [py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", "."], env)
    check = ("import robustops, sys; i = robustops.extension_info(); print(i); "
             "sys.exit(0 if i['loaded'] and i['cuda_kernels'] else 1)")
    _run("the build has CUDA kernels", [py, "-c", check])
    os.makedirs(os.path.dirname(JUNIT), exist_ok=True)
    workers = str(max(1, min(8, args.jobs // 2)))
    tests_rc = subprocess.run([py, "-m", "pytest", "-q", "-n", workers, f"--junitxml={JUNIT}"], cwd=ROOT).returncode
    bench_rc = 0
    if not args.skip_bench:
        bench_rc = subprocess.run([py, "-m", "bench.run", "--device", "cuda"], cwd=ROOT).returncode
    print("\ngpu-check summary")
    if os.path.exists(JUNIT):
        for family, c in family_summary(JUNIT).items():
            print(f"  {family:9s} tests: {c['passed']} passed ({c['cuda']} on CUDA), {c['failed']} failed, "
                  f"{c['skipped']} skipped")
    print(f"  tests: {'ok' if tests_rc == 0 else f'FAILED (exit {tests_rc})'}; bench: "
          + ("skipped" if args.skip_bench else "ok, bench/results/cuda.{json,md,png}" if bench_rc == 0
             else f"FAILED (exit {bench_rc})")
          + f"; {time.perf_counter() - start:.0f} s")
    return 0 if tests_rc == 0 and bench_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
