// Seed 001's four-stage plan (sweeps/moe_staged_tuning.json) end to end on real workers: the
// built-in trainer on Fashion-MNIST, with grid-edge extension in stage 1, reuse of the carried
// winner in stages 2-4, and a median pruner in stage 2.
#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include "common/trial_schema.h"
#include "tests/e2e/e2e_fixture.h"

namespace moesweep::e2e {
namespace {

double Objective(const Json& trial) { return trial["metrics"]["mAP"].get<double>(); }
int PointIndex(const Json& trial) { return trial.value("point_index", 0); }

// The plan as shipped (stages, grids, extension, seeds, baseline) on a sliver of the data, with 3
// epochs and an eighth of its expert widths, so that its ~130 trials take seconds; and a median
// pruner on stage 2 ("structure") that judges from epoch 2 on.
Json PlanSpec() {
  std::ifstream in(std::string(MOESWEEP_SOURCE_DIR) + "/sweeps/moe_staged_tuning.json");
  Json spec = Json::parse(in);
  // Widths / 8 too (64, 128, 256; bounds 32..512): at 4096 wide with 3 layers a trial trains 270M
  // parameters, minutes on one core.
  spec["stages"][0]["grid"]["expert_hidden_dim"] = {64, 128, 256};
  spec["stages"][0]["extend_edges"]["bounds"]["expert_hidden_dim"] = {32, 512};
  spec["base"]["train_size"] = 512;
  spec["base"]["val_size"] = 256;
  spec["base"]["epochs"] = 3;
  spec["stages"][1]["pruner"] = {{"method", "median"}, {"warmup_steps", 1}, {"min_trials", 4}, {"compare", "all"}};
  return spec;
}

// The index of the best point among `trials` (mean objective over succeeded seeds), leaving out
// points with a pruned seed and, if given, points at or past `grid_points`.
int BestPoint(const std::vector<Json>& trials, size_t grid_points = SIZE_MAX) {
  std::map<int, std::vector<double>> values;
  std::set<int> pruned;
  for (const Json& t : trials) {
    if (static_cast<size_t>(PointIndex(t)) >= grid_points) continue;
    if (t["state"] == "TRIAL_PRUNED") pruned.insert(PointIndex(t));
    if (t["state"] == "TRIAL_SUCCEEDED") values[PointIndex(t)].push_back(Objective(t));
  }
  int best = -1;
  double best_mean = 0;
  for (const auto& [point, v] : values) {
    if (pruned.count(point)) continue;
    double mean = 0;
    for (double x : v) mean += x / static_cast<double>(v.size());
    if (best < 0 || mean > best_mean) best = point, best_mean = mean;
  }
  return best;
}

TEST_F(EndToEnd, SeedOnesPlanExtendsAnEdgeReusesTheCarriedWinnerAndPrunesOnRealWorkers) {
  StartCoordinator();
  StartWorker("w1");
  StartWorker("w2");
  const Json spec = PlanSpec();
  CommandResult watched = Cli({"submit", WriteSpec(spec), "--watch"}, seconds(540));
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  Json best = CliJson({"best", "1"});
  ASSERT_EQ(best["stages"].size(), 5u) << best.dump();  // Baseline + 4.
  std::map<int, std::vector<Json>> by_stage;
  for (const Json& t : Trials(1)) by_stage[t.value("stage", 0)].push_back(t);

  // Every stage's winner is the best point its trials' metrics give (pruned points excluded).
  for (int stage = 1; stage <= 4; ++stage) {
    const Json& result = best["stages"][stage];
    ASSERT_EQ(result["state"], "STAGE_SUCCEEDED") << result.dump();
    EXPECT_EQ(result["winner"].value("point_index", 0), BestPoint(by_stage[stage])) << "stage " << stage;
  }

  // Stage 1: when the grid's own winner sat on an edge, the stage went one value beyond it (with
  // every seed) and decided again; otherwise it added nothing.
  const std::vector<Json>& core = by_stage[1];
  const int grid_winner = BestPoint(core, 15);
  ASSERT_GE(grid_winner, 0);
  Json winner_point;
  for (const Json& t : core) {
    if (PointIndex(t) == grid_winner) winner_point = t["point_json"];
  }
  const int width = winner_point["expert_hidden_dim"].get<int>();
  const double temperature = winner_point["temperature"].get<double>();
  std::set<std::string> expected;
  if (width == 64) expected.insert(Json{{"expert_hidden_dim", 32}, {"temperature", temperature}}.dump());
  if (width == 256) expected.insert(Json{{"expert_hidden_dim", 512}, {"temperature", temperature}}.dump());
  if (temperature == 0.3) expected.insert(Json{{"expert_hidden_dim", width}, {"temperature", 0.1}}.dump());
  if (temperature == 1.5) expected.insert(Json{{"expert_hidden_dim", width}, {"temperature", 2.0}}.dump());
  std::set<std::string> added;
  std::map<std::string, int> seeds_of_added;
  for (const Json& t : core) {
    if (PointIndex(t) < 15) continue;
    added.insert(t["point_json"].dump());
    ++seeds_of_added[t["point_json"].dump()];
  }
  EXPECT_EQ(added, expected) << "grid winner " << winner_point.dump();
  for (const auto& [point, seeds] : seeds_of_added) EXPECT_EQ(seeds, 3) << point;
  EXPECT_EQ(core.size(), 45 + 3 * expected.size());
  if (!expected.empty()) {
    EXPECT_NE(watched.out.find("extended:"), std::string::npos) << watched.out;
  }

  // Stages 2-4 each grid the carried winner's own values once (the defaults 2/2, 0.1/0.1,
  // 0.01/0.001): those trials took the earlier trial's results instead of running.
  std::map<std::string, Json> succeeded_by_key;  // Config with defaults filled in -> first such trial.
  int reused = 0;
  for (int stage = 0; stage <= 4; ++stage) {
    for (const Json& t : by_stage[stage]) {
      const std::string key = WithDefaults(t["config_json"]).dump();
      auto original = succeeded_by_key.find(key);
      if (t.value("reused_trial_id", 0) != 0) {
        ++reused;
        ASSERT_NE(original, succeeded_by_key.end()) << t.dump();
        EXPECT_EQ(t["reused_trial_id"], original->second["trial_id"]);
        EXPECT_EQ(t["state"], "TRIAL_SUCCEEDED");
        EXPECT_EQ(t.value("attempt", 0), 0) << "a reused trial is never leased";
        EXPECT_EQ(Objective(t), Objective(original->second));
      } else {
        EXPECT_EQ(original, succeeded_by_key.end()) << "ran again although identical: " << t.dump();
      }
      if (t["state"] == "TRIAL_SUCCEEDED" && original == succeeded_by_key.end()) succeeded_by_key[key] = t;
    }
  }
  EXPECT_EQ(reused, 3 * 3);

  // Stage 2's pruner stopped trials below the median (and the other seeds of their points); their
  // points did not win, and only stage 2 has pruned trials.
  int pruned = 0;
  for (const auto& [stage, trials] : by_stage) {
    for (const Json& t : trials) {
      if (t["state"] != "TRIAL_PRUNED") continue;
      ++pruned;
      EXPECT_EQ(stage, 2) << t.dump();
      // Pruned itself, or stopped with its point when a sibling seed was.
      const std::string error = t["error"].get<std::string>();
      EXPECT_TRUE(error.rfind("pruned at step ", 0) == 0 || error.rfind("pruned with its grid point: ", 0) == 0)
          << t.dump();
      EXPECT_NE(PointIndex(t), best["stages"][2]["winner"].value("point_index", 0));
    }
  }
  EXPECT_GE(pruned, 1);
  EXPECT_EQ(best["stages"][2].value("trials_pruned", 0), pruned);
  EXPECT_NE(watched.out.find("  prune    "), std::string::npos) << watched.out;
}

}  // namespace
}  // namespace moesweep::e2e
