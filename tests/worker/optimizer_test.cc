#include "worker/optimizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

namespace moesweep::worker {
namespace {

TEST(FusedAdamWTest, MatchesLibTorchAdamW) {
  at::Tensor a = at::randn({7, 5}).requires_grad_(), b = at::randn({3}).requires_grad_();
  at::Tensor ra = a.detach().clone().requires_grad_(), rb = b.detach().clone().requires_grad_();
  FusedAdamW fused({a, b}, AdamWOptions{0.01, 0.9, 0.999, 1e-8, 0.1});
  torch::optim::AdamW reference({ra, rb}, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  for (int step = 0; step < 4; ++step) {
    at::Tensor ga = at::randn({7, 5}), gb = at::randn({3});
    a.mutable_grad() = ga.clone();
    b.mutable_grad() = gb.clone();
    ra.mutable_grad() = ga.clone();
    rb.mutable_grad() = gb.clone();
    fused.Step(0.01);
    reference.step();
    EXPECT_TRUE(at::allclose(a, ra, 1e-5, 1e-6)) << "step " << step;
    EXPECT_TRUE(at::allclose(b, rb, 1e-5, 1e-6)) << "step " << step;
    // Step consumes the gradients: zeroed, still allocated.
    EXPECT_TRUE(a.grad().defined());
    EXPECT_EQ(a.grad().abs().sum().item<double>(), 0);
  }
}

TEST(FusedAdamWTest, GradNormAndClipScale) {
  at::Tensor a = at::zeros({2}).requires_grad_(), b = at::zeros({1}).requires_grad_();
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  FusedAdamW opt({a, b}, AdamWOptions{});
  EXPECT_NEAR(opt.GradNorm(), 5.0, 1e-9);
  EXPECT_NEAR(ClipScale(5.0, 1.0), 1.0 / (5.0 + 1e-6), 1e-12);
  EXPECT_EQ(ClipScale(0.5, 1.0), 1.0);
  EXPECT_EQ(ClipScale(5.0, 0.0), 1.0);  // 0 disables clipping
}

TEST(FusedAdamWTest, ClippingScalesTheGradient) {
  // With grad_scale s the update equals an unscaled step on s * g.
  at::Tensor a = at::ones({4}).requires_grad_(), b = at::ones({4}).requires_grad_(), c = at::ones({4}).requires_grad_();
  // A large eps makes the update depend on the gradient scale (Adam is otherwise scale-free).
  FusedAdamW fa({a}, AdamWOptions{0.1, 0.9, 0.999, 1.0, 0.0});
  FusedAdamW fb({b}, AdamWOptions{0.1, 0.9, 0.999, 1.0, 0.0});
  FusedAdamW fc({c}, AdamWOptions{0.1, 0.9, 0.999, 1.0, 0.0});
  at::Tensor g = at::tensor({1.0f, -2.0f, 0.5f, 0.0f});
  for (int i = 0; i < 3; ++i) {
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g * 0.25;
    c.mutable_grad() = g.clone();
    fa.Step(0.1, 0.25);
    fb.Step(0.1);
    fc.Step(0.1);
  }
  EXPECT_TRUE(at::allclose(a, b, 1e-6, 1e-7));
  EXPECT_FALSE(at::allclose(a, c, 1e-3, 1e-4));  // Unscaled steps differ.
}

}  // namespace
}  // namespace moesweep::worker
