// CROWN: CUDA kernels of the fused back-substitution through an activation's linear
// relaxation, given (crown_relax) or ReLU's computed from the input interval
// (crown_relu) (math in include/robustops/crown.h). Deterministic (no atomics):
//   forward:  one block per row (n, s) of A, grid-striding over rows; the threads
//             stride over the row's m elements and d' is a CUB block reduction;
//   backward: one thread per element (n, m) of the relaxation, looping over the S
//             rows (coalesced along m), so that the sums over S stay in registers.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <robustops/cuda_runtime.cuh>

#include <robustops/crown.h>
#include <robustops/crown_host.h>

#include <algorithm>

namespace robustops {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

// Where each element's relaxation comes from: four given lines (crown_relax), or
// ReLU's relaxation of the interval [l, u] (crown_relu). load() gives the element's
// a_lo, b_lo, a_up, b_up; store() writes its gradients from the sums over the S rows
// of G' A+, g A+, G' A-, g A- (the gradients of the four lines).
template <typename scalar_t>
struct Lines {
  const scalar_t *al, *bl, *au, *bu;
  scalar_t *gal, *gbl, *gau, *gbu;
  template <typename acc_t>
  __device__ __forceinline__ void load(int64_t i, acc_t (&r)[4]) const {
    r[0] = al[i];
    r[1] = bl[i];
    r[2] = au[i];
    r[3] = bu[i];
  }
  template <typename acc_t>
  __device__ __forceinline__ void store(int64_t i, const acc_t (&sum)[4]) const {
    gal[i] = static_cast<scalar_t>(sum[0]);
    gbl[i] = static_cast<scalar_t>(sum[1]);
    gau[i] = static_cast<scalar_t>(sum[2]);
    gbu[i] = static_cast<scalar_t>(sum[3]);
  }
};

template <typename scalar_t>
struct ReLUInterval {
  const scalar_t *l, *u;
  scalar_t *gl, *gu;
  template <typename acc_t>
  __device__ __forceinline__ void load(int64_t i, acc_t (&r)[4]) const {
    r[1] = acc_t(0);
    crown::relu_relaxation<acc_t>(l[i], u[i], r[0], r[2], r[3]);
  }
  template <typename acc_t>
  __device__ __forceinline__ void store(int64_t i, const acc_t (&sum)[4]) const {
    acc_t g_l, g_u;
    crown::relu_relaxation_backward<acc_t>(l[i], u[i], sum[2], sum[3], g_l, g_u);
    gl[i] = static_cast<scalar_t>(g_l);
    gu[i] = static_cast<scalar_t>(g_u);
  }
};

template <typename scalar_t, typename Relax>
__global__ void forward_kernel(const scalar_t* __restrict__ a, const Relax relax, scalar_t* __restrict__ out,
                               scalar_t* __restrict__ d, int64_t rows, int64_t s, int64_t m) {
  using acc_t = at::opmath_type<scalar_t>;
  using Reduce = cuda::BlockReduce<acc_t, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t off = row * m, roff = (row / s) * m;
    acc_t sum = 0;
    for (int64_t i = threadIdx.x; i < m; i += kThreads) {
      acc_t r[4], o;
      relax.load(roff + i, r);
      sum += crown::relax<acc_t>(a[off + i], r[0], r[1], r[2], r[3], o);
      out[off + i] = static_cast<scalar_t>(o);
    }
    const acc_t total = Reduce(tmp).Sum(sum);
    if (threadIdx.x == 0) {
      d[row] = static_cast<scalar_t>(total);
    }
    __syncthreads();  // tmp is reused by the next row
  }
}

template <typename scalar_t, typename Relax>
__global__ void backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ gd,
                                const scalar_t* __restrict__ a, const Relax relax, scalar_t* __restrict__ ga, int64_t n,
                                int64_t s, int64_t m) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = n * m;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / m, j = idx - i * m;
    acc_t r[4];
    relax.load(idx, r);
    acc_t sum[4] = {0, 0, 0, 0};
    for (int64_t row = 0; row < s; ++row) {
      const int64_t off = (i * s + row) * m + j;
      const acc_t x = a[off], gx = g[off], gdr = gd[i * s + row];
      const bool pos = x >= acc_t(0);
      const acc_t px = pos ? x : acc_t(0), nx = pos ? acc_t(0) : x;
      ga[off] = static_cast<scalar_t>(pos ? gx * r[0] + gdr * r[1] : gx * r[2] + gdr * r[3]);
      sum[0] += gx * px;
      sum[1] += gdr * px;
      sum[2] += gx * nx;
      sum[3] += gdr * nx;
    }
    relax.store(idx, sum);
  }
}

