// p4 group convolutions (Cohen & Welling 2016): the filter transform and its adjoint,
// per-element index math shared by the CPU and CUDA kernels, in GrouPy's conventions.
//
// A filter W [O, I, s, k, k] (s = 1 for the lifting layer Z2 -> p4, s = 4 for p4 -> p4)
// becomes the filter of a plain convolution, T [O * 4, I * s, k, k] (the rotation
// innermost on both channel axes):
//
//     T[o * 4 + r, i * s + t] = rot90(W[o, i, (t - r) mod s], r)
//
// rot90 counter-clockwise on the last two dims, as torch.rot90: rot90(M, 1)[y, x] =
// M[x, k - 1 - y]. The transform is a permutation-gather: every element of T comes
// from one element of W, and every element of W goes to 4 elements of T (one per r).
// Its adjoint (the filter gradient) is therefore a gather of 4 values per element of
// W: deterministic, no atomics.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace robustops {
namespace p4 {

// (y, x) of rot90(M, r) read from M: rot90(M, r)[y, x] = M[src].
C10_HOST_DEVICE C10_ALWAYS_INLINE constexpr void rot_source(int r, int64_t y, int64_t x, int64_t k, int64_t& sy,
                                                            int64_t& sx) {
  switch (r & 3) {
    case 0:
      sy = y;
      sx = x;
      break;
    case 1:
      sy = x;
      sx = k - 1 - y;
      break;
    case 2:
      sy = k - 1 - y;
      sx = k - 1 - x;
      break;
    default:
      sy = k - 1 - x;
      sx = y;
      break;
  }
}

// Sizes of the transform: W is [o, i, s, k, k], T is [o, 4, i, s, k, k].
struct Dims {
  int64_t o, i, s, k;
  C10_HOST_DEVICE int64_t filter_numel() const { return o * i * s * k * k; }
  C10_HOST_DEVICE int64_t transformed_numel() const { return filter_numel() * 4; }
};

// The flat index in W of the element of T at flat index `idx`.
C10_HOST_DEVICE C10_ALWAYS_INLINE int64_t transform_source(const Dims& d, int64_t idx) {
  const int64_t kk = d.k * d.k;
  const int64_t x = idx % d.k;
  const int64_t y = (idx / d.k) % d.k;
  int64_t rest = idx / kk;
  const int64_t t = rest % d.s;
  rest /= d.s;
  const int64_t i = rest % d.i;
  rest /= d.i;
  const int r = static_cast<int>(rest % 4);
  const int64_t o = rest / 4;
  const int64_t u = ((t - r) % d.s + d.s) % d.s;
  int64_t sy, sx;
  rot_source(r, y, x, d.k, sy, sx);
  return (((o * d.i + i) * d.s + u) * d.k + sy) * d.k + sx;
}

// The 4 flat indices in T of the copies of the element of W at flat index `idx`
// (one per output rotation r): the adjoint gathers and sums them.
C10_HOST_DEVICE C10_ALWAYS_INLINE void adjoint_sources(const Dims& d, int64_t idx, int64_t (&out)[4]) {
  const int64_t x = idx % d.k;
  const int64_t y = (idx / d.k) % d.k;
  int64_t rest = idx / (d.k * d.k);
  const int64_t u = rest % d.s;
  rest /= d.s;
  const int64_t i = rest % d.i;
  const int64_t o = rest / d.i;
  for (int r = 0; r < 4; ++r) {
    const int64_t t = (u + r) % d.s;
    // the position in rot90(., r) that reads (y, x): the inverse rotation's source
    int64_t ty, tx;
    rot_source(4 - r, y, x, d.k, ty, tx);
    out[r] = ((((o * 4 + r) * d.i + i) * d.s + t) * d.k + ty) * d.k + tx;
  }
}

}  // namespace p4
}  // namespace robustops
