#include "worker/models.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/normalization.h>

#include "worker/attention.h"

namespace moesweep::worker {
namespace {

class MoeMlpImpl : public ModelImpl {
 public:
  MoeMlpImpl(const TrialConfig& c, const InputShape& shape, const Compute& compute, TrialRng* rng) {
    input_ = register_module("input", Dense(shape.features, c.d_model, rng, compute));
    MoELayerOptions opts = MoEOptionsFromConfig(c);
    opts.compute = compute;
    for (int64_t i = 0; i < c.num_blocks; ++i) {
      moe_layers_.push_back(register_module("moe" + std::to_string(i), MoELayer(opts, rng)));
    }
    head_ = register_module("head", Dense(c.d_model, shape.num_classes, rng, compute));
  }

  ModelOutput forward(const at::Tensor& x) override {
    at::Tensor h = at::gelu(input_(x.dim() == 2 ? x : x.flatten(1)));
    for (MoELayer& layer : moe_layers_) h = layer(h);
    return {head_(h), h};
  }

 private:
  Dense input_{nullptr}, head_{nullptr};
};

class MoeTransformerImpl : public ModelImpl {
 public:
  MoeTransformerImpl(const TrialConfig& c, const InputShape& shape, const Compute& compute, TrialRng* rng)
      : shape_(shape) {
    const int64_t d = c.d_model;
    if (shape.height > 0) {
      patch_ = c.patch_size;
      grid_h_ = (shape.height + patch_ - 1) / patch_;
      grid_w_ = (shape.width + patch_ - 1) / patch_;
      tokens_ = grid_h_ * grid_w_;
      token_in_ = shape.channels * patch_ * patch_;
    } else {
      token_in_ = c.token_dim;
      tokens_ = (shape.features + c.token_dim - 1) / c.token_dim;
    }
    embed_ = register_module("embed", Dense(token_in_, d, rng, compute));
    {
      at::NoGradGuard no_grad;
      pos_ = register_parameter("pos", at::empty({tokens_, d}).normal_(0.0, 0.02, rng->generator()));
    }
    AttentionOptions ao;
    ao.d_model = d;
    ao.num_heads = c.num_heads;
    ao.kind = c.attention;
    ao.gate_granularity = c.gate_granularity;
    ao.attention_dropout = c.attention_dropout;
    ao.head_dropout = c.head_dropout;
    ao.window_size = c.window_size;
    ao.compute = compute;
    MoELayerOptions mo = MoEOptionsFromConfig(c);
    mo.compute = compute;
    for (int64_t i = 0; i < c.num_blocks; ++i) {
      const std::string n = std::to_string(i);
      ln1_.push_back(register_module("ln1_" + n, torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}))));
      attn_.push_back(register_module("attn" + n, Attention(ao, rng)));
      ln2_.push_back(register_module("ln2_" + n, torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}))));
      moe_layers_.push_back(register_module("moe" + n, MoELayer(mo, rng)));
    }
    final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    head_ = register_module("head", Dense(d, shape.num_classes, rng, compute));
  }

  ModelOutput forward(const at::Tensor& x) override {
    const int64_t b = x.size(0);
    at::Tensor h = embed_(Tokenize(x)) + pos_;  // [B, T, d]
    const int64_t d = h.size(2);
    for (size_t i = 0; i < attn_.size(); ++i) {
      h = h + attn_[i](ln1_[i](h));
      h = h + moe_layers_[i](ln2_[i](h).reshape({b * tokens_, d})).view({b, tokens_, d});
    }
    at::Tensor features = final_norm_(h.mean(1));
    return {head_(features), features};
  }

 private:
  // [B, features] -> [B, T, token_in], zero-padding the last patch row/column or token.
  at::Tensor Tokenize(const at::Tensor& x) {
    const int64_t b = x.size(0);
    if (patch_ > 0) {
      at::Tensor img = x.reshape({b, shape_.channels, shape_.height, shape_.width});
      const int64_t pad_h = grid_h_ * patch_ - shape_.height, pad_w = grid_w_ * patch_ - shape_.width;
      if (pad_h > 0 || pad_w > 0) img = at::constant_pad_nd(img, {0, pad_w, 0, pad_h}, 0.0);
      // [B, C, gh, gw, p, p] -> [B, gh, gw, C, p, p]
      at::Tensor patches = img.unfold(2, patch_, patch_).unfold(3, patch_, patch_);
      return patches.permute({0, 2, 3, 1, 4, 5}).reshape({b, tokens_, token_in_});
    }
    at::Tensor flat = x.reshape({b, -1});
    const int64_t pad = tokens_ * token_in_ - flat.size(1);
    if (pad > 0) flat = at::constant_pad_nd(flat, {0, pad}, 0.0);
    return flat.view({b, tokens_, token_in_});
  }

  InputShape shape_;
  int64_t patch_ = 0, grid_h_ = 0, grid_w_ = 0, tokens_ = 0, token_in_ = 0;
  Dense embed_{nullptr}, head_{nullptr};
  at::Tensor pos_;
  std::vector<torch::nn::LayerNorm> ln1_, ln2_;
  std::vector<Attention> attn_;
  torch::nn::LayerNorm final_norm_{nullptr};
};

}  // namespace

