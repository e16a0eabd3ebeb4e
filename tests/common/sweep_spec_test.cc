#include "common/sweep_spec.h"

#include <set>

#include <gtest/gtest.h>

namespace moesweep {
namespace {

const char* kGood = R"({
  "name": "moe-staged-tuning",
  "objective": {"metric": "val_accuracy", "goal": "maximize"},
  "seeds": [42, 123, 456],
  "base": {"model": "moe_mlp", "dataset": "synthetic", "epochs": 5},
  "stages": [
    {"name": "core", "grid": {"expert_hidden_dim": [512, 1024, 2048], "temperature": [0.3, 0.5, 0.7, 1.0, 1.5]}},
    {"name": "structure", "grid": {"expert_layers": [1, 2, 3], "gate_layers": [1, 2]}}
  ],
  "max_attempts": 3,
  "lease_seconds": 60
})";

// Parses `text` and returns the error message ("" when valid).
std::string Error(const std::string& text, SpecLimits limits = {}) {
  SweepSpec spec;
  Status s = ParseSweepSpec(text, limits, &spec);
  return s.ok() ? "" : s.message();
}

// The good spec with one top-level key replaced.
std::string With(const std::string& key, const Json& value) {
  Json j = Json::parse(kGood);
  j[key] = value;
  return j.dump();
}

TEST(SweepSpec, ParsesTheIssueExample) {
  SweepSpec spec;
  ASSERT_TRUE(ParseSweepSpec(kGood, {}, &spec).ok());
  EXPECT_EQ(spec.name, "moe-staged-tuning");
  EXPECT_EQ(spec.metric, "val_accuracy");
  EXPECT_TRUE(spec.maximize);
  EXPECT_EQ(spec.seeds, (std::vector<int64_t>{42, 123, 456}));
  ASSERT_EQ(spec.stages.size(), 2u);
  EXPECT_EQ(spec.stages[0].NumPoints(), 15u);
  EXPECT_EQ(spec.stages[1].NumPoints(), 6u);
  EXPECT_EQ(spec.max_attempts, 3);
  EXPECT_DOUBLE_EQ(spec.lease_seconds, 60);
}

TEST(SweepSpec, PointsFollowTheWrittenOrderLastAxisFastest) {
  SweepSpec spec;
  ASSERT_TRUE(ParseSweepSpec(kGood, {}, &spec).ok());
  EXPECT_EQ(spec.stages[0].Point(0).dump(), R"({"expert_hidden_dim":512,"temperature":0.3})");
  EXPECT_EQ(spec.stages[0].Point(1).dump(), R"({"expert_hidden_dim":512,"temperature":0.5})");
  EXPECT_EQ(spec.stages[0].Point(5).dump(), R"({"expert_hidden_dim":1024,"temperature":0.3})");
  EXPECT_EQ(spec.stages[0].Point(14).dump(), R"({"expert_hidden_dim":2048,"temperature":1.5})");
}

TEST(SweepSpec, NormalisedFormRoundTrips) {
  SweepSpec spec, again;
  ASSERT_TRUE(ParseSweepSpec(kGood, {}, &spec).ok());
  ASSERT_TRUE(ParseSweepSpec(spec.ToJson().dump(), {}, &again).ok());
  EXPECT_EQ(spec.ToJson(), again.ToJson());
}

TEST(SweepSpec, SyntaxErrorNamesLineAndColumn) {
  std::string e = Error("{\n  \"name\": \"x\",\n  \"seeds\": [1,,2]\n}");
  EXPECT_NE(e.find("line 3, column"), std::string::npos) << e;
}

