// The table of contents of robustops: every op's schema (robustops/schemas.h), in one
// TORCH_LIBRARY block.
// Kernels live in cpu/<family>.cpp and cuda/<family>.cu (TORCH_LIBRARY_IMPL per
// device), or in composite/<family>.cpp for ops made of ATen ops on any device
// (CompositeExplicitAutograd); autograd and fake kernels are registered from Python in
// robustops/ops/<family>.py, except the p4 filter transform's autograd, which is in
// autograd/p4.cpp (its per-call cost matters). A backward is a private op named
// _<op>_backward.
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#include <robustops/schemas.h>

TORCH_LIBRARY(robustops, m) {
  robustops::define_schemas(m);
}

// robustops._C is a Python module only so that `import robustops._C` loads the
// library above; it carries the build facts that robustops.extension_info() reports.
#define ROBUSTOPS_STR_(...) #__VA_ARGS__
#define ROBUSTOPS_STR(...) ROBUSTOPS_STR_(__VA_ARGS__)

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "robustops compiled kernels", -1, nullptr};
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) {
    return nullptr;
  }
  PyModule_AddStringConstant(m, "torch_version", TORCH_VERSION);
#ifdef ROBUSTOPS_WITH_CUDA
  PyModule_AddIntConstant(m, "with_cuda", 1);
  PyModule_AddStringConstant(m, "cuda_archs", ROBUSTOPS_STR(ROBUSTOPS_CUDA_ARCHS));
  PyModule_AddStringConstant(m, "cuda_version", ROBUSTOPS_STR(ROBUSTOPS_CUDA_VERSION));
#else
  PyModule_AddIntConstant(m, "with_cuda", 0);
  PyModule_AddStringConstant(m, "cuda_archs", "");
  PyModule_AddStringConstant(m, "cuda_version", "");
#endif
  return m;
}
}
