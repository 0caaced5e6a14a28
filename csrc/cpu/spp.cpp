// Spatial pyramid pooling: CPU kernels (bins and layout in include/robustops/spp.h).
// Planes in parallel; each plane is pooled for every level while it sits in cache,
// so the feature map is read from memory once for all levels. The backward passes
// are gathers over the input (no scatter).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <robustops/spp_host.h>

#include <algorithm>

namespace robustops {
namespace {

int64_t grain(int64_t per_plane) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(per_plane, 1));
}

template <bool Max>
std::tuple<at::Tensor, at::Tensor> forward(const char* op, const at::Tensor& x_, at::IntArrayRef levels) {
  const spp::Levels lv = spp::levels_of(op, levels);
  const at::Tensor x = spp::input(op, x_, lv);
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor out = at::empty({b, c * lv.total}, x.options());
  at::Tensor indices = Max ? at::empty({b, c * lv.total}, x.options().dtype(at::kLong)) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "spp", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    int64_t* pi = Max ? indices.mutable_data_ptr<int64_t>() : nullptr;
    at::parallel_for(0, b * c, grain(h * w * lv.count), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t s = p / c, ch = p % c;
        const scalar_t* plane = px + p * h * w;
        const int64_t base = s * c * lv.total;
        for (int l = 0; l < lv.count; ++l) {
          const int64_t n = lv.n[l];
          for (int64_t i = 0; i < n; ++i) {
            const int64_t y0 = spp::bin_start(i, n, h), y1 = spp::bin_end(i, n, h);
            for (int64_t j = 0; j < n; ++j) {
              const int64_t x0 = spp::bin_start(j, n, w), x1 = spp::bin_end(j, n, w);
              const int64_t o = base + spp::out_index(lv, l, ch, c, i * n + j);
              if constexpr (Max) {
                acc_t best;
                int64_t at;
                spp::max_bin<acc_t>(plane, w, y0, y1, x0, x1, best, at);
                po[o] = static_cast<scalar_t>(best);
                pi[o] = at;
              } else {
                po[o] = static_cast<scalar_t>(spp::mean_bin<acc_t>(plane, w, y0, y1, x0, x1));
              }
            }
          }
        }
      }
    });
  });
  return {out, indices};
}

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
  const int64_t b = grad.size(0);
  at::Tensor out = at::empty({b, c, h, w}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "spp_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const int64_t* pi = Max ? indices.const_data_ptr<int64_t>() : nullptr;
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, b * c, grain(h * w * lv.count), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t s = p / c, ch = p % c;
        const int64_t base = s * c * lv.total;
        scalar_t* plane = po + p * h * w;
        for (int64_t y = 0; y < h; ++y) {
          for (int64_t x = 0; x < w; ++x) {
            plane[y * w + x] = static_cast<scalar_t>(spp::gather_grad<Max, acc_t>(
                lv, pg + base, Max ? pi + base : nullptr, ch, c, h, w, y, x));
          }
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> spp_max(const at::Tensor& x, at::IntArrayRef levels) {
  return forward<true>("spp_max", x, levels);
}

at::Tensor spp_mean(const at::Tensor& x, at::IntArrayRef levels) {
  return std::get<0>(forward<false>("spp_mean", x, levels));
}

at::Tensor spp_max_backward(const at::Tensor& grad, const at::Tensor& indices, at::IntArrayRef levels,
                            int64_t height, int64_t width) {
  return backward<true>("_spp_max_backward", grad, &indices, levels, height, width);
}

at::Tensor spp_mean_backward(const at::Tensor& grad, at::IntArrayRef levels, int64_t height, int64_t width) {
  return backward<false>("_spp_mean_backward", grad, nullptr, levels, height, width);
}

}  // namespace

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  m.impl("spp_max", &spp_max);
  m.impl("_spp_max_backward", &spp_max_backward);
  m.impl("spp_mean", &spp_mean);
  m.impl("_spp_mean_backward", &spp_mean_backward);
}

}  // namespace robustops