TEST(SweepSpec, GridErrorsNameTheirPath) {
  Json j = Json::parse(kGood);
  j["stages"][1]["grid"]["temperature"] = Json::array();
  EXPECT_EQ(Error(j.dump()), "stages[1].grid.temperature: expected a non-empty array of numbers");
  j["stages"][1]["grid"]["temperature"] = {0.5, "hot"};
  EXPECT_EQ(Error(j.dump()), "stages[1].grid.temperature[1]: expected a number, got \"hot\"");
  j["stages"][1]["grid"]["temperature"] = {0.5, 0.5};
  EXPECT_EQ(Error(j.dump()), "stages[1].grid.temperature[1]: duplicate value 0.5");
  j = Json::parse(kGood);
  j["stages"][0]["grid"]["temprature"] = {0.5};
  EXPECT_EQ(Error(j.dump()), "stages[0].grid.temprature: unknown trial config key (did you mean \"temperature\"?)");
  j = Json::parse(kGood);
  j["stages"][0]["grid"]["seed"] = {1, 2};
  EXPECT_NE(Error(j.dump()).find("stages[0].grid.seed:"), std::string::npos);
  j = Json::parse(kGood);
  j["stages"][0]["grid"]["attention"] = {Json::object()};
  EXPECT_EQ(Error(j.dump()), "stages[0].grid.attention[0]: grid values must be numbers, strings or booleans, got object");
  j = Json::parse(kGood);
  j["stages"][0]["grid"] = Json::object();
  EXPECT_NE(Error(j.dump()).find("stages[0].grid: required"), std::string::npos);
}

TEST(SweepSpec, BaseTypoGetsASuggestion) {
  EXPECT_EQ(Error(With("base", {{"temprature", 0.5}})),
            "base.temprature: unknown trial config key (did you mean \"temperature\"?)");
  EXPECT_EQ(Error(With("base", {{"seed", 1}})), "base.seed: set by the sweep's \"seeds\", not here");
  EXPECT_EQ(Error(With("base", 5)), "base: expected an object of trial config keys, got integer");
}

TEST(SweepSpec, UnknownTopLevelKeysAreErrors) {
  EXPECT_EQ(Error(With("stagez", 1)), "stagez: unknown key (did you mean \"stages\"?)");
  Json j = Json::parse(kGood);
  j["stages"][0]["gird"] = 1;
  EXPECT_NE(Error(j.dump()).find("stages[0].gird: unknown key (did you mean \"grid\"?)"), std::string::npos);
  j = Json::parse(kGood);
  j["objective"]["direction"] = "up";
  EXPECT_NE(Error(j.dump()).find("objective.direction: unknown key"), std::string::npos);
}

TEST(SweepSpec, ObjectiveSeedsAndLimits) {
  EXPECT_EQ(Error(With("objective", {{"metric", "val_acuracy"}})),
            "objective.metric: unknown metric \"val_acuracy\" (did you mean \"val_accuracy\"?)");
  EXPECT_EQ(Error(With("objective", {{"metric", "val_loss"}, {"goal", "lower"}})),
            "objective.goal: expected \"maximize\" or \"minimize\", got \"lower\"");
  EXPECT_EQ(Error(With("seeds", Json::array())), "seeds: expected a non-empty array of non-negative integers");
  EXPECT_EQ(Error(With("seeds", {1, 1})), "seeds[1]: duplicate seed 1");
  EXPECT_EQ(Error(With("seeds", {1, -2})), "seeds[1]: expected a non-negative integer, got -2");
  EXPECT_EQ(Error(With("max_attempts", 0)), "max_attempts: expected an integer in [1, 100], got 0");
  EXPECT_EQ(Error(With("lease_seconds", "soon")), "lease_seconds: expected a number of seconds in [1, 86400], got \"soon\"");
  EXPECT_EQ(Error(With("stages", Json::array())), "stages: expected a non-empty array of {\"name\", \"grid\"}");
  EXPECT_EQ(Error(With("name", "")), "name: expected a non-empty string, got \"\"");
  EXPECT_EQ(Error("[1]"), "the spec must be a JSON object, got array");
}

TEST(SweepSpec, StageOverTheTrialLimitIsRejected) {
  SpecLimits limits;
  limits.max_stage_trials = 40;  // core: 15 points x 3 seeds = 45.
  EXPECT_EQ(Error(kGood, limits), "stages[0].grid: 15 points x 3 seeds = 45 trials exceeds the limit of 40 trials per stage");
}

