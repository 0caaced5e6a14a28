// p4 filter transform: autograd in C++ (TORCH_LIBRARY_IMPL Autograd), as torchvision
// registers its ops' autograd. The transform is a gather of a few microseconds on
// the small filters of p4 layers; a Python autograd formula (torch.library.
// register_autograd) added about 3 us per call even under no_grad and about 7 us
// with a gradient, which is most of the op's time at those sizes. Every other op's
// autograd is registered from Python (robustops/ops/<family>.py), as the fake
// kernels of these two are.
//
//     d p4_filter(W) / dW        = _p4_filter_backward (the adjoint: a gather-sum)
//     d _p4_filter_backward / dG = p4_filter (the adjoint's adjoint)
//
// so both ops are differentiable any number of times.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace robustops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_p4_filter(const at::Tensor& weight) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("robustops::p4_filter", "").typed<at::Tensor(const at::Tensor&)>();
  return op.call(weight);
}

// in_rotations is a SymInt (weight.sym_size(2)), so tracing with symbolic shapes
// (torch.compile(dynamic=True)) does not specialize on it.
at::Tensor call_p4_filter_backward(const at::Tensor& grad, const c10::SymInt& in_rotations) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("robustops::_p4_filter_backward", "")
                             .typed<at::Tensor(const at::Tensor&, c10::SymInt)>();
  return op.call(grad, in_rotations);
}

class P4Filter : public torch::autograd::Function<P4Filter> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = call_p4_filter(weight);  // checks the shape first
    ctx->saved_data["in_rotations"] = weight.sym_size(2);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {call_p4_filter_backward(grads[0], ctx->saved_data["in_rotations"].toSymInt())};
  }
};

class P4FilterBackward : public torch::autograd::Function<P4FilterBackward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const c10::SymInt& in_rotations) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_p4_filter_backward(grad, in_rotations);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {call_p4_filter(grads[0]), at::Tensor()};
  }
};

at::Tensor p4_filter_autograd(const at::Tensor& weight) {
  return P4Filter::apply(weight);
}

at::Tensor p4_filter_backward_autograd(const at::Tensor& grad, c10::SymInt in_rotations) {
  return P4FilterBackward::apply(grad, in_rotations);
}

}  // namespace

TORCH_LIBRARY_IMPL(robustops, Autograd, m) {
  m.impl("p4_filter", &p4_filter_autograd);
  m.impl("_p4_filter_backward", &p4_filter_backward_autograd);
}

}  // namespace robustops
