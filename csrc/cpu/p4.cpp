// p4 group convolutions: CPU kernels of the filter transform and its adjoint (index
// math in include/robustops/p4.h). Both are gathers over the (small) filter.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <robustops/p4_host.h>

namespace robustops {
namespace {

constexpr int64_t kGrain = 16384;

at::Tensor p4_filter(const at::Tensor& weight) {
  const p4::Dims d = p4::filter_dims("p4_filter", weight);
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty({d.o * 4, d.i * d.s, d.k, d.k}, w.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "p4_filter", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, d.transformed_numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) {
        dst[idx] = src[p4::transform_source(d, idx)];
      }
    });
  });
  return out;
}

at::Tensor p4_filter_backward(const at::Tensor& grad, int64_t in_rotations) {
  const p4::Dims d = p4::transformed_dims("_p4_filter_backward", grad, in_rotations);
  const at::Tensor g = grad.contiguous();
  at::Tensor out = at::empty({d.o, d.i, d.s, d.k, d.k}, g.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "_p4_filter_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = g.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, d.filter_numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) {
        int64_t from[4];
        p4::adjoint_sources(d, idx, from);
        // summed in a fixed order (r = 0..3), as the CUDA kernel does
        acc_t sum = static_cast<acc_t>(src[from[0]]);
        for (int r = 1; r < 4; ++r) {
          sum += static_cast<acc_t>(src[from[r]]);
        }
        dst[idx] = static_cast<scalar_t>(sum);
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
