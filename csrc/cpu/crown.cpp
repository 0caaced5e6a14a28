// CROWN: CPU kernels of the fused back-substitution through an activation's linear
// relaxation (crown_relax), and through ReLU's relaxation computed on the fly from
// the input interval (crown_relu) (math in include/robustops/crown.h).
//
// Forward: rows (n, s) in parallel; each row of A is read once, A' written once and
// d' reduced in 16 lanes. Backward: samples in parallel, and within a sample blocks
// of kBlock elements of the relaxation, so that the four gradient sums over S and
// the relaxation stay in L1 while the S rows of A and G' stream past. float16 and
// bfloat16 are computed in float through the block conversions of cpu_loops.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <robustops/cpu_loops.h>
#include <robustops/crown.h>
#include <robustops/crown_host.h>

#include <algorithm>
#include <type_traits>

namespace robustops {
namespace {

using cpu::kBlock;

// float for float16 and bfloat16 storage, else the storage type.
template <typename scalar_t>
using compute_t = std::conditional_t<cpu::is_reduced<scalar_t>, float, scalar_t>;

template <typename T>
C10_ALWAYS_INLINE T forward_lanes(const T* __restrict__ a, const T* __restrict__ al, const T* __restrict__ bl,
                                  const T* __restrict__ au, const T* __restrict__ bu, T* __restrict__ out, int64_t m) {
  constexpr int kLanes = 16;
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      acc[j] += crown::relax<T>(a[i + j], al[i + j], bl[i + j], au[i + j], bu[i + j], out[i + j]);
    }
  }
  T total = 0;
  for (; i < m; ++i) {
    total += crown::relax<T>(a[i], al[i], bl[i], au[i], bu[i], out[i]);
  }
  for (int j = 0; j < kLanes; ++j) {
    total += acc[j];
  }
  return total;
}

// One row of A (m elements) against its sample's relaxation r[0..3]; returns d'.
template <typename scalar_t>
ROBUSTOPS_CPU_CLONES compute_t<scalar_t> forward_row(const scalar_t* __restrict__ a, const scalar_t* const (&r)[4],
                                                     scalar_t* __restrict__ out, int64_t m) {
  if constexpr (cpu::is_reduced<scalar_t>) {
    float ba[kBlock], br[4][kBlock], bo[kBlock];
    float total = 0;
    for (int64_t b = 0; b < m; b += kBlock) {
      const int64_t k = std::min(kBlock, m - b);
      cpu::load_block(a + b, ba, k);
      for (int i = 0; i < 4; ++i) {
        cpu::load_block(r[i] + b, br[i], k);
      }
      total += forward_lanes<float>(ba, br[0], br[1], br[2], br[3], bo, k);
      cpu::store_block(bo, out + b, k);
    }
    return total;
  } else {
    return forward_lanes<scalar_t>(a, r[0], r[1], r[2], r[3], out, m);
  }
}

template <typename T>
C10_ALWAYS_INLINE void backward_lanes(const T* __restrict__ g, T gd, const T* __restrict__ a, const T* __restrict__ al,
                                      const T* __restrict__ bl, const T* __restrict__ au, const T* __restrict__ bu,
                                      T* __restrict__ ga, T* __restrict__ sal, T* __restrict__ sbl, T* __restrict__ sau,
                                      T* __restrict__ sbu, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    const T x = a[i];
    const bool pos = x >= T(0);
    const T px = pos ? x : T(0);
    const T nx = pos ? T(0) : x;
    ga[i] = pos ? g[i] * al[i] + gd * bl[i] : g[i] * au[i] + gd * bu[i];
    sal[i] += g[i] * px;
    sbl[i] += gd * px;
    sau[i] += g[i] * nx;
    sbu[i] += gd * nx;
  }
}

