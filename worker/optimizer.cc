#include "worker/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace moesweep::worker {
namespace {

struct AdamWConstants {
  float decay, step_size, inv_sqrt_bc2, eps, b1, b2, c1, c2, scale;
};

// One pass over a parameter chunk. Compiled for AVX-512, AVX2 and baseline x86-64 and picked at
// load time: the build targets generic x86-64, and this loop is memory-bound.
__attribute__((target_clones("avx512f", "avx2", "default")))
void AdamWKernel(float* __restrict w, float* __restrict m, float* __restrict v, float* __restrict g,
                 int64_t n, const AdamWConstants k) {
  if (g == nullptr) {  // No gradient: decay and momentum only.
    for (int64_t j = 0; j < n; ++j) {
      const float mj = k.b1 * m[j];
      const float vj = k.b2 * v[j];
      m[j] = mj;
      v[j] = vj;
      w[j] = w[j] * k.decay - k.step_size * mj / (std::sqrt(vj) * k.inv_sqrt_bc2 + k.eps);
    }
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float gj = g[j] * k.scale;
    g[j] = 0.0f;  // Consumed: the next backward accumulates into a zeroed, already-mapped buffer.
    const float mj = k.b1 * m[j] + k.c1 * gj;
    const float vj = k.b2 * v[j] + k.c2 * gj * gj;
    m[j] = mj;
    v[j] = vj;
    w[j] = w[j] * k.decay - k.step_size * mj / (std::sqrt(vj) * k.inv_sqrt_bc2 + k.eps);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
double SumSquares(const float* __restrict g, int64_t n) {
  // Independent lanes so that the loop vectorises without reassociating a single sum.
  constexpr int kLanes = 16;
  double lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int i = 0; i < kLanes; ++i) lanes[i] += static_cast<double>(g[j + i]) * g[j + i];
  }
  double acc = 0;
  for (; j < n; ++j) acc += static_cast<double>(g[j]) * g[j];
  for (int i = 0; i < kLanes; ++i) acc += lanes[i];
  return acc;
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
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    at::Tensor& grad = p.mutable_grad();
    at::Tensor g_contig = grad.defined() ? grad.contiguous() : at::Tensor();
    float* w = p.data_ptr<float>();
    float* m = exp_avg_[i].data_ptr<float>();
    float* v = exp_avg_sq_[i].data_ptr<float>();
    float* g = g_contig.defined() ? g_contig.data_ptr<float>() : nullptr;
    at::parallel_for(0, p.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
      AdamWKernel(w + begin, m + begin, v + begin, g != nullptr ? g + begin : nullptr, end - begin, k);
    });
    if (grad.defined() && !grad.is_same(g_contig)) grad.zero_();
  }
}

void FusedAdamW::ZeroGrad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

double ClipScale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  const double coef = max_norm / (norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

}  // namespace moesweep::worker
