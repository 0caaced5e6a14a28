// Symmetric activation functions: CPU kernels (math in include/robustops/saf.h, the
// op list in include/robustops/elementwise_families.h).
#include <torch/library.h>

#include <robustops/cpu_loops.h>
#include <robustops/elementwise_families.h>

namespace robustops {

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  register_saf<cpu::Backend>(m);
}

}  // namespace robustops
