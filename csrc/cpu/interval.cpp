// Interval bound propagation: CPU kernels of the fused interval activations (math in
// include/robustops/interval.h, the op list in include/robustops/elementwise_families.h).
#include <torch/library.h>

#include <robustops/cpu_loops.h>
#include <robustops/elementwise_families.h>

namespace robustops {

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  register_interval<cpu::Backend>(m);
}

}  // namespace robustops
