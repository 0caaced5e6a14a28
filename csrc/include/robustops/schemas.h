// Every op's schema: the table of contents of robustops (csrc/ops.cpp registers them
// as the robustops namespace; the CPU execution lane of the CUDA sources, a test-only
// module, registers the same schemas as robustops_cuda_sim).
#pragma once

#include <torch/library.h>

namespace robustops {

// Shape-like arguments (a convolution's stride, padding, dilation and groups; the
// pyramid's levels; a backward's output height, width and rotations) are SymInt, as
// ATen's and torchvision's schemas, so torch.compile(dynamic=True) keeps them symbolic
// instead of specializing (and recompiling) on each value. Kernels that run on real
// tensors take them as int64_t / IntArrayRef; the dispatcher converts.
inline void define_schemas(torch::Library& m) {
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
  m.def(
      "_interval_relu_backward(Tensor grad_center, Tensor grad_radius, Tensor center, Tensor radius) -> (Tensor, "
      "Tensor)");
  m.def("interval_mrelu(Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def(
      "_interval_mrelu_backward(Tensor grad_center, Tensor grad_radius, Tensor center, Tensor radius) -> (Tensor, "
      "Tensor)");
  m.def("interval_rbf(Tensor center, Tensor radius) -> (Tensor, Tensor)");
  m.def(
      "_interval_rbf_backward(Tensor grad_center, Tensor grad_radius, Tensor center, Tensor radius) -> (Tensor, "
      "Tensor)");
  m.def("interval_linear(Tensor center, Tensor radius, Tensor weight, Tensor? bias=None) -> (Tensor, Tensor)");
  m.def(
      "interval_conv2d(Tensor center, Tensor radius, Tensor weight, Tensor? bias=None, SymInt[2] stride=1, SymInt[2] "
      "padding=0, SymInt[2] dilation=1, SymInt groups=1) -> (Tensor, Tensor)");
  // CROWN: back-substitution through an activation's linear relaxation (crown.h)
  m.def(
      "crown_relax(Tensor a, Tensor lower_slope, Tensor lower_intercept, Tensor upper_slope, Tensor upper_intercept) "
      "-> (Tensor, Tensor)");
  m.def(
      "_crown_relax_backward(Tensor grad_a, Tensor grad_d, Tensor a, Tensor lower_slope, Tensor lower_intercept, "
      "Tensor upper_slope, Tensor upper_intercept) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("crown_relu(Tensor a, Tensor lower, Tensor upper) -> (Tensor, Tensor)");
  m.def(
      "_crown_relu_backward(Tensor grad_a, Tensor grad_d, Tensor a, Tensor lower, Tensor upper) -> (Tensor, Tensor, "
      "Tensor)");

  // p4: the filter transform of p4 group convolutions and its adjoint (p4.h)
  m.def("p4_filter(Tensor weight) -> Tensor");
  m.def("_p4_filter_backward(Tensor grad, SymInt in_rotations) -> Tensor");
  // spp: spatial pyramid pooling, every level in one pass (spp.h)
  m.def("spp_max(Tensor x, SymInt[] levels) -> (Tensor, Tensor)");
  m.def("_spp_max_backward(Tensor grad, Tensor indices, SymInt[] levels, SymInt height, SymInt width) -> Tensor");
  m.def("spp_mean(Tensor x, SymInt[] levels) -> Tensor");
  m.def("_spp_mean_backward(Tensor grad, SymInt[] levels, SymInt height, SymInt width) -> Tensor");
}

}  // namespace robustops
