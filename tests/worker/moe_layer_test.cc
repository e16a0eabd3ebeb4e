#include "worker/moe_layer.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "worker/losses.h"
#include "worker/optimizer.h"

namespace moesweep::worker {
namespace {

at::Tensor Logits(std::vector<std::vector<double>> probs) {
  const int64_t n = probs.size(), e = probs[0].size();
  at::Tensor t = at::empty({n, e});
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < e; ++j) t[i][j] = std::log(probs[i][j]);
  }
  return t;
}

TEST(RouteTest, TopKRenormalised) {
  Routing r = Route(Logits({{0.5, 0.3, 0.15, 0.05}}), 1.0, 2, 0.0);
  EXPECT_EQ(r.experts[0][0].item<int64_t>(), 0);
  EXPECT_EQ(r.experts[0][1].item<int64_t>(), 1);
  EXPECT_NEAR(r.weights[0][0].item<double>(), 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(r.weights[0][1].item<double>(), 0.3 / 0.8, 1e-6);
  EXPECT_TRUE(r.keep.all().item<bool>());
}

TEST(RouteTest, TemperatureSharpens) {
  // softmax(log p / 0.5) = p^2 / sum p^2.
  Routing r = Route(Logits({{0.6, 0.4}}), 0.5, 2, 0.0);
  EXPECT_NEAR(r.probs[0][0].item<double>(), 0.36 / 0.52, 1e-6);
  EXPECT_NEAR(r.weights[0][0].item<double>(), 0.36 / 0.52, 1e-6);
}

TEST(RouteTest, ThresholdDropsAndRenormalises) {
  // Top-3 renormalised: 0.526, 0.316, 0.158; the third is below 0.2 and dropped.
  Routing r = Route(Logits({{0.5, 0.3, 0.15, 0.05}}), 1.0, 3, 0.2);
  EXPECT_TRUE(r.keep[0][0].item<bool>());
  EXPECT_TRUE(r.keep[0][1].item<bool>());
  EXPECT_FALSE(r.keep[0][2].item<bool>());
  EXPECT_NEAR(r.first[0][2].item<double>(), 0.15 / 0.95, 1e-6);
  EXPECT_NEAR(r.weights[0][0].item<double>(), 0.625, 1e-6);
  EXPECT_NEAR(r.weights[0][1].item<double>(), 0.375, 1e-6);
  EXPECT_EQ(r.weights[0][2].item<double>(), 0.0);
}

TEST(RouteTest, TopOneAlwaysStays) {
  // Both renormalised weights (0.556, 0.444) are below 0.9; the best expert still runs alone.
  Routing r = Route(Logits({{0.1, 0.5, 0.4}}), 1.0, 2, 0.9);
  EXPECT_EQ(r.experts[0][0].item<int64_t>(), 1);
  EXPECT_TRUE(r.keep[0][0].item<bool>());
  EXPECT_FALSE(r.keep[0][1].item<bool>());
  EXPECT_NEAR(r.weights[0][0].item<double>(), 1.0, 1e-6);
}

TEST(DispatchTest, GroupsKeptSlotsByExpertStably) {
  at::Tensor experts = at::tensor({2, 0, 0, 1, 2, 1}, at::kLong).view({3, 2});
  at::Tensor keep = at::tensor({1, 1, 1, 0, 1, 1}).to(at::kBool).view({3, 2});
  DispatchPlan plan = PlanDispatch(experts, keep, 4);
  EXPECT_EQ(plan.counts, (std::vector<int64_t>{2, 1, 2, 0}));
  // Expert 0: slots 1 (token 0) and 2 (token 1); expert 1: slot 5; expert 2: slots 0 and 4.
  EXPECT_TRUE(at::equal(plan.slot_index, at::tensor({1, 2, 5, 0, 4}, at::kLong)));
  EXPECT_TRUE(at::equal(plan.token_index, at::tensor({0, 1, 2, 0, 2}, at::kLong)));
}

MoELayerOptions SmallOptions() {
  MoELayerOptions o;
  o.d_model = 8;
  o.num_experts = 4;
  o.top_k = 2;
  o.expert_hidden_dim = 12;
  o.expert_layers = 2;
  o.gate_layers = 2;
  o.temperature = 0.7;
  o.activation_threshold = 0.3;
  o.residual_weight = 0.5;
  return o;
}

// expert_e(x) computed directly from the stacked weights with plain ops.
at::Tensor DenseExpert(const GroupedExperts& experts, int64_t e, const at::Tensor& x) {
  const auto& p = experts->stacked_params();
  at::Tensor h = x;
  for (size_t l = 0; l < p.size() / 2; ++l) {
    h = at::matmul(h, p[2 * l][e]) + p[2 * l + 1][e];
    if (l + 1 < p.size() / 2) h = at::gelu(h);
  }
  return h;
}

TEST(MoELayerTest, SparseDispatchEqualsDenseReference) {
  TrialRng rng(3);
  MoELayer layer(SmallOptions(), &rng);
  layer->eval();
  // A fixed input on which the threshold drops some slots (seeded: tests must not depend on
  // what ran before them in the process).
  at::Tensor x, out;
  for (int seed = 0; seed < 50; ++seed) {
    at::manual_seed(seed);
    x = at::randn({33, 8});
    out = layer(x);
    if (!layer->last_routing().keep.all().item<bool>()) break;
  }
  const Routing& r = layer->last_routing();
  ASSERT_FALSE(r.keep.all().item<bool>()) << "the threshold should drop some slots in this example";

  at::Tensor mixed = at::zeros_like(x);
  for (int64_t e = 0; e < 4; ++e) {
    at::Tensor y = DenseExpert(layer->experts(), e, x);  // every token, for the reference only
    at::Tensor w = (r.weights * r.experts.eq(e)).sum(1, true);
    mixed += w * y;
  }
  at::Tensor expected = at::layer_norm(0.5 * x + mixed, {8});
  EXPECT_TRUE(at::allclose(out, expected, 1e-5, 1e-5)) << (out - expected).abs().max();
}

TEST(MoELayerTest, DenseBaselineIsOneExpertShapedFfn) {
  TrialRng rng(4);
  MoELayerOptions o = SmallOptions();
  o.use_moe = false;
  MoELayer layer(o, &rng);
  layer->eval();
  EXPECT_EQ(layer->experts()->num_experts(), 1);
  EXPECT_EQ(layer->inactive_params(), 0);
  at::Tensor x = at::randn({5, 8});
  at::Tensor expected = at::layer_norm(0.5 * x + DenseExpert(layer->experts(), 0, x), {8});
  EXPECT_TRUE(at::allclose(layer(x), expected, 1e-5, 1e-5));
}

TEST(MoELayerTest, GradientsReachRouterAndEverySelectedExpert) {
  TrialRng rng(5);
  MoELayerOptions o = SmallOptions();
  o.num_experts = 6;
  o.activation_threshold = 0.0;
  MoELayer layer(o, &rng);
  layer->train();
  at::Tensor x = at::randn({4, 8}).requires_grad_();  // 4 tokens x top-2: some experts idle
  at::Tensor out = layer(x);
  (out * at::randn_like(out)).sum().backward();

  const Routing& r = layer->last_routing();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0);
  for (const auto& item : layer->named_parameters()) {
    if (item.key().rfind("gate", 0) == 0) {
      ASSERT_TRUE(item.value().grad().defined()) << item.key();
      EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0) << item.key();
    }
  }
  for (const at::Tensor& p : layer->experts()->stacked_params()) {
    ASSERT_TRUE(p.grad().defined());
    for (int64_t e = 0; e < 6; ++e) {
      const bool selected = r.experts.eq(e).any().item<bool>();
      const double g = p.grad()[e].abs().sum().item<double>();
      if (selected) {
        EXPECT_GT(g, 0) << "expert " << e;
      } else {
        EXPECT_EQ(g, 0) << "idle expert " << e << " must not be computed";
      }
    }
  }
}

