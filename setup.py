"""Build of robustops and its compiled kernels, robustops._C.

CPU kernels are always built. CUDA kernels are built when the installed torch has
CUDA and nvcc is found, or when FORCE_CUDA=1 (which fails with a clear message if
they cannot be built). TORCH_CUDA_ARCH_LIST and MAX_JOBS are honoured, ninja is used.
Install with `pip install --no-build-isolation .` so that the build uses the torch
that is installed.

tools/check_cuda_compile.py imports this file for `cuda_sources()` and
`nvcc_flags()`, so that the CUDA compile check uses exactly the flags of the build.
"""

import glob
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")


def _sources(pattern):
    # Sorted, relative to the project root, so that builds are reproducible.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(CSRC, pattern)))


def cpu_sources():
    # ops.cpp, the device-generic (composite) ops, the C++ autograd and the CPU kernels
    return (_sources("ops.cpp") + _sources(os.path.join("composite", "*.cpp"))
            + _sources(os.path.join("autograd", "*.cpp")) + _sources(os.path.join("cpu", "*.cpp")))


def cuda_sources():
    return _sources(os.path.join("cuda", "*.cu"))


def include_dirs():
    return [os.path.join(CSRC, "include")]


def cxx_flags():
    # -fopenmp: at::parallel_for is inline and runs serially unless compiled with
    # OpenMP (torch's CPU builds use the OpenMP backend and ship libgomp).
    # -fno-trapping-math: lets gcc if-convert (and so vectorize) loops whose selects
    # compare floats; it changes no result, only whether FP exception flags may be
    # raised speculatively, which PyTorch never reads. (-ffast-math would change
    # results: NaN and infinity handling.)
    return ["-O3", "-fvisibility=hidden", "-fopenmp", "-fno-trapping-math"]


def link_flags():
    return ["-fopenmp"]


def nvcc_flags():
    """nvcc flags beyond torch's own (torch adds -gencode per TORCH_CUDA_ARCH_LIST)."""
    return ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]


def _env_flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _say(msg):
    print(f"robustops setup: {msg}", file=sys.stderr, flush=True)


def _cuda_arch_macro(arch_flags):
    # "-gencode=arch=compute_90,code=sm_90" -> "sm_90"; PTX entries -> "compute_90".
    # Joined with "/": nvcc would split a -D value at commas.
    archs = []
    for flag in arch_flags:
        code = flag.split("code=")[-1].strip("[]")
        for part in code.split(","):
            if part and part not in archs:
                archs.append(part)
    return "/".join(archs)


def extensions():
    import torch
    from torch.utils import cpp_extension

    want_cuda = _env_flag("FORCE_CUDA")
    torch_has_cuda = torch.version.cuda is not None
    nvcc = shutil.which("nvcc") or (
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc") if cpp_extension.CUDA_HOME else None
    )
    with_cuda = bool(cuda_sources()) and (want_cuda or (torch_has_cuda and nvcc is not None))
    if with_cuda and not torch_has_cuda:
        raise RuntimeError(
            "robustops setup: FORCE_CUDA=1 but the installed torch "
            f"{torch.__version__} is a CPU build: CUDA kernels can only be linked against a "
            "CUDA build of torch. Install one, or unset FORCE_CUDA to build the CPU kernels "
            "(tools/check_cuda_compile.py compiles the CUDA sources without linking)."
        )
    if with_cuda and nvcc is None:
        raise RuntimeError(
            "robustops setup: FORCE_CUDA=1 but nvcc was not found on PATH or in CUDA_HOME."
        )

    define_macros = []
    sources = cpu_sources()
    extra = {"cxx": cxx_flags()}
    if with_cuda:
        arch_flags = cpp_extension._get_cuda_arch_flags()
        cuda_version = torch.version.cuda
        define_macros += [
            ("ROBUSTOPS_WITH_CUDA", None),
            ("ROBUSTOPS_CUDA_ARCHS", _cuda_arch_macro(arch_flags)),
            ("ROBUSTOPS_CUDA_VERSION", cuda_version),
        ]
        sources += cuda_sources()
        extra["nvcc"] = nvcc_flags()
        _say(f"building CPU and CUDA kernels (CUDA {cuda_version}, "
             f"{_cuda_arch_macro(arch_flags)}): {', '.join(sources)}")
        ext_cls = cpp_extension.CUDAExtension
    else:
        reason = (
            "torch is a CPU build" if not torch_has_cuda else "nvcc was not found"
        )
        _say(f"building CPU kernels only ({reason}; set FORCE_CUDA=1 to require CUDA): "
             f"{', '.join(sources)}")
        ext_cls = cpp_extension.CppExtension
    return [
        ext_cls(
            name="robustops._C",
            sources=sources,
            include_dirs=include_dirs(),
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=link_flags(),
        )
    ]


if __name__ == "__main__":
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension

    setup(
        ext_modules=extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )
