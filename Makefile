# robustops: `make test` and `make bench` do all set-up on a fresh machine.
#
#   make test        install (torch, the package, test tools), compile-check the CUDA
#                    sources with nvcc, build the CPU execution lane of the CUDA
#                    sources, run the tests (the CUDA kernels among them, on the CPU)
#   make bench       install, run the quick benchmark suite (BENCH_ARGS=--full for all)
#   make install     only the set-up
#   make lint        only the lint: ruff check (pyproject.toml) and clang-format
#                    (.clang-format) of csrc; make test runs it
#   make check-cuda  only the nvcc compile check (fails on any error)
#   make cuda-sim    only the CPU execution lane of the CUDA sources (test only)
#   make gpu-check   on a machine with an NVIDIA GPU: a CUDA build, every test with the
#                    CUDA cases, the quick benchmarks on the GPU (bench/results/cuda.*)

PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch: a plain `pip install torch` would pull several GB of CUDA
# packages onto a CPU machine. An installed torch (a CUDA build on a GPU machine, say)
# is kept as it is.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_ARGS ?=

STAMPS := .stamps
SOURCES := setup.py pyproject.toml $(shell find csrc -type f | sort)

.PHONY: install lint format test bench check-cuda cuda-sim gpu-check clean

install: $(STAMPS)/deps $(STAMPS)/build

$(STAMPS)/deps: pyproject.toml
	@mkdir -p $(STAMPS)
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q ninja numpy tqdm pytest pytest-xdist matplotlib setuptools wheel opencv-python-headless scikit-image ruff clang-format==18.1.8
	@touch $@

$(STAMPS)/build: $(STAMPS)/deps $(SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

$(STAMPS)/check-cuda: $(STAMPS)/deps $(SOURCES) tools/check_cuda_compile.py
	$(PYTHON) tools/check_cuda_compile.py
	@touch $@

check-cuda: $(STAMPS)/check-cuda

# The CUDA sources compiled by the host compiler against the CPU execution model
# (csrc/include/robustops/sim/cuda_sim.h): the tests in tests/cuda_sim run every CUDA
# kernel with it, on this CPU.
$(STAMPS)/cuda-sim: $(STAMPS)/deps $(SOURCES) tools/build_cuda_sim.py
	$(PYTHON) tools/build_cuda_sim.py
	@touch $@

cuda-sim: $(STAMPS)/cuda-sim

# ruff (configured in pyproject.toml) and clang-format (.clang-format, the version pinned
# above: another version formats differently): a fast lint that fails the tests.
# `make format` applies clang-format to csrc.
CSRC_FORMATTED := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' | sort)
# the pinned wheel's own binary, whatever clang-format comes first on the PATH (and
# with no console-script shim needed)
CLANG_FORMAT = $(PYTHON) -c "import clang_format; clang_format.clang_format()"

lint: $(STAMPS)/deps
	$(PYTHON) -m ruff check robustops tests bench tools setup.py
	$(CLANG_FORMAT) --dry-run -Werror $(CSRC_FORMATTED)

format: $(STAMPS)/deps
	$(CLANG_FORMAT) -i $(CSRC_FORMATTED)

test: lint install check-cuda cuda-sim
	ROBUSTOPS_REQUIRE_CUDA_SIM=1 $(PYTHON) -m pytest -n 2 $(PYTEST_ARGS)

gpu-check: $(STAMPS)/deps
	$(PYTHON) tools/gpu_check.py

bench: install
	$(PYTHON) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(STAMPS) build robustops/_C*.so *.egg-info

# The API reference, generated from the docstrings (Sphinx autodoc + napoleon, Google
# style) into docs/_build/html; warnings are errors, and -E reads every page afresh (a
# kept environment would skip the pages whose warnings failed the last build). Sphinx
# is the optional extra robustops[docs], installed here when missing; make test does
# not need it (tests/test_docstrings.py checks the docstrings without it).
.PHONY: docs
docs:
	$(PYTHON) -c "import sphinx" 2>/dev/null || $(PIP) install -q sphinx
	$(PYTHON) -m sphinx -E -W --keep-going -b html docs docs/_build/html