TEST(SweepSpec, EveryProblemIsListed) {
  Json j = Json::parse(kGood);
  j.erase("name");
  j["seeds"] = {1, "x"};
  j["stages"][1]["grid"]["temprature"] = {1};
  std::string e = Error(j.dump());
  EXPECT_NE(e.find("name: required"), std::string::npos);
  EXPECT_NE(e.find("seeds[1]"), std::string::npos);
  EXPECT_NE(e.find("stages[1].grid.temprature"), std::string::npos);
}

TEST(SweepSpec, ValuesMayBeStringsAndBooleans) {
  Json j = Json::parse(kGood);
  j["stages"][0]["grid"] = {{"use_moe", {true, false}}, {"attention", {"softmax", "gated"}}};
  SweepSpec spec;
  ASSERT_TRUE(ParseSweepSpec(j.dump(), {}, &spec).ok());
  EXPECT_EQ(spec.stages[0].NumPoints(), 4u);
  EXPECT_EQ(spec.stages[0].Point(3).dump(), R"({"use_moe":false,"attention":"gated"})");
}


TEST(SweepSpec, SuccessCriterionNeedsABaselineAndANonNegativeDelta) {
  Json spec = Json::parse(kGood);
  spec["success"] = {{"min_delta", 0.02}};
  EXPECT_NE(Error(spec.dump()).find("success: needs a \"baseline\""), std::string::npos) << Error(spec.dump());
  spec["baseline"] = {{"use_moe", false}};
  SweepSpec parsed;
  ASSERT_TRUE(ParseSweepSpec(spec.dump(), {}, &parsed).ok());
  EXPECT_EQ(parsed.success_min_delta, 0.02);
  SweepSpec again;
  ASSERT_TRUE(ParseSweepSpec(parsed.ToJson().dump(), {}, &again).ok());
  EXPECT_EQ(again.success_min_delta, 0.02);
  spec["success"] = {{"min_delta", -1}};
  EXPECT_NE(Error(spec.dump()).find("success.min_delta: required: a non-negative number"), std::string::npos);
  spec["success"] = {{"min_detla", 0.1}};
  EXPECT_NE(Error(spec.dump()).find("success.min_detla: unknown key (did you mean \"min_delta\"?)"), std::string::npos);
}


TEST(SweepSpec, ReuseIsOnByDefaultAndABooleanWhenGiven) {
  SweepSpec spec;
  ASSERT_TRUE(ParseSweepSpec(kGood, {}, &spec).ok());
  EXPECT_TRUE(spec.reuse);
  EXPECT_FALSE(spec.ToJson().contains("reuse"));
  Json off = Json::parse(kGood);
  off["reuse"] = false;
  ASSERT_TRUE(ParseSweepSpec(off.dump(), {}, &spec).ok());
  EXPECT_FALSE(spec.reuse);
  SweepSpec again;
  ASSERT_TRUE(ParseSweepSpec(spec.ToJson().dump(), {}, &again).ok());
  EXPECT_FALSE(again.reuse);
  off["reuse"] = "no";
  EXPECT_NE(Error(off.dump()).find("reuse: expected true or false"), std::string::npos);
}


const char* kRandom = R"({
  "name": "random", "objective": {"metric": "val_accuracy"}, "seeds": [1, 2],
  "stages": [{"name": "wide", "search": {"method": "random", "trials": 20, "seed": 7},
              "space": {"lr": {"log_uniform": [1e-4, 1e-1]}, "expert_hidden_dim": {"int": [16, 256]},
                        "temperature": {"uniform": [0.3, 1.5]}, "model": {"choice": ["moe_mlp", "moe_transformer"]}}}]
})";

