#include "worker/trainer.h"

#include <cmath>
#include <thread>

#include <gtest/gtest.h>

#include "tests/worker/test_util.h"
#include "tests/worker/trial_test_util.h"
#include "worker/datasets.h"

namespace moesweep::worker {
namespace {

TrialConfig Config(const std::string& overrides = "{}") {
  return testing::ConfigFrom(R"({
    "dataset": "synthetic", "train_size": 1024, "val_size": 512, "input_dim": 12, "num_classes": 4,
    "n_regimes": 3, "d_model": 32, "num_experts": 4, "top_k": 2, "expert_hidden_dim": 64,
    "expert_layers": 1, "gate_layers": 1, "epochs": 3, "batch_size": 64, "lr": 0.003
  })", overrides);
}

using testing::Metric;

TEST(TrainerTest, LearnsSyntheticTaskWellAboveChance) {
  TrialResult r;
  Status s = RunTrial(Config(R"({"epochs": 8})"), TrainOptions{}, TrialHooks{}, &r);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.epochs_completed, 8);
  EXPECT_GT(Metric(r, "val_accuracy"), 0.55);  // chance is 0.25; seeds 0-3 reach 0.68-0.74
  EXPECT_GE(Metric(r, "val_top5_accuracy"), Metric(r, "val_accuracy"));
  EXPECT_GT(Metric(r, "mAP"), 0.25);
  EXPECT_GT(Metric(r, "rank1"), 0.25);
  EXPECT_GE(Metric(r, "rank5"), Metric(r, "rank1"));
  EXPECT_GT(Metric(r, "samples_per_sec"), 0);
  EXPECT_GT(Metric(r, "train_seconds"), 0);
  EXPECT_GE(Metric(r, "best_epoch"), 1);
  // One MoE layer: usage over 4 experts.
  ASSERT_EQ(r.expert_stats.size(), 1u);
  EXPECT_EQ(r.expert_stats[0].usage.size(), 4u);
}

TEST(TrainerTest, ReportsEveryEpochAndParameterCounts) {
  std::vector<Metrics> epochs;
  TrialHooks hooks;
  hooks.on_epoch = [&](int epoch, const Metrics& m, const std::vector<ExpertLayerSummary>& stats) {
    EXPECT_EQ(stats.size(), 2u);
    epochs.push_back(m);
    return true;
  };
  TrialResult r;
  TrialConfig c = Config(R"({"num_blocks": 2, "num_experts": 6, "expert_layers": 2})");
  ASSERT_TRUE(RunTrial(c, TrainOptions{}, hooks, &r).ok());
  ASSERT_EQ(epochs.size(), 3u);
  for (const char* key : {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "samples_per_sec"}) {
    double v;
    EXPECT_TRUE(FindMetric(epochs[0], key, &v)) << key;
  }
  double lr1, lr3;
  FindMetric(epochs[0], "lr", &lr1);
  FindMetric(epochs[2], "lr", &lr3);
  EXPECT_GT(lr1, lr3);  // cosine decay
  // Expert: 32*64 + 64 + 64*64 + 64 + 64*32 + 32 parameters; 6 - 2 idle experts per layer, 2 layers.
  const double per_expert = 32 * 64 + 64 + 64 * 64 + 64 + 64 * 32 + 32;
  EXPECT_EQ(Metric(r, "params_total") - Metric(r, "params_active"), 2 * 4 * per_expert);
}

TEST(TrainerTest, SameSeedSameMetricsDifferentSeedDifferent) {
  // Dropout, mixup and label smoothing exercise every random stream.
  const std::string extra =
      R"({"expert_dropout": 0.2, "gate_layers": 2, "gate_dropout": 0.1, "mixup_alpha": 0.4, "mixup_prob": 0.5,
          "label_smoothing": 0.1, "diversity_loss_weight": 0.01, "seed": 11, "epochs": 2})";
  TrialResult a, b, c;
  ASSERT_TRUE(RunTrial(Config(extra), TrainOptions{}, TrialHooks{}, &a).ok());
  ASSERT_TRUE(RunTrial(Config(extra), TrainOptions{}, TrialHooks{}, &b).ok());
  for (const auto& [name, value] : a.metrics) {
    if (name == "train_seconds" || name == "samples_per_sec") continue;
    EXPECT_EQ(value, Metric(b, name)) << name;
  }
  EXPECT_EQ(a.expert_stats[0].usage, b.expert_stats[0].usage);
  Json changed = Json::parse(extra);
  changed["seed"] = 12;
  ASSERT_TRUE(RunTrial(Config(changed.dump()), TrainOptions{}, TrialHooks{}, &c).ok());
  EXPECT_NE(Metric(a, "train_loss"), Metric(c, "train_loss"));
}