MoELayerOptions MoEOptionsFromConfig(const TrialConfig& c) {
  MoELayerOptions o;
  o.d_model = c.d_model;
  o.use_moe = c.use_moe;
  o.num_experts = c.num_experts;
  o.top_k = c.top_k;
  o.expert_hidden_dim = c.expert_hidden_dim;
  o.expert_layers = c.expert_layers;
  o.gate_layers = c.gate_layers;
  o.temperature = c.temperature;
  o.expert_dropout = c.expert_dropout;
  o.gate_dropout = c.gate_dropout;
  o.activation_threshold = c.activation_threshold;
  o.residual_weight = c.residual_weight;
  o.want_balance = c.balance_loss_weight > 0;
  o.want_entropy = c.sparsity_loss_weight > 0;
  o.want_z_loss = c.z_loss_weight > 0;
  o.want_param_diversity = c.diversity_loss_weight > 0;
  o.want_output_losses = c.output_diversity_weight > 0 || c.js_divergence_weight > 0;
  return o;
}

Status BuildModel(const TrialConfig& config, const InputShape& shape, const Compute& compute, TrialRng* rng,
                  std::shared_ptr<ModelImpl>* out) {
  if (shape.features <= 0 || shape.num_classes < 2) {
    return Status::InvalidArgument(
        fmt::format("data has {} features and {} classes; need at least 1 and 2", shape.features, shape.num_classes));
  }
  if (config.model == "moe_mlp") {
    *out = std::make_shared<MoeMlpImpl>(config, shape, compute, rng);
  } else if (config.model == "moe_transformer") {
    *out = std::make_shared<MoeTransformerImpl>(config, shape, compute, rng);
  } else {
    return Status::InvalidArgument(fmt::format("config.model: unknown model \"{}\"", config.model));
  }
  return Status::Ok();
}

at::Tensor AuxLoss(const ModelImpl& model, const TrialConfig& c) {
  at::Tensor total;
  auto add = [&](const at::Tensor& t, double w) {
    if (!t.defined() || w == 0) return;
    at::Tensor term = t * w;
    total = total.defined() ? total + term : term;
  };
  for (MoELayer layer : model.moe_layers()) {
    const MoEAux& a = layer->aux();
    add(a.balance, c.balance_loss_weight);
    add(a.entropy, c.sparsity_loss_weight);
    add(a.z_loss, c.z_loss_weight);
    add(a.param_similarity, c.diversity_loss_weight);
    add(a.output_similarity, c.output_diversity_weight);
    add(a.js_divergence, -c.js_divergence_weight);
  }
  return total;
}

}  // namespace moesweep::worker
