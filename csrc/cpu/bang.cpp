// BANG: CPU kernels of the per-sample gradient norm and the fused norm-and-scale
// (math in include/robustops/bang.h).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <robustops/bang.h>
#include <robustops/bang_host.h>
#include <robustops/cpu_loops.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace robustops {
namespace {

using bang::acc_t;

// Sum of squares of every sample's block, in double: one parallel read pass.
template <typename scalar_t>
void sum_squares_per_sample(const bang::Batch& b, acc_t* out) {
  const scalar_t* data = b.data.const_data_ptr<scalar_t>();
  at::parallel_for(0, b.n, cpu::grain_for(b.d), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[i] = cpu::sum_squares(data + i * b.d, b.d);
    }
  });
}

// eta of every sample; m = max(max_norm, the largest norm of the batch).
void etas(const acc_t* norms, const double* eps, int64_t n, const c10::optional<at::Tensor>& max_norm, acc_t* eta) {
  acc_t m = max_norm.has_value() ? max_norm->item<double>() : 0.0;
  for (int64_t i = 0; i < n; ++i) {
    m = std::max(m, norms[i]);  // a NaN norm does not poison the max
  }
  for (int64_t i = 0; i < n; ++i) {
    eta[i] = bang::eta(norms[i], m, eps[i]);
  }
}

at::Tensor per_sample_norm(const at::Tensor& x) {
  const bang::Batch b = bang::batch("per_sample_norm", "x", x);
  at::Tensor sumsq = at::empty({b.n}, x.options().dtype(at::kDouble));
  if (b.n > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "per_sample_norm",
                                    [&] { sum_squares_per_sample<scalar_t>(b, sumsq.mutable_data_ptr<acc_t>()); });
  }
  return sumsq.sqrt_().to(bang::norm_dtype(x));
}

at::Tensor bang_eta(const at::Tensor& norms, const at::Tensor& eps, const c10::optional<at::Tensor>& max_norm) {
  check_floating("bang_eta", "norms", norms);
  TORCH_CHECK(norms.dim() == 1, "robustops::bang_eta: argument 'norms' must have shape [N], got ", norms.sizes());
  const int64_t n = norms.size(0);
  const at::Tensor eps_d = bang::per_sample_eps("bang_eta", eps, n, norms.device());
  const auto m = bang::max_norm_arg("bang_eta", max_norm, norms.device());
  const at::Tensor norms_d = norms.to(at::kDouble).contiguous();
  at::Tensor eta = at::empty({n}, norms_d.options());
  etas(norms_d.const_data_ptr<acc_t>(), eps_d.const_data_ptr<double>(), n, m, eta.mutable_data_ptr<acc_t>());
  return eta.to(norms.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> bang_scale(const at::Tensor& grad, const at::Tensor& eps,
                                              const c10::optional<at::Tensor>& max_norm) {
  const bang::Batch b = bang::batch("bang_scale", "grad", grad);
  const at::Tensor eps_d = bang::per_sample_eps("bang_scale", eps, b.n, grad.device());
  const auto m = bang::max_norm_arg("bang_scale", max_norm, grad.device());
  at::Tensor out = at::empty_like(b.data);
  at::Tensor norms = at::empty({b.n}, grad.options().dtype(at::kDouble));
  if (b.n == 0) {
    return {out, norms.to(bang::norm_dtype(grad))};
  }
  std::vector<acc_t> eta(b.n);
  acc_t* norm = norms.mutable_data_ptr<acc_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "bang_scale", [&] {
    sum_squares_per_sample<scalar_t>(b, norm);  // first pass: read
    for (int64_t i = 0; i < b.n; ++i) {
      norm[i] = std::sqrt(norm[i]);
    }
    etas(norm, eps_d.const_data_ptr<double>(), b.n, m, eta.data());
    // Second pass: out = eta_i * grad_i, in parallel chunks that may span samples.
    const scalar_t* in = b.data.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t d = b.d;
    at::parallel_for(0, b.n * d, cpu::kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin / d; s * d < end; ++s) {
        const int64_t lo = std::max(begin, s * d), hi = std::min(end, (s + 1) * d);
        cpu::unary_chunk<scalar_t>(in + lo, o + lo, hi - lo, cpu::Multiply{eta[s]});
      }
    });
  });
  return {out, norms.to(bang::norm_dtype(grad))};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  m.impl("per_sample_norm", &per_sample_norm);
  m.impl("bang_eta", &bang_eta);
  m.impl("bang_scale", &bang_scale);
}

}  // namespace robustops
