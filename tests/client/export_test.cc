// `export`: CSV columns, quoting and experiment-record shape from hand-built trials.
#include <gtest/gtest.h>

#include <sstream>

#include "client/export.h"
#include "test_util.h"

namespace moesweep::client {
namespace {

using cli_testing::MakeTrial;

// A strict RFC 4180 reader, so the test checks what a CSV library would read back.
std::vector<std::vector<std::string>> ReadCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false, in_quotes = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_quotes) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        in_quotes = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      EXPECT_TRUE(field.empty()) << "quote inside an unquoted field";
      in_quotes = quoted = true;
    } else if (c == ',') {
      rows.back().push_back(field);
      field.clear();
      quoted = false;
    } else if (c == '\n') {
      rows.back().push_back(field);
      field.clear();
      quoted = false;
      rows.emplace_back();
    } else {
      field += c;
    }
  }
  EXPECT_FALSE(in_quotes);
  EXPECT_TRUE(rows.back().empty() && field.empty() && !quoted) << "the last row ends with a newline";
  rows.pop_back();
  return rows;
}

Trials TwoTrials() {
  Trials trials;
  v1::Trial a = MakeTrial(11, 1, 0, 42, R"({"temperature": 0.5})", v1::TRIAL_SUCCEEDED);
  a.set_config_json(R"({"temperature": 0.5, "attention": "gated, \"headwise\"", "seed": 42})");
  (*a.mutable_metrics())["val_accuracy"] = 0.8125;
  (*a.mutable_metrics())["epoch"] = 5;
  cli_testing::AddLayer(&a, 0, 0.12, 0.91);
  a.set_started_at(1714572187);
  a.set_finished_at(1714572200);
  a.set_worker("host-1/slot-0");
  *trials.Add() = a;

  v1::Trial b = MakeTrial(12, 2, 3, 7, R"({"top_k": 1})", v1::TRIAL_FAILED);
  b.set_config_json(R"({"temperature": 0.5, "top_k": 1, "seed": 7})");
  (*b.mutable_metrics())["val_loss"] = 1.5;
  b.set_error("worker crashed:\n  \"bad_alloc\", exit 134");
  *trials.Add() = b;
  return trials;
}

ExportContext Context() {
  ExportContext c;
  c.sweep_name = "moe-core";
  c.stage_names = {{0, "baseline"}, {1, "core"}, {2, "structure"}};
  return c;
}

TEST(ExportCsvTest, ColumnsAreTheUnionOfKeysMetricsAndLayers) {
  std::ostringstream out;
  WriteCsv(TwoTrials(), Context(), out);
  auto rows = ReadCsv(out.str());
  ASSERT_EQ(rows.size(), 3u);
  std::vector<std::string> expected = {
      "experiment_id", "sweep_id", "trial_id", "stage", "stage_name", "point_index", "seed", "status",
      "attempt", "worker", "start_time", "end_time", "error", "reused_trial_id",
      // Config keys in first-seen order; top_k only exists in the second trial.
      "param.temperature", "param.attention", "param.seed", "param.top_k",
      // Metrics sorted; each trial has only some.
      "metric.epoch", "metric.val_accuracy", "metric.val_loss",
      "expert.l0.usage_variance", "expert.l0.activation_rate", "expert.l0.gate_weight_variance",
      "expert.l0.router_entropy", "expert.l0.load_cv"};
  EXPECT_EQ(rows[0], expected);
  for (const auto& row : rows) EXPECT_EQ(row.size(), expected.size());

  auto cell = [&](size_t row, const std::string& column) {
    auto it = std::find(expected.begin(), expected.end(), column);
    return rows[row][it - expected.begin()];
  };
  EXPECT_EQ(cell(1, "experiment_id"), "sweep7_trial11");
  EXPECT_EQ(cell(1, "stage_name"), "core");
  EXPECT_EQ(cell(1, "status"), "completed");
  EXPECT_EQ(cell(1, "start_time"), "2024-05-01T14:03:07Z");
  EXPECT_EQ(cell(1, "param.attention"), "gated, \"headwise\"");  // Comma and quotes survive.
  EXPECT_EQ(cell(1, "param.temperature"), "0.5");
  EXPECT_EQ(cell(1, "param.top_k"), "");
  EXPECT_EQ(cell(1, "metric.val_accuracy"), "0.8125");
  EXPECT_EQ(cell(1, "metric.val_loss"), "");
  EXPECT_EQ(cell(1, "expert.l0.load_cv"), "0.12");
  EXPECT_EQ(cell(1, "expert.l0.activation_rate"), "0.91");
  EXPECT_EQ(cell(2, "status"), "failed");
  EXPECT_EQ(cell(2, "error"), "worker crashed:\n  \"bad_alloc\", exit 134");  // Newline inside quotes.
  EXPECT_EQ(cell(2, "param.top_k"), "1");
  EXPECT_EQ(cell(2, "expert.l0.load_cv"), "");
  EXPECT_EQ(cell(2, "start_time"), "");
}

TEST(ExportCsvTest, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(CsvField(" padded"), "\" padded\"");
  EXPECT_EQ(CsvField(""), "");
}

TEST(ExportJsonTest, RecordHasSeed001ShapePlusSweepCoordinates) {
  Json records = TrialRecords(TwoTrials(), Context());
  ASSERT_TRUE(records.is_array());
  ASSERT_EQ(records.size(), 2u);
  const Json& r = records[0];
  // Seed 001's experiment record fields come first, in its order.
  std::vector<std::string> keys;
  for (auto it = r.begin(); it != r.end(); ++it) keys.push_back(it.key());
  std::vector<std::string> first(keys.begin(), keys.begin() + 7);
  EXPECT_EQ(first, (std::vector<std::string>{"experiment_id", "experiment_name", "start_time", "parameters", "results",
                                             "expert_analysis", "status"}));
  EXPECT_EQ(r["experiment_id"], "sweep7_trial11");
  EXPECT_EQ(r["experiment_name"], "moe-core / core / temperature=0.5 / seed 42");
  EXPECT_EQ(r["start_time"], "2024-05-01T14:03:07Z");
  EXPECT_EQ(r["parameters"]["attention"], "gated, \"headwise\"");
  EXPECT_EQ(r["parameters"]["temperature"], 0.5);
  EXPECT_EQ(r["results"]["val_accuracy"], 0.8125);
  const Json& layer = r["expert_analysis"]["layer_0"];
  EXPECT_EQ(layer["expert_usage"], Json::parse("[0.6, 0.4]"));
  EXPECT_EQ(layer["expert_activation_rate"], 0.91);
  EXPECT_EQ(layer["load_cv"], 0.12);
  EXPECT_EQ(layer["gate_weight_variance"], 0.02);
  EXPECT_EQ(layer["router_entropy"], 0.9);
  EXPECT_EQ(layer["usage_variance"], 0.01);
  EXPECT_EQ(r["status"], "completed");
  EXPECT_EQ(r["sweep_id"], 7);
  EXPECT_EQ(r["stage"], 1);
  EXPECT_EQ(r["seed"], 42);
  EXPECT_EQ(r["point"], Json::parse(R"({"temperature": 0.5})"));

  const Json& failed = records[1];
  EXPECT_EQ(failed["status"], "failed");
  EXPECT_TRUE(failed["start_time"].is_null());
  EXPECT_TRUE(failed["expert_analysis"].empty());
  EXPECT_EQ(failed["error"], "worker crashed:\n  \"bad_alloc\", exit 134");
}

}  // namespace
}  // namespace moesweep::client