TEST(MoELayerTest, GroupedExpertGradientsMatchAutograd) {
  TrialRng rng(6);
  GroupedExperts experts(3, 5, 7, 2, /*dropout=*/0.0, &rng);
  experts->train();
  std::vector<int64_t> counts{2, 0, 3};
  at::Tensor x = at::randn({5, 5}).requires_grad_();
  at::Tensor upstream = at::randn({5, 5});
  (experts(x, counts) * upstream).sum().backward();

  // Reference: the same computation with plain autograd on copies of the weights.
  std::vector<at::Tensor> ref;
  for (const at::Tensor& p : experts->stacked_params()) ref.push_back(p.detach().clone().requires_grad_());
  at::Tensor xr = x.detach().clone().requires_grad_();
  std::vector<at::Tensor> outs;
  int64_t offset = 0;
  for (int64_t e = 0; e < 3; ++e) {
    at::Tensor h = xr.narrow(0, offset, counts[e]);
    for (size_t l = 0; l < ref.size() / 2; ++l) {
      h = at::matmul(h, ref[2 * l][e]) + ref[2 * l + 1][e];
      if (l + 1 < ref.size() / 2) h = at::gelu(h);
    }
    outs.push_back(h);
    offset += counts[e];
  }
  (at::cat(outs) * upstream).sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), xr.grad(), 1e-5, 1e-6));
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_TRUE(at::allclose(experts->stacked_params()[i].grad(), ref[i].grad(), 1e-5, 1e-6)) << "param " << i;
  }
  // Expert 1 had no rows: its gradient stays exactly zero.
  EXPECT_EQ(experts->stacked_params()[0].grad()[1].abs().sum().item<double>(), 0);
}

