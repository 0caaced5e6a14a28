// BANG ops: the host-side checks and layout shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include <robustops/host.h>

namespace robustops {
namespace bang {

// A batch of per-sample blocks: grad[i] is the D contiguous elements at i * D.
struct Batch {
  at::Tensor data;  // dense, with every sample's block contiguous
  int64_t n;        // samples
  int64_t d;        // elements per sample
};

inline Batch batch(const char* op, const char* arg, const at::Tensor& grad) {
  check_floating(op, arg, grad);
  TORCH_CHECK(grad.dim() >= 1, "robustops::", op, ": argument '", arg,
              "' must have a batch dimension first, [N, ...]; got a 0-d tensor");
  const int64_t n = grad.size(0);
  const int64_t d = n == 0 ? 0 : grad.numel() / n;
  // Contiguous and channels-last layouts keep each sample's block contiguous: use
  // them as they are (robustops/ops/bang.py's fake kernel follows the same rule).
  const bool blocks = grad.is_contiguous() || grad.is_contiguous(at::MemoryFormat::ChannelsLast) ||
                      grad.is_contiguous(at::MemoryFormat::ChannelsLast3d);
  return {blocks ? grad : grad.contiguous(), n, d};
}

// The dtype of the norms and eta: float64 for float64 gradients, else float32.
inline at::ScalarType norm_dtype(const at::Tensor& grad) {
  return grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// eps as float64 [N] on `device`; max_norm (optional) as a float64 0-d tensor.
inline at::Tensor per_sample_eps(const char* op, const at::Tensor& eps, int64_t n, const at::Device& device) {
  check_floating(op, "eps", eps);
  TORCH_CHECK(eps.dim() == 1 && eps.size(0) == n, "robustops::", op, ": argument 'eps' must have shape [", n,
              "] (one value per sample), got ", eps.sizes());
  TORCH_CHECK(eps.device() == device, "robustops::", op, ": argument 'eps' is on ", eps.device(),
              " but the gradient is on ", device);
  return eps.to(at::kDouble).contiguous();
}

inline c10::optional<at::Tensor> max_norm_arg(const char* op, const c10::optional<at::Tensor>& m,
                                              const at::Device& device) {
  if (!m.has_value()) {
    return c10::nullopt;
  }
  check_floating(op, "max_norm", *m);
  TORCH_CHECK(m->numel() == 1, "robustops::", op, ": argument 'max_norm' must hold one value, got shape ", m->sizes());
  TORCH_CHECK(m->device() == device, "robustops::", op, ": argument 'max_norm' is on ", m->device(),
              " but the gradient is on ", device);
  return m->to(at::kDouble).reshape({});
}

}  // namespace bang
}  // namespace robustops
