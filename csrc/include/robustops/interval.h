// Interval arithmetic in center/radius form (IBP, Gowal et al. 2018): the exact
// interval images of the activations, shared by the CPU loops (cpu/interval.cpp)
// and the CUDA kernels (cuda/interval.cu).
//
// An interval [l, u] is carried as center c = (l + u) / 2 and radius r = (u - l) / 2,
// r >= 0. For an activation f the image of [l, u] is [lo, hi] with
//   ReLU (monotone):          lo = relu(l), hi = relu(u);
//   mReLU and RBF (unimodal, peak f(0) at 0, decreasing away from it):
//                             lo = min(f(l), f(u)),
//                             hi = f(0) if l <= 0 <= u, else max(f(l), f(u)).
// These are the tightest intervals. NaN in, NaN out: a NaN center or radius, or a
// negative radius, gives (NaN, NaN). Gradients flow through the endpoint that
// attains lo or hi (none through the constant f(0)); ties go to l.
#pragma once

#include <robustops/saf.h>

#include <limits>

namespace robustops {
namespace interval {

// f and f' of each activation, and whether it is unimodal around 0.
struct Relu {
  static constexpr const char* kName = "interval_relu";
  static constexpr bool kUnimodal = false;
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T f(T x) {
    return x < T(0) ? T(0) : x;
  }  // NaN passes
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x) {
    return x > T(0) ? T(1) : T(0);
  }
};

struct MRelu {
  static constexpr const char* kName = "interval_mrelu";
  static constexpr bool kUnimodal = true;
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T f(T x) {
    return saf::mrelu(x);
  }
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x) {
    return saf::mrelu_backward(T(1), x);
  }
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x, T) {
    return df(x);
  }
};

struct Rbf {
  static constexpr const char* kName = "interval_rbf";
  static constexpr bool kUnimodal = true;
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T f(T x) {
    return saf::rbf(x);
  }
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x) {
    return saf::rbf_derivative(x);
  }
  // f'(x) from x and f(x) = exp(-x^2), without a second exponential
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x, T fx) {
    return fx == T(0) ? T(0) : T(-2) * x * fx;
  }
};

// Forward: (c, r) -> (c', r') = ((hi + lo) / 2, (hi - lo) / 2). Plain scalars and
// selects only (no struct of flags), so that the CPU loops vectorize.
template <typename A>
struct Forward {
  static constexpr const char* kName = A::kName;
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE void operator()(T c, T r, T& out_c, T& out_r) const {
    const T l = c - r, u = c + r;
    const T fl = A::f(l), fu = A::f(u);
    T lo = fl, hi = fu;
    if constexpr (A::kUnimodal) {
      const bool peak = (l <= T(0)) & (u >= T(0));
      // min and max written so that NaN propagates at no cost: a NaN f(l) goes
      // into lo, a NaN f(u) into hi (a select picks its second operand when the
      // comparison is false, as it is for NaN), and a NaN endpoint is never a peak.
      lo = fu < fl ? fu : fl;
      hi = peak ? A::f(T(0)) : (fl > fu ? fl : fu);
    }
    // No image for a negative (or NaN) radius: NaN, never a finite interval that
    // a bound could take for a certificate (two selects in the same pass).
    const T nan = std::numeric_limits<T>::quiet_NaN();
    out_c = r >= T(0) ? (hi + lo) * T(0.5) : nan;
    out_r = r >= T(0) ? (hi - lo) * T(0.5) : nan;
  }
};

// Backward: (g_c', g_r', c, r) -> (g_c, g_r), through the endpoint that attains lo
// and hi (ties to l; nothing through the constant peak).
template <typename A>
struct Backward {
  static constexpr const char* kName = A::kName;
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE void operator()(T gc, T gr, T c, T r, T& out_c, T& out_r) const {
    const T l = c - r, u = c + r;
    const T g_hi = (gc + gr) * T(0.5);  // dE/dhi
    const T g_lo = (gc - gr) * T(0.5);  // dE/dlo
    T g_l, g_u;
    if constexpr (A::kUnimodal) {
      const T fl = A::f(l), fu = A::f(u);
      const T dl = A::df(l, fl), du = A::df(u, fu);
      // Comparisons feed the selects directly (bool temporaries of mixed widths
      // keep gcc from vectorizing this loop).
      const T hi_l = fl > fu ? g_hi * dl : T(0);
      const T hi_u = fl > fu ? T(0) : g_hi * du;
      // no gradient through hi when the interval holds the peak: l <= 0 <= u
      const T keep_l = l > T(0) ? hi_l : (u < T(0) ? hi_l : T(0));
      const T keep_u = l > T(0) ? hi_u : (u < T(0) ? hi_u : T(0));
      g_l = keep_l + (fl <= fu ? g_lo * dl : T(0));
      g_u = keep_u + (fl <= fu ? T(0) : g_lo * du);
    } else {  // monotone: lo = f(l), hi = f(u)
      g_l = g_lo * A::df(l);
      g_u = g_hi * A::df(u);
    }
    out_c = g_l + g_u;  // dc = dl + du
    out_r = g_u - g_l;  // dr = du - dl
  }
};

}  // namespace interval
}  // namespace robustops