TEST(TrainerTest, ConcurrentTrialsDoNotDisturbEachOther) {
  // Two slots in one process: each trial draws only from its own generators, so running two at
  // once gives the same numbers as running one alone.
  const std::string extra = R"({"expert_dropout": 0.2, "mixup_alpha": 0.4, "mixup_prob": 0.5, "epochs": 2})";
  TrialResult alone, a, b;
  ASSERT_TRUE(RunTrial(Config(extra), TrainOptions{}, TrialHooks{}, &alone).ok());
  std::thread ta([&] { EXPECT_TRUE(RunTrial(Config(extra), TrainOptions{}, TrialHooks{}, &a).ok()); });
  std::thread tb([&] { EXPECT_TRUE(RunTrial(Config(extra), TrainOptions{}, TrialHooks{}, &b).ok()); });
  ta.join();
  tb.join();
  for (const char* name : {"train_loss", "val_loss", "val_accuracy", "mAP"}) {
    EXPECT_EQ(Metric(a, name), Metric(alone, name)) << name;
    EXPECT_EQ(Metric(b, name), Metric(alone, name)) << name;
  }
}

TEST(TrainerTest, StopsBeforeTheNextBatch) {
  int calls = 0;
  TrialHooks hooks;
  hooks.between_batches = [&] { return ++calls < 3; };
  hooks.on_epoch = [&](int, const Metrics&, const std::vector<ExpertLayerSummary>&) {
    ADD_FAILURE() << "no epoch may finish";
    return true;
  };
  TrialResult r;
  ASSERT_TRUE(RunTrial(Config(), TrainOptions{}, hooks, &r).ok());
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(calls, 3);  // two batches trained, the third never started
  EXPECT_EQ(r.epochs_completed, 0);
}

TEST(TrainerTest, EpochHookCanStop) {
  TrialHooks hooks;
  hooks.on_epoch = [&](int epoch, const Metrics&, const std::vector<ExpertLayerSummary>&) { return epoch < 2; };
  TrialResult r;
  ASSERT_TRUE(RunTrial(Config(R"({"epochs": 10})"), TrainOptions{}, hooks, &r).ok());
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.epochs_completed, 2);
  EXPECT_EQ(Metric(r, "epoch"), 2);  // the last epoch's metrics are kept
}

TEST(TrainerTest, NonFiniteLossFailsWithReason) {
  TrialResult r;
  Status s = RunTrial(Config(R"({"lr": 1e38, "grad_clip": 0, "epochs": 5})"), TrainOptions{}, TrialHooks{}, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("training loss is"), std::string::npos) << s.message();
}

TEST(TrainerTest, BadDataFailsWithFileAndLine) {
  testing::TempDir dir;
  testing::WriteText(dir.File("d.csv"), "a,label\n1,0\n2,1\noops,0\n");
  TrialResult r;
  Status s = RunTrial(Config(R"({"dataset": "csv", "path": ")" + dir.File("d.csv") + R"("})"), TrainOptions{},
                      TrialHooks{}, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir.File("d.csv") + ":4:"), std::string::npos) << s.message();
}

TEST(TrainerTest, EarlyStoppingReportsTheBestEpoch) {
  // A learning rate this small leaves the predictions unchanged: no epoch beats the first.
  TrialResult r;
  ASSERT_TRUE(
      RunTrial(Config(R"({"lr": 1e-12, "epochs": 10, "early_stopping_patience": 2})"), TrainOptions{}, TrialHooks{}, &r)
          .ok());
  EXPECT_EQ(Metric(r, "epoch"), 3);
  EXPECT_EQ(Metric(r, "best_epoch"), 1);
}

