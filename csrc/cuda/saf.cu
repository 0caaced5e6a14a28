// Symmetric activation functions: CUDA kernels (math in include/robustops/saf.h, the
// op list in include/robustops/elementwise_families.h).
#include <torch/library.h>

#include <robustops/cuda_loops.cuh>
#include <robustops/elementwise_families.h>

namespace robustops {

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  register_saf<cuda::Backend>(m);
}

}  // namespace robustops
