// The elementwise families' kernel tables, written once for both devices: each
// template registers every op of its family with the host functions of
// elementwise.h on one Backend (cpu::Backend from cpu_loops.h, cuda::Backend from
// cuda_loops.cuh), so that cpu/<family>.cpp and cuda/<family>.cu register with one
// line and a family's op list exists only here and in schemas.h.
#pragma once

#include <torch/library.h>

#include <robustops/elementwise.h>
#include <robustops/interval.h>
#include <robustops/saf.h>

namespace robustops {

// saf: mrelu, rbf and their backward ops.
template <typename Backend>
void register_saf(torch::Library& m) {
  m.impl("mrelu", &unary_op<Backend, saf::MReluForward>);
  m.impl("_mrelu_backward", &unary_backward_op<Backend, saf::MReluBackward>);
  m.impl("rbf", &unary_op<Backend, saf::RbfForward>);
  m.impl("_rbf_backward", &unary_backward_op<Backend, saf::RbfBackward>);
}

// interval: the fused interval activations and their backward ops (interval_linear
// and interval_conv2d are composite: composite/interval.cpp).
template <typename Backend>
void register_interval(torch::Library& m) {
  using namespace interval;
  m.impl("interval_relu", &to_pair_op<Backend, Forward<Relu>>);
  m.impl("_interval_relu_backward", &to_pair_backward_op<Backend, Backward<Relu>>);
  m.impl("interval_mrelu", &to_pair_op<Backend, Forward<MRelu>>);
  m.impl("_interval_mrelu_backward", &to_pair_backward_op<Backend, Backward<MRelu>>);
  m.impl("interval_rbf", &to_pair_op<Backend, Forward<Rbf>>);
  m.impl("_interval_rbf_backward", &to_pair_backward_op<Backend, Backward<Rbf>>);
}

}  // namespace robustops
