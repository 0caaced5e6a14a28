// CROWN's back-substitution through an activation's linear relaxation, fused: the
// per-element math shared by the CPU and CUDA kernels (their host-side checks are in
// crown_host.h).
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

#include <c10/macros/Macros.h>

namespace robustops {
namespace crown {

// One element of the forward: writes A'[n, s, m], returns its term of d'.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t relax(acc_t a, acc_t a_lo, acc_t b_lo, acc_t a_up, acc_t b_up, acc_t& out) {
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
C10_HOST_DEVICE C10_ALWAYS_INLINE void relu_relaxation_backward(acc_t l, acc_t u, acc_t g_aup, acc_t g_bup, acc_t& g_l,
                                                                acc_t& g_u) {
  const bool mixed = !(u <= acc_t(0)) && !(l >= acc_t(0));
  const acc_t w = mixed ? u - l : acc_t(1);
  g_l = mixed ? u * (g_aup - u * g_bup) / w / w : acc_t(0);
  g_u = mixed ? l * (l * g_bup - g_aup) / w / w : acc_t(0);
}

}  // namespace crown
}  // namespace robustops
