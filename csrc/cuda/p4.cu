// p4 group convolutions: CUDA kernels of the filter transform and its adjoint (index
// math in include/robustops/p4.h). One thread per output element, both gathers:
// deterministic, no atomics.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <robustops/cuda_runtime.cuh>

#include <robustops/p4_host.h>

#include <algorithm>

namespace robustops {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

template <typename scalar_t>
__global__ void transform_kernel(const scalar_t* __restrict__ w, scalar_t* __restrict__ out, p4::Dims d) {
  const int64_t n = d.transformed_numel();
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[idx] = w[p4::transform_source(d, idx)];
  }
}

template <typename scalar_t>
__global__ void adjoint_kernel(const scalar_t* __restrict__ g, scalar_t* __restrict__ out, p4::Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = d.filter_numel();
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t from[4];
    p4::adjoint_sources(d, idx, from);
    acc_t sum = static_cast<acc_t>(g[from[0]]);
    for (int r = 1; r < 4; ++r) {
      sum += static_cast<acc_t>(g[from[r]]);
    }
    out[idx] = static_cast<scalar_t>(sum);
  }
}

at::Tensor p4_filter(const at::Tensor& weight) {
  const p4::Dims d = p4::filter_dims("p4_filter", weight);
  const cuda::Guard guard(weight.device());
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty({d.o * 4, d.i * d.s, d.k, d.k}, w.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "p4_filter", [&] {
    cuda::launch(transform_kernel<scalar_t>, blocks_for(out.numel()), kThreads, 0, cuda::current_stream(),
                 w.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), d);
  });
  return out;
}

at::Tensor p4_filter_backward(const at::Tensor& grad, int64_t in_rotations) {
  const p4::Dims d = p4::transformed_dims("_p4_filter_backward", grad, in_rotations);
  const cuda::Guard guard(grad.device());
  const at::Tensor g = grad.contiguous();
  at::Tensor out = at::empty({d.o, d.i, d.s, d.k, d.k}, g.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "_p4_filter_backward", [&] {
    cuda::launch(adjoint_kernel<scalar_t>, blocks_for(out.numel()), kThreads, 0, cuda::current_stream(),
                 g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), d);
  });
  return out;
}

}  // namespace

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("p4_filter", &p4_filter);
  m.impl("_p4_filter_backward", &p4_filter_backward);
}

}  // namespace robustops
