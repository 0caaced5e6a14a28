// The CPU execution lane of the CUDA sources (test only): the schemas of every op
// under the namespace robustops_cuda_sim. The kernels are csrc/cuda/*.cu compiled by
// the host compiler with ROBUSTOPS_CUDA_SIM defined (tools/build_cuda_sim.py), whose
// ROBUSTOPS_CUDA_LIBRARY_IMPL registers them as this namespace's CPU kernels.
#include <torch/library.h>

#include <robustops/schemas.h>

TORCH_LIBRARY(robustops_cuda_sim, m) {
  robustops::define_schemas(m);
}
