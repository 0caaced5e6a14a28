// Symmetric activation functions: CUDA kernels (math in include/robustops/saf.h).
#include <torch/library.h>

#include <robustops/cuda_loops.cuh>
#include <robustops/elementwise.h>
#include <robustops/saf.h>

namespace robustops {

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("mrelu", &unary_op<cuda::Backend, saf::MReluForward>);
  m.impl("_mrelu_backward", &unary_backward_op<cuda::Backend, saf::MReluBackward>);
  m.impl("rbf", &unary_op<cuda::Backend, saf::RbfForward>);
  m.impl("_rbf_backward", &unary_backward_op<cuda::Backend, saf::RbfBackward>);
}

}  // namespace robustops
