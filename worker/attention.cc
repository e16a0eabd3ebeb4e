#include "worker/attention.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>


namespace moesweep::worker {

AttentionImpl::AttentionImpl(const AttentionOptions& options, TrialRng* rng) : options_(options), rng_(rng) {
  const int64_t d = options.d_model;
  qkv_ = register_module("qkv", Dense(d, 3 * d, rng));
  out_ = register_module("out", Dense(d, d, rng));
  if (options.kind == "gated") {
    const bool headwise = options.gate_granularity == "headwise";
    gate_ = register_module("gate", Dense(d, headwise ? options.num_heads : d, rng));
  }
}

at::Tensor AttentionImpl::WindowMask(int64_t t) {
  if (!window_mask_.defined() || window_mask_.size(0) != t) {
    at::Tensor pos = at::arange(t, at::kLong);
    at::Tensor far = (pos.unsqueeze(1) - pos.unsqueeze(0)).abs() > options_.window_size;
    window_mask_ = at::zeros({t, t}, at::kFloat).masked_fill_(far, -std::numeric_limits<float>::infinity());
  }
  return window_mask_;
}

at::Tensor AttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), d = options_.d_model, h = options_.num_heads, dh = d / h;
  // [B, T, 3, H, dh] -> 3 x [B, H, T, dh]
  at::Tensor qkv = qkv_(x).view({b, t, 3, h, dh}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  at::Tensor o;
  if (options_.kind == "linear") {
    at::Tensor fq = at::elu(q) + 1, fk = at::elu(k) + 1;
    at::Tensor kv = at::matmul(fk.transpose(2, 3), v);                   // [B, H, dh, dh]
    at::Tensor norm = at::matmul(fq, fk.sum(2).unsqueeze(3)).clamp_min(1e-6);  // [B, H, T, 1]
    o = at::matmul(fq, kv) / norm;
  } else {
    at::Tensor scores = at::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(dh)));
    if (options_.kind == "window") scores = scores + WindowMask(t);
    at::Tensor attn = at::softmax(scores, -1);
    attn = rng_->Dropout(attn, options_.attention_dropout, is_training());
    o = at::matmul(attn, v);  // [B, H, T, dh]
  }
  if (is_training() && options_.head_dropout > 0) {
    o = o * rng_->DropoutMask({b, h, 1, 1}, options_.head_dropout);
  }
  if (gate_) {
    at::Tensor g = at::sigmoid(gate_(x));  // [B, T, d] or [B, T, H]
    if (options_.gate_granularity == "headwise") {
      o = o * g.permute({0, 2, 1}).unsqueeze(3);
    } else {
      o = o * g.view({b, t, h, dh}).permute({0, 2, 1, 3});
    }
  }
  return out_(o.permute({0, 2, 1, 3}).reshape({b, t, d}));
}

}  // namespace moesweep::worker
