// Spatial pyramid pooling: host-side checks shared by the CPU and CUDA kernels, and
// the family's ops and registration, written once for both devices.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <robustops/host.h>
#include <robustops/spp.h>

#include <tuple>

namespace robustops {
namespace spp {

inline Levels levels_of(const char* op, at::IntArrayRef levels) {
  TORCH_CHECK(!levels.empty() && static_cast<int>(levels.size()) <= kMaxLevels, "robustops::", op,
              ": argument 'levels' must hold 1 to ", kMaxLevels, " pyramid levels, got ", levels);
  Levels lv{};
  lv.count = static_cast<int>(levels.size());
  int64_t total = 0;
  for (int l = 0; l < lv.count; ++l) {
    TORCH_CHECK(levels[l] >= 1, "robustops::", op, ": argument 'levels' must be positive, got ", levels);
    lv.n[l] = levels[l];
    lv.offset[l] = total;
    total += levels[l] * levels[l];
  }
  lv.total = total;
  return lv;
}

inline int64_t largest(const Levels& lv) {
  int64_t m = 0;
  for (int l = 0; l < lv.count; ++l) {
    m = std::max(m, lv.n[l]);
  }
  return m;
}

// x [B, C, H, W] with H and W at least the largest level; returned contiguous.
inline at::Tensor input(const char* op, const at::Tensor& x, const Levels& lv) {
  check_floating(op, "x", x);
  TORCH_CHECK(x.dim() == 4, "robustops::", op, ": argument 'x' must have shape [B, C, H, W], got ", x.sizes());
  TORCH_CHECK(x.size(2) >= largest(lv) && x.size(3) >= largest(lv), "robustops::", op, ": argument 'x' has ", x.size(2),
              "x", x.size(3), " planes, smaller than the largest pyramid level ", largest(lv),
              " (every bin must hold at least one element)");
  return x.contiguous();
}

// grad [B, C * T] for planes of height x width; returns C.
inline int64_t grad_channels(const char* op, const at::Tensor& grad, const Levels& lv, int64_t height, int64_t width) {
  check_floating(op, "grad", grad);
  TORCH_CHECK(grad.dim() == 2 && grad.size(1) % lv.total == 0, "robustops::", op,
              ": argument 'grad' must have shape [B, C * ", lv.total, "], got ", grad.sizes());
  TORCH_CHECK(height >= largest(lv) && width >= largest(lv), "robustops::", op,
              ": 'height' and 'width' must be at least the largest level, got ", height, "x", width);
  return grad.size(1) / lv.total;
}

// The argmax indices of spp_max for the backward: int64, the shape of grad.
inline at::Tensor max_indices(const char* op, const at::Tensor& indices, const at::Tensor& grad) {
  TORCH_CHECK(indices.sizes() == grad.sizes() && indices.scalar_type() == at::kLong, "robustops::", op,
              ": argument 'indices' must be an int64 tensor of the shape of 'grad', got ", indices.scalar_type(), " ",
              indices.sizes());
  TORCH_CHECK(indices.device() == grad.device(), "robustops::", op, ": argument 'indices' is on ", indices.device(),
              " but 'grad' is on ", grad.device());
  return indices.contiguous();
}

// A device's two kernels: the forward of every level (Max: the first maximum and its
// index; otherwise the mean, with an undefined second output) and its backward
// (indices: the forward's argmax for Max, nullptr otherwise).
using Forward = std::tuple<at::Tensor, at::Tensor> (*)(const char* op, const at::Tensor& x, at::IntArrayRef levels);
using Backward = at::Tensor (*)(const char* op, const at::Tensor& grad, const at::Tensor* indices,
                                at::IntArrayRef levels, int64_t height, int64_t width);

// The four ops of the schemas on those kernels.
template <Forward Max, Forward Mean, Backward MaxBackward, Backward MeanBackward>
struct Ops {
  static std::tuple<at::Tensor, at::Tensor> spp_max(const at::Tensor& x, at::IntArrayRef levels) {
    return Max("spp_max", x, levels);
  }
  static at::Tensor spp_mean(const at::Tensor& x, at::IntArrayRef levels) {
    return std::get<0>(Mean("spp_mean", x, levels));
  }
  static at::Tensor spp_max_backward(const at::Tensor& grad, const at::Tensor& indices, at::IntArrayRef levels,
                                     int64_t height, int64_t width) {
    return MaxBackward("_spp_max_backward", grad, &indices, levels, height, width);
  }
  static at::Tensor spp_mean_backward(const at::Tensor& grad, at::IntArrayRef levels, int64_t height, int64_t width) {
    return MeanBackward("_spp_mean_backward", grad, nullptr, levels, height, width);
  }
};

}  // namespace spp

// cpu/spp.cpp and cuda/spp.cu register the family with one line each:
//   register_spp<&forward<true>, &forward<false>, &backward<true>, &backward<false>>(m);
template <spp::Forward Max, spp::Forward Mean, spp::Backward MaxBackward, spp::Backward MeanBackward>
void register_spp(torch::Library& m) {
  using O = spp::Ops<Max, Mean, MaxBackward, MeanBackward>;
  m.impl("spp_max", &O::spp_max);
  m.impl("_spp_max_backward", &O::spp_max_backward);
  m.impl("spp_mean", &O::spp_mean);
  m.impl("_spp_mean_backward", &O::spp_mean_backward);
}

}  // namespace robustops
