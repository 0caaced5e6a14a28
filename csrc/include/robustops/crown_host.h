// CROWN's host-side checks, shared by the CPU and CUDA host functions of crown_relax
// and crown_relu (the per-element math is in crown.h): every message names the
// argument that is wrong.
#pragma once

#include <ATen/core/Tensor.h>

#include <robustops/host.h>

#include <vector>

namespace robustops {
namespace crown {

// The problem's sizes: A is [n, s, m] in memory, the relaxation [n, m].
struct Dims {
  int64_t n, s, m;
};

// The arguments of the ops, checked (every message names the argument that is
// wrong) and made contiguous: A (and the gradient of A') [N, S, ...], the
// relaxation's four tensors or the interval's two ends [N, ...], the gradient of
// d' [N, S].
struct Args {
  Dims dims;
  at::Tensor grad_out, grad_d, a, relax[4];
};

constexpr const char* kRelaxNames[4] = {"lower_slope", "lower_intercept", "upper_slope", "upper_intercept"};

constexpr const char* kIntervalNames[2] = {"lower", "upper"};

// The checks for R relaxation tensors named `names` (crown_relax: the four lines;
// crown_relu: the interval's ends), into out.relax[0..R).
template <int R>
inline Args args(const char* op, const at::Tensor* grad_out, const at::Tensor* grad_d, const at::Tensor& a,
                 const at::Tensor* const (&relax)[R], const char* const (&names)[R]) {
  check_floating(op, "a", a);
  TORCH_CHECK(a.dim() >= 3, "robustops::", op,
              ": argument 'a' must have shape [N, S, ...] (S linear functions of the activation's "
              "output per sample), got ",
              a.sizes());
  std::vector<int64_t> want{a.size(0)};
  for (int64_t d = 2; d < a.dim(); ++d) {
    want.push_back(a.size(d));
  }
  Args out;
  for (int i = 0; i < R; ++i) {
    check_same_dtype_device(op, names[i], *relax[i], "a", a);
    TORCH_CHECK(relax[i]->sizes() == at::IntArrayRef(want), "robustops::", op, ": argument '", names[i],
                "' must have shape ", at::IntArrayRef(want), " (the shape of 'a' without its dimension 1), got ",
                relax[i]->sizes());
    out.relax[i] = relax[i]->contiguous();
  }
  if (grad_out != nullptr) {
    check_same_dtype_device(op, "grad_a", *grad_out, "a", a);
    check_same_shape(op, "grad_a", *grad_out, "a", a);
    check_same_dtype_device(op, "grad_d", *grad_d, "a", a);
    TORCH_CHECK(grad_d->sizes() == at::IntArrayRef({a.size(0), a.size(1)}), "robustops::", op,
                ": argument 'grad_d' must have shape [", a.size(0), ", ", a.size(1), "], got ", grad_d->sizes());
    out.grad_out = grad_out->contiguous();
    out.grad_d = grad_d->contiguous();
  }
  out.a = a.contiguous();
  int64_t m = 1;
  for (int64_t d = 2; d < a.dim(); ++d) {
    m *= a.size(d);
  }
  out.dims = {a.size(0), a.size(1), m};
  return out;
}

inline Args args(const char* op, const at::Tensor* grad_out, const at::Tensor* grad_d, const at::Tensor& a,
                 const at::Tensor& lower_slope, const at::Tensor& lower_intercept, const at::Tensor& upper_slope,
                 const at::Tensor& upper_intercept) {
  const at::Tensor* const relax[4] = {&lower_slope, &lower_intercept, &upper_slope, &upper_intercept};
  return args<4>(op, grad_out, grad_d, a, relax, kRelaxNames);
}

inline Args relu_args(const char* op, const at::Tensor* grad_out, const at::Tensor* grad_d, const at::Tensor& a,
                      const at::Tensor& lower, const at::Tensor& upper) {
  const at::Tensor* const relax[2] = {&lower, &upper};
  return args<2>(op, grad_out, grad_d, a, relax, kIntervalNames);
}

}  // namespace crown
}  // namespace robustops
