// CPU elementwise loops shared by every op family.
//
// The loops run over flat, dense memory in parallel chunks (at::parallel_for). The
// inner loop is a template compiled three times by gcc's target_clones (AVX-512,
// AVX2 and the baseline x86-64) and picked at load time for the CPU it runs on, so
// the compiler's auto-vectorizer can use the widest vectors available without the
// package requiring them. Reduced-precision storage (half, bfloat16) is computed in
// float, with conversions written so that they vectorize too.
#pragma once

#include <ATen/Parallel.h>
#include <c10/core/Device.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <robustops/math.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ROBUSTOPS_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROBUSTOPS_CPU_CLONES
#endif

namespace robustops {
namespace cpu {

// Chunks smaller than this are not worth a thread.
constexpr int64_t kGrainSize = 32768;

// at::parallel_for's grain over items of `per_item` elements each: about kGrainSize
// elements a chunk, at least one item.
inline int64_t grain_for(int64_t per_item) {
  return std::max<int64_t>(1, kGrainSize / std::max<int64_t>(per_item, 1));
}

// Conversions between reduced-precision storage and float that the vectorizer can
// handle. c10::Half and c10::BFloat16's own conversions branch (NaN, subnormals) and
// keep the loops scalar; these are branch-free bit manipulations with the same
// results: round to nearest even, NaN kept quiet, infinities and subnormals exact.
// float and double are computed as they are stored (raw_t = scalar_t).
template <typename scalar_t>
struct Convert {
  using raw_t = scalar_t;
};

template <>
struct Convert<c10::BFloat16> {
  using raw_t = uint16_t;
  static C10_ALWAYS_INLINE float load(uint16_t v) {
    return math::int_as_float(static_cast<int32_t>(static_cast<uint32_t>(v) << 16));
  }
  static C10_ALWAYS_INLINE uint16_t store(float f) {
    const uint32_t u = static_cast<uint32_t>(math::float_as_int(f));
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = 0u - static_cast<uint32_t>(f != f);  // all ones for NaN
    return static_cast<uint16_t>((((u >> 16) | 0x40u) & nan) | (rounded & ~nan));
  }
};

template <>
struct Convert<c10::Half> {
  using raw_t = uint16_t;
  // After F. Giesen's branch-free half <-> float conversions.
  static C10_ALWAYS_INLINE float load(uint16_t h) {
    const uint32_t shifted_exp = 0x7C00u << 13;
    uint32_t o = (static_cast<uint32_t>(h) & 0x7FFFu) << 13;  // exponent and mantissa
    const uint32_t exp = o & shifted_exp;
    o += (127u - 15u) << 23;  // rebias the exponent
    const float sub = math::int_as_float(static_cast<int32_t>(o + (1u << 23))) -
                      math::int_as_float(113 << 23);        // subnormal: renormalize
    o = exp == shifted_exp ? o + ((128u - 16u) << 23) : o;  // inf and NaN
    const uint32_t bits = exp == 0 ? static_cast<uint32_t>(math::float_as_int(sub)) : o;
    return math::int_as_float(static_cast<int32_t>(bits | ((static_cast<uint32_t>(h) & 0x8000u) << 16)));
  }
  static C10_ALWAYS_INLINE uint16_t store(float f) {
    const uint32_t f32_inf = 255u << 23;
    const uint32_t f16_max = (127u + 16u) << 23;
    const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    uint32_t u = static_cast<uint32_t>(math::float_as_int(f));
    const uint32_t sign = u & 0x80000000u;
    u ^= sign;
    const uint32_t overflow = u > f32_inf ? 0x7E00u : 0x7C00u;  // NaN or inf
    const uint32_t denorm =
        static_cast<uint32_t>(math::float_as_int(math::int_as_float(static_cast<int32_t>(u)) +
                                                 math::int_as_float(static_cast<int32_t>(denorm_magic)))) -
        denorm_magic;
    const uint32_t normal = (u + ((15u - 127u) << 23) + 0xFFFu + ((u >> 13) & 1u)) >> 13;
    const uint32_t o = u >= f16_max ? overflow : (u < (113u << 23) ? denorm : normal);
    return static_cast<uint16_t>(o | (sign >> 16));
  }
};

// Reduced-precision storage is converted to and from float in blocks on the stack,
// so that the loop applying f only ever sees float or double: each of the three
// loops then vectorizes on its own (a fused loop with conversions and a polynomial
// defeats gcc's if-conversion).
constexpr int64_t kBlock = 512;

template <typename scalar_t>
constexpr bool is_reduced = !std::is_same_v<typename Convert<scalar_t>::raw_t, scalar_t>;

template <typename scalar_t>
C10_ALWAYS_INLINE void load_block(const scalar_t* __restrict__ in, float* __restrict__ out, int64_t n) {
  const auto* __restrict__ raw = reinterpret_cast<const typename Convert<scalar_t>::raw_t*>(in);
  for (int64_t i = 0; i < n; ++i) {
    out[i] = Convert<scalar_t>::load(raw[i]);
  }
}

template <typename scalar_t>
C10_ALWAYS_INLINE void store_block(const float* __restrict__ in, scalar_t* __restrict__ out, int64_t n) {
  auto* __restrict__ raw = reinterpret_cast<typename Convert<scalar_t>::raw_t*>(out);
  for (int64_t i = 0; i < n; ++i) {
    raw[i] = Convert<scalar_t>::store(in[i]);
  }
}

template <typename T, typename F>
C10_ALWAYS_INLINE void apply(const T* __restrict__ x, T* __restrict__ out, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = f(x[i]);
  }
}

template <typename T, typename F>
C10_ALWAYS_INLINE void apply(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = f(a[i], b[i]);
  }
}

