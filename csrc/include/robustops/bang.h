// BANG, Batch Adjusted Network Gradients (Rozsa, Günther, Boult 2018): the
// per-sample math, shared by the CPU and CUDA kernels (cpu/bang.cpp, cuda/bang.cu).
//
// For a layer with output y and kappa_i = dE/dy_i of sample i, n_i = ||kappa_i||_2,
// m = max_j n_j over the batch (the global batch under data parallelism):
//   eta_i = (m / n_i)^rho_i,   rho_i = eps_i (1 - n_i / m),
// computed as exp(rho_i (log m - log n_i)) so that very large and very small norms
// stay finite. A sample with n_i = 0 keeps eta_i = 1 (as does every sample when
// m = 0); a NaN norm gives eta_i = 1, so the NaN stays in the scaled gradient.
#pragma once

#include <c10/macros/Macros.h>

#include <robustops/math.h>  // ROBUSTOPS_DEVICE_CODE

#include <cmath>

namespace robustops {
namespace bang {

C10_HOST_DEVICE C10_ALWAYS_INLINE double eta(double n, double m, double eps) {
  if (!(n > 0.0) || !(m > 0.0)) {
    return 1.0;
  }
  const double rho = eps * (1.0 - n / m);
#ifdef ROBUSTOPS_DEVICE_CODE
  return ::exp(rho * (::log(m) - ::log(n)));
#else
  return std::exp(rho * (std::log(m) - std::log(n)));
#endif
}

// Norms are accumulated in double whatever the storage type: squares of float32
// values cannot overflow or underflow there, so the norm of a gradient of tiny
// (1e-30) or huge (1e30) entries is exact to float precision.
using acc_t = double;

}  // namespace bang
}  // namespace robustops
