// The generic path (worker/compute.h) against the CPU kernels, the device rule (worker/device.h)
// and bf16. Everything here runs on the CPU; the Cuda* tests also run on a GPU where LibTorch
// has one (scripts/gpu_check.sh) and skip otherwise.
#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "worker/device.h"
#include "worker/losses.h"
#include "worker/moe_layer.h"
#include "worker/optimizer.h"
#include "tests/worker/trial_test_util.h"
#include "worker/trainer.h"

namespace moesweep::worker {
namespace {

bool HaveCuda() { return torch::cuda::is_available(); }

// --- where a trial runs ------------------------------------------------------------------------

TEST(PlaceTrialTest, CpuIsTheCpuWhateverTheWorkerHas) {
  DevicePlacement p;
  ASSERT_TRUE(PlaceTrial("cpu", {3}, true, 4, "", &p).ok());
  EXPECT_FALSE(p.cuda);
  EXPECT_TRUE(p.note.empty());
}

TEST(PlaceTrialTest, CudaMapsToTheTrialsOwnGpu) {
  // --gpus 2,3: the slot holding GPU 3 runs "cuda" and "cuda:0" on LibTorch's cuda:3.
  DevicePlacement p;
  ASSERT_TRUE(PlaceTrial("cuda", {3}, true, 4, "", &p).ok());
  EXPECT_TRUE(p.cuda);
  EXPECT_EQ(p.index, 3);
  ASSERT_TRUE(PlaceTrial("cuda:0", {3}, true, 4, "", &p).ok());
  EXPECT_EQ(p.index, 3);
  ASSERT_TRUE(PlaceTrial("cuda:1", {1, 2}, true, 4, "", &p).ok());
  EXPECT_EQ(p.index, 2);
  Status s = PlaceTrial("cuda:1", {3}, true, 4, "", &p);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "config.device: \"cuda:1\": the trial has 1 GPU(s) (cuda:0 is GPU 3)");
  // Without --gpus the index is LibTorch's own.
  ASSERT_TRUE(PlaceTrial("cuda:1", {}, false, 2, "", &p).ok());
  EXPECT_EQ(p.index, 1);
  EXPECT_FALSE(PlaceTrial("cuda:2", {}, false, 2, "", &p).ok());
}

TEST(PlaceTrialTest, GpusAreMappedThroughTheWorkersOwnCudaVisibleDevices) {
  // A Slurm job with CUDA_VISIBLE_DEVICES=2,3 and --gpus 2,3: GPU 3 is LibTorch's cuda:1.
  DevicePlacement p;
  ASSERT_TRUE(PlaceTrial("cuda", {3}, true, 2, "2,3", &p).ok());
  EXPECT_EQ(p.index, 1);
  Status s = PlaceTrial("cuda", {5}, true, 2, "2,3", &p);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("GPU 5 of --gpus, which this worker's CUDA_VISIBLE_DEVICES (\"2,3\") does not list"),
            std::string::npos)
      << s.message();
  EXPECT_FALSE(PlaceTrial("cuda", {0}, true, 2, "GPU-8f3c,GPU-77aa", &p).ok());  // UUIDs: no index to map.
}

TEST(PlaceTrialTest, CudaWithoutAGpuFailsClearlyAndAutoFallsBack) {
  DevicePlacement p;
  Status s = PlaceTrial("cuda", {0}, true, 0, "", &p);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("config.device: \"cuda\" needs a GPU, but this worker's LibTorch sees no CUDA device"),
            std::string::npos)
      << s.message();
  s = PlaceTrial("cuda", {}, true, 2, "", &p);  // Every GPU of --gpus is busy.
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("no GPU"), std::string::npos) << s.message();
  s = PlaceTrial("cuda", {5}, true, 2, "", &p);  // --gpus names a device LibTorch cannot see.
  EXPECT_NE(s.message().find("GPU 5 of --gpus, but this worker's LibTorch sees only 2"), std::string::npos)
      << s.message();

  ASSERT_TRUE(PlaceTrial("auto", {0}, true, 0, "", &p).ok());
  EXPECT_FALSE(p.cuda);
  EXPECT_NE(p.note.find("running on the CPU"), std::string::npos);
  ASSERT_TRUE(PlaceTrial("auto", {}, true, 2, "", &p).ok());
  EXPECT_FALSE(p.cuda);
  ASSERT_TRUE(PlaceTrial("auto", {1}, true, 2, "", &p).ok());
  EXPECT_TRUE(p.cuda);
  EXPECT_EQ(p.index, 1);
}

// --- the generic pieces against the kernels ----------------------------------------------------

