#include "worker/param_diversity.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "worker/param_cache.h"

namespace moesweep::worker {
namespace {

constexpr double kEps = 1e-12;  // as the other cosine losses (losses.cc)

// The loops below are memory-bound passes over the expert parameters. They are compiled for
// AVX-512, AVX2 and baseline x86-64 and picked at load time, like optimizer.cc's. Sums run in 16
// independent double lanes, so that they vectorise without reassociating a single sum.
constexpr int kLanes = 16;

__attribute__((target_clones("avx512f", "avx2", "default")))
double DiversityDotKernel(const float* __restrict x, const float* __restrict y, int64_t n) {
  double lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int i = 0; i < kLanes; ++i) lanes[i] += static_cast<double>(x[j + i]) * y[j + i];
  }
  double acc = 0;
  for (; j < n; ++j) acc += static_cast<double>(x[j]) * y[j];
  for (int i = 0; i < kLanes; ++i) acc += lanes[i];
  return acc;
}

// s (=|+=) sum_k a[k] * x_k over 4 experts at once: four concurrent read streams keep more of the
// memory bandwidth busy than one (about 2x on the development VM). The sum runs in expert order,
// as one expert at a time would. first: overwrite s.
__attribute__((target_clones("avx512f", "avx2", "default")))
void DiversitySumKernel(float* __restrict s, const float* __restrict x0, const float* __restrict x1,
                        const float* __restrict x2, const float* __restrict x3, const float* a, int64_t n, bool first) {
  const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
  if (first) {
    for (int64_t j = 0; j < n; ++j) s[j] = ((a0 * x0[j] + a1 * x1[j]) + a2 * x2[j]) + a3 * x3[j];
  } else {
    for (int64_t j = 0; j < n; ++j) s[j] = (((s[j] + a0 * x0[j]) + a1 * x1[j]) + a2 * x2[j]) + a3 * x3[j];
  }
}

// The same for one expert (the experts left over after the groups of 4).
__attribute__((target_clones("avx512f", "avx2", "default")))
void DiversitySumKernel(float* __restrict s, const float* __restrict x, float a, int64_t n, bool first) {
  if (first) {
    for (int64_t j = 0; j < n; ++j) s[j] = a * x[j];
  } else {
    for (int64_t j = 0; j < n; ++j) s[j] += a * x[j];
  }
}

// g = [g +] [extra +] (a s + b w) with a sum of squares of the result; see DiversityGrad.
template <bool kOverwrite, bool kExtra>
__attribute__((always_inline)) inline double GradLoop(float* __restrict g, const float* __restrict w,
                                                      const float* __restrict s, const float* __restrict extra,
                                                      float a, float b, int64_t n) {
  auto value = [&](int64_t j) {
    const float term = a * s[j] + b * w[j];
    if constexpr (kOverwrite && kExtra) return extra[j] + term;
    if constexpr (kOverwrite && !kExtra) return term;
    if constexpr (!kOverwrite && kExtra) return (g[j] + extra[j]) + term;
    return g[j] + term;
  };
  double lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int i = 0; i < kLanes; ++i) {
      const float v = value(j + i);
      g[j + i] = v;
      lanes[i] += static_cast<double>(v) * v;
    }
  }
  double acc = 0;
  for (; j < n; ++j) {
    const float v = value(j);
    g[j] = v;
    acc += static_cast<double>(v) * v;
  }
  for (int i = 0; i < kLanes; ++i) acc += lanes[i];
  return acc;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
double DiversityGradKernel(float* __restrict g, const float* __restrict w, const float* __restrict s,
                           const float* __restrict extra, float a, float b, int64_t n, bool overwrite) {
  if (overwrite) {
    return extra != nullptr ? GradLoop<true, true>(g, w, s, extra, a, b, n)
                            : GradLoop<true, false>(g, w, s, extra, a, b, n);
  }
  return extra != nullptr ? GradLoop<false, true>(g, w, s, extra, a, b, n)
                          : GradLoop<false, false>(g, w, s, extra, a, b, n);
}

}  // namespace

// Only reads, so x may be passed twice to the restrict-qualified kernel.
double SumSquares(const float* x, int64_t n) { return DiversityDotKernel(x, x, n); }

DiversityForward ComputeDiversityForward(at::TensorList stacked) {
  const int64_t e = stacked.at(0).size(0);
  TORCH_CHECK(e >= 2, "parameter diversity: needs at least 2 experts");
  std::vector<const float*> data;
  std::vector<int64_t> per;
  for (const at::Tensor& p : stacked) {
    TORCH_CHECK(p.is_contiguous() && p.scalar_type() == at::kFloat && p.dim() >= 1 && p.size(0) == e,
                "parameter diversity: contiguous float tensors with the expert index as dim 0");
    data.push_back(p.data_ptr<float>());
    per.push_back(p.numel() / e);
  }
  // |theta_e|^2, tensor by tensor; recorded by FusedAdamW::Step as it wrote the parameters, or
  // computed here when there is no valid record (the first step, or parameters changed since).
  std::vector<double> sq(e, 0.0), recorded;
  for (size_t t = 0; t < stacked.size(); ++t) {
    if (RecordedSliceSumSquares(stacked[t], &recorded) && static_cast<int64_t>(recorded.size()) == e) {
      for (int64_t i = 0; i < e; ++i) sq[i] += recorded[i];
      continue;
    }
    at::parallel_for(0, e, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sq[i] += SumSquares(data[t] + i * per[t], per[t]);
    });
  }
  DiversityForward f;
  f.inv.resize(e);
  for (int64_t i = 0; i < e; ++i) f.inv[i] = static_cast<float>(1.0 / std::max(std::sqrt(sq[i]), kEps));

  // s restricted to each tensor, accumulated in blocks that stay in L1 while every expert's
  // matching block is added in, so each parameter is read once.
  constexpr int64_t kBlock = 8192;
  const int64_t grouped = e / 4 * 4;
  double total = 0;
  for (size_t t = 0; t < stacked.size(); ++t) {
    const int64_t n = per[t];
    at::Tensor s = at::empty({n}, at::kFloat);
    float* s_p = s.data_ptr<float>();
    at::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t j = blk * kBlock, len = std::min(kBlock, n - j);
        const float* x = data[t] + j;
        for (int64_t i = 0; i < grouped; i += 4) {
          DiversitySumKernel(s_p + j, x + i * n, x + (i + 1) * n, x + (i + 2) * n, x + (i + 3) * n, f.inv.data() + i,
                             len, i == 0);
        }
        for (int64_t i = grouped; i < e; ++i) DiversitySumKernel(s_p + j, x + i * n, f.inv[i], len, i == 0);
      }
    });
    total += SumSquares(s_p, n);
    f.s.push_back(std::move(s));
  }
  f.loss = (total - static_cast<double>(e)) / static_cast<double>(e * (e - 1));
  return f;
}

double DiversityDot(const float* s, const float* x, int64_t n) { return DiversityDotKernel(s, x, n); }

void DiversityCoefficients(double upstream, int64_t experts, float inv, double c, float* a, float* b) {
  const double k = upstream / static_cast<double>(experts * (experts - 1));
  const double v = inv;
  *a = static_cast<float>(2.0 * k * v);
  *b = static_cast<float>(-2.0 * k * c * v * v * v);
}

double DiversityGrad(float* g, const float* w, const float* s, const float* extra, float a, float b, int64_t n,
                     bool overwrite) {
  return DiversityGradKernel(g, w, s, extra, a, b, n, overwrite);
}

}  // namespace moesweep::worker
