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
// These are the tightest intervals. Gradients flow through the endpoint that
// attains lo or hi (none through the constant f(0)); ties go to l.
#pragma once

#include <robustops/saf.h>

namespace robustops {
namespace interval {

// f and f' of each activation, and whether it is unimodal around 0.
struct Relu {
  static constexpr const char* kName = "interval_relu";
  static constexpr bool kUnimodal = false;
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T f(T x) { return x > T(0) ? x : T(0); }
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x) { return x > T(0) ? T(1) : T(0); }
};

struct MRelu {
  static constexpr const char* kName = "interval_mrelu";
  static constexpr bool kUnimodal = true;
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T f(T x) { return saf::mrelu(x); }
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x) { return saf::mrelu_backward(T(1), x); }
};

struct Rbf {
  static constexpr const char* kName = "interval_rbf";
  static constexpr bool kUnimodal = true;
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T f(T x) { return saf::rbf(x); }
  template <typename T>
  static C10_HOST_DEVICE C10_ALWAYS_INLINE T df(T x) { return saf::rbf_derivative(x); }
};

// The image endpoints and which endpoint each comes from.
template <typename A, typename T>
struct Image {
  T lo, hi;
  bool lo_from_l;  // lo = f(l) (else f(u))
  bool hi_from_l;  // hi = f(l) (else f(u), unless hi_const)
  bool hi_const;   // hi = f(0): the interval holds the peak
};

template <typename A, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Image<A, T> image(T c, T r) {
  const T l = c - r, u = c + r;
  const T fl = A::f(l), fu = A::f(u);
  Image<A, T> im;
  if (A::kUnimodal) {
    im.lo_from_l = fl <= fu;
    im.lo = im.lo_from_l ? fl : fu;
    im.hi_const = l <= T(0) && u >= T(0);
    im.hi_from_l = !im.hi_const && fl > fu;
    im.hi = im.hi_const ? A::f(T(0)) : (im.hi_from_l ? fl : fu);
  } else {  // monotone non-decreasing
    im.lo_from_l = true;
    im.lo = fl;
    im.hi_const = false;
    im.hi_from_l = false;
    im.hi = fu;
  }
  return im;
}

// Forward: (c, r) -> (c', r') = ((hi + lo) / 2, (hi - lo) / 2).
template <typename A>
struct Forward {
  static constexpr const char* kName = A::kName;
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE void operator()(const T (&in)[2], T (&out)[2]) const {
    const Image<A, T> im = image<A>(in[0], in[1]);
    out[0] = (im.hi + im.lo) * T(0.5);
    out[1] = (im.hi - im.lo) * T(0.5);
  }
};

// Backward: (g_c', g_r', c, r) -> (g_c, g_r).
template <typename A>
struct Backward {
  static constexpr const char* kName = A::kName;
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE void operator()(const T (&in)[4], T (&out)[2]) const {
    const T gc = in[0], gr = in[1], c = in[2], r = in[3];
    const Image<A, T> im = image<A>(c, r);
    const T l = c - r, u = c + r;
    const T g_hi = (gc + gr) * T(0.5);  // dE/dhi
    const T g_lo = (gc - gr) * T(0.5);  // dE/dlo
    const T dl = A::df(l), du = A::df(u);
    const T hi_l = (!im.hi_const && im.hi_from_l) ? g_hi * dl : T(0);
    const T hi_u = (!im.hi_const && !im.hi_from_l) ? g_hi * du : T(0);
    const T lo_l = im.lo_from_l ? g_lo * dl : T(0);
    const T lo_u = im.lo_from_l ? T(0) : g_lo * du;
    const T g_l = hi_l + lo_l, g_u = hi_u + lo_u;
    out[0] = g_l + g_u;  // dc = dl + du
    out[1] = g_u - g_l;  // dr = du - dl
  }
};

}  // namespace interval
}  // namespace robustops