TEST(GenericPathTest, DropoutMasksAreTheSameBitsOnEveryPath) {
  TrialRng a(17), b(17);
  for (double p : {0.1, 0.5, 0.9}) {
    at::Tensor loop = a.DropoutMask({37, 29}, p);
    at::Tensor ops = b.DropoutMaskTensorOps({37, 29}, p, at::kCPU);
    EXPECT_TRUE(at::equal(loop, ops)) << "p " << p;
    EXPECT_NEAR(loop.eq(0).to(at::kDouble).mean().item<double>(), p, 0.05);
  }
}

TEST(GenericPathTest, DeviceDispatchPlanEqualsTheCountingSort) {
  at::manual_seed(5);
  at::Tensor experts = at::randint(0, 6, {200, 3}, at::kLong);
  at::Tensor keep = at::rand({200, 3}).gt(0.3);
  DispatchPlan a = PlanDispatch(experts, keep, 6, /*tensor_ops=*/false);
  DispatchPlan b = PlanDispatch(experts, keep, 6, /*tensor_ops=*/true);
  EXPECT_EQ(a.counts, b.counts);
  EXPECT_TRUE(at::equal(a.slot_index, b.slot_index));
  EXPECT_TRUE(at::equal(a.token_index, b.token_index));
  EXPECT_TRUE(at::equal(b.row_experts, experts.reshape({-1}).index_select(0, b.slot_index)));
}

TEST(GenericPathTest, BatchedExpertsMatchTheGroupedKernelWithGradients) {
  for (const bool diversity : {false, true}) {
    TrialRng ra(6), rb(6);
    GroupedExperts kern(4, 5, 7, 2, /*dropout=*/0.2, &ra);
    GroupedExperts gen(4, 5, 7, 2, /*dropout=*/0.2, &rb, Compute{/*generic=*/true, /*bf16=*/false});
    kern->train();
    gen->train();
    std::vector<int64_t> counts{2, 0, 5, 1};  // Uneven, with an empty expert: padding on the generic path.
    at::manual_seed(2);
    at::Tensor x = at::randn({8, 5});
    at::Tensor upstream = at::randn({8, 5});
    at::Tensor xa = x.clone().requires_grad_(), xb = x.clone().requires_grad_();
    at::Tensor da, db;
    at::Tensor ya = kern(xa, counts, diversity ? &da : nullptr);
    at::Tensor yb = gen(xb, counts, diversity ? &db : nullptr);
    EXPECT_TRUE(at::allclose(ya, yb, 1e-5, 1e-6)) << (ya - yb).abs().max();
    at::Tensor la = (ya * upstream).sum(), lb = (yb * upstream).sum();
    if (diversity) {
      EXPECT_NEAR(da.item<double>(), db.item<double>(), 1e-6);
      la = la + da * 3.0;
      lb = lb + db * 3.0;
    }
    la.backward();
    lb.backward();
    EXPECT_TRUE(at::allclose(xa.grad(), xb.grad(), 1e-5, 1e-6));
    for (size_t i = 0; i < kern->stacked_params().size(); ++i) {
      const at::Tensor &ga = kern->stacked_params()[i].grad(), &gb = gen->stacked_params()[i].grad();
      EXPECT_TRUE(at::allclose(ga, gb, 1e-4, 1e-6)) << "param " << i << " diversity " << diversity << ": "
                                                     << (ga - gb).abs().max();
    }
    // ForwardAll (the output-diversity losses) too.
    EXPECT_TRUE(at::allclose(kern->ForwardAll(x), gen->ForwardAll(x), 1e-5, 1e-6));
  }
}

TEST(GenericPathTest, TensorAdamWMatchesFusedAdamWWithClipping) {
  at::manual_seed(3);
  at::Tensor a = at::randn({4, 6, 5}).requires_grad_(), b = at::randn({3}).requires_grad_();
  at::Tensor ra = a.detach().clone().requires_grad_(), rb = b.detach().clone().requires_grad_();
  FusedAdamW fused({a, b}, AdamWOptions{0.01, 0.9, 0.999, 1e-8, 0.1});
  TensorAdamW tensor({ra, rb}, AdamWOptions{0.01, 0.9, 0.999, 1e-8, 0.1});
  for (int step = 0; step < 5; ++step) {
    at::Tensor ga = at::randn({4, 6, 5}), gb = at::randn({3});
    a.mutable_grad() = ga.clone();
    ra.mutable_grad() = ga.clone();
    if (step != 2) {  // Step 2: b has no gradient (decay and momentum only).
      b.mutable_grad() = gb.clone();
      rb.mutable_grad() = gb.clone();
    }
    EXPECT_NEAR(fused.GradNorm(), tensor.GradNorm(), 1e-9 * fused.GradNorm());
    const double scale = ClipScale(fused.GradNorm(), 2.0);
    fused.Step(0.01, scale);
    tensor.Step(0.01, scale);
    EXPECT_TRUE(at::allclose(a, ra, 1e-5, 1e-6)) << "step " << step;
    EXPECT_TRUE(at::allclose(b, rb, 1e-5, 1e-6)) << "step " << step;
    EXPECT_FALSE(ra.grad().defined());
  }
}

