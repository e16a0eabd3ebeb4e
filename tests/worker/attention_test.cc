#include "worker/attention.h"

#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace moesweep::worker {
namespace {

AttentionOptions Options(const std::string& kind) {
  AttentionOptions o;
  o.d_model = 8;
  o.num_heads = 2;
  o.kind = kind;
  o.window_size = 2;
  return o;
}

TEST(AttentionTest, WindowHidesTokensOutsideTheWindow) {
  TrialRng rng(1);
  Attention attn(Options("window"), &rng);
  attn->eval();
  at::NoGradGuard no_grad;
  at::Tensor x = at::randn({1, 10, 8});
  at::Tensor base = attn(x);
  at::Tensor far = x.clone();
  far[0][9] += 5.0;  // token 9 is outside the +-2 window of tokens 0..6
  at::Tensor out = attn(far);
  EXPECT_TRUE(at::allclose(out.narrow(1, 0, 7), base.narrow(1, 0, 7), 1e-6, 1e-6));
  EXPECT_FALSE(at::allclose(out.narrow(1, 7, 3), base.narrow(1, 7, 3), 1e-3, 1e-3));

  // Plain softmax attention sees everything.
  TrialRng rng2(1);
  Attention full(Options("softmax"), &rng2);
  full->eval();
  EXPECT_FALSE(at::allclose(full(far).narrow(1, 0, 1), full(x).narrow(1, 0, 1), 1e-3, 1e-3));
}

TEST(AttentionTest, LinearAttentionMatchesFormula) {
  TrialRng rng(2);
  Attention attn(Options("linear"), &rng);
  attn->eval();
  at::NoGradGuard no_grad;
  at::Tensor x = at::randn({2, 5, 8});
  // Recompute from the parameters: phi(q) (phi(k)^T v) / (phi(q) . sum_t phi(k_t)), per head.
  auto params = attn->named_parameters();
  at::Tensor qkv = at::linear(x, params["qkv.weight"], params["qkv.bias"]).view({2, 5, 3, 2, 4});
  std::vector<at::Tensor> heads;
  for (int64_t h = 0; h < 2; ++h) {
    at::Tensor q = at::elu(qkv.select(2, 0).select(2, h)) + 1;  // [B, T, 4]
    at::Tensor k = at::elu(qkv.select(2, 1).select(2, h)) + 1;
    at::Tensor v = qkv.select(2, 2).select(2, h);
    at::Tensor num = at::matmul(q, at::matmul(k.transpose(1, 2), v));
    at::Tensor den = (q * k.sum(1, true)).sum(2, true);
    heads.push_back(num / den);
  }
  at::Tensor expected = at::linear(at::cat(heads, 2), params["out.weight"], params["out.bias"]);
  EXPECT_TRUE(at::allclose(attn(x), expected, 1e-4, 1e-5));
}

TEST(AttentionTest, HeadwiseGateScalesEachHead) {
  TrialRng rng(3);
  AttentionOptions o = Options("gated");
  o.gate_granularity = "headwise";
  Attention attn(o, &rng);
  attn->eval();
  auto params = attn->named_parameters();
  EXPECT_EQ(params["gate.weight"].size(0), 2);  // one gate per head
  at::NoGradGuard no_grad;
  // A gate bias of -inf closes every gate: the output is just the output projection's bias.
  params["gate.weight"].zero_();
  params["gate.bias"].fill_(-1e9);
  at::Tensor out = attn(at::randn({1, 4, 8}));
  EXPECT_TRUE(at::allclose(out, params["out.bias"].expand_as(out), 1e-6, 1e-6));

  AttentionOptions e = Options("gated");
  Attention elementwise(e, &rng);
  EXPECT_EQ(elementwise->named_parameters()["gate.weight"].size(0), 8);  // one gate per channel
}

TEST(AttentionTest, HeadDropoutDropsWholeHeads) {
  TrialRng rng(4);
  AttentionOptions o = Options("softmax");
  o.head_dropout = 0.5;
  Attention attn(o, &rng);
  attn->train();
  at::NoGradGuard no_grad;
  auto params = attn->named_parameters();
  // With an identity output projection, a dropped head shows as an all-zero block of channels.
  params["out.weight"].copy_(at::eye(8));
  params["out.bias"].zero_();
  at::Tensor out = attn(at::randn({16, 3, 8}));
  at::Tensor per_head = out.view({16, 3, 2, 4}).abs().sum({1, 3});  // [B, H]
  const int64_t dropped = per_head.eq(0).sum().item<int64_t>();
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, 32);
}

}  // namespace
}  // namespace moesweep::worker
