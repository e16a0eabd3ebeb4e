#include "worker/optimizer.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include "worker/param_cache.h"

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
    // Step consumes the gradients: parked for the next backward, so .grad() reads "none yet".
    EXPECT_FALSE(a.grad().defined());
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

TEST(FusedAdamWTest, StepParksGradientsForTheNextBackward) {
  at::Tensor a = at::randn({6, 5}).requires_grad_(), b = at::randn({7}).requires_grad_();
  FusedAdamW opt({a, b}, AdamWOptions{});
  a.mutable_grad() = at::randn({6, 5});
  b.mutable_grad() = at::randn({7});
  const void* a_buffer = a.grad().data_ptr();
  const void* b_buffer = b.grad().data_ptr();
  opt.Step(0.01);
  ASSERT_FALSE(a.grad().defined());
  ASSERT_FALSE(b.grad().defined());

  // The first writer gets the same memory back, unzeroed, and is told to overwrite it...
  bool fresh = false;
  at::Tensor& ga = GradBufferForOverwrite(a, &fresh);
  EXPECT_TRUE(fresh);
  EXPECT_EQ(ga.data_ptr(), a_buffer);
  EXPECT_TRUE(ga.sizes().equals({6, 5}));
  // ... and a later writer is told to add.
  GradBufferForOverwrite(a, &fresh);
  EXPECT_FALSE(fresh);
  // A writer that can only add gets the buffer zeroed.
  at::Tensor& gb = GradBuffer(b);
  EXPECT_EQ(gb.data_ptr(), b_buffer);
  EXPECT_EQ(gb.abs().sum().item<double>(), 0);

  // Without a parked buffer (first backward), a new one is allocated.
  at::Tensor c = at::randn({3}).requires_grad_();
  GradBufferForOverwrite(c, &fresh);
  EXPECT_TRUE(fresh);
  EXPECT_TRUE(c.grad().defined());
}

TEST(FusedAdamWTest, GradNormUsesARecordedSumOnlyWhileTheGradientIsUnchanged) {
  at::Tensor a = at::zeros({2}).requires_grad_();
  FusedAdamW opt({a}, AdamWOptions{});
  a.mutable_grad() = at::tensor({3.0f, 4.0f});
  RecordGradSumSquares(a, 100.0);  // deliberately not 25, to see which one is used
  EXPECT_NEAR(opt.GradNorm(), 10.0, 1e-9);
  a.mutable_grad().add_(1.0);  // an in-place op: the record is stale
  EXPECT_NEAR(opt.GradNorm(), std::sqrt(16.0 + 25.0), 1e-6);

  RecordGradSumSquares(a, 100.0);
  bool fresh = true;
  GradBufferForOverwrite(a, &fresh);  // a writer took the buffer: stale again
  EXPECT_FALSE(fresh);
  EXPECT_NEAR(opt.GradNorm(), std::sqrt(16.0 + 25.0), 1e-6);

  RecordGradSumSquares(a, 100.0);
  a.mutable_grad() = at::tensor({3.0f, 4.0f});  // a different gradient tensor
  EXPECT_NEAR(opt.GradNorm(), 5.0, 1e-6);
}

TEST(FusedAdamWTest, StepRecordsEachSliceSumOfSquaresOfTheNewWeights) {
  at::Tensor w = at::randn({5, 3, 37}).requires_grad_(), bias = at::randn({9}).requires_grad_();
  FusedAdamW opt({w, bias}, AdamWOptions{0.01, 0.9, 0.999, 1e-8, 0.1});
  w.mutable_grad() = at::randn({5, 3, 37});
  bias.mutable_grad() = at::randn({9});
  opt.Step(0.01);
  std::vector<double> sums;
  ASSERT_TRUE(RecordedSliceSumSquares(w, &sums));
  ASSERT_EQ(sums.size(), 5u);
  for (int64_t e = 0; e < 5; ++e) {
    const double expected = w[e].to(at::kDouble).pow(2).sum().item<double>();
    EXPECT_NEAR(sums[e], expected, 1e-6 * expected) << e;
  }
  EXPECT_FALSE(RecordedSliceSumSquares(bias, &sums));  // 1-D: no slices
  {
    at::NoGradGuard no_grad;
    w[2].mul_(2.0);  // the parameters changed after the step: the record is stale
  }
  EXPECT_FALSE(RecordedSliceSumSquares(w, &sums));
}

}  // namespace
}  // namespace moesweep::worker
