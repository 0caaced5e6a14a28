// CUDA elementwise loops shared by every op family: grid-stride kernels over flat,
// dense memory with 16-byte vector loads and stores when the pointers allow it,
// 64-bit indexing, and launches on the current stream with a launch check
// (robustops/cuda_runtime.cuh).
// Reduced-precision storage (half, bfloat16) is computed in float (at::opmath_type).
#pragma once

#include <ATen/OpMathType.h>

#include <robustops/cuda_runtime.cuh>

#include <algorithm>
#include <cstdint>

namespace robustops {
namespace cuda {

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int kVec, typename scalar_t, typename F>
__global__ void unary_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = n / kVec;
  for (int64_t i = tid; i < n_vec; i += stride) {
    P p = reinterpret_cast<const P*>(x)[i];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      p.v[j] = static_cast<scalar_t>(f(static_cast<opmath_t>(p.v[j])));
    }
    reinterpret_cast<P*>(out)[i] = p;
  }
  for (int64_t i = n_vec * kVec + tid; i < n; i += stride) {
    out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(x[i])));
  }
}

template <int kVec, typename scalar_t, typename F>
__global__ void binary_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                              scalar_t* __restrict__ out, int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, kVec>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_vec = n / kVec;
  for (int64_t i = tid; i < n_vec; i += stride) {
    const P pa = reinterpret_cast<const P*>(a)[i];
    P pb = reinterpret_cast<const P*>(b)[i];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      pb.v[j] = static_cast<scalar_t>(f(static_cast<opmath_t>(pa.v[j]), static_cast<opmath_t>(pb.v[j])));
    }
    reinterpret_cast<P*>(out)[i] = pb;
  }
  for (int64_t i = n_vec * kVec + tid; i < n; i += stride) {
    out[i] = static_cast<scalar_t>(f(static_cast<opmath_t>(a[i]), static_cast<opmath_t>(b[i])));
  }
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

inline dim3 grid_for(int64_t work_items) {
  return dim3(blocks_for(work_items));
}

// out[i] = f(x[i]) for i < n, on the current stream of the current device.
template <typename scalar_t, typename F>
void unary_map(const scalar_t* x, scalar_t* out, int64_t n, F f) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  const Stream stream = current_stream();
  if (aligned16(x) && aligned16(out)) {
    launch(unary_kernel<kVec, scalar_t, F>, grid_for(n / kVec + 1), kThreads, 0, stream, x, out, n, f);
  } else {
    launch(unary_kernel<1, scalar_t, F>, grid_for(n), kThreads, 0, stream, x, out, n, f);
  }
}

// out[i] = f(a[i], b[i]) for i < n, on the current stream of the current device.
template <typename scalar_t, typename F>
void binary_map(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, F f) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  const Stream stream = current_stream();
  if (aligned16(a) && aligned16(b) && aligned16(out)) {
    launch(binary_kernel<kVec, scalar_t, F>, grid_for(n / kVec + 1), kThreads, 0, stream, a, b, out, n, f);
  } else {
    launch(binary_kernel<1, scalar_t, F>, grid_for(n), kThreads, 0, stream, a, b, out, n, f);
  }
}

template <int NIn, typename scalar_t>
struct Pointers {
  const scalar_t* p[NIn];
};

template <int NIn, typename scalar_t, typename F>
__global__ void to_pair_kernel(Pointers<NIn, scalar_t> in, scalar_t* __restrict__ out0, scalar_t* __restrict__ out1,
                               int64_t n, F f) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    opmath_t y0, y1;
    if constexpr (NIn == 2) {
      f(static_cast<opmath_t>(in.p[0][i]), static_cast<opmath_t>(in.p[1][i]), y0, y1);
    } else {
      static_assert(NIn == 4, "to_pair_kernel: 2 or 4 inputs");
      f(static_cast<opmath_t>(in.p[0][i]), static_cast<opmath_t>(in.p[1][i]), static_cast<opmath_t>(in.p[2][i]),
        static_cast<opmath_t>(in.p[3][i]), y0, y1);
    }
    out0[i] = static_cast<scalar_t>(y0);
    out1[i] = static_cast<scalar_t>(y1);
  }
}

// (out0[i], out1[i]) = f(in[0][i], ..., in[NIn-1][i]) for i < n.
template <int NIn, typename scalar_t, typename F>
void map_to_pair(const scalar_t* const (&in)[NIn], scalar_t* out0, scalar_t* out1, int64_t n, F f) {
  Pointers<NIn, scalar_t> ptrs;
  for (int k = 0; k < NIn; ++k) {
    ptrs.p[k] = in[k];
  }
  launch(to_pair_kernel<NIn, scalar_t, F>, grid_for(n), kThreads, 0, current_stream(), ptrs, out0, out1, n, f);
}

// The CUDA backend of elementwise.h.
struct Backend {
  using Guard = cuda::Guard;
  template <typename scalar_t, typename F>
  static void unary_map(const scalar_t* x, scalar_t* out, int64_t n, F f) {
    cuda::unary_map(x, out, n, f);
  }
  template <typename scalar_t, typename F>
  static void binary_map(const scalar_t* a, const scalar_t* b, scalar_t* out, int64_t n, F f) {
    cuda::binary_map(a, b, out, n, f);
  }
  template <int NIn, typename scalar_t, typename F>
  static void map_to_pair(const scalar_t* const (&in)[NIn], scalar_t* out0, scalar_t* out1, int64_t n, F f) {
    cuda::map_to_pair<NIn>(in, out0, out1, n, f);
  }
};

}  // namespace cuda
}  // namespace robustops
