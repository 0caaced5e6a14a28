// The CUDA execution model on CPU threads, for the CPU execution lane of the CUDA
// sources (test only; never part of the package). Included through
// robustops/cuda_runtime.cuh when ROBUSTOPS_CUDA_SIM is defined.
//
// A launch runs the threads of a block concurrently, one std::thread each, with
// __syncthreads() a real barrier over them, so that a missing barrier shows up as a
// wrong result. Blocks run one after another in a shuffled order, seeded per launch
// (ROBUSTOPS_CUDA_SIM_SEED, else a fresh seed), so that two blocks writing the same
// element show up too (ROBUSTOPS_CUDA_SIM_IN_ORDER=1 runs them in order, which hides
// such a race: the later block's write wins). __shared__ variables are function statics: one per kernel
// instantiation, which is per block since blocks do not overlap. The launch checks
// CUDA's limits (1024 threads a block, grid.y and grid.z <= 65535, no empty grid).
//
// Not modelled: warps (no kernel here uses warp primitives; each thread runs alone),
// memory coalescing and speed, real half-precision hardware, concurrent blocks.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace robustops {
namespace sim {

struct ThreadState {
  dim3 thread{0, 0, 0}, block{0, 0, 0}, block_dim, grid_dim;
  std::barrier<>* barrier = nullptr;
};
inline thread_local ThreadState state;

inline void syncthreads() {
  TORCH_CHECK(state.barrier != nullptr, "robustops CUDA lane: __syncthreads() outside a kernel");
  state.barrier->arrive_and_wait();
}

// A device guard and a stream that do nothing: the lane's tensors are CPU tensors.
struct Guard {
  template <typename D>
  explicit Guard(const D&) {}
};
struct Stream {};

inline int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

inline int64_t cap_blocks(int64_t n) {
  const int64_t cap = env_int("ROBUSTOPS_CUDA_SIM_MAX_BLOCKS", 0);
  return cap > 0 ? std::min(n, cap) : n;
}

inline uint64_t next_seed() {
  static std::atomic<uint64_t> launches{0};
  const int64_t fixed = env_int("ROBUSTOPS_CUDA_SIM_SEED", -1);
  const uint64_t n = launches.fetch_add(1);
  return fixed >= 0 ? static_cast<uint64_t>(fixed) * 1000003u + n : std::random_device{}() ^ (n << 20);
}

// Run body() as the kernel of a <<<grid, block, shared_bytes>>> launch.
template <typename F>
void launch(dim3 grid, dim3 block, std::size_t shared_bytes, F&& body) {
  const int64_t threads = int64_t(block.x) * block.y * block.z;
  const int64_t blocks = int64_t(grid.x) * grid.y * grid.z;
  TORCH_CHECK(threads >= 1 && threads <= 1024 && block.z <= 64, "robustops CUDA lane: invalid block (", block.x, ", ",
              block.y, ", ", block.z, ")");
  TORCH_CHECK(blocks >= 1 && grid.x < (1u << 31) && grid.y <= 65535 && grid.z <= 65535,
              "robustops CUDA lane: invalid grid (", grid.x, ", ", grid.y, ", ", grid.z, ")");
  TORCH_CHECK(shared_bytes == 0, "robustops CUDA lane: dynamic shared memory is not modelled");
  std::vector<int64_t> order(blocks);
  std::iota(order.begin(), order.end(), int64_t{0});
  if (env_int("ROBUSTOPS_CUDA_SIM_IN_ORDER", 0) == 0) {  // in order: only to show what shuffling finds
    std::mt19937_64 rng(next_seed());
    std::shuffle(order.begin(), order.end(), rng);
  }

  std::barrier<> barrier(threads);
  std::mutex error_mutex;
  std::exception_ptr error;
  auto run = [&](int64_t t) {
    state.thread = dim3(t % block.x, (t / block.x) % block.y, t / (int64_t(block.x) * block.y));
    state.block_dim = block;
    state.grid_dim = grid;
    state.barrier = &barrier;
    for (const int64_t b : order) {
      state.block = dim3(b % grid.x, (b / grid.x) % grid.y, b / (int64_t(grid.x) * grid.y));
      try {
        body();
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) {
          error = std::current_exception();
        }
      }
      barrier.arrive_and_wait();  // the block ends: its shared memory is free again
    }
    state.barrier = nullptr;
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back(run, t);
  }
  for (auto& th : pool) {
    th.join();
  }
  if (error) {
    std::rethrow_exception(error);
  }
}

// cub::BlockReduce's interface (Sum, Reduce): the aggregate is valid in thread 0 only,
// as in CUB (the other threads get their own input back), and the temp storage may be
// reused only after a __syncthreads(), as in CUB (no barrier at the end).
template <typename T, int kThreads>
struct BlockReduce {
  struct TempStorage {
    T values[kThreads];
  };
  TempStorage& storage;
  explicit BlockReduce(TempStorage& s) : storage(s) {}

  template <typename Op>
  T Reduce(T value, Op op) {
    const int64_t t =
        state.thread.x + int64_t(state.block_dim.x) * (state.thread.y + int64_t(state.block_dim.y) * state.thread.z);
    storage.values[t] = value;
    syncthreads();
    if (t != 0) {
      return value;
    }
    T total = storage.values[0];
    for (int i = 1; i < kThreads; ++i) {
      total = op(total, storage.values[i]);
    }
    return total;
  }
  T Sum(T value) {
    return Reduce(value, [](T a, T b) { return a + b; });
  }
};

}  // namespace sim
}  // namespace robustops

#define threadIdx (::robustops::sim::state.thread)
#define blockIdx (::robustops::sim::state.block)
#define blockDim (::robustops::sim::state.block_dim)
#define gridDim (::robustops::sim::state.grid_dim)

inline void __syncthreads() {
  ::robustops::sim::syncthreads();
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, sizeof(i));
  return i;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
}
