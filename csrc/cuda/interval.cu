// Interval bound propagation: CUDA kernels of the fused interval activations
// (math in include/robustops/interval.h).
#include <torch/library.h>

#include <robustops/cuda_loops.cuh>
#include <robustops/elementwise.h>
#include <robustops/interval.h>

namespace robustops {

using namespace interval;

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("interval_relu", &to_pair_op<cuda::Backend, Forward<Relu>>);
  m.impl("_interval_relu_backward", &to_pair_backward_op<cuda::Backend, Backward<Relu>>);
  m.impl("interval_mrelu", &to_pair_op<cuda::Backend, Forward<MRelu>>);
  m.impl("_interval_mrelu_backward", &to_pair_backward_op<cuda::Backend, Backward<MRelu>>);
  m.impl("interval_rbf", &to_pair_op<cuda::Backend, Forward<Rbf>>);
  m.impl("_interval_rbf_backward", &to_pair_backward_op<cuda::Backend, Backward<Rbf>>);
}

}  // namespace robustops