// The expert FFN with plain autograd on copies of the stacked weights (for references).
at::Tensor ReferenceFfn(const std::vector<at::Tensor>& p, const at::Tensor& x, const std::vector<int64_t>& counts) {
  std::vector<at::Tensor> outs;
  int64_t offset = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    at::Tensor h = x.narrow(0, offset, counts[e]);
    for (size_t l = 0; l < p.size() / 2; ++l) {
      h = at::matmul(h, p[2 * l][e]) + p[2 * l + 1][e];
      if (l + 1 < p.size() / 2) h = at::gelu(h);
    }
    outs.push_back(h);
    offset += counts[e];
  }
  return at::cat(outs);
}

std::vector<at::Tensor> Copies(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : params) out.push_back(p.detach().clone().requires_grad_());
  return out;
}

TEST(MoELayerTest, ReclaimedGradientBuffersAreOverwritten) {
  // After a Step, GroupedFfn gets the old gradient buffers back unzeroed and overwrites them (GEMMs
  // with beta 0). Fill them with NaN to prove that nothing of the old contents survives, with and
  // without the fused diversity loss.
  for (const bool diversity : {false, true}) {
    TrialRng rng(9);
    GroupedExperts experts(3, 5, 7, 2, /*dropout=*/0.0, &rng);
    experts->train();
    const std::vector<at::Tensor>& params = experts->stacked_params();
    FusedAdamW opt(params, AdamWOptions{0.01, 0.9, 0.999, 1e-8, 0.01});
    const std::vector<int64_t> first_counts{2, 2, 1}, counts{2, 0, 3};  // expert 1 idle in step 2
    at::Tensor div;
    at::Tensor y = experts(at::randn({5, 5}), first_counts, diversity ? &div : nullptr);
    at::Tensor loss = (y * at::randn({5, 5})).sum();
    (diversity ? loss + 0.3 * div : loss).backward();
    std::vector<at::Tensor> old_buffers;
    for (const at::Tensor& p : params) old_buffers.push_back(p.grad());
    opt.Step(0.01);
    for (at::Tensor& b : old_buffers) b.fill_(std::nanf(""));

    at::Tensor x = at::randn({5, 5}), upstream = at::randn({5, 5});
    y = experts(x, counts, diversity ? &div : nullptr);
    loss = (y * upstream).sum();
    (diversity ? loss + 0.3 * div : loss).backward();

    std::vector<at::Tensor> ref = Copies(params);
    at::Tensor ref_loss = (ReferenceFfn(ref, x, counts) * upstream).sum();
    if (diversity) {
      const double ref_div = ParamCosineSimilarityReference(ref).item<double>();
      EXPECT_NEAR(div.item<double>(), ref_div, 1e-5);
      ref_loss = ref_loss + 0.3 * ParamCosineSimilarityReference(ref);
    }
    ref_loss.backward();
    for (size_t i = 0; i < params.size(); ++i) {
      ASSERT_TRUE(params[i].grad().defined());
      EXPECT_EQ(params[i].grad().data_ptr(), old_buffers[i].data_ptr()) << "param " << i << ": buffer not reused";
      EXPECT_FALSE(params[i].grad().isnan().any().item<bool>()) << "param " << i << ", diversity " << diversity;
      EXPECT_TRUE(at::allclose(params[i].grad(), ref[i].grad(), 1e-5, 1e-6))
          << "param " << i << ", diversity " << diversity;
    }
    if (!diversity) {
      for (const at::Tensor& p : params) EXPECT_EQ(p.grad()[1].abs().sum().item<double>(), 0);  // idle expert
    }
  }
}

