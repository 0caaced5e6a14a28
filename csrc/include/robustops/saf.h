// Symmetric activation functions (Zhao & Griffin 2016): the per-element math,
// written once and called by both the CPU loops (cpu/saf.cpp) and the CUDA
// kernels (cuda/saf.cu).
//
// T is the compute type: float for float/half/bfloat16 storage, double for double.
//
// NaN and infinity policy (the reference in robustops/reference/saf.py follows it):
//   mrelu(NaN) = NaN, mrelu(+-inf) = 0;
//   mrelu'(x)  = +1 on (-1, 0), -1 on (0, 1), 0 elsewhere, NaN included; the
//                backward selects rather than multiplies, like torch.relu's, so
//                where the derivative is 0 the gradient is 0 whatever comes in;
//   rbf(NaN) = NaN, rbf(+-inf) = 0;
//   rbf'(x)   = -2 x exp(-x^2), NaN at NaN, and 0 wherever exp(-x^2) is 0
//                (the limit; the plain formula would give inf * 0 = NaN at +-inf);
//                the backward is grad * rbf'(x), the plain chain rule.
#pragma once

#include <robustops/math.h>

namespace robustops {
namespace saf {

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T mrelu(T x) {
  const T a = T(1) - (x < T(0) ? -x : x);
  return a < T(0) ? T(0) : a;  // NaN passes through: NaN < 0 is false
}

// grad * d mrelu / dx, as a select (like torch.relu's backward) so that an
// infinite or NaN incoming gradient is dropped where the derivative is 0.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T mrelu_backward(T grad, T x) {
  return (x > T(-1) && x < T(0)) ? grad : ((x > T(0) && x < T(1)) ? -grad : T(0));
}

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T rbf(T x) {
  return math::exp(-(x * x));
}

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T rbf_derivative(T x) {
  const T e = math::exp(-(x * x));
  return e == T(0) ? T(0) : T(-2) * x * e;
}

// The elementwise functors the CPU loops and CUDA kernels apply; kName is the op
// they implement, used in error messages.
struct MReluForward {
  static constexpr const char* kName = "mrelu";
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE T operator()(T x) const {
    return mrelu(x);
  }
};
struct MReluBackward {
  static constexpr const char* kName = "_mrelu_backward";
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE T operator()(T grad, T x) const {
    return mrelu_backward(grad, x);
  }
};
struct RbfForward {
  static constexpr const char* kName = "rbf";
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE T operator()(T x) const {
    return rbf(x);
  }
};
struct RbfBackward {
  static constexpr const char* kName = "_rbf_backward";
  template <typename T>
  C10_HOST_DEVICE C10_ALWAYS_INLINE T operator()(T grad, T x) const {
    return grad * rbf_derivative(x);
  }
};

}  // namespace saf
}  // namespace robustops