TEST(GenericPathTest, ParamDiversityTensorOpsMatchesTheGramMatrix) {
  at::manual_seed(4);
  std::vector<at::Tensor> p = {at::randn({5, 3, 4}).requires_grad_(), at::randn({5, 4}).requires_grad_()};
  std::vector<at::Tensor> q = {p[0].detach().clone().requires_grad_(), p[1].detach().clone().requires_grad_()};
  at::Tensor a = ParamCosineSimilarityTensorOps(p), b = ParamCosineSimilarityReference(q);
  EXPECT_NEAR(a.item<double>(), b.item<double>(), 1e-6);
  a.backward();
  b.backward();
  for (size_t i = 0; i < p.size(); ++i) EXPECT_TRUE(at::allclose(p[i].grad(), q[i].grad(), 1e-5, 1e-7));
}

// --- whole trials ------------------------------------------------------------------------------

TrialConfig Config(const std::string& overrides) {
  // Every loss, dropout everywhere, a 2-layer router, threshold drops, mixup, smoothing, clipping.
  return testing::ConfigFrom(R"({
    "dataset": "synthetic", "train_size": 512, "val_size": 256, "input_dim": 12, "num_classes": 4,
    "n_regimes": 3, "d_model": 16, "num_experts": 4, "top_k": 2, "expert_hidden_dim": 24,
    "expert_layers": 2, "gate_layers": 2, "epochs": 2, "batch_size": 64, "lr": 0.003,
    "expert_dropout": 0.1, "gate_dropout": 0.1, "activation_threshold": 0.3, "residual_weight": 0.8,
    "balance_loss_weight": 0.05, "sparsity_loss_weight": 0.01, "diversity_loss_weight": 0.05,
    "output_diversity_weight": 0.02, "js_divergence_weight": 0.02, "z_loss_weight": 0.001,
    "label_smoothing": 0.05, "mixup_alpha": 0.4, "mixup_prob": 0.5, "grad_clip": 0.5
  })", overrides);
}

using testing::Metric;

// Same losses, accuracy and expert statistics within float tolerance (two epochs of training, so
// rounding differences of the GEMMs have had time to grow a little).
void ExpectSameTrial(const TrialResult& a, const TrialResult& b, double tol) {
  for (const char* m : {"train_loss", "val_loss", "val_accuracy", "val_top5_accuracy", "mAP", "params_total"}) {
    EXPECT_NEAR(Metric(a, m), Metric(b, m), tol * std::max(1.0, std::abs(Metric(a, m)))) << m;
  }
  ASSERT_EQ(a.expert_stats.size(), b.expert_stats.size());
  for (size_t l = 0; l < a.expert_stats.size(); ++l) {
    const ExpertLayerSummary &x = a.expert_stats[l], &y = b.expert_stats[l];
    ASSERT_EQ(x.usage.size(), y.usage.size());
    for (size_t e = 0; e < x.usage.size(); ++e) {
      EXPECT_NEAR(x.usage[e], y.usage[e], tol) << "layer " << l << " expert " << e;
      EXPECT_NEAR(x.importance[e], y.importance[e], tol) << "layer " << l << " expert " << e;
    }
    EXPECT_NEAR(x.router_entropy, y.router_entropy, tol);
    EXPECT_NEAR(x.activation_rate, y.activation_rate, tol);
    EXPECT_NEAR(x.gate_weight_variance, y.gate_weight_variance, tol);
    EXPECT_NEAR(x.load_cv, y.load_cv, 10 * tol);
    ASSERT_EQ(x.class_routing.size(), y.class_routing.size());
    for (size_t i = 0; i < x.class_routing.size(); ++i) EXPECT_NEAR(x.class_routing[i], y.class_routing[i], tol);
  }
}

void ExpectGenericEqualsKernels(const std::string& overrides) {
  const TrialConfig c = Config(overrides);
  TrialResult kernels, generic;
  TrainOptions o;
  ASSERT_TRUE(RunTrial(c, o, TrialHooks{}, &kernels).ok());
  o.generic = true;
  Status s = RunTrial(c, o, TrialHooks{}, &generic);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(Metric(generic, "device_cuda"), 0);
  ExpectSameTrial(kernels, generic, 5e-4);
}

