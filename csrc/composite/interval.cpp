// Interval bound propagation through linear and convolution layers, in
// center/radius form: (c, r) -> (W c + b, |W| r). Device-generic ops
// (CompositeExplicitAutograd): the work is two matrix products or two
// convolutions, which ATen's BLAS / cuBLAS / oneDNN / cuDNN kernels do best; |W| is
// formed once per call (O(weight), not O(batch)), since those libraries take their
// operands from memory. All sub-perturbation radii of a batch go through one call
// (they are stacked on the batch). The backward is registered from Python
// (robustops/ops/interval.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <robustops/host.h>

#include <tuple>

namespace robustops {
namespace {

void check_interval(const char* op, const at::Tensor& c, const at::Tensor& r, const at::Tensor& w,
                    const c10::optional<at::Tensor>& b) {
  check_floating(op, "center", c);
  check_same_dtype_device(op, "radius", r, "center", c);
  check_same_shape(op, "radius", r, "center", c);
  check_same_dtype_device(op, "weight", w, "center", c);
  if (b.has_value()) {
    check_same_dtype_device(op, "bias", *b, "center", c);
  }
}

std::tuple<at::Tensor, at::Tensor> interval_linear(const at::Tensor& c, const at::Tensor& r, const at::Tensor& w,
                                                   const c10::optional<at::Tensor>& b) {
  check_interval("interval_linear", c, r, w, b);
  TORCH_CHECK(w.dim() == 2 && c.dim() >= 1 && c.size(-1) == w.size(1),
              "robustops::interval_linear: argument 'weight' must be [out_features, ", c.dim() >= 1 ? c.size(-1) : 0,
              "], got ", w.sizes());
  return {at::linear(c, w, b), at::linear(r, w.abs())};
}

std::tuple<at::Tensor, at::Tensor> interval_conv2d(const at::Tensor& c, const at::Tensor& r, const at::Tensor& w,
                                                   const c10::optional<at::Tensor>& b, c10::SymIntArrayRef stride,
                                                   c10::SymIntArrayRef padding, c10::SymIntArrayRef dilation,
                                                   const c10::SymInt& groups) {
  check_interval("interval_conv2d", c, r, w, b);
  TORCH_CHECK(c.dim() == 4 && w.dim() == 4,
              "robustops::interval_conv2d: 'center' must be [N, C, H, W] and 'weight' "
              "[C_out, C / groups, kH, kW], got ",
              c.sizes(), " and ", w.sizes());
  // SymInt throughout, so the op also runs on symbolic shapes (torch.compile's tracing).
  return {at::conv2d_symint(c, w, b, stride, padding, dilation, groups),
          at::conv2d_symint(r, w.abs(), c10::nullopt, stride, padding, dilation, groups)};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustops, CompositeExplicitAutograd, m) {
  m.impl("interval_linear", &interval_linear);
  m.impl("interval_conv2d", &interval_conv2d);
}

}  // namespace robustops