TEST(SweepSpec, RandomSearchSamplesItsPointsFromItsStoredSeed) {
  SweepSpec spec;
  ASSERT_TRUE(ParseSweepSpec(kRandom, {}, &spec).ok());
  const StageSpec& stage = spec.stages[0];
  ASSERT_EQ(stage.NumPoints(), 20u);
  std::set<std::string> models;
  for (size_t i = 0; i < stage.NumPoints(); ++i) {
    Json p = stage.Point(i);
    EXPECT_GE(p["lr"].get<double>(), 1e-4);
    EXPECT_LT(p["lr"].get<double>(), 1e-1);
    ASSERT_TRUE(p["expert_hidden_dim"].is_number_integer());
    EXPECT_GE(p["expert_hidden_dim"].get<int>(), 16);
    EXPECT_LE(p["expert_hidden_dim"].get<int>(), 256);
    EXPECT_GE(p["temperature"].get<double>(), 0.3);
    EXPECT_LT(p["temperature"].get<double>(), 1.5);
    models.insert(p["model"].get<std::string>());
  }
  EXPECT_EQ(models.size(), 2u);
  // The normalised spec keeps the seed, so parsing it again (a restart) gives the same points.
  SweepSpec again;
  ASSERT_TRUE(ParseSweepSpec(spec.ToJson().dump(), {}, &again).ok());
  for (size_t i = 0; i < stage.NumPoints(); ++i) EXPECT_EQ(again.stages[0].Point(i), stage.Point(i));
  // Without a seed, one is chosen and stored.
  Json no_seed = Json::parse(kRandom);
  no_seed["stages"][0]["search"].erase("seed");
  ASSERT_TRUE(ParseSweepSpec(no_seed.dump(), {}, &spec).ok());
  EXPECT_TRUE(spec.ToJson()["stages"][0]["search"].contains("seed"));
}

TEST(SweepSpec, RandomSearchErrorsNameTheirPath) {
  Json spec = Json::parse(kRandom);
  spec["stages"][0]["search"]["trials"] = 0;
  spec["stages"][0]["space"]["top_k"] = {{"uniform", {1, 4}}};
  spec["stages"][0]["space"]["temperature"] = {{"uniform", {0.0, 1.0}}};
  spec["stages"][0]["space"]["lr"] = {{"log_uniform", {0, 1}}};
  spec["stages"][0]["space"]["dropuot"] = {{"choice", {0.1}}};
  spec["stages"][0]["grid"] = {{"top_k", {1}}};
  std::string e = Error(spec.dump());
  EXPECT_NE(e.find("stages[0].search.trials: required: an integer in [1, 10000]"), std::string::npos) << e;
  EXPECT_NE(e.find("stages[0].space.top_k.uniform: this key takes integers"), std::string::npos) << e;
  EXPECT_NE(e.find("stages[0].space.temperature.uniform[0]"), std::string::npos) << e;  // temperature > 0
  EXPECT_NE(e.find("stages[0].space.lr.log_uniform: expected [a, b] with 0 < a < b"), std::string::npos) << e;
  EXPECT_NE(e.find("stages[0].space.dropuot: unknown trial config key"), std::string::npos) << e;
  EXPECT_NE(e.find("stages[0].grid: a stage has either a grid or a search"), std::string::npos) << e;
}

TEST(SweepSpec, APrunerAppliesToEveryStageUnlessAStageSaysOtherwise) {
  Json j = Json::parse(kGood);
  j["pruner"] = {{"method", "median"}, {"warmup_steps", 2}, {"min_trials", 4}};
  j["stages"][1]["pruner"] = false;
  j["stages"].push_back({{"name", "third"},
                         {"grid", {{"top_k", {1, 2}}}},
                         {"pruner", {{"method", "asha"}, {"metric", "val_loss"}, {"reduction_factor", 2}}}});
  SweepSpec spec;
  Status s = ParseSweepSpec(j.dump(), {}, &spec);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(spec.PrunerFor(0), nullptr);  // The baseline is never pruned.
  ASSERT_NE(spec.PrunerFor(1), nullptr);
  EXPECT_EQ(spec.PrunerFor(1)->method, PrunerSpec::Method::kMedian);
  EXPECT_EQ(spec.PrunerFor(1)->metric, "val_accuracy");  // The objective's, and its goal.
  EXPECT_TRUE(spec.PrunerFor(1)->maximize);
  EXPECT_EQ(spec.PrunerFor(1)->warmup_steps, 2);
  EXPECT_EQ(spec.PrunerFor(1)->min_trials, 4);
  EXPECT_EQ(spec.PrunerFor(2), nullptr);
  ASSERT_NE(spec.PrunerFor(3), nullptr);
  EXPECT_EQ(spec.PrunerFor(3)->method, PrunerSpec::Method::kAsha);
  EXPECT_FALSE(spec.PrunerFor(3)->maximize);  // A built-in loss goes down.
  EXPECT_EQ(spec.PrunerFor(3)->reduction_factor, 2);
  EXPECT_EQ(spec.PrunerFor(3)->min_steps, 1);
  // The stored form parses to the same.
  SweepSpec again;
  ASSERT_TRUE(ParseSweepSpec(spec.ToJson().dump(), {}, &again).ok());
  EXPECT_EQ(again.ToJson(), spec.ToJson());
  EXPECT_EQ(again.PrunerFor(2), nullptr);
  EXPECT_EQ(again.PrunerFor(3)->metric, "val_loss");
}

