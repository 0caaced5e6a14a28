// The host side of an elementwise op, shared by its CPU and CUDA kernels: named
// checks, device guard, allocation in the layout rule of host.h, early return on
// empty input, dtype dispatch, launch.
//
// An op is a functor F (per-element math, see saf.h) with a static kName, and a
// Backend (cpu_loops.h, cuda_loops.cuh) that supplies a device Guard and the loops
// unary_map / binary_map. A device file then registers, for example,
//   m.impl("mrelu", &unary_op<cpu::Backend, saf::MReluForward>);
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <robustops/host.h>

namespace robustops {

// out = F(x).
template <typename Backend, typename F>
at::Tensor unary_op(const at::Tensor& x) {
  constexpr const char* op = F::kName;
  check_floating(op, "x", x);
  const typename Backend::Guard guard(x.device());
  const at::Tensor xd = dense(x);
  at::Tensor out = at::empty_like(xd);
  if (xd.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xd.scalar_type(), op, [&] {
    Backend::unary_map(
        xd.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), xd.numel(), F{});
  });
  return out;
}

// The backward of a unary op: grad_x = F(grad, x), in x's layout.
template <typename Backend, typename F>
at::Tensor unary_backward_op(const at::Tensor& grad, const at::Tensor& x) {
  constexpr const char* op = F::kName;
  check_floating(op, "x", x);
  check_same_dtype_device(op, "grad", grad, "x", x);
  check_same_shape(op, "grad", grad, "x", x);
  const typename Backend::Guard guard(x.device());
  const at::Tensor xd = dense(x);
  const at::Tensor gd = dense_as(grad, xd);
  at::Tensor out = at::empty_like(xd);
  if (xd.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xd.scalar_type(), op, [&] {
    Backend::binary_map(gd.const_data_ptr<scalar_t>(), xd.const_data_ptr<scalar_t>(),
                        out.mutable_data_ptr<scalar_t>(), xd.numel(), F{});
  });
  return out;
}

}  // namespace robustops