std::tuple<at::Tensor, at::Tensor> crown_relax(const at::Tensor& a, const at::Tensor& lower_slope,
                                               const at::Tensor& lower_intercept, const at::Tensor& upper_slope,
                                               const at::Tensor& upper_intercept) {
  const crown::Args in =
      crown::args("crown_relax", nullptr, nullptr, a, lower_slope, lower_intercept, upper_slope, upper_intercept);
  const auto [n, s, m] = in.dims;
  const cuda::Guard guard(a.device());
  at::Tensor out = at::empty(a.sizes(), in.a.options());
  at::Tensor d = at::empty({n, s}, in.a.options());
  if (n * s == 0) {
    return {out, d};
  }
  if (m == 0) {
    d.zero_();
    return {out, d};
  }
  const auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "crown_relax", [&] {
    const Lines<scalar_t> lines{in.relax[0].const_data_ptr<scalar_t>(),
                                in.relax[1].const_data_ptr<scalar_t>(),
                                in.relax[2].const_data_ptr<scalar_t>(),
                                in.relax[3].const_data_ptr<scalar_t>(),
                                nullptr,
                                nullptr,
                                nullptr,
                                nullptr};
    cuda::launch(forward_kernel<scalar_t, Lines<scalar_t>>, blocks_for(n * s, 1), kThreads, 0, stream,
                 in.a.const_data_ptr<scalar_t>(), lines, out.mutable_data_ptr<scalar_t>(),
                 d.mutable_data_ptr<scalar_t>(), n * s, s, m);
  });
  return {out, d};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> crown_relax_backward(
    const at::Tensor& grad_a, const at::Tensor& grad_d, const at::Tensor& a, const at::Tensor& lower_slope,
    const at::Tensor& lower_intercept, const at::Tensor& upper_slope, const at::Tensor& upper_intercept) {
  const crown::Args in = crown::args("_crown_relax_backward", &grad_a, &grad_d, a, lower_slope, lower_intercept,
                                     upper_slope, upper_intercept);
  const auto [n, s, m] = in.dims;
  const cuda::Guard guard(a.device());
  at::Tensor ga = at::empty(a.sizes(), in.a.options());
  at::Tensor gr[4];
  for (int i = 0; i < 4; ++i) {
    gr[i] = at::empty(lower_slope.sizes(), in.a.options());
  }
  if (n * m == 0) {
    return {ga, gr[0], gr[1], gr[2], gr[3]};
  }
  const auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "_crown_relax_backward", [&] {
    const Lines<scalar_t> lines{in.relax[0].const_data_ptr<scalar_t>(), in.relax[1].const_data_ptr<scalar_t>(),
                                in.relax[2].const_data_ptr<scalar_t>(), in.relax[3].const_data_ptr<scalar_t>(),
                                gr[0].mutable_data_ptr<scalar_t>(),     gr[1].mutable_data_ptr<scalar_t>(),
                                gr[2].mutable_data_ptr<scalar_t>(),     gr[3].mutable_data_ptr<scalar_t>()};
    cuda::launch(backward_kernel<scalar_t, Lines<scalar_t>>, blocks_for(n * m, kThreads), kThreads, 0, stream,
                 in.grad_out.const_data_ptr<scalar_t>(), in.grad_d.const_data_ptr<scalar_t>(),
                 in.a.const_data_ptr<scalar_t>(), lines, ga.mutable_data_ptr<scalar_t>(), n, s, m);
  });
  return {ga, gr[0], gr[1], gr[2], gr[3]};
}

std::tuple<at::Tensor, at::Tensor> crown_relu(const at::Tensor& a, const at::Tensor& lower, const at::Tensor& upper) {
  const crown::Args in = crown::relu_args("crown_relu", nullptr, nullptr, a, lower, upper);
  const auto [n, s, m] = in.dims;
  const cuda::Guard guard(a.device());
  at::Tensor out = at::empty(a.sizes(), in.a.options());
  at::Tensor d = at::empty({n, s}, in.a.options());
  if (n * s == 0) {
    return {out, d};
  }
  if (m == 0) {
    d.zero_();
    return {out, d};
  }
  const auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "crown_relu", [&] {
    const ReLUInterval<scalar_t> relu{in.relax[0].const_data_ptr<scalar_t>(), in.relax[1].const_data_ptr<scalar_t>(),
                                      nullptr, nullptr};
    cuda::launch(forward_kernel<scalar_t, ReLUInterval<scalar_t>>, blocks_for(n * s, 1), kThreads, 0, stream,
                 in.a.const_data_ptr<scalar_t>(), relu, out.mutable_data_ptr<scalar_t>(),
                 d.mutable_data_ptr<scalar_t>(), n * s, s, m);
  });
  return {out, d};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> crown_relu_backward(const at::Tensor& grad_a, const at::Tensor& grad_d,
                                                                   const at::Tensor& a, const at::Tensor& lower,
                                                                   const at::Tensor& upper) {
  const crown::Args in = crown::relu_args("_crown_relu_backward", &grad_a, &grad_d, a, lower, upper);
  const auto [n, s, m] = in.dims;
  const cuda::Guard guard(a.device());
  at::Tensor ga = at::empty(a.sizes(), in.a.options());
  at::Tensor gl = at::empty(lower.sizes(), in.a.options());
  at::Tensor gu = at::empty(lower.sizes(), in.a.options());
  if (n * m == 0) {
    return {ga, gl, gu};
  }
  const auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "_crown_relu_backward", [&] {
    const ReLUInterval<scalar_t> relu{in.relax[0].const_data_ptr<scalar_t>(), in.relax[1].const_data_ptr<scalar_t>(),
                                      gl.mutable_data_ptr<scalar_t>(), gu.mutable_data_ptr<scalar_t>()};
    cuda::launch(backward_kernel<scalar_t, ReLUInterval<scalar_t>>, blocks_for(n * m, kThreads), kThreads, 0, stream,
                 in.grad_out.const_data_ptr<scalar_t>(), in.grad_d.const_data_ptr<scalar_t>(),
                 in.a.const_data_ptr<scalar_t>(), relu, ga.mutable_data_ptr<scalar_t>(), n, s, m);
  });
  return {ga, gl, gu};
}

}  // namespace

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("crown_relax", &crown_relax);
  m.impl("_crown_relax_backward", &crown_relax_backward);
  m.impl("crown_relu", &crown_relu);
  m.impl("_crown_relu_backward", &crown_relu_backward);
}

}  // namespace robustops
