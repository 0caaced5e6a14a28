// The host side of an elementwise op, shared by its CPU and CUDA kernels: named
// checks, device guard, allocation in the layout rule of host.h, early return on
// empty input, dtype dispatch, launch.
//
// An op is a functor F (per-element math, see saf.h) with a static kName, and a
// Backend (cpu_loops.h, cuda_loops.cuh) that supplies a device Guard and the loops
// unary_map / binary_map. elementwise_families.h registers each family's ops with
// them, e.g. m.impl("mrelu", &unary_op<Backend, saf::MReluForward>), and a device file
// calls it once: register_saf<cpu::Backend>(m).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <tuple>

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
    Backend::unary_map(xd.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), xd.numel(), F{});
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
    Backend::binary_map(gd.const_data_ptr<scalar_t>(), xd.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                        xd.numel(), F{});
  });
  return out;
}

// An interval op: (c', r') = F(c, r) (see interval.h), outputs in c's layout.
template <typename Backend, typename F>
std::tuple<at::Tensor, at::Tensor> to_pair_op(const at::Tensor& c, const at::Tensor& r) {
  constexpr const char* op = F::kName;
  check_floating(op, "center", c);
  check_same_dtype_device(op, "radius", r, "center", c);
  check_same_shape(op, "radius", r, "center", c);
  const typename Backend::Guard guard(c.device());
  const at::Tensor cd = dense(c);
  const at::Tensor rd = dense_as(r, cd);
  at::Tensor out0 = at::empty_like(cd), out1 = at::empty_like(cd);
  if (cd.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cd.scalar_type(), op, [&] {
      const scalar_t* const in[2] = {cd.const_data_ptr<scalar_t>(), rd.const_data_ptr<scalar_t>()};
      Backend::template map_to_pair<2>(in, out0.mutable_data_ptr<scalar_t>(), out1.mutable_data_ptr<scalar_t>(),
                                       cd.numel(), F{});
    });
  }
  return {out0, out1};
}

// Its backward: (g_c, g_r) = F(g_c', g_r', c, r), in c's layout.
template <typename Backend, typename F>
std::tuple<at::Tensor, at::Tensor> to_pair_backward_op(const at::Tensor& gc, const at::Tensor& gr, const at::Tensor& c,
                                                       const at::Tensor& r) {
  constexpr const char* op = F::kName;
  check_floating(op, "center", c);
  check_same_dtype_device(op, "radius", r, "center", c);
  check_same_dtype_device(op, "grad_center", gc, "center", c);
  check_same_dtype_device(op, "grad_radius", gr, "center", c);
  check_same_shape(op, "radius", r, "center", c);
  check_same_shape(op, "grad_center", gc, "center", c);
  check_same_shape(op, "grad_radius", gr, "center", c);
  const typename Backend::Guard guard(c.device());
  const at::Tensor cd = dense(c);
  const at::Tensor rd = dense_as(r, cd), gcd = dense_as(gc, cd), grd = dense_as(gr, cd);
  at::Tensor out0 = at::empty_like(cd), out1 = at::empty_like(cd);
  if (cd.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cd.scalar_type(), op, [&] {
      const scalar_t* const in[4] = {gcd.const_data_ptr<scalar_t>(), grd.const_data_ptr<scalar_t>(),
                                     cd.const_data_ptr<scalar_t>(), rd.const_data_ptr<scalar_t>()};
      Backend::template map_to_pair<4>(in, out0.mutable_data_ptr<scalar_t>(), out1.mutable_data_ptr<scalar_t>(),
                                       cd.numel(), F{});
    });
  }
  return {out0, out1};
}

}  // namespace robustops
