"""Build the CPU execution lane of the CUDA sources: a test-only shared library.

Every csrc/cuda/*.cu is compiled, unchanged, by the host C++ compiler with
ROBUSTOPS_CUDA_SIM defined: robustops/cuda_runtime.cuh then takes the CUDA execution
model from robustops/sim/cuda_sim.h (the threads of a block on CPU threads with a
real barrier, blocks in a shuffled order) and registers the CUDA host functions as
CPU kernels of the namespace robustops_cuda_sim (csrc/sim/module.cpp holds its
schemas). The tests load the library with torch.ops.load_library and compare
torch.ops.robustops_cuda_sim.* with the CPU kernels and the references. The package
and its dispatch are untouched.

    python tools/build_cuda_sim.py [--out build/cuda_sim] [--jobs N]

prints the library's path; `make test` builds it once per source change.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import os
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
LIBRARY = "robustops_cuda_sim" + (sysconfig.get_config_var("SHLIB_SUFFIX") or ".so")


def sources():
    return sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu"))) + [os.path.join(CSRC, "sim", "module.cpp")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "cuda_sim"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    import torch
    from torch.utils import cpp_extension

    os.makedirs(args.out, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    flags = ["-std=c++20", "-O1", "-fPIC", "-pthread", "-DROBUSTOPS_CUDA_SIM",
             f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
             f"-I{os.path.join(CSRC, 'include')}"] + [f"-I{d}" for d in cpp_extension.include_paths()]

    # an object is rebuilt when its source or any header is newer (the headers are few)
    headers = max((os.path.getmtime(h) for h in glob.glob(os.path.join(CSRC, "include", "**", "*"), recursive=True)
                   if os.path.isfile(h)), default=0.0)

    def compile_one(src):
        obj = os.path.join(args.out, os.path.basename(src) + ".o")
        lang = ["-x", "c++"] if src.endswith(".cu") else []
        start = time.perf_counter()
        if os.path.exists(obj) and os.path.getmtime(obj) > max(os.path.getmtime(src), headers):
            return src, obj, subprocess.CompletedProcess([], 0, "", ""), 0.0
        proc = subprocess.run([cxx, *lang, "-c", src, "-o", obj, *flags], capture_output=True, text=True)
        return src, obj, proc, time.perf_counter() - start

    print(f"build_cuda_sim: {cxx}, torch {torch.__version__}, {len(sources())} sources", flush=True)
    objects, failed = [], 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for src, obj, proc, seconds in pool.map(compile_one, sources()):
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(f"  {os.path.relpath(src, ROOT)}: {status} in {seconds:.0f} s", flush=True)
            if proc.returncode != 0:
                failed += 1
                print(proc.stdout + proc.stderr, flush=True)
            objects.append(obj)
    if failed:
        print(f"build_cuda_sim: {failed} compile(s) failed", file=sys.stderr)
        return 1
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    library = os.path.join(args.out, LIBRARY)
    link = [cxx, "-shared", "-pthread", *objects, "-o", library, f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}",
            "-lc10", "-ltorch_cpu", "-ltorch"]
    proc = subprocess.run(link, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return 1
    print(library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
