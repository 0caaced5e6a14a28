// CPU elementwise loops shared by every op family.
//
// The loops run over flat, dense memory in parallel chunks (at::parallel_for). The
// inner loop is a template compiled three times by gcc's target_clones (AVX-512,
// AVX2 and the baseline x86-64) and picked at load time for the CPU it runs on, so
// the compiler's auto-vectorizer can use the widest vectors available without the
// package requiring them. Reduced-precision storage (half, bfloat16) is computed in
// float (at::opmath_type).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/Device.h>
#include <c10/macros/Macros.h>

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ROBUSTOPS_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROBUSTOPS_CPU_CLONES
#endif

namespace robustops {
namespace cpu {

// Chunks smaller than this are not worth a thread.
constexpr int64_t kGrainSize = 32768;

template <typename scalar_t, typename F>
ROBUSTOPS_CPU_CLONES void unary_chunk(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(x[i])));
  }
}

template <typename scalar_t, typename F>
ROBUSTOPS_CPU_CLONES void binary_chunk(
    const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
    scalar_t* __restrict__ out, int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(
        f(static_cast<opmath_t>(a[i]), static_cast<opmath_t>(b[i])));
  }
}

// out[i] = f(x[i]) for i < n.
template <typename scalar_t, typename F>
void unary_map(const scalar_t* x, scalar_t* out, int64_t n, F f) {
  at::parallel_for(0, n, kGrainSize, [&](int64_t begin, int64_t end) {
    unary_chunk<scalar_t, F>(x + begin, out + begin, end - begin, f);
  });
}

// out[i] = f(a[i], b[i]) for i < n.
template <typename scalar_t, typename F>
void binary_map(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, F f) {
  at::parallel_for(0, n, kGrainSize, [&](int64_t begin, int64_t end) {
    binary_chunk<scalar_t, F>(a + begin, b + begin, out + begin, end - begin, f);
  });
}

// The CPU backend of elementwise.h.
struct Backend {
  struct Guard {
    explicit Guard(c10::Device) {}
  };
  template <typename scalar_t, typename F>
  static void unary_map(const scalar_t* x, scalar_t* out, int64_t n, F f) {
    cpu::unary_map(x, out, n, f);
  }
  template <typename scalar_t, typename F>
  static void binary_map(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, F f) {
    cpu::binary_map(a, b, out, n, f);
  }
};

}  // namespace cpu
}  // namespace robustops