TEST(SweepSpec, PrunerErrorsNameTheirPath) {
  Json j = Json::parse(kGood);
  j["pruner"] = {{"method", "hyperband"}, {"warmup_steps", -1}, {"min_trails", 3}, {"reduction_factor", 3},
                 {"compare", "seed"}};
  j["stages"][0]["pruner"] = "off";
  std::string e = Error(j.dump());
  EXPECT_NE(e.find("pruner.method: expected \"median\" or \"asha\", got \"hyperband\""), std::string::npos) << e;
  EXPECT_NE(e.find("pruner.warmup_steps: expected an integer in [0, 1000000], got -1"), std::string::npos) << e;
  EXPECT_NE(e.find("pruner.min_trails: unknown key (did you mean \"min_trials\"?)"), std::string::npos) << e;
  EXPECT_NE(e.find("pruner.reduction_factor: only for \"method\": \"asha\""), std::string::npos) << e;
  EXPECT_NE(e.find("stages[0].pruner: expected an object such as"), std::string::npos) << e;
  EXPECT_NE(e.find("pruner.compare: expected \"same_seed\" or \"all\", got \"seed\""), std::string::npos) << e;
  // The built-in trainer reports val_top5_accuracy only at the end of a trial: nothing to compare
  // per epoch.
  j = Json::parse(kGood);
  j["objective"]["metric"] = "val_top5_accuracy";
  j["pruner"] = {{"method", "median"}};
  e = Error(j.dump());
  EXPECT_NE(e.find("pruner: the built-in trainer reports \"val_top5_accuracy\" only at the end of a trial"),
            std::string::npos)
      << e;
  j["pruner"]["metric"] = "mAP";  // Reported every epoch.
  EXPECT_EQ(Error(j.dump()), "");
  j["pruner"]["metric"] = "best_epoch";
  EXPECT_NE(Error(j.dump()).find("pruner.metric: the built-in trainer reports \"best_epoch\" only at the end"),
            std::string::npos);
}

// The worker's cross-key rules hold for a random stage's sampled points too: top_k <= num_experts.
TEST(SweepSpec, CrossKeyRulesCheckARandomStagesSampledPoints) {
  const char* spec = R"({
    "name": "random", "objective": {"metric": "val_accuracy"}, "seeds": [1],
    "base": {"num_experts": 4},
    "stages": [{"name": "wide", "search": {"method": "random", "trials": 20, "seed": 3},
                "space": {"top_k": {"int": [1, 8]}}}]})";
  std::string e = Error(spec);
  EXPECT_NE(e.find("stages[0].space.top_k: 5 is more than num_experts (4) (sampled point 0, num_experts from base)"),
            std::string::npos)
      << e;
  Json ok = Json::parse(spec);
  ok["stages"][0]["space"]["top_k"] = {{"int", {1, 4}}};
  EXPECT_EQ(Error(ok.dump()), "");
  // A later grid stage that raises num_experts past every sampled top_k is fine; one that lowers
  // it below some is refused, naming where top_k comes from.
  Json later = ok;
  later["stages"].push_back({{"name", "experts"}, {"grid", {{"num_experts", {2, 8}}}}});
  e = Error(later.dump());
  EXPECT_NE(e.find("stages[1].grid"), std::string::npos) << e;
  EXPECT_NE(e.find("top_k from stages[0].space"), std::string::npos) << e;
}

}  // namespace
}  // namespace moesweep