// The S rows of one block (elements b .. b + k of a sample's [s, m] G' and A)
// against the block's relaxation rel: writes dA and adds the four sums over S.
template <typename scalar_t, typename T = compute_t<scalar_t>>
C10_ALWAYS_INLINE void backward_rows(const scalar_t* __restrict__ g, const scalar_t* __restrict__ gd,
                                     const scalar_t* __restrict__ a, const T* const (&rel)[4],
                                     scalar_t* __restrict__ ga, T (&sum)[4][kBlock], int64_t s, int64_t m, int64_t b,
                                     int64_t k) {
  [[maybe_unused]] T bg[kBlock], ba[kBlock], bga[kBlock];
  for (int64_t row = 0; row < s; ++row) {
    const int64_t off = row * m + b;
    const T gdr = static_cast<T>(gd[row]);
    if constexpr (cpu::is_reduced<scalar_t>) {
      cpu::load_block(g + off, bg, k);
      cpu::load_block(a + off, ba, k);
      backward_lanes<T>(bg, gdr, ba, rel[0], rel[1], rel[2], rel[3], bga, sum[0], sum[1], sum[2], sum[3], k);
      cpu::store_block(bga, ga + off, k);
    } else {
      backward_lanes<T>(g + off, gdr, a + off, rel[0], rel[1], rel[2], rel[3], ga + off, sum[0], sum[1], sum[2], sum[3],
                        k);
    }
  }
}

// One sample: G' and A are [s, m], g is [s]; writes dA [s, m] and the four
// relaxation gradients [m].
template <typename scalar_t>
ROBUSTOPS_CPU_CLONES void backward_sample(const scalar_t* __restrict__ g, const scalar_t* __restrict__ gd,
                                          const scalar_t* __restrict__ a, const scalar_t* const (&r)[4],
                                          scalar_t* __restrict__ ga, scalar_t* const (&gr)[4], int64_t s, int64_t m) {
  using T = compute_t<scalar_t>;
  T br[4][kBlock], sum[4][kBlock];
  for (int64_t b = 0; b < m; b += kBlock) {
    const int64_t k = std::min(kBlock, m - b);
    std::fill(&sum[0][0], &sum[0][0] + 4 * kBlock, T(0));
    const T* rel[4];
    for (int i = 0; i < 4; ++i) {
      if constexpr (cpu::is_reduced<scalar_t>) {
        cpu::load_block(r[i] + b, br[i], k);
        rel[i] = br[i];
      } else {
        rel[i] = r[i] + b;
      }
    }
    backward_rows<scalar_t>(g, gd, a, rel, ga, sum, s, m, b, k);
    for (int i = 0; i < 4; ++i) {
      if constexpr (cpu::is_reduced<scalar_t>) {
        cpu::store_block(sum[i], gr[i] + b, k);
      } else {
        std::copy(sum[i], sum[i] + k, gr[i] + b);
      }
    }
  }
}

// crown_relu: the relaxation of each element computed from (l, u) as it is used.
template <typename T>
C10_ALWAYS_INLINE T relu_forward_lanes(const T* __restrict__ a, const T* __restrict__ l, const T* __restrict__ u,
                                       T* __restrict__ out, int64_t m) {
  constexpr int kLanes = 16;
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      T al, au, bu;
      crown::relu_relaxation<T>(l[i + j], u[i + j], al, au, bu);
      acc[j] += crown::relax<T>(a[i + j], al, T(0), au, bu, out[i + j]);
    }
  }
  T total = 0;
  for (; i < m; ++i) {
    T al, au, bu;
    crown::relu_relaxation<T>(l[i], u[i], al, au, bu);
    total += crown::relax<T>(a[i], al, T(0), au, bu, out[i]);
  }
  for (int j = 0; j < kLanes; ++j) {
    total += acc[j];
  }
  return total;
}

// One row of A (m elements) against its sample's interval [l, u]; returns d'.
template <typename scalar_t>
ROBUSTOPS_CPU_CLONES compute_t<scalar_t> relu_forward_row(const scalar_t* __restrict__ a,
                                                          const scalar_t* __restrict__ l,
                                                          const scalar_t* __restrict__ u, scalar_t* __restrict__ out,
                                                          int64_t m) {
  if constexpr (cpu::is_reduced<scalar_t>) {
    float ba[kBlock], bl[kBlock], bu[kBlock], bo[kBlock];
    float total = 0;
    for (int64_t b = 0; b < m; b += kBlock) {
      const int64_t k = std::min(kBlock, m - b);
      cpu::load_block(a + b, ba, k);
      cpu::load_block(l + b, bl, k);
      cpu::load_block(u + b, bu, k);
      total += relu_forward_lanes<float>(ba, bl, bu, bo, k);
      cpu::store_block(bo, out + b, k);
    }
    return total;
  } else {
    return relu_forward_lanes<scalar_t>(a, l, u, out, m);
  }
}

