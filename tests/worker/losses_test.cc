#include "worker/losses.h"

#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

namespace moesweep::worker {
namespace {

const double kLn2 = std::log(2.0);

TEST(LossesTest, BalanceLoss) {
  at::Tensor probs = at::tensor({0.5, 0.5, 1.0, 0.0}).view({2, 2});  // P = [0.75, 0.25]
  EXPECT_NEAR(BalanceLoss(probs, at::tensor({0.5, 0.5})).item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(BalanceLoss(probs, at::tensor({1.0, 0.0})).item<double>(), 1.5, 1e-6);
}

TEST(LossesTest, RouterEntropy) {
  at::Tensor logits = at::tensor({0.0, 0.0, -1e9, -1e9, 0.0, 0.0, 0.0, 0.0}).view({2, 4});
  at::Tensor logp = at::log_softmax(logits, 1);
  // Token 0 spreads over 2 experts (ln 2), token 1 over 4 (ln 4): mean 1.5 ln 2.
  EXPECT_NEAR(RouterEntropy(logp.exp(), logp).item<double>(), 1.5 * kLn2, 1e-6);
}

TEST(LossesTest, ZLoss) {
  at::Tensor logits = at::tensor({0.0, 0.0, std::log(3.0), 0.0}).view({2, 2});  // lse = ln 2, ln 4
  EXPECT_NEAR(RouterZLoss(logits).item<double>(), 2.5 * kLn2 * kLn2, 1e-6);
}

TEST(LossesTest, ParamCosineSimilarityValue) {
  // Experts (1,0 | 0), (0,1 | 0), (1,0 | 0) split over two tensors: pair cosines 0, 1, 0.
  at::Tensor a = at::tensor({1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.0f}).view({3, 2}).requires_grad_();
  at::Tensor b = at::zeros({3, 1}).requires_grad_();
  EXPECT_NEAR(ParamCosineSimilarity({a, b}).item<double>(), 1.0 / 3.0, 1e-6);
  // Two experts at 45 degrees.
  at::Tensor c = at::tensor({1.0f, 0.0f, 1.0f, 1.0f}).view({2, 2}).requires_grad_();
  EXPECT_NEAR(ParamCosineSimilarity({c}).item<double>(), std::sqrt(0.5), 1e-6);
}

TEST(LossesTest, ParamCosineSimilarityMatchesGramMatrixGradient) {
  std::vector<at::Tensor> fast{at::randn({5, 3, 4}).requires_grad_(), at::randn({5, 4}).requires_grad_()};
  std::vector<at::Tensor> ref;
  for (const at::Tensor& p : fast) ref.push_back(p.detach().clone().requires_grad_());
  at::Tensor lf = ParamCosineSimilarity(fast), lr = ParamCosineSimilarityReference(ref);
  EXPECT_NEAR(lf.item<double>(), lr.item<double>(), 1e-5);
  (lf * 3.0).backward();
  (lr * 3.0).backward();
  for (size_t i = 0; i < fast.size(); ++i) {
    EXPECT_TRUE(at::allclose(fast[i].grad(), ref[i].grad(), 1e-4, 1e-6)) << i;
  }
}

TEST(LossesTest, OutputCosineSimilarity) {
  at::Tensor m = at::tensor({1.0, 0.0, 0.0, 1.0, 1.0, 1.0}).view({3, 2});  // cosines 0, 1/sqrt2, 1/sqrt2
  EXPECT_NEAR(OutputCosineSimilarity(m).item<double>(), std::sqrt(2.0) / 3.0, 1e-6);
  EXPECT_NEAR(OutputCosineSimilarity(m.narrow(0, 0, 1)).item<double>(), 0.0, 0.0);
}

TEST(LossesTest, JsDivergence) {
  // softmax rows (0.75, 0.25) and (0.25, 0.75); M = (0.5, 0.5).
  const double ln3 = std::log(3.0);
  at::Tensor m = at::tensor({ln3, 0.0, 0.0, ln3}).view({2, 2});
  const double kl = 0.75 * std::log(1.5) + 0.25 * std::log(0.5);
  EXPECT_NEAR(MeanPairwiseJsDivergence(m).item<double>(), kl, 1e-6);
  // Identical distributions diverge by 0.
  EXPECT_NEAR(MeanPairwiseJsDivergence(at::tensor({1.0, 2.0, 1.0, 2.0}).view({2, 2})).item<double>(), 0.0, 1e-6);
}

TEST(LossesTest, AuxLossesAreDifferentiable) {
  at::Tensor logits = at::randn({6, 4}).requires_grad_();
  at::Tensor logp = at::log_softmax(logits, 1);
  at::Tensor total = BalanceLoss(logp.exp(), at::full({4}, 0.25)) + RouterEntropy(logp.exp(), logp) +
                     RouterZLoss(logits);
  total.backward();
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0);
  at::Tensor m = at::randn({3, 5}).requires_grad_();
  (OutputCosineSimilarity(m) - MeanPairwiseJsDivergence(m)).backward();
  EXPECT_GT(m.grad().abs().sum().item<double>(), 0);
}

}  // namespace
}  // namespace moesweep::worker
