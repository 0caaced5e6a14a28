// Spatial pyramid pooling: CUDA kernels (bins and layout in include/robustops/spp.h).
// Forward: one thread per output (plane, level, bin), all levels in one launch, the
// planes read through the cache. Backward: one thread per input element, a gather
// over the bins that hold it: deterministic, no atomics.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <robustops/cuda_runtime.cuh>

#include <robustops/spp_host.h>

#include <algorithm>

namespace robustops {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

template <bool Max, typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                               int64_t* __restrict__ indices, spp::Levels lv, int64_t planes, int64_t c, int64_t h,
                               int64_t w) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = planes * lv.total;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = e / lv.total, t = e % lv.total;
    const int64_t s = p / c, ch = p % c;
    int l;
    int64_t j;
    spp::level_of(lv, t, l, j);
    const int64_t n = lv.n[l], bi = j / n, bj = j % n;
    const int64_t y0 = spp::bin_start(bi, n, h), y1 = spp::bin_end(bi, n, h);
    const int64_t x0 = spp::bin_start(bj, n, w), x1 = spp::bin_end(bj, n, w);
    const int64_t o = s * c * lv.total + spp::out_index(lv, l, ch, c, j);
    const scalar_t* plane = x + p * h * w;
    if constexpr (Max) {
      acc_t best;
      int64_t at;
      spp::max_bin<acc_t>(plane, w, y0, y1, x0, x1, best, at);
      out[o] = static_cast<scalar_t>(best);
      indices[o] = at;
    } else {
      out[o] = static_cast<scalar_t>(spp::mean_bin<acc_t>(plane, w, y0, y1, x0, x1));
    }
  }
}

template <bool Max, typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad, const int64_t* __restrict__ indices,
                                scalar_t* __restrict__ out, spp::Levels lv, int64_t planes, int64_t c, int64_t h,
                                int64_t w) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = planes * h * w;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = e / (h * w), yx = e % (h * w);
    const int64_t s = p / c, ch = p % c;
    const int64_t base = s * c * lv.total;
    out[e] = static_cast<scalar_t>(
        spp::gather_grad<Max, acc_t>(lv, grad + base, Max ? indices + base : nullptr, ch, c, h, w, yx / w, yx % w));
  }
}

template <bool Max>
std::tuple<at::Tensor, at::Tensor> forward(const char* op, const at::Tensor& x_, at::IntArrayRef levels) {
  const spp::Levels lv = spp::levels_of(op, levels);
  const cuda::Guard guard(x_.device());
  const at::Tensor x = spp::input(op, x_, lv);
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor out = at::empty({b, c * lv.total}, x.options());
  at::Tensor indices = Max ? at::empty({b, c * lv.total}, x.options().dtype(at::kLong)) : at::Tensor();
  if (out.numel() == 0) {
    return {out, indices};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "spp", [&] {
    cuda::launch(forward_kernel<Max, scalar_t>, blocks_for(out.numel()), kThreads, 0, cuda::current_stream(),
                 x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                 Max ? indices.mutable_data_ptr<int64_t>() : nullptr, lv, b * c, c, h, w);
  });
  return {out, indices};
}

template <bool Max>
at::Tensor backward(const char* op, const at::Tensor& grad_, const at::Tensor* indices_, at::IntArrayRef levels,
                    int64_t h, int64_t w) {
  const spp::Levels lv = spp::levels_of(op, levels);
  const int64_t c = spp::grad_channels(op, grad_, lv, h, w);
  const cuda::Guard guard(grad_.device());
  const at::Tensor grad = grad_.contiguous();
  at::Tensor indices;
  if constexpr (Max) {
    indices = spp::max_indices(op, *indices_, grad);
  }
  const int64_t b = grad.size(0);
  at::Tensor out = at::empty({b, c, h, w}, grad.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "spp_backward", [&] {
    cuda::launch(backward_kernel<Max, scalar_t>, blocks_for(out.numel()), kThreads, 0, cuda::current_stream(),
                 grad.const_data_ptr<scalar_t>(), Max ? indices.const_data_ptr<int64_t>() : nullptr,
                 out.mutable_data_ptr<scalar_t>(), lv, b * c, c, h, w);
  });
  return out;
}

}  // namespace

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  register_spp<&forward<true>, &forward<false>, &backward<true>, &backward<false>>(m);
}

}  // namespace robustops
