#include "worker/attention.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>


namespace moesweep::worker {

AttentionImpl::AttentionImpl(const AttentionOptions& options, TrialRng* rng) : options_(options), rng_(rng) {
  const int64_t d = options.d_model;
  qkv_ = register_module("qkv", Dense(d, 3 * d, rng, options.compute));
  out_ = register_module("out", Dense(d, d, rng, options.compute));
  if (options.kind == "gated") {
    const bool headwise = options.gate_granularity == "headwise";
    gate_ = register_module("gate", Dense(d, headwise ? options.num_heads : d, rng, options.compute));
  }
}

at::Tensor AttentionImpl::WindowMask(int64_t t, at::Device device) {
  if (!window_mask_.defined() || window_mask_.size(0) != t || window_mask_.device() != device) {
    at::Tensor pos = at::arange(t, at::TensorOptions().dtype(at::kLong).device(device));
    at::Tensor far = (pos.unsqueeze(1) - pos.unsqueeze(0)).abs() > options_.window_size;
    window_mask_ = at::zeros({t, t}, at::TensorOptions().dtype(at::kFloat).device(device))
                       .masked_fill_(far, -std::numeric_limits<float>::infinity());
  }
  return window_mask_;
}

at::Tensor AttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), d = options_.d_model, h = options_.num_heads, dh = d / h;
  // [B, T, 3, H, dh] -> 3 x [B, H, T, dh]
  at::Tensor qkv = qkv_(x).view({b, t, 3, h, dh}).permute({2, 0, 3, 1, 4});
  // bf16: the products in bfloat16, the softmax and everything elementwise in float32.
  const at::ScalarType mm = options_.compute.bf16 ? at::kBFloat16 : x.scalar_type();
  auto matmul = [&](const at::Tensor& a, const at::Tensor& b) {
    return at::matmul(a.to(mm), b.to(mm)).to(x.scalar_type());
  };
  at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  at::Tensor o;
  if (options_.kind == "linear") {
    at::Tensor fq = at::elu(q) + 1, fk = at::elu(k) + 1;
    at::Tensor kv = matmul(fk.transpose(2, 3), v);                   // [B, H, dh, dh]
    at::Tensor norm = matmul(fq, fk.sum(2).unsqueeze(3)).clamp_min(1e-6);  // [B, H, T, 1]
    o = matmul(fq, kv) / norm;
  } else {
    at::Tensor scores = matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(dh)));
    if (options_.kind == "window") scores = scores + WindowMask(t, x.device());
    at::Tensor attn = at::softmax(scores, -1);
    attn = rng_->Dropout(attn, options_.attention_dropout, is_training());
    o = matmul(attn, v);  // [B, H, T, dh]
  }
  if (is_training() && options_.head_dropout > 0) {
    o = o * rng_->DropoutMask({b, h, 1, 1}, options_.head_dropout, x.device());
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