// One sample of crown_relu's backward: the relaxation of each block of kBlock
// elements from [l, u], the sums over the S rows as in backward_sample, then the
// gradients of l and u through the relaxation's derivatives.
template <typename scalar_t>
ROBUSTOPS_CPU_CLONES void relu_backward_sample(const scalar_t* __restrict__ g, const scalar_t* __restrict__ gd,
                                               const scalar_t* __restrict__ a, const scalar_t* __restrict__ l,
                                               const scalar_t* __restrict__ u, scalar_t* __restrict__ ga,
                                               scalar_t* __restrict__ gl, scalar_t* __restrict__ gu, int64_t s,
                                               int64_t m) {
  using T = compute_t<scalar_t>;
  T bl[kBlock], bu[kBlock], rel[4][kBlock], sum[4][kBlock], bgl[kBlock], bgu[kBlock];
  std::fill(rel[1], rel[1] + kBlock, T(0));  // b_lo
  const T* const lines[4] = {rel[0], rel[1], rel[2], rel[3]};
  for (int64_t b = 0; b < m; b += kBlock) {
    const int64_t k = std::min(kBlock, m - b);
    std::fill(&sum[0][0], &sum[0][0] + 4 * kBlock, T(0));
    for (int64_t i = 0; i < k; ++i) {
      bl[i] = static_cast<T>(l[b + i]);
      bu[i] = static_cast<T>(u[b + i]);
      crown::relu_relaxation<T>(bl[i], bu[i], rel[0][i], rel[2][i], rel[3][i]);
    }
    backward_rows<scalar_t>(g, gd, a, lines, ga, sum, s, m, b, k);
    for (int64_t i = 0; i < k; ++i) {
      crown::relu_relaxation_backward<T>(bl[i], bu[i], sum[2][i], sum[3][i], bgl[i], bgu[i]);
      gl[b + i] = static_cast<scalar_t>(bgl[i]);
      gu[b + i] = static_cast<scalar_t>(bgu[i]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> crown_relax(const at::Tensor& a, const at::Tensor& lower_slope,
                                               const at::Tensor& lower_intercept, const at::Tensor& upper_slope,
                                               const at::Tensor& upper_intercept) {
  const crown::Args in =
      crown::args("crown_relax", nullptr, nullptr, a, lower_slope, lower_intercept, upper_slope, upper_intercept);
  const auto [n, s, m] = in.dims;
  at::Tensor out = at::empty(a.sizes(), in.a.options());
  at::Tensor d = at::empty({n, s}, in.a.options());
  if (n * s == 0) {
    return {out, d};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "crown_relax", [&] {
    const scalar_t* pa = in.a.const_data_ptr<scalar_t>();
    const scalar_t* rel[4];
    for (int i = 0; i < 4; ++i) {
      rel[i] = in.relax[i].const_data_ptr<scalar_t>();
    }
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    scalar_t* pd = d.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n * s, cpu::grain_for(m), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t off = (row / s) * m;
        const scalar_t* const r[4] = {rel[0] + off, rel[1] + off, rel[2] + off, rel[3] + off};
        pd[row] = static_cast<scalar_t>(forward_row<scalar_t>(pa + row * m, r, po + row * m, m));
      }
    });
  });
  return {out, d};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> crown_relax_backward(
    const at::Tensor& grad_a, const at::Tensor& grad_d, const at::Tensor& a, const at::Tensor& lower_slope,
    const at::Tensor& lower_intercept, const at::Tensor& upper_slope, const at::Tensor& upper_intercept) {
  const crown::Args in = crown::args("_crown_relax_backward", &grad_a, &grad_d, a, lower_slope, lower_intercept,
                                     upper_slope, upper_intercept);
  const auto [n, s, m] = in.dims;
  at::Tensor ga = at::empty(a.sizes(), in.a.options());
  at::Tensor gr[4];
  for (int i = 0; i < 4; ++i) {
    gr[i] = at::empty(lower_slope.sizes(), in.a.options());
  }
  if (n * m == 0) {
    return {ga, gr[0], gr[1], gr[2], gr[3]};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "_crown_relax_backward", [&] {
    const scalar_t* pg = in.grad_out.const_data_ptr<scalar_t>();
    const scalar_t* pgd = in.grad_d.const_data_ptr<scalar_t>();
    const scalar_t* pa = in.a.const_data_ptr<scalar_t>();
    const scalar_t* rel[4];
    scalar_t* grel[4];
    for (int i = 0; i < 4; ++i) {
      rel[i] = in.relax[i].const_data_ptr<scalar_t>();
      grel[i] = gr[i].mutable_data_ptr<scalar_t>();
    }
    scalar_t* pga = ga.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, cpu::grain_for(s * m), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t off = i * s * m, roff = i * m;
        const scalar_t* const r[4] = {rel[0] + roff, rel[1] + roff, rel[2] + roff, rel[3] + roff};
        scalar_t* const g[4] = {grel[0] + roff, grel[1] + roff, grel[2] + roff, grel[3] + roff};
        backward_sample<scalar_t>(pg + off, pgd + i * s, pa + off, r, pga + off, g, s, m);
      }
    });
  });
  return {ga, gr[0], gr[1], gr[2], gr[3]};
}

