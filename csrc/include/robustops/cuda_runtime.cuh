// The CUDA runtime as robustops' kernels see it: the one small layer that the CUDA
// build (nvcc) and the CPU execution lane (ROBUSTOPS_CUDA_SIM: the same .cu files
// compiled by the host compiler, test only; see sim/cuda_sim.h) both use.
//
//   cuda::launch(kernel, grid, block, shared_bytes, stream, args...)
//                                 instead of kernel<<<grid, block, shared_bytes, stream>>>(args...)
//                                 followed by the launch check
//   cuda::Guard, cuda::Stream, cuda::current_stream()
//   cuda::BlockReduce<T, kThreads> cub::BlockReduce in the CUDA build
//   cuda::cap_blocks(n)           a grid dimension: n in the CUDA build; in the lane, at
//                                 most ROBUSTOPS_CUDA_SIM_MAX_BLOCKS (environment), so that
//                                 small test inputs reach the grid-stride loops
//   ROBUSTOPS_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(robustops, CUDA, m); in the lane the
//                                 CPU kernels of the test-only namespace robustops_cuda_sim
//   ROBUSTOPS_DEVICE_CODE          defined in device code and in the lane (math.h)
//   cuda::kThreads, cuda::kMaxBlocks, cuda::blocks_for(items, per_block)
//                                 every kernel's launch settings
#pragma once

#include <torch/library.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#ifdef ROBUSTOPS_CUDA_SIM
#include <robustops/sim/cuda_sim.h>
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cub/block/block_reduce.cuh>
#endif

namespace robustops {
namespace cuda {

#ifdef ROBUSTOPS_CUDA_SIM

using Guard = sim::Guard;
using Stream = sim::Stream;
inline Stream current_stream() {
  return Stream{};
}
template <typename T, int kThreads>
using BlockReduce = sim::BlockReduce<T, kThreads>;
inline int64_t cap_blocks(int64_t n) {
  return sim::cap_blocks(n);
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, Stream, Args&&... args) {
  sim::launch(grid, block, shared_bytes, [&] { kernel(args...); });
}

#else

using Guard = c10::cuda::CUDAGuard;
using Stream = cudaStream_t;
inline Stream current_stream() {
  return c10::cuda::getCurrentCUDAStream();
}
template <typename T, int kThreads>
using BlockReduce = cub::BlockReduce<T, kThreads>;
inline int64_t cap_blocks(int64_t n) {
  return n;
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, Stream stream, Args&&... args) {
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#endif

// The launch settings of every kernel here, in one place: threads per block, and
// the cap on a grid-striding kernel's blocks (enough to fill any current GPU several
// times over; the grid-stride loop covers the rest).
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{65535} * 32;

// A grid dimension for `items` work items of `per_block` each: at least 1, at most
// kMaxBlocks (and, in the lane, its test cap).
inline unsigned blocks_for(int64_t items, int64_t per_block = kThreads) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(
      std::max<int64_t>(1, cap_blocks(std::min<int64_t>(std::max<int64_t>(blocks, 1), kMaxBlocks))));
}

}  // namespace cuda
}  // namespace robustops

#ifdef ROBUSTOPS_CUDA_SIM
#define ROBUSTOPS_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(robustops_cuda_sim, CPU, m)
#else
#define ROBUSTOPS_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(robustops, CUDA, m)
#endif
