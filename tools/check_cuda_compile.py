"""Compile every CUDA source of robustops with nvcc, without a GPU or a CUDA torch.

CI runs on machines with nvcc but a CPU build of torch, which cannot link CUDA
kernels. This check compiles each csrc/cuda/*.cu (kernels and their dispatcher
registration) to an object file for every architecture asked for (default sm_80 and
sm_90), and compiles csrc/ops.cpp with the defines of a CUDA build, so that no line
that only a CUDA build sees goes uncompiled. It fails on any compile error.

The CPU wheel of torch ships the c10/ATen CUDA headers but not the generated
c10/cuda/impl/cuda_cmake_macros.h; the check supplies it from a temporary directory
(a CUDA build of torch has the same one line in it).

    python tools/check_cuda_compile.py [--arch 80 --arch 90] [--jobs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_setup():
    spec = importlib.util.spec_from_file_location("robustops_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself only runs under __main__
    return module


def _cuda_home(nvcc: str) -> str:
    from torch.utils import cpp_extension

    for candidate in (os.environ.get("CUDA_HOME"), cpp_extension.CUDA_HOME, "/usr/local/cuda"):
        if candidate and os.path.isdir(os.path.join(candidate, "include")):
            return candidate
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def _run(cmd, label):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return label, proc.returncode, proc.stdout, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", default=None,
                        help="compute capability without the dot, e.g. 80 (repeatable; default 80 and 90)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", os.cpu_count() or 1)))
    parser.add_argument("--keep", default=None, help="write the object files here instead of a temp dir")
    args = parser.parse_args(argv)
    archs = args.arch or ["80", "90"]

    import torch
    from torch.utils import cpp_extension

    setup = _load_setup()
    sources = setup.cuda_sources()
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("check_cuda_compile: nvcc not found on PATH", file=sys.stderr)
        return 2
    if not sources:
        print("check_cuda_compile: no CUDA sources under csrc/cuda", file=sys.stderr)
        return 2
    cuda_home = _cuda_home(nvcc)

    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    arch_macro = setup._cuda_arch_macro(gencode)
    nvcc_version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    cuda_version = nvcc_version.rsplit("release ", 1)[-1].split(",")[0].strip()

    out_dir = args.keep or tempfile.mkdtemp(prefix="robustops-cuda-check-")
    os.makedirs(os.path.join(out_dir, "include", "c10", "cuda", "impl"), exist_ok=True)
    with open(os.path.join(out_dir, "include", "c10", "cuda", "impl", "cuda_cmake_macros.h"), "w") as f:
        f.write("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")

    includes = [f"-I{d}" for d in setup.include_dirs()]
    includes += [f"-I{d}" for d in cpp_extension.include_paths()]
    includes += [f"-I{os.path.join(cuda_home, 'include')}", f"-I{os.path.join(out_dir, 'include')}"]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    defines = [
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DTORCH_EXTENSION_NAME=_C",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-DROBUSTOPS_WITH_CUDA",
        f"-DROBUSTOPS_CUDA_ARCHS={arch_macro}",
        f"-DROBUSTOPS_CUDA_VERSION={cuda_version}",
    ]

    jobs = []
    threads_per_file = max(1, args.jobs // len(sources))
    for src in sources:
        obj = os.path.join(out_dir, os.path.basename(src) + ".o")
        cmd = ([nvcc, "-c", src, "-o", obj, "-std=c++20", "-Xcompiler", "-fPIC",
                "--threads", str(threads_per_file)]
               + cpp_extension.COMMON_NVCC_FLAGS + setup.nvcc_flags() + gencode
               + includes + defines)
        jobs.append((cmd, f"nvcc {src} ({', '.join('sm_' + a for a in archs)})"))
    # The host glue that only a CUDA build compiles: ops.cpp with the CUDA defines.
    cxx = os.environ.get("CXX", "c++")
    for src in setup.cpu_sources():
        if src.endswith("ops.cpp"):
            cmd = ([cxx, "-fsyntax-only", "-std=c++20", "-fPIC", src]
                   + setup.cxx_flags() + includes + defines
                   + [f"-I{d}" for d in _python_includes()])
            jobs.append((cmd, f"{cxx} {src} (CUDA build defines)"))

    print(f"check_cuda_compile: {nvcc} (CUDA {cuda_version}), torch {torch.__version__}, "
          f"{len(jobs)} compile(s), {args.jobs} job(s)", flush=True)
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(args.jobs, len(jobs)))) as pool:
        for label, rc, output, seconds in pool.map(lambda j: _run(*j), jobs):
            status = "ok" if rc == 0 else f"FAILED (exit {rc})"
            print(f"  {label}: {status} in {seconds:.0f} s", flush=True)
            if rc != 0:
                failed += 1
                print(output, flush=True)
    if not args.keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    if failed:
        print(f"check_cuda_compile: {failed} of {len(jobs)} compile(s) failed", file=sys.stderr)
        return 1
    print(f"check_cuda_compile: all {len(jobs)} compile(s) passed", flush=True)
    return 0


def _python_includes():
    import sysconfig

    return [sysconfig.get_paths()["include"]]


if __name__ == "__main__":
    sys.exit(main())