template <typename scalar_t, typename F>
ROBUSTOPS_CPU_CLONES void unary_chunk(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t n, F f) {
  if constexpr (is_reduced<scalar_t>) {
    float bx[kBlock], bo[kBlock];
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t m = std::min(kBlock, n - b);
      load_block(x + b, bx, m);
      apply(bx, bo, m, f);
      store_block(bo, out + b, m);
    }
  } else {
    apply(x, out, n, f);
  }
}

template <typename scalar_t, typename F>
ROBUSTOPS_CPU_CLONES void binary_chunk(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                                       scalar_t* __restrict__ out, int64_t n, F f) {
  if constexpr (is_reduced<scalar_t>) {
    float ba[kBlock], bb[kBlock], bo[kBlock];
    for (int64_t i = 0; i < n; i += kBlock) {
      const int64_t m = std::min(kBlock, n - i);
      load_block(a + i, ba, m);
      load_block(b + i, bb, m);
      apply(ba, bb, bo, m, f);
      store_block(bo, out + i, m);
    }
  } else {
    apply(a, b, out, n, f);
  }
}

// Elementwise loops with several inputs and two outputs (the interval ops carry a
// center and a radius): f(in_0, ..., in_{NIn-1}, out0&, out1&), on scalars: a
// functor that keeps its intermediate flags in a struct is not vectorized by gcc.
template <int NIn, typename T, typename F>
C10_ALWAYS_INLINE void apply_to_pair(const T* const (&in)[NIn], T* __restrict__ o0, T* __restrict__ o1, int64_t n,
                                     F f) {
  if constexpr (NIn == 2) {
    const T* __restrict__ a = in[0];
    const T* __restrict__ b = in[1];
    for (int64_t i = 0; i < n; ++i) {
      f(a[i], b[i], o0[i], o1[i]);
    }
  } else {
    static_assert(NIn == 4, "apply_to_pair: 2 or 4 inputs");
    const T* __restrict__ a = in[0];
    const T* __restrict__ b = in[1];
    const T* __restrict__ c = in[2];
    const T* __restrict__ d = in[3];
    for (int64_t i = 0; i < n; ++i) {
      f(a[i], b[i], c[i], d[i], o0[i], o1[i]);
    }
  }
}

template <int NIn, typename scalar_t, typename F>
ROBUSTOPS_CPU_CLONES void to_pair_chunk(const scalar_t* const (&in)[NIn], scalar_t* o0, scalar_t* o1, int64_t offset,
                                        int64_t n, F f) {
  if constexpr (is_reduced<scalar_t>) {
    float bin[NIn][kBlock], b0[kBlock], b1[kBlock];
    const float* bp[NIn];
    for (int k = 0; k < NIn; ++k) {
      bp[k] = bin[k];
    }
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t m = std::min(kBlock, n - b);
      for (int k = 0; k < NIn; ++k) {
        load_block(in[k] + offset + b, bin[k], m);
      }
      apply_to_pair<NIn>(bp, b0, b1, m, f);
      store_block(b0, o0 + offset + b, m);
      store_block(b1, o1 + offset + b, m);
    }
  } else {
    const scalar_t* at[NIn];
    for (int k = 0; k < NIn; ++k) {
      at[k] = in[k] + offset;
    }
    apply_to_pair<NIn>(at, o0 + offset, o1 + offset, n, f);
  }
}

// (out0[i], out1[i]) = f(in[0][i], ..., in[NIn-1][i]) for i < n.
template <int NIn, typename scalar_t, typename F>
void map_to_pair(const scalar_t* const (&in)[NIn], scalar_t* out0, scalar_t* out1, int64_t n, F f) {
  at::parallel_for(0, n, kGrainSize, [&](int64_t begin, int64_t end) {
    to_pair_chunk<NIn, scalar_t, F>(in, out0, out1, begin, end - begin, f);
  });
}

// The sum of squares of x[0..n) in double (see bang.h). Sixteen independent partial
// sums: gcc may not reorder a floating-point reduction by itself (that would need
// -ffast-math), but it does vectorize independent lanes.
template <typename T>
C10_ALWAYS_INLINE double sum_squares_lanes(const T* __restrict__ x, int64_t n) {
  constexpr int kLanes = 16;
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double v = static_cast<double>(x[i + j]);
      acc[j] += v * v;
    }
  }
  double total = 0.0;
  for (; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    total += v * v;
  }
  for (int j = 0; j < kLanes; ++j) {
    total += acc[j];
  }
  return total;
}

template <typename scalar_t>
ROBUSTOPS_CPU_CLONES double sum_squares(const scalar_t* __restrict__ x, int64_t n) {
  if constexpr (is_reduced<scalar_t>) {
    float buf[kBlock];
    double total = 0.0;
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t m = std::min(kBlock, n - b);
      load_block(x + b, buf, m);
      total += sum_squares_lanes(buf, m);
    }
    return total;
  } else {
    return sum_squares_lanes(x, n);
  }
}

// x * s, in the compute type (float for reduced storage, else the storage type).
struct Multiply {
  double s;
  template <typename T>
  C10_ALWAYS_INLINE T operator()(T x) const {
    return x * static_cast<T>(s);
  }
};

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
  template <int NIn, typename scalar_t, typename F>
  static void map_to_pair(const scalar_t* const (&in)[NIn], scalar_t* out0, scalar_t* out1, int64_t n, F f) {
    cpu::map_to_pair<NIn>(in, out0, out1, n, f);
  }
};

}  // namespace cpu
}  // namespace robustops