TEST(MoELayerTest, FusedDiversityMatchesTheSeparateLoss) {
  // GroupedExperts computes ParamCosineSimilarity inside its own passes; the value and every
  // gradient must equal the separate autograd node's, for an odd number of experts, odd sizes and
  // an expert without rows.
  TrialRng rng(10);
  GroupedExperts experts(5, 6, 19, 2, /*dropout=*/0.0, &rng);
  experts->train();
  const std::vector<int64_t> counts{3, 0, 1, 4, 2};
  at::Tensor x = at::randn({10, 6}).requires_grad_(), upstream = at::randn({10, 6});
  at::Tensor div;
  at::Tensor y = experts(x, counts, &div);
  ((y * upstream).sum() + 0.7 * div).backward();

  std::vector<at::Tensor> sep = Copies(experts->stacked_params());
  at::Tensor xs = x.detach().clone().requires_grad_();
  at::Tensor sep_div = ParamCosineSimilarity(sep);
  EXPECT_NEAR(div.item<double>(), sep_div.item<double>(), 1e-6);
  ((ReferenceFfn(sep, xs, counts) * upstream).sum() + 0.7 * sep_div).backward();
  EXPECT_TRUE(at::allclose(x.grad(), xs.grad(), 1e-5, 1e-6));
  for (size_t i = 0; i < sep.size(); ++i) {
    EXPECT_TRUE(at::allclose(experts->stacked_params()[i].grad(), sep[i].grad(), 1e-5, 1e-6)) << "param " << i;
  }
  // One expert: the loss is 0 and nothing is fused.
  GroupedExperts single(1, 6, 19, 1, 0.0, &rng);
  const std::vector<int64_t> all{10};
  single(x, all, &div);
  EXPECT_EQ(div.item<double>(), 0.0);
}

TEST(MoELayerTest, OverwrittenGradientsMatchZeroThenAccumulate) {
  // Two identical layers trained side by side for three steps: one on the parked-buffer path
  // (first writers overwrite), one whose gradients are reset to explicit zeros before every
  // backward (every writer accumulates, as before parking existed). Gradients and weights must
  // agree at every step. Few tokens over many experts leave some experts idle.
  MoELayerOptions o = SmallOptions();
  o.num_experts = 6;
  o.expert_dropout = 0.2;
  o.want_param_diversity = true;
  TrialRng rng_a(21), rng_b(21);
  MoELayer a(o, &rng_a), b(o, &rng_b);
  a->train();
  b->train();
  std::vector<at::Tensor> pa = a->parameters(), pb = b->parameters();
  FusedAdamW opt_a(pa, AdamWOptions{0.01, 0.9, 0.999, 1e-8, 0.01});
  FusedAdamW opt_b(pb, AdamWOptions{0.01, 0.9, 0.999, 1e-8, 0.01});
  at::manual_seed(22);
  for (int step = 0; step < 3; ++step) {
    at::Tensor x = at::randn({5, 8}), upstream = at::randn({5, 8});
    for (at::Tensor& p : pb) p.mutable_grad() = at::zeros_like(p);
    for (MoELayer layer : {a, b}) {
      at::Tensor out = layer(x);
      at::Tensor loss = (out * upstream).sum() + 0.5 * layer->aux().param_similarity;
      if (layer->aux().balance.defined()) loss = loss + 0.1 * layer->aux().balance;
      loss.backward();
    }
    for (size_t i = 0; i < pa.size(); ++i) {
      ASSERT_TRUE(pa[i].grad().defined()) << i;
      EXPECT_TRUE(at::allclose(pa[i].grad(), pb[i].grad(), 1e-5, 1e-7)) << "step " << step << ", param " << i;
    }
    EXPECT_NEAR(opt_a.GradNorm(), opt_b.GradNorm(), 1e-5 * opt_b.GradNorm()) << "step " << step;
    opt_a.Step(0.01, 0.5);
    opt_b.Step(0.01, 0.5);
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_TRUE(at::allclose(pa[i], pb[i], 1e-5, 1e-7)) << "step " << step << ", param " << i;
    }
  }
}

