// Interval bound propagation: CUDA kernels of the fused interval activations (math in
// include/robustops/interval.h, the op list in include/robustops/elementwise_families.h).
#include <torch/library.h>

#include <robustops/cuda_loops.cuh>
#include <robustops/elementwise_families.h>

namespace robustops {

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  register_interval<cuda::Backend>(m);
}

}  // namespace robustops
