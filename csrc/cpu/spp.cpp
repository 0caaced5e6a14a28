// Spatial pyramid pooling: CPU kernels (bins and layout in include/robustops/spp.h).
// The forward reads the feature map once for all levels (groups of planes,
// transposed so that the bins are pooled with vector operations across planes); the
// backward scatters per plane, one thread per plane.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <robustops/cpu_loops.h>
#include <robustops/spp_host.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

namespace robustops {
namespace {

// The forward runs on groups of kLanes planes at once: the group is transposed into
// a [H W, kLanes] buffer of the compute type (one read of the planes), and every bin
// of every level is then pooled with kLanes-wide vector operations, one lane a plane;
// first-maximum and NaN semantics stay exact per lane.
constexpr int kLanes = 16;

// One bin of kLanes planes. max: the first maximum of the non-NaN values (a strict
// compare keeps the first), and apart from it the last NaN, which wins if there is
// one (adaptive_max_pool2d's rule: a NaN always replaces, nothing replaces a NaN):
// two independent selects, which vectorize. Positions are 32-bit lanes for float
// (a plane holds < 2^31 elements: checked by the caller), so that the compare's mask
// selects them in the same vector width.
template <bool Max, typename acc_t>
ROBUSTOPS_CPU_CLONES void pool_bin(const acc_t* __restrict__ buf, int64_t w, int64_t y0, int64_t y1, int64_t x0,
                                   int64_t x1, acc_t* __restrict__ value, int64_t* __restrict__ at) {
  using pos_t = std::conditional_t<sizeof(acc_t) == 8, int64_t, int32_t>;
  acc_t best[kLanes];
  pos_t pos[kLanes], nan_pos[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    best[l] = Max ? -std::numeric_limits<acc_t>::infinity() : acc_t(0);
    pos[l] = static_cast<pos_t>(y0 * w + x0);
    nan_pos[l] = -1;
  }
  for (int64_t y = y0; y < y1; ++y) {
    for (int64_t x = x0; x < x1; ++x) {
      const pos_t e = static_cast<pos_t>(y * w + x);
      const acc_t* __restrict__ v = buf + (y * w + x) * kLanes;
      if constexpr (Max) {
        for (int l = 0; l < kLanes; ++l) {
          const bool gt = v[l] > best[l];
          best[l] = gt ? v[l] : best[l];
          pos[l] = gt ? e : pos[l];
          nan_pos[l] = v[l] != v[l] ? e : nan_pos[l];
        }
      } else {
        for (int l = 0; l < kLanes; ++l) {
          best[l] += v[l];
        }
      }
    }
  }
  const acc_t area = static_cast<acc_t>((y1 - y0) * (x1 - x0));
  for (int l = 0; l < kLanes; ++l) {
    if constexpr (Max) {
      const bool nan = nan_pos[l] >= 0;
      value[l] = nan ? std::numeric_limits<acc_t>::quiet_NaN() : best[l];
      at[l] = nan ? nan_pos[l] : pos[l];
    } else {
      value[l] = best[l] / area;
      at[l] = 0;
    }
  }
}

// buf[e][l] = plane l's element e, for `lanes` consecutive planes of hw elements
// (the spare lanes of the last group repeat its last plane).
template <typename scalar_t, typename acc_t>
ROBUSTOPS_CPU_CLONES void transpose(const scalar_t* __restrict__ planes, int64_t hw, int64_t lanes,
                                    acc_t* __restrict__ buf) {
  const scalar_t* src[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) {
    src[l] = planes + std::min(l, lanes - 1) * hw;
  }
  for (int64_t e = 0; e < hw; ++e) {
    for (int l = 0; l < kLanes; ++l) {
      buf[e * kLanes + l] = static_cast<acc_t>(src[l][e]);
    }
  }
}

template <bool Max>
std::tuple<at::Tensor, at::Tensor> forward(const char* op, const at::Tensor& x_, at::IntArrayRef levels) {
  const spp::Levels lv = spp::levels_of(op, levels);
  const at::Tensor x = spp::input(op, x_, lv);
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), hw = h * w;
  TORCH_CHECK(hw < (int64_t{1} << 31), "robustops::", op, ": planes of 2^31 elements or more are not supported, got ",
              h, "x", w);
  at::Tensor out = at::empty({b, c * lv.total}, x.options());
  at::Tensor indices = Max ? at::empty({b, c * lv.total}, x.options().dtype(at::kLong)) : at::Tensor();
  const int64_t planes = b * c, groups = (planes + kLanes - 1) / kLanes;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "spp", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    int64_t* pi = Max ? indices.mutable_data_ptr<int64_t>() : nullptr;
    at::parallel_for(0, groups, cpu::grain_for(kLanes * hw * lv.count), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(hw * kLanes);
      acc_t value[kLanes];
      int64_t at[kLanes];
      for (int64_t g = begin; g < end; ++g) {
        const int64_t p0 = g * kLanes, lanes = std::min<int64_t>(kLanes, planes - p0);
        transpose<scalar_t, acc_t>(px + p0 * hw, hw, lanes, buf.data());
        for (int lvl = 0; lvl < lv.count; ++lvl) {
          const int64_t n = lv.n[lvl];
          int64_t first[kLanes];  // each lane's output of this level's bin 0
          for (int64_t l = 0; l < lanes; ++l) {
            const int64_t p = p0 + l;
            first[l] = (p / c) * c * lv.total + spp::out_index(lv, lvl, p % c, c, 0);
          }
          for (int64_t i = 0; i < n; ++i) {
            const int64_t y0 = spp::bin_start(i, n, h), y1 = spp::bin_end(i, n, h);
            for (int64_t j = 0; j < n; ++j) {
              const int64_t x0 = spp::bin_start(j, n, w), x1 = spp::bin_end(j, n, w);
              pool_bin<Max, acc_t>(buf.data(), w, y0, y1, x0, x1, value, at);
              for (int64_t l = 0; l < lanes; ++l) {
                const int64_t o = first[l] + i * n + j;
                po[o] = static_cast<scalar_t>(value[l]);
                if constexpr (Max) {
                  pi[o] = at[l];
                }
              }
            }
          }
        }
      }
    });
  });
  return {out, indices};
}

