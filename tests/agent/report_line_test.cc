#include "worker/agent/report_line.h"

#include <cmath>

#include <gtest/gtest.h>

namespace moesweep::worker {
namespace {

TEST(ReportLine, ParsesStepMetricsStatsAndFinal) {
  ParsedReport r;
  Status s = ParseReport(R"({"step": 3, "metrics": {"val_accuracy": 0.81, "train_loss": 0.52},
      "expert_stats": [{"layer": 1, "usage": [0.5, 0.5], "importance": [0.6, 0.4], "activation_rate": 0.9,
                        "router_entropy": 0.7, "gate_weight_variance": 0.01, "load_cv": 0.25, "usage_variance": 0.5}],
      "final": true})",
                         &r);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(r.step, 3);
  ASSERT_EQ(r.metrics.size(), 2u);
  EXPECT_EQ(r.metrics[0].first, "val_accuracy");
  EXPECT_DOUBLE_EQ(r.metrics[1].second, 0.52);
  ASSERT_EQ(r.expert_stats.size(), 1u);
  EXPECT_EQ(r.expert_stats[0].layer, 1);
  EXPECT_DOUBLE_EQ(r.expert_stats[0].activation_rate, 0.9);
  EXPECT_DOUBLE_EQ(r.expert_stats[0].load_cv, 0.25);  // Given values are kept, not derived.
  EXPECT_TRUE(r.final);
}

TEST(ReportLine, DerivesTheStatisticsOfUsageWhenLeftOut) {
  ParsedReport r;
  ASSERT_TRUE(ParseReport(R"({"expert_stats": [{"usage": [0.5, 0.25, 0.25, 0.0]}]})", &r).ok());
  const ExpertLayerSummary& l = r.expert_stats[0];
  EXPECT_EQ(l.layer, 0);  // Defaults to its index.
  // mean 0.25; deviations .25, 0, 0, -.25 -> population variance 0.03125, cv sqrt(.03125)/.25.
  EXPECT_NEAR(l.usage_variance, 0.03125, 1e-12);
  EXPECT_NEAR(l.load_cv, std::sqrt(0.03125) / 0.25, 1e-12);
  EXPECT_FALSE(r.step.has_value());
}

TEST(ReportLine, NonFiniteTokensAsPythonWritesThem) {
  ParsedReport r;
  Status s = ParseReport(R"({"metrics": {"loss": NaN, "NaN Infinity": Infinity, "low": -Infinity, "s": "NaN"}})", &r);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(std::isnan(r.metrics[0].second));
  EXPECT_EQ(r.metrics[1].first, "NaN Infinity");  // Tokens inside strings stay as they are.
  EXPECT_EQ(r.metrics[1].second, INFINITY);
  EXPECT_EQ(r.metrics[2].second, -INFINITY);
  EXPECT_TRUE(std::isnan(r.metrics[3].second));
}

TEST(ReportLine, MalformedReportsSayWhatIsWrong) {
  ParsedReport r;
  auto error = [&](const char* text) {
    Status s = ParseReport(text, &r);
    return s.ok() ? std::string("ok") : s.message();
  };
  EXPECT_NE(error("[1, 2]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(error("{\"metrics\": {\"a\": 1}").find("invalid JSON"), std::string::npos);
  EXPECT_NE(error(R"({"metric": {"a": 1}})").find("unknown key \"metric\""), std::string::npos);
  EXPECT_NE(error(R"({"metrics": {"a": "high"}})").find("metrics.a: expected a number, got string"), std::string::npos);
  EXPECT_NE(error(R"({"metrics": {"a": true}})").find("metrics.a: expected a number, got boolean"), std::string::npos);
  EXPECT_NE(error(R"({"step": 1})").find("needs \"metrics\" or \"expert_stats\""), std::string::npos);
  EXPECT_NE(error(R"({"step": -1, "metrics": {"a": 1}})").find("step: expected a non-negative integer"), std::string::npos);
  EXPECT_NE(error(R"({"expert_stats": [{"usage": [0.5], "entropy": 1}]})").find("expert_stats[0].entropy: unknown key"),
            std::string::npos);
  EXPECT_NE(error(R"({"metrics": {"a": 1e400}})"), "ok");  // Out of a double's range.
  std::string many = "{\"metrics\": {";
  for (int i = 0; i < 300; ++i) many += "\"m" + std::to_string(i) + "\": 1" + (i < 299 ? "," : "");
  EXPECT_NE(error((many + "}}").c_str()).find("over the limit of 256"), std::string::npos);
}

TEST(ReportLine, ClassRoutingIsOneRowPerClassOfEveryExpert) {
  ParsedReport r;
  Status s = ParseReport(R"({"expert_stats": [{"usage": [0.5, 0.5], "class_routing": [[0.9, 0.1], [0.2, 0.8], [0, 0]]}]})", &r);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(r.expert_stats[0].num_classes, 3);
  EXPECT_EQ(r.expert_stats[0].class_routing, (std::vector<double>{0.9, 0.1, 0.2, 0.8, 0, 0}));
  EXPECT_EQ(ExpertLayerJson(r.expert_stats[0])["class_routing"][1][1], 0.8);  // And back, as rows.
  s = ParseReport(R"({"expert_stats": [{"usage": [0.5, 0.5], "class_routing": [[0.9, 0.1, 0.0]]}]})", &r);
  EXPECT_NE(s.message().find("class_routing: each class needs one share per expert of usage (2)"), std::string::npos)
      << s.message();
}

TEST(ReportLine, OnlyPrefixedLinesAreReports) {
  EXPECT_TRUE(IsReportLine("@moesweep {}"));
  EXPECT_FALSE(IsReportLine("@moesweep{}"));
  EXPECT_FALSE(IsReportLine(" @moesweep {}"));
  EXPECT_FALSE(IsReportLine("epoch 1 loss 0.3"));
}

}  // namespace
}  // namespace moesweep::worker
