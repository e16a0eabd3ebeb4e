// `validate`: offline, with exactly the messages of ParseSweepSpec (what the coordinator says).
#include <gtest/gtest.h>

#include <fstream>

#include "common/sweep_spec.h"
#include "test_util.h"

namespace moesweep::client {
namespace {

using cli_testing::Contains;
using cli_testing::Lines;
using cli_testing::Cli;

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/moesweep_validate_" + name;
  std::ofstream(path) << text;
  return path;
}

const char kGoodSpec[] = R"({
  "name": "moe-core",
  "objective": {"metric": "val_accuracy", "goal": "maximize"},
  "seeds": [42, 123, 456],
  "base": {"epochs": 2},
  "baseline": {"use_moe": false},
  "stages": [
    {"name": "core", "grid": {"expert_hidden_dim": [512, 1024], "temperature": [0.5, 1.0]}},
    {"name": "structure", "grid": {"expert_layers": [1, 2]}}
  ]
})";

const char kBadSpec[] = R"({
  "name": "moe-core",
  "objective": {"metric": "val_acc"},
  "stages": [
    {"name": "core", "grid": {"temprature": [0.5], "top_k": [0]}}
  ]
})";

TEST(ValidateTest, GoodSpecPrintsStagesAndFirstStageTrials) {
  std::string path = WriteTemp("good.json", kGoodSpec);
  auto r = Cli({"validate", path});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, path + ": valid sweep \"moe-core\": baseline + 2 stages; first stage \"core\": "
                          "4 points x 3 seeds = 12 trials (+ 3 baseline trials)\n");
  EXPECT_TRUE(r.err.empty());
}

TEST(ValidateTest, GoodSpecAsJson) {
  auto r = Cli({"validate", WriteTemp("good2.json", kGoodSpec), "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["valid"], true);
  EXPECT_EQ(j["num_stages"], 2);
  EXPECT_EQ(j["trials_in_first_stage"], 15);  // Like SubmitSweepResponse: baseline trials included.
  EXPECT_EQ(j["stages"][1]["trials"], 6);
}

TEST(ValidateTest, BadSpecExits2WithTheCoordinatorsMessages) {
  std::string path = WriteTemp("bad.json", kBadSpec);
  auto r = Cli({"validate", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(r.out.empty());

  SweepSpec spec;
  Status expected = ParseSweepSpec(kBadSpec, SpecLimits{}, &spec);
  ASSERT_FALSE(expected.ok());
  std::vector<std::string> want;
  for (const std::string& line : Lines(expected.message())) want.push_back("moesweep: " + path + ": " + line);
  EXPECT_EQ(Lines(r.err), want);
  // The messages name JSON paths.
  EXPECT_TRUE(Contains(r.err, "objective.metric: unknown metric \"val_acc\"")) << r.err;
  EXPECT_TRUE(Contains(r.err, "stages[0].grid.temprature: unknown trial config key (did you mean \"temperature\"?)"))
      << r.err;
  EXPECT_TRUE(Contains(r.err, "stages[0].grid.top_k[0]:")) << r.err;
}

TEST(ValidateTest, StageTrialLimitMatchesTheCoordinatorsFlag) {
  std::string path = WriteTemp("limit.json", kGoodSpec);
  EXPECT_EQ(Cli({"validate", path, "--max-stage-trials", "12"}).code, 0);
  auto r = Cli({"validate", path, "--max-stage-trials", "11"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "stages[0].grid: 4 points x 3 seeds = 12 trials exceeds the limit of 11 trials per stage"))
      << r.err;
}

TEST(ValidateTest, SyntaxErrorNamesLineAndColumn) {
  auto r = Cli({"validate", WriteTemp("syntax.json", "{\n  \"name\": \"x\",\n}\n")});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "invalid JSON at line 3")) << r.err;
}

TEST(ValidateTest, MissingFileExits2) {
  auto r = Cli({"validate", "/nonexistent/spec.json"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "moesweep: cannot read /nonexistent/spec.json: No such file or directory")) << r.err;
}

TEST(ValidateTest, ReadsStdinForDash) {
  std::istringstream in(kGoodSpec);
  auto r = cli_testing::CliWith({"validate", "-"}, [&](CliEnv& env) { env.in = &in; });
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "-: valid sweep \"moe-core\"")) << r.out;
}

TEST(ValidateTest, InvalidUtf8IsReportedWithItsByteOffset) {
  std::string path = WriteTemp("bad_utf8.json", std::string("{\"name\": \"ok\xff\"}"));
  auto r = Cli({"validate", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "moesweep: " + path + ": invalid UTF-8 at byte offset 12\n");
}

TEST(ValidateTest, ADirectoryIsReportedAsADirectory) {
  auto r = Cli({"validate", ::testing::TempDir()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("is a directory"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("invalid JSON"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moesweep::client