// The backward scatters each plane's bin gradients into a zeroed plane (max: at the
// saved index; mean: over the bin, divided by its area), bins in a fixed order, one
// thread per plane: deterministic. (The CUDA kernel gathers instead: no atomics.)
template <bool Max>
at::Tensor backward(const char* op, const at::Tensor& grad_, const at::Tensor* indices_, at::IntArrayRef levels,
                    int64_t h, int64_t w) {
  const spp::Levels lv = spp::levels_of(op, levels);
  const int64_t c = spp::grad_channels(op, grad_, lv, h, w);
  const at::Tensor grad = grad_.contiguous();
  at::Tensor indices;
  if constexpr (Max) {
    indices = spp::max_indices(op, *indices_, grad);
  }
  const int64_t b = grad.size(0), hw = h * w;
  at::Tensor out = at::empty({b, c, h, w}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "spp_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const int64_t* pi = Max ? indices.const_data_ptr<int64_t>() : nullptr;
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, b * c, cpu::grain_for(hw * lv.count), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(hw);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t s = p / c, ch = p % c, base = s * c * lv.total;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int lvl = 0; lvl < lv.count; ++lvl) {
          const int64_t n = lv.n[lvl];
          for (int64_t i = 0; i < n; ++i) {
            const int64_t y0 = spp::bin_start(i, n, h), y1 = spp::bin_end(i, n, h);
            for (int64_t j = 0; j < n; ++j) {
              const int64_t o = base + spp::out_index(lv, lvl, ch, c, i * n + j);
              const acc_t g = static_cast<acc_t>(pg[o]);
              if constexpr (Max) {
                acc[pi[o]] += g;
              } else {
                const int64_t x0 = spp::bin_start(j, n, w), x1 = spp::bin_end(j, n, w);
                const acc_t v = g / static_cast<acc_t>((y1 - y0) * (x1 - x0));
                for (int64_t y = y0; y < y1; ++y) {
                  acc_t* row = acc.data() + y * w;
                  for (int64_t x = x0; x < x1; ++x) {
                    row[x] += v;
                  }
                }
              }
            }
          }
        }
        scalar_t* plane = po + p * hw;
        for (int64_t e = 0; e < hw; ++e) {
          plane[e] = static_cast<scalar_t>(acc[e]);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  register_spp<&forward<true>, &forward<false>, &backward<true>, &backward<false>>(m);
}

}  // namespace robustops
