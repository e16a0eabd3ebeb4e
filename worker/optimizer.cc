#include "worker/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "worker/param_cache.h"
#include "worker/param_diversity.h"

namespace moesweep::worker {
namespace {

struct AdamWConstants {
  float decay, step_size, inv_sqrt_bc2, eps, b1, b2, c1, c2, scale;
};

constexpr int kLanes = 16;

// w, m, v <- one AdamW update of element j; returns the new w.
template <bool kHasGrad>
__attribute__((always_inline)) inline float UpdateOne(float* __restrict w, float* __restrict m, float* __restrict v,
                                                      const float* __restrict g, int64_t j, const AdamWConstants& k) {
  float mj, vj;
  if constexpr (kHasGrad) {
    const float gj = g[j] * k.scale;
    mj = k.b1 * m[j] + k.c1 * gj;
    vj = k.b2 * v[j] + k.c2 * gj * gj;
  } else {  // No gradient: decay and momentum only.
    mj = k.b1 * m[j];
    vj = k.b2 * v[j];
  }
  m[j] = mj;
  v[j] = vj;
  const float wj = w[j] * k.decay - k.step_size * mj / (std::sqrt(vj) * k.inv_sqrt_bc2 + k.eps);
  w[j] = wj;
  return wj;
}

template <bool kHasGrad>
__attribute__((always_inline)) inline double UpdateChunk(float* __restrict w, float* __restrict m,
                                                         float* __restrict v, const float* __restrict g, int64_t n,
                                                         const AdamWConstants& k) {
  // The new weights' sum of squares comes free while they are in registers (see
  // RecordSliceSumSquares); independent lanes so that the loop vectorises without reassociating.
  double lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int i = 0; i < kLanes; ++i) {
      const float wj = UpdateOne<kHasGrad>(w, m, v, g, j + i, k);
      lanes[i] += static_cast<double>(wj) * wj;
    }
  }
  double acc = 0;
  for (; j < n; ++j) {
    const float wj = UpdateOne<kHasGrad>(w, m, v, g, j, k);
    acc += static_cast<double>(wj) * wj;
  }
  for (int i = 0; i < kLanes; ++i) acc += lanes[i];
  return acc;
}

// One pass over a parameter chunk (g == nullptr: no gradient); returns the sum of squares of the
// new weights. Compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time: the build
// targets generic x86-64, and this loop is memory-bound. With the gradient consumed read-only
// (Step parks it instead of zeroing it), it streams w, m and v in and out and g in: 7 streams.
__attribute__((target_clones("avx512f", "avx2", "default")))
double AdamWKernel(float* __restrict w, float* __restrict m, float* __restrict v, const float* __restrict g,
                   int64_t n, const AdamWConstants k) {
  return g == nullptr ? UpdateChunk<false>(w, m, v, g, n, k) : UpdateChunk<true>(w, m, v, g, n, k);
}

}  // namespace

FusedAdamW::FusedAdamW(std::vector<at::Tensor> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  for (const at::Tensor& p : params_) {
    TORCH_CHECK(p.is_contiguous() && p.scalar_type() == at::kFloat, "FusedAdamW: contiguous float parameters only");
    exp_avg_.push_back(at::zeros_like(p));
    exp_avg_sq_.push_back(at::zeros_like(p));
  }
}

double FusedAdamW::GradNorm() const {
  // Fixed-size chunks summed in a fixed order: the same result for any number of threads.
  constexpr int64_t kChunk = 1 << 16;
  double sq = 0;
  std::vector<double> partial;
  for (const at::Tensor& p : params_) {
    if (!p.grad().defined()) continue;
    double recorded = 0;
    if (RecordedGradSumSquares(p, &recorded)) {
      sq += recorded;
      continue;
    }
    const at::Tensor g = p.grad().contiguous();
    const float* data = g.data_ptr<float>();
    const int64_t n = g.numel(), chunks = (n + kChunk - 1) / kChunk;
    partial.assign(chunks, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        partial[c] = SumSquares(data + c * kChunk, std::min(kChunk, n - c * kChunk));
      }
    });
    for (double v : partial) sq += v;
  }
  return std::sqrt(sq);
}