TEST(MoELayerTest, DropoutIsActiveOnlyInTraining) {
  TrialRng rng(7);
  MoELayerOptions o = SmallOptions();
  o.expert_dropout = 0.5;
  MoELayer layer(o, &rng);
  at::Tensor x = at::randn({16, 8});
  layer->eval();
  at::Tensor a = layer(x), b = layer(x);
  EXPECT_TRUE(at::equal(a, b));
  layer->train();
  at::NoGradGuard no_grad;
  EXPECT_FALSE(at::allclose(layer(x), a));
}

TEST(MoELayerTest, StatsSummariseRouting) {
  TrialRng rng(8);
  MoELayer layer(SmallOptions(), &rng);
  layer->eval();
  layer->stats().Reset(4);
  layer->set_collect_stats(true);
  at::Tensor x = at::randn({64, 8});
  layer(x);
  ExpertLayerSummary s = layer->stats().Summarize(0);
  ASSERT_EQ(s.usage.size(), 4u);
  double usage_sum = 0, importance_sum = 0;
  for (double u : s.usage) usage_sum += u;
  for (double i : s.importance) importance_sum += i;
  EXPECT_NEAR(usage_sum, 1.0, 1e-9);
  EXPECT_NEAR(importance_sum, 1.0, 1e-5);
  const Routing& r = layer->last_routing();
  EXPECT_NEAR(s.activation_rate, r.first.ge(0.3).to(at::kDouble).mean().item<double>(), 1e-9);
  EXPECT_NEAR(s.gate_weight_variance, r.probs.var(1, false).mean().item<double>(), 1e-6);
  const double entropy = -(r.probs * r.log_probs).sum(1).mean().item<double>() / std::log(4.0);
  EXPECT_NEAR(s.router_entropy, entropy, 1e-5);
  EXPECT_GT(s.router_entropy, 0);
  EXPECT_LE(s.router_entropy, 1);
}

TEST(ExpertStatsTest, SummaryFormulas) {
  RoutingStatsAccumulator acc;
  acc.Reset(2);
  acc.routed_slots = {3, 1};
  acc.prob_sum = {2.5, 1.5};
  acc.tokens = 4;
  acc.topk_slots = 8;
  acc.slots_above_threshold = 6;
  acc.prob_variance_sum = 0.2;
  acc.entropy_sum = 4 * std::log(2.0) * 0.5;
  ExpertLayerSummary s = acc.Summarize(3);
  EXPECT_EQ(s.layer, 3);
  EXPECT_DOUBLE_EQ(s.usage[0], 0.75);
  EXPECT_DOUBLE_EQ(s.importance[1], 0.375);
  EXPECT_DOUBLE_EQ(s.usage_variance, 0.0625);  // ((0.25)^2 + (0.25)^2) / 2
  EXPECT_DOUBLE_EQ(s.load_cv, 0.5);            // 0.25 / 0.5
  EXPECT_DOUBLE_EQ(s.activation_rate, 0.75);
  EXPECT_DOUBLE_EQ(s.gate_weight_variance, 0.05);
  EXPECT_NEAR(s.router_entropy, 0.5, 1e-12);
}

}  // namespace
}  // namespace moesweep::worker
