// Small math primitives shared by the CPU and CUDA kernels of every op family.
//
// Every function here is branch-free (ternaries only) so that gcc vectorizes the
// CPU loops that call it; on the device the CUDA intrinsics are used instead.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Device code, and the CPU execution lane of the CUDA sources, which runs what a GPU
// runs (robustops/cuda_runtime.cuh).
#if defined(__CUDA_ARCH__) || defined(ROBUSTOPS_CUDA_SIM)
#define ROBUSTOPS_DEVICE_CODE 1
#endif

namespace robustops {
namespace math {

// Reinterpret the bits of a float as an int32 and back. memcpy is the portable,
// vectorizer-friendly way to do this in host code.
C10_HOST_DEVICE C10_ALWAYS_INLINE int32_t float_as_int(float f) {
#ifdef ROBUSTOPS_DEVICE_CODE
  return __float_as_int(f);
#else
  int32_t i;
  std::memcpy(&i, &f, sizeof(i));
  return i;
#endif
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float int_as_float(int32_t i) {
#ifdef ROBUSTOPS_DEVICE_CODE
  return __int_as_float(i);
#else
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
#endif
}

// exp(x) in float32.
//
// On the device this is expf. On the host it is the Cephes expf polynomial
// (relative error below 2 ulp over the whole range), written without branches or
// library calls so that a loop over it vectorizes without -ffast-math, which would
// break the NaN and infinity semantics the ops document. Handles the full range:
// NaN -> NaN, +inf and x > 88.72 -> +inf, results in the subnormal range are
// formed in two scaling steps, x < -104 (and -inf) -> 0.
C10_HOST_DEVICE C10_ALWAYS_INLINE float exp(float x) {
#ifdef ROBUSTOPS_DEVICE_CODE
  return ::expf(x);
#else
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kMax = 88.72283935546875f;  // largest x with finite exp(x)
  constexpr float kMin = -104.0f;             // exp(kMin) rounds to 0
  constexpr float kRound = 12582912.0f;       // 1.5 * 2^23: add to round to int
  const float xc = x > kMax ? kMax : (x < kMin ? kMin : x);
  // n = round(xc * log2(e)); the low bits of t hold n as an integer.
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const int32_t ni = float_as_int(t) - float_as_int(kRound);
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln(2) / 2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n with n in [-150, 128], split in two factors that are normal floats.
  const int32_t n1 = ni >> 1;
  const int32_t n2 = ni - n1;
  const float s1 = int_as_float((n1 + 127) << 23);
  const float s2 = int_as_float((n2 + 127) << 23);
  const float y = (p * s1) * s2;
  const float inf = std::numeric_limits<float>::infinity();
  return x != x ? x : (x > kMax ? inf : y);
#endif
}

C10_HOST_DEVICE C10_ALWAYS_INLINE double exp(double x) {
#ifdef ROBUSTOPS_DEVICE_CODE
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

}  // namespace math
}  // namespace robustops
