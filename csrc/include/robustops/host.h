// Host-side helpers shared by the CPU and CUDA host functions of every op family:
// argument checks with messages that name the op and the argument, and the
// layout rule of the elementwise ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace robustops {

// Elementwise ops accept float16, bfloat16, float32 and float64 tensors. Anything
// else is a TypeError (c10::TypeError maps to Python's TypeError).
inline void check_floating(const char* op, const char* arg, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.is_floating_point(), "robustops::", op, ": argument '", arg,
                   "' must be a floating-point tensor (float16, bfloat16, float32 or float64), got ", t.scalar_type());
}

inline void check_same_shape(const char* op, const char* arg, const at::Tensor& t, const char* other_arg,
                             const at::Tensor& other) {
  TORCH_CHECK(t.sizes() == other.sizes(), "robustops::", op, ": argument '", arg, "' has shape ", t.sizes(), " but '",
              other_arg, "' has shape ", other.sizes(), "; they must be equal");
}

inline void check_same_dtype_device(const char* op, const char* arg, const at::Tensor& t, const char* other_arg,
                                    const at::Tensor& other) {
  TORCH_CHECK_TYPE(t.scalar_type() == other.scalar_type(), "robustops::", op, ": argument '", arg, "' has dtype ",
                   t.scalar_type(), " but '", other_arg, "' has dtype ", other.scalar_type());
  TORCH_CHECK(t.device() == other.device(), "robustops::", op, ": argument '", arg, "' is on ", t.device(), " but '",
              other_arg, "' is on ", other.device());
}

// The layout rule of the elementwise ops: a tensor whose elements are dense in
// memory (contiguous, channels-last or any other permutation) is used as it is and
// its output gets the same strides, exactly as torch.empty_like(x) would; any other
// view is first copied into the layout empty_like would give it. The kernels then
// run over numel() elements of flat memory.
inline at::Tensor dense(const at::Tensor& t) {
  if (t.is_non_overlapping_and_dense()) {
    return t;
  }
  return t.contiguous(t.suggest_memory_format());
}

// `t` laid out with exactly the strides of `like` (a dense tensor of equal shape).
inline at::Tensor dense_as(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides() && t.is_non_overlapping_and_dense()) {
    return t;
  }
  return at::empty_like(like).copy_(t);
}

}  // namespace robustops
