// BANG: CUDA kernels of the per-sample gradient norm and the fused norm-and-scale
// (math in include/robustops/bang.h).
//
// Two passes over the gradient, deterministic (no atomics):
//   1. partial_sumsq: grid (chunks, samples); each block reduces one chunk of one
//      sample's block to a double partial sum of squares (CUB block reduction);
//   2. finalize (one block): norms from the partial sums, the batch max, eta;
//   3. scale: grid (chunks, samples); out = eta_i * grad_i.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <robustops/cuda_runtime.cuh>

#include <robustops/bang.h>
#include <robustops/bang_host.h>

#include <algorithm>

namespace robustops {
namespace {

using bang::acc_t;

using cuda::kThreads;
constexpr int64_t kChunk = kThreads * 16;    // elements of one sample per block
constexpr int64_t kMaxChunks = 4096;         // per sample; blocks then stride
constexpr int64_t kMaxSampleBlocks = 65535;  // gridDim.y; blocks then stride

// max that ignores NaN in its second argument (the running maxima are never NaN).
struct MaxOp {
  __device__ acc_t operator()(acc_t a, acc_t b) const { return b > a ? b : a; }
};

struct Grid {
  int64_t chunks;  // blocks per sample
  int64_t chunk;   // elements per block
  dim3 dims;
};

Grid grid_for(int64_t n, int64_t d) {
  const int64_t chunks =
      cuda::cap_blocks(std::min<int64_t>(std::max<int64_t>(1, (d + kChunk - 1) / kChunk), kMaxChunks));
  const int64_t chunk = (d + chunks - 1) / chunks;
  return {chunks, std::max<int64_t>(chunk, 1),
          dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(cuda::cap_blocks(std::min(n, kMaxSampleBlocks))))};
}

template <typename scalar_t>
__global__ void partial_sumsq_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t d, int64_t chunk,
                                     acc_t* __restrict__ partial) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Reduce = cuda::BlockReduce<acc_t, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < d ? begin + chunk : d;
  for (int64_t s = blockIdx.y; s < n; s += gridDim.y) {
    const scalar_t* xs = x + s * d;
    acc_t acc = 0;
    for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
      const acc_t v = static_cast<acc_t>(static_cast<opmath_t>(xs[j]));
      acc += v * v;
    }
    const acc_t total = Reduce(tmp).Sum(acc);
    if (threadIdx.x == 0) {
      partial[s * gridDim.x + blockIdx.x] = total;
    }
    __syncthreads();  // tmp is reused by the next sample
  }
}

// One block over the n samples: work[i] = the norm of sample i, from `chunks` partial
// sums of squares each, or from given_norms (bang_eta); norms_out (optional) gets it
// in the norms' dtype. With eps: then the batch max m (at least *max_norm) and
// work[i] = eta_i.
template <typename norm_t>
__global__ void finalize_kernel(const acc_t* __restrict__ partial, int64_t chunks,
                                const norm_t* __restrict__ given_norms, int64_t n, const double* __restrict__ eps,
                                const double* __restrict__ max_norm, norm_t* __restrict__ norms_out,
                                acc_t* __restrict__ work) {
  using Reduce = cuda::BlockReduce<acc_t, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ acc_t batch_max;
  acc_t local_max = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    acc_t norm;
    if (given_norms != nullptr) {
      norm = static_cast<acc_t>(given_norms[i]);
    } else {
      acc_t sumsq = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        sumsq += partial[i * chunks + c];
      }
      norm = ::sqrt(sumsq);
    }
    if (norms_out != nullptr) {
      norms_out[i] = static_cast<norm_t>(norm);
    }
    work[i] = norm;
    local_max = norm > local_max ? norm : local_max;  // a NaN norm does not poison the max
  }
  if (eps == nullptr) {
    return;
  }
  const acc_t m = Reduce(tmp).Reduce(local_max, MaxOp{});
  if (threadIdx.x == 0) {
    batch_max = max_norm != nullptr && *max_norm > m ? *max_norm : m;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    work[i] = bang::eta(work[i], batch_max, eps[i]);  // each thread its own samples
  }
}

template <typename scalar_t>
__global__ void scale_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t d, int64_t chunk,
                             const acc_t* __restrict__ eta, scalar_t* __restrict__ out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < d ? begin + chunk : d;
  for (int64_t s = blockIdx.y; s < n; s += gridDim.y) {
    const opmath_t e = static_cast<opmath_t>(eta[s]);
    const int64_t base = s * d;
    for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
      out[base + j] = static_cast<scalar_t>(static_cast<opmath_t>(x[base + j]) * e);
    }
  }
}

