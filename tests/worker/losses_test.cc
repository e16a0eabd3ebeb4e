#include "worker/losses.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "worker/optimizer.h"
#include "worker/param_cache.h"

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

// The diversity loss straight from its definition, in double: cosine of every pair of flattened
// expert parameter vectors (at::norm, a Gram matrix), with autograd for the gradient.
struct DiversityReference {
  double loss;
  std::vector<at::Tensor> grads;  // double, shaped like the parameters
};
DiversityReference StraightforwardDiversity(const std::vector<at::Tensor>& stacked, double upstream) {
  const int64_t e = stacked[0].size(0);
  std::vector<at::Tensor> leaves, flat;
  for (const at::Tensor& p : stacked) {
    leaves.push_back(p.detach().to(at::kDouble).requires_grad_());
    flat.push_back(leaves.back().reshape({e, -1}));
  }
  at::Tensor theta = at::cat(flat, 1);
  at::Tensor u = theta / at::norm(theta, 2, {1}, true);
  at::Tensor gram = at::mm(u, u.t());
  at::Tensor loss = (gram.sum() - gram.diagonal().sum()) / static_cast<double>(e * (e - 1));
  (loss * upstream).backward();
  DiversityReference r{loss.item<double>(), {}};
  for (const at::Tensor& l : leaves) r.grads.push_back(l.grad());
  return r;
}

// Max |a - b| relative to max |b|.
double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

TEST(LossesTest, ParamCosineSimilarityMatchesTheStraightforwardFormula) {
  // Expert counts that leave 0 to 3 experts after the groups of 4 the forward sums in, and slice
  // sizes that leave tails after the 16-wide vector loops and the 8192-float blocks.
  struct Case {
    int64_t experts;
    std::vector<std::vector<int64_t>> shapes;  // without the expert dim
  };
  const std::vector<Case> cases = {{2, {{3, 7}, {13}}},  {3, {{5, 1}, {1}}},        {5, {{17, 9}, {9}, {9, 4}, {4}}},
                                   {8, {{16, 32}, {32}}}, {32, {{91, 97}, {97}}}, {7, {{8200}, {19}}}};
  at::manual_seed(11);
  for (const Case& c : cases) {
    std::vector<at::Tensor> params;
    for (const auto& shape : c.shapes) {
      std::vector<int64_t> full{c.experts};
      full.insert(full.end(), shape.begin(), shape.end());
      // A shared component makes the cosines clearly non-zero.
      params.push_back((at::randn(full) + 0.5).requires_grad_());
    }
    const double upstream = 0.37;
    const DiversityReference ref = StraightforwardDiversity(params, upstream);
    at::Tensor loss = ParamCosineSimilarity(params);
    EXPECT_NEAR(loss.item<double>(), ref.loss, 1e-5 * std::max(1.0, std::abs(ref.loss))) << c.experts << " experts";
    (loss * upstream).backward();  // fresh gradients: the loss writes them
    for (size_t t = 0; t < params.size(); ++t) {
      EXPECT_LT(RelativeError(params[t].grad(), ref.grads[t]), 1e-5) << c.experts << " experts, tensor " << t;
      // The sum of squares it recorded for the gradient norm is that of the gradient.
      double recorded = 0;
      ASSERT_TRUE(RecordedGradSumSquares(params[t], &recorded));
      const double actual = params[t].grad().to(at::kDouble).pow(2).sum().item<double>();
      EXPECT_NEAR(recorded, actual, 1e-6 * actual);
    }
    // An existing gradient is added to, not overwritten.
    std::vector<at::Tensor> before;
    for (at::Tensor& p : params) before.push_back(p.grad().clone());
    (ParamCosineSimilarity(params) * upstream).backward();
    for (size_t t = 0; t < params.size(); ++t) {
      EXPECT_LT(RelativeError(params[t].grad() - before[t], ref.grads[t]), 1e-5)
          << c.experts << " experts, tensor " << t;
    }
  }
}

TEST(LossesTest, ParamCosineSimilarityUsesOptimizerNormsOnlyWhileValid) {
  at::manual_seed(12);
  std::vector<at::Tensor> params{(at::randn({6, 5, 11}) + 0.3).requires_grad_(), at::randn({6, 11}).requires_grad_()};
  FusedAdamW opt(params, AdamWOptions{0.05, 0.9, 0.999, 1e-8, 0.01});
  for (at::Tensor& p : params) p.mutable_grad() = at::randn(p.sizes());
  opt.Step(0.05);  // records each expert slice's sum of squares
  EXPECT_NEAR(ParamCosineSimilarity(params).item<double>(), StraightforwardDiversity(params, 1.0).loss, 1e-5);
  {
    at::NoGradGuard no_grad;
    params[0][1].mul_(-3.0);  // changes expert 1's norm and direction after the step
  }
  EXPECT_NEAR(ParamCosineSimilarity(params).item<double>(), StraightforwardDiversity(params, 1.0).loss, 1e-5);
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