TEST(TrainerTest, DenseBaselineHasNoExpertStats) {
  TrialResult r;
  ASSERT_TRUE(RunTrial(Config(R"({"use_moe": false, "epochs": 1})"), TrainOptions{}, TrialHooks{}, &r).ok());
  EXPECT_TRUE(r.expert_stats.empty());
  EXPECT_EQ(Metric(r, "params_total"), Metric(r, "params_active"));
}

TEST(TrainerTest, TransformerVariantsTrain) {
  for (const char* variant : {R"({"attention": "softmax", "z_loss_weight": 0.01})",
                              R"({"attention": "gated", "gate_granularity": "headwise", "head_dropout": 0.1})",
                              R"({"attention": "gated", "output_diversity_weight": 0.1, "js_divergence_weight": 0.05})",
                              R"({"attention": "linear", "use_moe": false})",
                              R"({"attention": "window", "window_size": 1, "attention_dropout": 0.1})"}) {
    Json o = Json::parse(variant);
    o.update(Json::parse(R"({"model": "moe_transformer", "token_dim": 5, "num_heads": 4, "d_model": 16,
                              "expert_hidden_dim": 16, "train_size": 256, "val_size": 128, "epochs": 1})"));
    TrialResult r;
    Status s = RunTrial(Config(o.dump()), TrainOptions{}, TrialHooks{}, &r);
    ASSERT_TRUE(s.ok()) << variant << ": " << s.message();
    EXPECT_TRUE(std::isfinite(Metric(r, "val_loss"))) << variant;
  }
}

TEST(TrainerTest, TransformerOnImagePatches) {
  testing::TempDir dir;
  // 6x6 images with patch 4: 2x2 patches, zero-padded.
  auto write = [&](const std::string& prefix, uint32_t n) {
    std::vector<uint8_t> pixels, labels;
    for (uint32_t i = 0; i < n; ++i) {
      for (int p = 0; p < 36; ++p) pixels.push_back(static_cast<uint8_t>((i % 3) * 80 + p));
      labels.push_back(static_cast<uint8_t>(i % 3));
    }
    testing::WriteGz(dir.File(prefix + "-images-idx3-ubyte.gz"), testing::IdxBytes({n, 6, 6}, pixels));
    testing::WriteGz(dir.File(prefix + "-labels-idx1-ubyte.gz"), testing::IdxBytes({n}, labels));
  };
  write("train", 96);
  write("t10k", 48);
  TrialResult r;
  Status s = RunTrial(Config(R"({"model": "moe_transformer", "dataset": "fashion-mnist", "data_dir": ")" + dir.path() +
                             R"(", "train_size": 0, "val_size": 0, "patch_size": 4, "d_model": 16, "num_heads": 2, "epochs": 4, "batch_size": 16})"),
                      TrainOptions{}, TrialHooks{}, &r);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_GT(Metric(r, "val_accuracy"), 0.5);  // the classes differ by brightness: easy
}


// Seed 003's sample -> expert decomposition: the final statistics say which classes each expert
// receives, one row per class that sums to 1.
TEST(TrainerTest, FinalStatisticsCarryTheClassByExpertRoutingMatrix) {
  TrialResult r;
  std::vector<std::vector<ExpertLayerSummary>> per_epoch;
  TrialHooks hooks;
  hooks.on_epoch = [&](int, const Metrics&, const std::vector<ExpertLayerSummary>& stats) {
    per_epoch.push_back(stats);
    return true;
  };
  ASSERT_TRUE(RunTrial(Config(R"({"epochs": 2})"), TrainOptions{}, hooks, &r).ok());
  ASSERT_EQ(r.expert_stats.size(), 1u);
  const ExpertLayerSummary& s = r.expert_stats[0];
  ASSERT_EQ(s.num_classes, 4);
  ASSERT_EQ(s.class_routing.size(), 4u * 4u);
  for (int c = 0; c < 4; ++c) {
    double row = 0;
    for (int e = 0; e < 4; ++e) {
      EXPECT_GE(s.class_routing[c * 4 + e], 0.0);
      row += s.class_routing[c * 4 + e];
    }
    EXPECT_NEAR(row, 1.0, 1e-9) << "class " << c;
  }
  // Per-epoch reports stay small: the matrix comes with the final statistics only.
  ASSERT_FALSE(per_epoch.empty());
  EXPECT_TRUE(per_epoch.back()[0].class_routing.empty());
}

}  // namespace
}  // namespace moesweep::worker
