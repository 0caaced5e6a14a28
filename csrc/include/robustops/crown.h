// CROWN's back-substitution through an activation's linear relaxation, fused: the
// per-element math and the host-side checks shared by the CPU and CUDA kernels.
//
// For a linear function A y + d of an activation's output y = f(z) and sound linear
// bounds  a_lo z + b_lo <= f(z) <= a_up z + b_up  on each element's input interval,
// the lower bound of A y as a linear function of z is
//
//     A' = A+ a_lo + A- a_up,        d'[n, s] = sum_m (A+ b_lo + A- b_up)[n, s, m]
//
// (A+ = max(A, 0), A- = min(A, 0)): A is [N, S, M] (S specification rows per sample),
// the relaxation is [N, M]. crown_relax returns (A', d') in one read of A; the unfused
// form reads and writes [N, S, M] tensors about ten times, forward and backward.
//
// Backward, for upstream gradients G' (of A') and g (of d'):
//     dA       = [A >= 0] (G' a_lo + g b_lo) + [A < 0] (G' a_up + g b_up)
//     d a_lo   = sum_s G' A+,   d b_lo = sum_s g A+,
//     d a_up   = sum_s G' A-,   d b_up = sum_s g A-.
// At A = 0 the lower relaxation is taken (either side gives A' = 0 and d' += 0).
//
// crown_relu is the same for ReLU with the relaxation computed from the input
// interval [l, u] on the fly (relu_relaxation: robustops.bounds.relaxation's ReLU
// case), so that it is neither materialized nor differentiated as a chain of
// elementwise ops. Its backward gives dA as above and, through the relaxation's
// derivatives (relu_relaxation_backward), the gradients of l and u.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <robustops/host.h>

#include <vector>

namespace robustops {
namespace crown {

// One element of the forward: writes A'[n, s, m], returns its term of d'.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t relax(acc_t a, acc_t a_lo, acc_t b_lo, acc_t a_up, acc_t b_up,
                                              acc_t& out) {
  const bool pos = a >= acc_t(0);
  out = a * (pos ? a_lo : a_up);
  return a * (pos ? b_lo : b_up);
}

// ReLU's linear relaxation on [l, u]: dead (u <= 0) 0 <= relu <= 0; alive (l >= 0)
// x <= relu <= x; mixed (l < 0 < u, and NaN) the chord above, a_up = u / (u - l),
// b_up = -l u / (u - l), and CROWN's adaptive lower slope a_lo = [u > -l] below;
// b_lo = 0. A NaN end gives NaN upper lines, as robustops.bounds.relaxation.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void relu_relaxation(acc_t l, acc_t u, acc_t& a_lo, acc_t& a_up, acc_t& b_up) {
  const bool dead = u <= acc_t(0);
  const bool alive = !dead && l >= acc_t(0);
  const bool mixed = !dead && !alive;
  const acc_t w = mixed ? u - l : acc_t(1);
  a_up = mixed ? u / w : (alive ? acc_t(1) : acc_t(0));
  b_up = mixed ? -l * u / w : acc_t(0);
  a_lo = mixed ? (u > -l ? acc_t(1) : acc_t(0)) : a_up;
}

// The gradients of l and u from those of a_up (g_aup) and b_up (g_bup): on the mixed
// elements, with w = u - l,
//     d a_up / d l = u / w^2,     d a_up / d u = -l / w^2,
//     d b_up / d l = -u^2 / w^2,  d b_up / d u = l^2 / w^2;
// 0 elsewhere (a_lo is piecewise constant, b_lo = 0, the other pieces constant).
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void relu_relaxation_backward(acc_t l, acc_t u, acc_t g_aup, acc_t g_bup,
                                                                acc_t& g_l, acc_t& g_u) {
  const bool mixed = !(u <= acc_t(0)) && !(l >= acc_t(0));
  const acc_t w = mixed ? u - l : acc_t(1);
  g_l = mixed ? u * (g_aup - u * g_bup) / w / w : acc_t(0);
  g_u = mixed ? l * (l * g_bup - g_aup) / w / w : acc_t(0);
}

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
              "output per sample), got ", a.sizes());
  std::vector<int64_t> want{a.size(0)};
  for (int64_t d = 2; d < a.dim(); ++d) {
    want.push_back(a.size(d));
  }
  Args out;
  for (int i = 0; i < R; ++i) {
    check_same_dtype_device(op, names[i], *relax[i], "a", a);
    TORCH_CHECK(relax[i]->sizes() == at::IntArrayRef(want), "robustops::", op, ": argument '",
                names[i], "' must have shape ", at::IntArrayRef(want),
                " (the shape of 'a' without its dimension 1), got ", relax[i]->sizes());
    out.relax[i] = relax[i]->contiguous();
  }
  if (grad_out != nullptr) {
    check_same_dtype_device(op, "grad_a", *grad_out, "a", a);
    check_same_shape(op, "grad_a", *grad_out, "a", a);
    check_same_dtype_device(op, "grad_d", *grad_d, "a", a);
    TORCH_CHECK(grad_d->sizes() == at::IntArrayRef({a.size(0), a.size(1)}), "robustops::", op,
                ": argument 'grad_d' must have shape [", a.size(0), ", ", a.size(1), "], got ",
                grad_d->sizes());
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
                 const at::Tensor& lower_slope, const at::Tensor& lower_intercept,
                 const at::Tensor& upper_slope, const at::Tensor& upper_intercept) {
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
