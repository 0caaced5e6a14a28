// Symmetric activation functions: CPU kernels (math in include/robustops/saf.h).
#include <torch/library.h>

#include <robustops/cpu_loops.h>
#include <robustops/elementwise.h>
#include <robustops/saf.h>

namespace robustops {

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  m.impl("mrelu", &unary_op<cpu::Backend, saf::MReluForward>);
  m.impl("_mrelu_backward", &unary_backward_op<cpu::Backend, saf::MReluBackward>);
  m.impl("rbf", &unary_op<cpu::Backend, saf::RbfForward>);
  m.impl("_rbf_backward", &unary_backward_op<cpu::Backend, saf::RbfBackward>);
}

}  // namespace robustops
