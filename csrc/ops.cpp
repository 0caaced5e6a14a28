// The table of contents of robustops: every op's schema, in one TORCH_LIBRARY block.
// Kernels live in cpu/<family>.cpp and cuda/<family>.cu (TORCH_LIBRARY_IMPL per
// device), or in composite/<family>.cpp for ops made of ATen ops on any device
// (CompositeExplicitAutograd); autograd and fake kernels are registered from Python in
// robustops/ops/<family>.py, except the p4 filter transform's autograd, which is in
// autograd/p4.cpp (its per-call cost matters). A backward is a private op named
// _<op>_backward.
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

TORCH_LIBRARY(robustops, m) {
  // saf: symmetric activation functions
  m.def("mrelu(Tensor x) -> Tensor");
  m.def("_mrelu_backward(Tensor grad, Tensor x) -> Tensor");
  m.def("rbf(Tensor x) -> Tensor");
  m.def("_rbf_backward(Tensor grad, Tensor x) -> Tensor");

  // bang: per-sample gradient norms and BANG's per-sample scaling
  m.def("per_sample_norm(Tensor x) -> Tensor");
  m.def("bang_eta(Tensor norms, Tensor eps, Tensor? max_norm=None) -> Tensor");
  m.def("bang_scale(Tensor grad, Tensor eps, Tensor? max_norm=None) -> (Tensor, Tensor)");

  // interval: interval bound propagation in center/radius form
  m.def("interval_relu(Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def("_interval_relu_backward(Tensor grad_center, Tensor grad_radius, Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def("interval_mrelu(Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def("_interval_mrelu_backward(Tensor grad_center, Tensor grad_radius, Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def("interval_rbf(Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def("_interval_rbf_backward(Tensor grad_center, Tensor grad_radius, Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def("interval_linear(Tensor center, Tensor radius, Tensor weight, Tensor? bias=None) -> (Tensor, Tensor)");
  m.def("interval_conv2d(Tensor center, Tensor radius, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, int[2] dilation=1, int groups=1) -> (Tensor, Tensor)");
  // CROWN: back-substitution through an activation's linear relaxation (crown.h)
  m.def("crown_relax(Tensor a, Tensor lower_slope, Tensor lower_intercept, Tensor upper_slope, Tensor upper_intercept) -> (Tensor, Tensor)");
  m.def("_crown_relax_backward(Tensor grad_a, Tensor grad_d, Tensor a, Tensor lower_slope, Tensor lower_intercept, Tensor upper_slope, Tensor upper_intercept) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // p4: the filter transform of p4 group convolutions and its adjoint (p4.h)
  m.def("p4_filter(Tensor weight) -> Tensor");
  m.def("_p4_filter_backward(Tensor grad, int in_rotations) -> Tensor");
  // spp: spatial pyramid pooling, every level in one pass (spp.h)
  m.def("spp_max(Tensor x, int[] levels) -> (Tensor, Tensor)");
  m.def("_spp_max_backward(Tensor grad, Tensor indices, int[] levels, int height, int width) -> Tensor");
  m.def("spp_mean(Tensor x, int[] levels) -> Tensor");
  m.def("_spp_mean_backward(Tensor grad, int[] levels, int height, int width) -> Tensor");
}

// robustops._C is a Python module only so that `import robustops._C` loads the
// library above; it carries the build facts that robustops.extension_info() reports.
#define ROBUSTOPS_STR_(...) #__VA_ARGS__
#define ROBUSTOPS_STR(...) ROBUSTOPS_STR_(__VA_ARGS__)

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "robustops compiled kernels", -1, nullptr};
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
