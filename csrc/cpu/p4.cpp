// p4 group convolutions: CPU kernels of the filter transform and its adjoint (index
// math in include/robustops/p4.h). Both are gathers over the (small) filter.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <robustops/cpu_loops.h>
#include <robustops/p4_host.h>

#include <algorithm>
#include <type_traits>

namespace robustops {
namespace {

// Both kernels run over the filter's k x k blocks (o, i, u) of W, in parallel: block
// (o, i, u) of W is read once and written to the 4 blocks (o, r, i, (u + r) mod s) of
// T, rotated by r (the transform), or those 4 blocks are read back through the
// inverse rotations and summed into it (the adjoint). The rotation is a template
// argument and k a compile-time constant for the common sizes, so the block loops
// unroll into plain strided copies. A filter has few blocks; the grain keeps small
// filters serial (a block is worth 2 k^2 elements of work: read and write).

// The index in a k x k block of the element that rot90(block, R)[y, x] reads.
template <int R>
C10_ALWAYS_INLINE int64_t rotated(int64_t y, int64_t x, int64_t k) {
  int64_t sy = 0, sx = 0;
  p4::rot_source(R, y, x, k, sy, sx);
  return sy * k + sx;
}

// to = rot90(from, R), one k x k block; K = k when known at compile time, else 0.
template <int R, int64_t K, typename scalar_t>
C10_ALWAYS_INLINE void rotate_block(const scalar_t* from, scalar_t* to, int64_t k_runtime) {
  const int64_t k = K > 0 ? K : k_runtime;
  for (int64_t y = 0; y < k; ++y) {
    for (int64_t x = 0; x < k; ++x) {
      to[y * k + x] = from[rotated<R>(y, x, k)];
    }
  }
}

template <int64_t K, typename scalar_t>
void transform_blocks(const scalar_t* src, scalar_t* dst, const p4::Dims& d, int64_t begin, int64_t end) {
  const int64_t k = K > 0 ? K : d.k;
  const int64_t kk = k * k;
  const int64_t r_stride = d.i * d.s * kk;  // from block (o, r, i, t) to (o, r + 1, i, t)
  for (int64_t b = begin; b < end; ++b) {
    const int64_t u = b % d.s, i = (b / d.s) % d.i, o = b / (d.s * d.i);
    const scalar_t* from = src + b * kk;
    scalar_t* to = dst + ((o * 4 * d.i + i) * d.s) * kk;  // block (o, 0, i, 0)
    rotate_block<0, K>(from, to + u * kk, k);
    rotate_block<1, K>(from, to + r_stride + ((u + 1) % d.s) * kk, k);
    rotate_block<2, K>(from, to + 2 * r_stride + ((u + 2) % d.s) * kk, k);
    rotate_block<3, K>(from, to + 3 * r_stride + ((u + 3) % d.s) * kk, k);
  }
}

template <int64_t K, typename scalar_t>
void adjoint_blocks(const scalar_t* src, scalar_t* dst, const p4::Dims& d, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k = K > 0 ? K : d.k;
  const int64_t kk = k * k;
  const int64_t r_stride = d.i * d.s * kk;
  for (int64_t b = begin; b < end; ++b) {
    const int64_t u = b % d.s, i = (b / d.s) % d.i, o = b / (d.s * d.i);
    const scalar_t* base = src + ((o * 4 * d.i + i) * d.s) * kk;  // block (o, 0, i, 0) of T
    const scalar_t* f0 = base + u * kk;
    const scalar_t* f1 = base + r_stride + ((u + 1) % d.s) * kk;
    const scalar_t* f2 = base + 2 * r_stride + ((u + 2) % d.s) * kk;
    const scalar_t* f3 = base + 3 * r_stride + ((u + 3) % d.s) * kk;
    scalar_t* to = dst + b * kk;
    for (int64_t y = 0; y < k; ++y) {
      for (int64_t x = 0; x < k; ++x) {
        // T's block r holds rot90(W block, r): its inverse rotation (4 - r) reads it
        // back; summed in a fixed order (r = 0..3), as the CUDA kernel does
        acc_t sum = static_cast<acc_t>(f0[y * k + x]);
        sum += static_cast<acc_t>(f1[rotated<3>(y, x, k)]);
        sum += static_cast<acc_t>(f2[rotated<2>(y, x, k)]);
        sum += static_cast<acc_t>(f3[rotated<1>(y, x, k)]);
        to[y * k + x] = static_cast<scalar_t>(sum);
      }
    }
  }
}

// Runs body(K) with K = k as a compile-time constant for k = 1..7, K = 0 otherwise.
template <typename Body>
void with_kernel_size(int64_t k, const Body& body) {
  switch (k) {
    case 1:
      body(std::integral_constant<int64_t, 1>{});
      break;
    case 2:
      body(std::integral_constant<int64_t, 2>{});
      break;
    case 3:
      body(std::integral_constant<int64_t, 3>{});
      break;
    case 4:
      body(std::integral_constant<int64_t, 4>{});
      break;
    case 5:
      body(std::integral_constant<int64_t, 5>{});
      break;
    case 7:
      body(std::integral_constant<int64_t, 7>{});
      break;
    default:
      body(std::integral_constant<int64_t, 0>{});
  }
}

at::Tensor p4_filter(const at::Tensor& weight) {
  const p4::Dims d = p4::filter_dims("p4_filter", weight);
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty({d.o * 4, d.i * d.s, d.k, d.k}, w.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "p4_filter", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    with_kernel_size(d.k, [&](auto K) {
      at::parallel_for(0, d.o * d.i * d.s, cpu::grain_for(2 * d.k * d.k), [&](int64_t begin, int64_t end) {
        transform_blocks<decltype(K)::value>(src, dst, d, begin, end);
      });
    });
  });
  return out;
}

at::Tensor p4_filter_backward(const at::Tensor& grad, int64_t in_rotations) {
  const p4::Dims d = p4::transformed_dims("_p4_filter_backward", grad, in_rotations);
  const at::Tensor g = grad.contiguous();
  at::Tensor out = at::empty({d.o, d.i, d.s, d.k, d.k}, g.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "_p4_filter_backward", [&] {
    const scalar_t* src = g.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    with_kernel_size(d.k, [&](auto K) {
      at::parallel_for(0, d.o * d.i * d.s, cpu::grain_for(2 * d.k * d.k), [&](int64_t begin, int64_t end) {
        adjoint_blocks<decltype(K)::value>(src, dst, d, begin, end);
      });
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