// Pass 1 and the norms: fills `partial` ([n, chunks] doubles) and returns the grid.
template <typename scalar_t>
Grid launch_partial(const bang::Batch& b, at::Tensor& partial, cuda::Stream stream) {
  const Grid g = grid_for(b.n, b.d);
  partial = at::empty({b.n, g.chunks}, b.data.options().dtype(at::kDouble));
  cuda::launch(partial_sumsq_kernel<scalar_t>, g.dims, kThreads, 0, stream, b.data.const_data_ptr<scalar_t>(), b.n, b.d,
               g.chunk, partial.mutable_data_ptr<acc_t>());
  return g;
}

const double* optional_ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<double>() : nullptr;
}

at::Tensor per_sample_norm(const at::Tensor& x) {
  const bang::Batch b = bang::batch("per_sample_norm", "x", x);
  const cuda::Guard guard(x.device());
  at::Tensor norms = at::empty({b.n}, x.options().dtype(bang::norm_dtype(x)));
  if (b.n == 0) {
    return norms;
  }
  const cuda::Stream stream = cuda::current_stream();
  at::Tensor partial;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "per_sample_norm", [&] {
    const Grid g = launch_partial<scalar_t>(b, partial, stream);
    at::Tensor work = at::empty({b.n}, partial.options());
    AT_DISPATCH_FLOATING_TYPES(norms.scalar_type(), "per_sample_norm", [&] {
      cuda::launch(finalize_kernel<scalar_t>, 1, kThreads, 0, stream, partial.const_data_ptr<acc_t>(), g.chunks,
                   nullptr, b.n, nullptr, nullptr, norms.mutable_data_ptr<scalar_t>(), work.mutable_data_ptr<acc_t>());
    });
  });
  return norms;
}

at::Tensor bang_eta(const at::Tensor& norms, const at::Tensor& eps, const c10::optional<at::Tensor>& max_norm) {
  check_floating("bang_eta", "norms", norms);
  TORCH_CHECK(norms.dim() == 1, "robustops::bang_eta: argument 'norms' must have shape [N], got ", norms.sizes());
  const cuda::Guard guard(norms.device());
  const int64_t n = norms.size(0);
  const at::Tensor eps_d = bang::per_sample_eps("bang_eta", eps, n, norms.device());
  const auto m = bang::max_norm_arg("bang_eta", max_norm, norms.device());
  const at::Tensor given = norms.contiguous();
  at::Tensor eta = at::empty({n}, norms.options().dtype(at::kDouble));
  if (n > 0) {
    const cuda::Stream stream = cuda::current_stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, norms.scalar_type(), "bang_eta", [&] {
      cuda::launch(finalize_kernel<scalar_t>, 1, kThreads, 0, stream, nullptr, 0, given.const_data_ptr<scalar_t>(), n,
                   eps_d.const_data_ptr<double>(), optional_ptr(m), nullptr, eta.mutable_data_ptr<acc_t>());
    });
  }
  return eta.to(norms.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> bang_scale(const at::Tensor& grad, const at::Tensor& eps,
                                              const c10::optional<at::Tensor>& max_norm) {
  const bang::Batch b = bang::batch("bang_scale", "grad", grad);
  const cuda::Guard guard(grad.device());
  const at::Tensor eps_d = bang::per_sample_eps("bang_scale", eps, b.n, grad.device());
  const auto m = bang::max_norm_arg("bang_scale", max_norm, grad.device());
  at::Tensor out = at::empty_like(b.data);
  at::Tensor norms = at::empty({b.n}, grad.options().dtype(bang::norm_dtype(grad)));
  if (b.n == 0) {
    return {out, norms};
  }
  const cuda::Stream stream = cuda::current_stream();
  at::Tensor partial;
  at::Tensor eta = at::empty({b.n}, grad.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "bang_scale", [&] {
    const Grid g = launch_partial<scalar_t>(b, partial, stream);
    using grad_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(norms.scalar_type(), "bang_scale", [&] {
      cuda::launch(finalize_kernel<scalar_t>, 1, kThreads, 0, stream, partial.const_data_ptr<acc_t>(), g.chunks,
                   nullptr, b.n, eps_d.const_data_ptr<double>(), optional_ptr(m), norms.mutable_data_ptr<scalar_t>(),
                   eta.mutable_data_ptr<acc_t>());
    });
    if (b.d > 0) {
      cuda::launch(scale_kernel<grad_t>, g.dims, kThreads, 0, stream, b.data.const_data_ptr<grad_t>(), b.n, b.d,
                   g.chunk, eta.const_data_ptr<acc_t>(), out.mutable_data_ptr<grad_t>());
    }
  });
  return {out, norms};
}

}  // namespace

ROBUSTOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("per_sample_norm", &per_sample_norm);
  m.impl("bang_eta", &bang_eta);
  m.impl("bang_scale", &bang_scale);
}

}  // namespace robustops