void FusedAdamW::Step(double lr, double grad_scale) {
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  AdamWConstants k;
  k.decay = static_cast<float>(1.0 - lr * options_.weight_decay);
  k.step_size = static_cast<float>(lr / bc1);
  k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  k.eps = static_cast<float>(options_.eps);
  k.b1 = static_cast<float>(b1);
  k.b2 = static_cast<float>(b2);
  k.c1 = static_cast<float>(1.0 - b1);
  k.c2 = static_cast<float>(1.0 - b2);
  k.scale = static_cast<float>(grad_scale);
  constexpr int64_t kChunk = 1 << 14;
  std::vector<double> partial;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    const at::Tensor& grad = p.grad();
    const at::Tensor g_contig = grad.defined() ? grad.contiguous() : at::Tensor();
    float* w = p.data_ptr<float>();
    float* m = exp_avg_[i].data_ptr<float>();
    float* v = exp_avg_sq_[i].data_ptr<float>();
    const float* g = g_contig.defined() ? g_contig.data_ptr<float>() : nullptr;
    // Work items are chunks within dim-0 slices, so that each slice's sum of squares is summed
    // in a fixed order whatever the number of threads.
    const int64_t slices = p.dim() >= 2 && p.size(0) > 0 ? p.size(0) : 1;
    const int64_t per = p.numel() / slices, chunks = std::max<int64_t>(1, (per + kChunk - 1) / kChunk);
    partial.assign(slices * chunks, 0.0);
    at::parallel_for(0, slices * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t offset = (item / chunks) * per + (item % chunks) * kChunk;
        const int64_t n = std::min(kChunk, per - (item % chunks) * kChunk);
        if (n <= 0) continue;
        partial[item] = AdamWKernel(w + offset, m + offset, v + offset, g != nullptr ? g + offset : nullptr, n, k);
      }
    });
    p.unsafeGetTensorImpl()->bump_version();  // Written through raw pointers.
    if (p.dim() >= 2) {
      std::vector<double> sums(slices, 0.0);
      for (int64_t item = 0; item < slices * chunks; ++item) sums[item / chunks] += partial[item];
      RecordSliceSumSquares(p, std::move(sums));
    }
    ParkGrad(p);
  }
}

void FusedAdamW::ZeroGrad() {
  for (const at::Tensor& p : params_) ParkGrad(p);
}

FusedAdamW::~FusedAdamW() {
  for (const at::Tensor& p : params_) DropParamCache(p);
}

TensorAdamW::TensorAdamW(std::vector<at::Tensor> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  for (const at::Tensor& p : params_) {
    TORCH_CHECK(p.is_contiguous() && p.scalar_type() == at::kFloat, "TensorAdamW: contiguous float parameters only");
    exp_avg_.push_back(at::zeros_like(p));
    exp_avg_sq_.push_back(at::zeros_like(p));
  }
}

double TensorAdamW::GradNorm() const {
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params_) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return 0.0;
  // Summed in double, like FusedAdamW's, so that both clip alike.
  at::Tensor sq = at::zeros({}, grads[0].options().dtype(at::kDouble));
  for (const at::Tensor& g : grads) sq = sq + g.to(at::kDouble).pow(2).sum();
  return std::sqrt(sq.item<double>());
}

void TensorAdamW::Step(double lr, double grad_scale) {
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  std::vector<at::Tensor> grads;
  grads.reserve(params_.size());
  for (const at::Tensor& p : params_) grads.push_back(p.grad().defined() ? p.grad() : at::zeros_like(p));
  at::NoGradGuard no_grad;
  if (grad_scale != 1.0) at::_foreach_mul_(grads, grad_scale);
  // m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
  at::_foreach_mul_(exp_avg_, b1);
  at::_foreach_add_(exp_avg_, grads, 1.0 - b1);
  at::_foreach_mul_(exp_avg_sq_, b2);
  at::_foreach_addcmul_(exp_avg_sq_, grads, grads, 1.0 - b2);
  // w = w (1 - lr wd) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
  std::vector<at::Tensor> denom = at::_foreach_sqrt(exp_avg_sq_);
  at::_foreach_div_(denom, std::sqrt(bc2));
  at::_foreach_add_(denom, options_.eps);
  at::_foreach_mul_(params_, 1.0 - lr * options_.weight_decay);
  at::_foreach_addcdiv_(params_, exp_avg_, denom, -lr / bc1);
  ZeroGrad();
}

void TensorAdamW::ZeroGrad() {
  for (at::Tensor& p : params_) p.mutable_grad() = at::Tensor();
}

std::unique_ptr<AdamW> MakeAdamW(std::vector<at::Tensor> params, AdamWOptions options, bool generic) {
  if (generic) return std::make_unique<TensorAdamW>(std::move(params), options);
  return std::make_unique<FusedAdamW>(std::move(params), options);
}

double ClipScale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  const double coef = max_norm / (norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

}  // namespace moesweep::worker
