// p4 filter transform: host-side checks shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include <robustops/host.h>
#include <robustops/p4.h>

namespace robustops {
namespace p4 {

// weight [O, I, s, k, k] with s = 1 or 4 and a square k x k kernel.
inline Dims filter_dims(const char* op, const at::Tensor& weight) {
  check_floating(op, "weight", weight);
  TORCH_CHECK(weight.dim() == 5, "robustops::", op,
              ": argument 'weight' must have shape [C_out, C_in, s, k, k] (s = 1: lifting, s = 4: "
              "p4), got ",
              weight.sizes());
  TORCH_CHECK(weight.size(2) == 1 || weight.size(2) == 4, "robustops::", op,
              ": argument 'weight' must have s = 1 (lifting) or 4 (p4) input rotations in "
              "dimension 2, got ",
              weight.size(2));
  TORCH_CHECK(weight.size(3) == weight.size(4), "robustops::", op,
              ": argument 'weight' must have a square kernel (a rotation by 90 degrees maps k x k "
              "onto itself), got ",
              weight.size(3), "x", weight.size(4));
  return {weight.size(0), weight.size(1), weight.size(2), weight.size(3)};
}

// grad [O * 4, I * s, k, k] of the transformed filter, for s input rotations.
inline Dims transformed_dims(const char* op, const at::Tensor& grad, int64_t s) {
  check_floating(op, "grad", grad);
  TORCH_CHECK(s == 1 || s == 4, "robustops::", op, ": argument 'in_rotations' must be 1 or 4, got ", s);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) % 4 == 0 && grad.size(1) % s == 0 && grad.size(2) == grad.size(3),
              "robustops::", op, ": argument 'grad' must have shape [C_out * 4, C_in * ", s, ", k, k], got ",
              grad.sizes());
  return {grad.size(0) / 4, grad.size(1) / s, s, grad.size(2)};
}

}  // namespace p4
}  // namespace robustops