std::tuple<at::Tensor, at::Tensor> crown_relu(const at::Tensor& a, const at::Tensor& lower, const at::Tensor& upper) {
  const crown::Args in = crown::relu_args("crown_relu", nullptr, nullptr, a, lower, upper);
  const auto [n, s, m] = in.dims;
  at::Tensor out = at::empty(a.sizes(), in.a.options());
  at::Tensor d = at::empty({n, s}, in.a.options());
  if (n * s == 0) {
    return {out, d};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "crown_relu", [&] {
    const scalar_t* pa = in.a.const_data_ptr<scalar_t>();
    const scalar_t* pl = in.relax[0].const_data_ptr<scalar_t>();
    const scalar_t* pu = in.relax[1].const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    scalar_t* pd = d.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n * s, cpu::grain_for(m), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t off = (row / s) * m;
        pd[row] = static_cast<scalar_t>(relu_forward_row<scalar_t>(pa + row * m, pl + off, pu + off, po + row * m, m));
      }
    });
  });
  return {out, d};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> crown_relu_backward(const at::Tensor& grad_a, const at::Tensor& grad_d,
                                                                   const at::Tensor& a, const at::Tensor& lower,
                                                                   const at::Tensor& upper) {
  const crown::Args in = crown::relu_args("_crown_relu_backward", &grad_a, &grad_d, a, lower, upper);
  const auto [n, s, m] = in.dims;
  at::Tensor ga = at::empty(a.sizes(), in.a.options());
  at::Tensor gl = at::empty(lower.sizes(), in.a.options());
  at::Tensor gu = at::empty(lower.sizes(), in.a.options());
  if (n * m == 0) {
    return {ga, gl, gu};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "_crown_relu_backward", [&] {
    const scalar_t* pg = in.grad_out.const_data_ptr<scalar_t>();
    const scalar_t* pgd = in.grad_d.const_data_ptr<scalar_t>();
    const scalar_t* pa = in.a.const_data_ptr<scalar_t>();
    const scalar_t* pl = in.relax[0].const_data_ptr<scalar_t>();
    const scalar_t* pu = in.relax[1].const_data_ptr<scalar_t>();
    scalar_t* pga = ga.mutable_data_ptr<scalar_t>();
    scalar_t* pgl = gl.mutable_data_ptr<scalar_t>();
    scalar_t* pgu = gu.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, cpu::grain_for(s * m), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t off = i * s * m, roff = i * m;
        relu_backward_sample<scalar_t>(pg + off, pgd + i * s, pa + off, pl + roff, pu + roff, pga + off, pgl + roff,
                                       pgu + roff, s, m);
      }
    });
  });
  return {ga, gl, gu};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustops, CPU, m) {
  m.impl("crown_relax", &crown_relax);
  m.impl("_crown_relax_backward", &crown_relax_backward);
  m.impl("crown_relu", &crown_relu);
  m.impl("_crown_relu_backward", &crown_relu_backward);
}

}  // namespace robustops