TEST(GenericPathTest, MoeMlpTrialWithEveryLossEqualsTheKernels) { ExpectGenericEqualsKernels(R"({"num_blocks": 2})"); }

TEST(GenericPathTest, MoeTransformerTrialWithEveryLossEqualsTheKernels) {
  ExpectGenericEqualsKernels(R"({"model": "moe_transformer", "token_dim": 4, "num_heads": 2, "attention": "gated",
      "attention_dropout": 0.1, "head_dropout": 0.1})");
  ExpectGenericEqualsKernels(R"({"model": "moe_transformer", "token_dim": 3, "num_heads": 4, "attention": "window",
      "window_size": 1})");
}

TEST(GenericPathTest, DenseBaselineEqualsTheKernels) { ExpectGenericEqualsKernels(R"({"use_moe": false})"); }

TEST(DeviceTrialTest, CudaTrialWithoutAGpuFailsClearly) {
  if (HaveCuda()) GTEST_SKIP() << "this LibTorch has a GPU";
  TrialResult r;
  Status s = RunTrial(Config(R"({"device": "cuda"})"), TrainOptions{}, TrialHooks{}, &r);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("config.device: \"cuda\" needs a GPU"), std::string::npos) << s.message();
}

TEST(DeviceTrialTest, AutoWithoutAGpuRunsOnTheCpuAndSaysSo) {
  if (HaveCuda()) GTEST_SKIP() << "this LibTorch has a GPU";
  TrialResult r;
  Status s = RunTrial(Config(R"({"device": "auto", "epochs": 1})"), TrainOptions{}, TrialHooks{}, &r);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(Metric(r, "device_cuda"), 0);
}

TEST(DeviceTrialTest, Bf16TrainsOnTheCpuAndItsLossFalls) {
  std::vector<double> losses;
  TrialHooks hooks;
  hooks.on_epoch = [&](int, const Metrics& m, const std::vector<ExpertLayerSummary>&) {
    double v = 0;
    FindMetric(m, "train_loss", &v);
    losses.push_back(v);
    return true;
  };
  TrialResult r;
  Status s = RunTrial(Config(R"({"precision": "bf16", "epochs": 6, "mixup_prob": 0, "train_size": 1024})"),
                      TrainOptions{}, hooks, &r);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(losses.size(), 6u);
  EXPECT_LT(losses.back(), losses.front() * 0.9);
  EXPECT_GT(Metric(r, "val_accuracy"), 0.4);  // 4 classes: chance is 0.25.
  // Close to the float32 run: bf16 only rounds the products.
  TrialResult fp32;
  ASSERT_TRUE(RunTrial(Config(R"({"epochs": 6, "mixup_prob": 0, "train_size": 1024})"), TrainOptions{}, TrialHooks{},
                       &fp32).ok());
  EXPECT_NEAR(Metric(r, "val_accuracy"), Metric(fp32, "val_accuracy"), 0.1);
}

// --- on a GPU (skipped without one) ------------------------------------------------------------

TEST(CudaTest, CudaTrialEqualsTheCpuKernels) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  for (const char* model :
       {R"({"num_blocks": 2})", R"({"model": "moe_transformer", "token_dim": 4, "num_heads": 2})"}) {
    TrialResult cpu, gpu;
    ASSERT_TRUE(RunTrial(Config(model), TrainOptions{}, TrialHooks{}, &cpu).ok());
    Json j = Json::parse(model);
    j["device"] = "cuda";
    Status s = RunTrial(Config(j.dump()), TrainOptions{}, TrialHooks{}, &gpu);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(Metric(gpu, "device_cuda"), 1);
    ExpectSameTrial(cpu, gpu, 5e-3);
  }
}

TEST(CudaTest, CudaBf16TrainsAndAutoPicksTheGpu) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  TrialResult r;
  Status s = RunTrial(Config(R"({"device": "cuda:0", "precision": "bf16", "epochs": 4, "mixup_prob": 0})"),
                      TrainOptions{}, TrialHooks{}, &r);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_GT(Metric(r, "val_accuracy"), 0.4);
  ASSERT_TRUE(RunTrial(Config(R"({"device": "auto", "epochs": 1})"), TrainOptions{}, TrialHooks{}, &r).ok());
  EXPECT_EQ(Metric(r, "device_cuda"), 1);
  // The worker's slot mapping: GPU 0 handed out, "cuda" lands on it.
  TrainOptions o;
  o.gpus = {0};
  o.gpus_managed = true;
  ASSERT_TRUE(RunTrial(Config(R"({"device": "cuda", "epochs": 1})"), o, TrialHooks{}, &r).ok());
  EXPECT_EQ(Metric(r, "device_cuda"), 1);
}

}  // namespace
}  // namespace moesweep::worker
