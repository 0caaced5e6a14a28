// Spatial pyramid pooling (He et al. 2015): the bins and the output layout shared by
// the CPU and CUDA kernels.
//
// Level n splits an H x W plane into n x n bins with the edges of adaptive pooling:
// bin i spans [floor(i H / n), ceil((i + 1) H / n)) (bins overlap when n does not
// divide H). The output of x [B, C, H, W] is [B, C * T], T = sum of n^2 over the
// levels, laid out as torch.cat([adaptive_pool(x, n).flatten(1) for n in levels], 1):
// level-major, then channel, then the bins row-major.
//
// max: the first maximum of each bin, NaN winning (as adaptive_max_pool2d), with its
// flat index y * W + x in the plane saved for the backward. mean: the bin's sum over
// its area. On CUDA both backward passes are gathers over the input (gather_grad):
// each element sums the gradients of the (at most 2 x 2 per level) bins that hold
// it, in a fixed order, without atomics; the CPU scatters per plane, one thread a
// plane, which is deterministic too.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace robustops {
namespace spp {

constexpr int kMaxLevels = 8;

struct Levels {
  int count;
  int64_t n[kMaxLevels];
  int64_t offset[kMaxLevels];  // sum of n^2 over the levels before
  int64_t total;               // T
};

C10_HOST_DEVICE C10_ALWAYS_INLINE int64_t bin_start(int64_t i, int64_t n, int64_t size) {
  return (i * size) / n;
}

C10_HOST_DEVICE C10_ALWAYS_INLINE int64_t bin_end(int64_t i, int64_t n, int64_t size) {
  return ((i + 1) * size + n - 1) / n;
}

// The bins i of level n that hold coordinate y: [first, last].
C10_HOST_DEVICE C10_ALWAYS_INLINE void bins_holding(int64_t y, int64_t n, int64_t size, int64_t& first, int64_t& last) {
  first = (y * n) / size;
  last = ((y + 1) * n + size - 1) / size - 1;
  if (last > n - 1) {
    last = n - 1;
  }
}

// Where bin j (row-major) of level l of channel c lands in a sample's T * C outputs.
C10_HOST_DEVICE C10_ALWAYS_INLINE int64_t out_index(const Levels& lv, int l, int64_t c, int64_t channels, int64_t j) {
  return lv.offset[l] * channels + c * lv.n[l] * lv.n[l] + j;
}

// Level and bin of output t in [0, T) of one plane.
C10_HOST_DEVICE C10_ALWAYS_INLINE void level_of(const Levels& lv, int64_t t, int& l, int64_t& j) {
  l = 0;
  while (l + 1 < lv.count && t >= lv.offset[l + 1]) {
    ++l;
  }
  j = t - lv.offset[l];
}

template <typename acc_t, typename scalar_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE void max_bin(const scalar_t* plane, int64_t w, int64_t y0, int64_t y1, int64_t x0,
                                               int64_t x1, acc_t& best, int64_t& at) {
  at = y0 * w + x0;
  best = -INFINITY;
  for (int64_t y = y0; y < y1; ++y) {
    for (int64_t x = x0; x < x1; ++x) {
      const acc_t v = static_cast<acc_t>(plane[y * w + x]);
      if (v > best || v != v) {
        best = v;
        at = y * w + x;
      }
    }
  }
}

template <typename acc_t, typename scalar_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t mean_bin(const scalar_t* plane, int64_t w, int64_t y0, int64_t y1, int64_t x0,
                                                 int64_t x1) {
  acc_t sum = 0;
  for (int64_t y = y0; y < y1; ++y) {
    for (int64_t x = x0; x < x1; ++x) {
      sum += static_cast<acc_t>(plane[y * w + x]);
    }
  }
  return sum / static_cast<acc_t>((y1 - y0) * (x1 - x0));
}

// The gradient of element (y, x) of a plane: the sum over the bins that hold it of
// their gradient (max: where the bin's maximum is this element; mean: over its area).
template <bool Max, typename acc_t, typename scalar_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE acc_t gather_grad(const Levels& lv, const scalar_t* grad, const int64_t* indices,
                                                    int64_t c, int64_t channels, int64_t h, int64_t w, int64_t y,
                                                    int64_t x) {
  acc_t sum = 0;
  for (int l = 0; l < lv.count; ++l) {
    const int64_t n = lv.n[l];
    int64_t i0, i1, j0, j1;
    bins_holding(y, n, h, i0, i1);
    bins_holding(x, n, w, j0, j1);
    for (int64_t i = i0; i <= i1; ++i) {
      for (int64_t j = j0; j <= j1; ++j) {
        const int64_t o = out_index(lv, l, c, channels, i * n + j);
        if constexpr (Max) {
          if (indices[o] == y * w + x) {
            sum += static_cast<acc_t>(grad[o]);
          }
        } else {
          const int64_t area = (bin_end(i, n, h) - bin_start(i, n, h)) * (bin_end(j, n, w) - bin_start(j, n, w));
          sum += static_cast<acc_t>(grad[o]) / static_cast<acc_t>(area);
        }
      }
    }
  }
  return sum;
}

}  // namespace spp
}  // namespace robustops
