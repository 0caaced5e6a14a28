// p4 group convolutions: CPU kernels of the filter transform and its adjoint (index
// math in include/robustops/p4.h). Both are gathers over the (small) filter.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <robustops/p4_host.h>

#include <algorithm>
#include <vector>

namespace robustops {
namespace {

// The k x k position maps of the 4 rotations: rot90(M, r).flat[q] = M.flat[map[r][q]].
std::vector<int64_t> rotation_maps(int64_t k) {
  std::vector<int64_t> maps(4 * k * k);
  for (int r = 0; r < 4; ++r) {
    for (int64_t y = 0; y < k; ++y) {
      for (int64_t x = 0; x < k; ++x) {
        int64_t sy, sx;
        p4::rot_source(r, y, x, k, sy, sx);
        maps[(r * k + y) * k + x] = sy * k + sx;
      }
    }
  }
  return maps;
}

// Both kernels run over k x k blocks, without index arithmetic per element: block
// (o, r, i, t) of T is block (o, i, (t - r) mod s) of W read through rotation r's
// map. Blocks in parallel (a filter has few; the grain keeps small ones serial).
int64_t block_grain(int64_t kk) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(kk, 1));
}

at::Tensor p4_filter(const at::Tensor& weight) {
  const p4::Dims d = p4::filter_dims("p4_filter", weight);
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty({d.o * 4, d.i * d.s, d.k, d.k}, w.options());
  const int64_t kk = d.k * d.k;
  const std::vector<int64_t> maps = rotation_maps(d.k);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "p4_filter", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    // output blocks in order (o, r, i, t); output channels o in parallel
    at::parallel_for(0, d.o, block_grain(4 * d.i * d.s * kk), [&](int64_t begin, int64_t end) {
      scalar_t* to = dst + begin * 4 * d.i * d.s * kk;
      for (int64_t o = begin; o < end; ++o) {
        for (int64_t r = 0; r < 4; ++r) {
          const int64_t* map = maps.data() + r * kk;
          for (int64_t i = 0; i < d.i; ++i) {
            for (int64_t t = 0; t < d.s; ++t, to += kk) {
              const int64_t u = ((t - r) % d.s + d.s) % d.s;
              const scalar_t* from = src + ((o * d.i + i) * d.s + u) * kk;
              for (int64_t q = 0; q < kk; ++q) {
                to[q] = from[map[q]];
              }
            }
          }
        }
      }
    });
  });
  return out;
}

at::Tensor p4_filter_backward(const at::Tensor& grad, int64_t in_rotations) {
  const p4::Dims d = p4::transformed_dims("_p4_filter_backward", grad, in_rotations);
  const at::Tensor g = grad.contiguous();
  at::Tensor out = at::empty({d.o, d.i, d.s, d.k, d.k}, g.options());
  const int64_t kk = d.k * d.k;
  // the adjoint reads T's block (o, r, i, (u + r) mod s) through the inverse rotation's map
  const std::vector<int64_t> maps = rotation_maps(d.k);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "_p4_filter_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = g.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    // weight blocks in order: (o, i, u)
    at::parallel_for(0, d.o * d.i * d.s, block_grain(4 * kk), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t u = b % d.s, i = (b / d.s) % d.i, o = b / (d.s * d.i);
        const scalar_t* from[4];
        const int64_t* map[4];
        for (int r = 0; r < 4; ++r) {
          const int64_t t = (u + r) % d.s;
          from[r] = src + (((o * 4 + r) * d.i + i) * d.s + t) * kk;
          map[r] = maps.data() + ((4 - r) & 3) * kk;
        }
        scalar_t* to = dst + b * kk;
        for (int64_t q = 0; q < kk; ++q) {
          // summed in a fixed order (r = 0..3), as the CUDA kernel does
          acc_t sum = static_cast<acc_t>(from[0][map[0][q]]);
          for (int r = 1; r < 4; ++r) {
            sum += static_cast<acc_t>(from[r][map[r][q]]);
          }
          to[q] = static_cast<scalar_t>(sum);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  m.impl("p4_filter", &p4_filter);
  m.impl("_p4_filter_backward", &p4_filter_backward);
}

}  // namespace robustops
