// Multi-head self-attention of moe_transformer, in the four variants users compare:
//   softmax  softmax(q k^T / sqrt(d_head)) v
//   gated    softmax attention whose output (before the output projection) is multiplied by
//            sigmoid(Linear(x)): one gate per channel (elementwise) or per head (headwise)
//   linear   phi(q) (phi(k)^T v) / (phi(q) . sum_t phi(k_t)), phi = elu + 1 (no attention matrix)
//   window   softmax attention where token i sees tokens j with |i - j| <= window_size
// attention_dropout drops attention weights (not used by linear); head_dropout drops whole heads
// of the output per sample in training.
#ifndef MOESWEEP_WORKER_ATTENTION_H_
#define MOESWEEP_WORKER_ATTENTION_H_

#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "worker/compute.h"
#include "worker/linear.h"
#include "worker/rng.h"

namespace moesweep::worker {

struct AttentionOptions {
  int64_t d_model = 64;
  int64_t num_heads = 4;
  std::string kind = "softmax";          // softmax | gated | linear | window
  std::string gate_granularity = "elementwise";  // elementwise | headwise (kind == gated)
  double attention_dropout = 0.0;
  double head_dropout = 0.0;
  int64_t window_size = 20;
  Compute compute;  // bf16: the projections and the attention products in bfloat16.
};

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const AttentionOptions& options, TrialRng* rng);

  // x: [B, T, d_model] -> [B, T, d_model].
  at::Tensor forward(const at::Tensor& x);

 private:
  at::Tensor WindowMask(int64_t t, at::Device device);

  AttentionOptions options_;
  TrialRng* rng_;
  Dense qkv_{nullptr}, out_{nullptr}, gate_{nullptr};
  at::Tensor window_mask_;  // Additive [T, T] mask, cached for the last T and device.
};
TORCH_MODULE(Attention);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_ATTENTION_H_
