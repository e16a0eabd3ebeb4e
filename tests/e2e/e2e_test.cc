// moesweep end to end: the real coordinator, workers and CLI as processes on loopback, in a
// temporary directory, on free ports. These are the runs a user makes, with failures injected.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/json.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/e2e/process.h"

namespace moesweep::e2e {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Small synthetic trials: a fraction of a second each on one thread.
Json QuickSpec() {
  return Json::parse(R"({
    "name": "e2e",
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "seeds": [1, 2],
    "base": {"dataset": "synthetic", "train_size": 4096, "val_size": 512, "input_dim": 16, "num_classes": 4, "d_model": 32,
             "num_experts": 4, "top_k": 2, "expert_hidden_dim": 16, "expert_layers": 1, "gate_layers": 1,
             "epochs": 5, "batch_size": 64, "lr": 0.003},
    "stages": [
      {"name": "width", "grid": {"expert_hidden_dim": [16, 32]}},
      {"name": "depth", "grid": {"expert_layers": [1, 2]}}
    ],
    "max_attempts": 3,
    "lease_seconds": 10
  })");
}

// Trials that take several seconds, reporting every epoch.
Json SlowSpec(int trials_per_stage) {
  Json spec = QuickSpec();
  spec["base"]["train_size"] = 4096;
  spec["base"]["epochs"] = 40;
  spec["base"]["d_model"] = 64;
  spec["base"]["expert_hidden_dim"] = 128;
  spec["seeds"] = Json::array();
  for (int s = 1; s <= trials_per_stage; ++s) spec["seeds"].push_back(s);
  spec["stages"] = Json::parse(R"([{"name": "only", "grid": {"temperature": [1.0]}}])");
  spec["lease_seconds"] = 3;
  return spec;
}

double Metric(const Json& trial, const std::string& name) { return trial["metrics"][name].get<double>(); }

TEST_F(EndToEnd, SubmitWatchBestOnATwoStageSweep) {
  StartCoordinator();
  StartWorker("w1");
  StartWorker("w2");
  CommandResult watched = Cli({"submit", WriteSpec(QuickSpec()), "--watch"}, seconds(300));
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  EXPECT_NE(watched.out.find("decided"), std::string::npos) << watched.out;

  Json sweeps = CliJson({"sweeps"});
  ASSERT_EQ(sweeps["sweeps"].size(), 1u);
  int64_t id = sweeps["sweeps"][0]["sweep_id"].get<int64_t>();
  EXPECT_EQ(sweeps["sweeps"][0]["state"], "SWEEP_SUCCEEDED");

  Json best = CliJson({"best", std::to_string(id)});
  ASSERT_EQ(best["stages"].size(), 2u);
  Json winner1 = best["stages"][0]["winner"]["point_json"];
  int width = winner1["expert_hidden_dim"].get<int>();
  std::vector<Json> trials = Trials(id);
  ASSERT_EQ(trials.size(), 8u);
  std::vector<double> winner2_values;
  int winner2_point = best["stages"][1]["winner"].value("point_index", 0);
  for (const Json& t : trials) {
    EXPECT_EQ(t["state"], "TRIAL_SUCCEEDED") << t.dump();
    if (t["stage"] == 2) {
      EXPECT_EQ(t["config_json"]["expert_hidden_dim"], width) << "stage-2 trial without the stage-1 winner: " << t.dump();
      if (t.value("point_index", 0) == winner2_point) winner2_values.push_back(Metric(t, "val_accuracy"));
    }
  }
  ASSERT_EQ(winner2_values.size(), 2u);
  double mean = (winner2_values[0] + winner2_values[1]) / 2;
  EXPECT_NEAR(best["stages"][1]["winner"]["mean"].get<double>(), mean, 1e-12);
  EXPECT_EQ(best["best_config_json"]["expert_hidden_dim"], width);
  // Trained models beat chance (4 classes: 0.25) on the synthetic task.
  EXPECT_GT(best["stages"][1]["winner"]["mean"].get<double>(), 0.5);
}

TEST_F(EndToEnd, KilledWorkersTrialIsRetriedOnTheOtherWorker) {
  StartCoordinator();
  int64_t id = Submit(SlowSpec(2));
  Process* doomed = StartWorker("doomed");
  std::string victim;
  ASSERT_TRUE(WaitFor([&] {
    for (const Json& t : Trials(id, "running")) {
      if (t["worker"].get<std::string>().find("doomed") != std::string::npos && t["metrics"].contains("epoch")) {
        victim = std::to_string(t["trial_id"].get<int64_t>());
        return true;
      }
    }
    return false;
  }, seconds(120), "a trial in progress on the doomed worker"));
  doomed->Signal(SIGKILL);
  ASSERT_TRUE(doomed->Wait(seconds(10)).has_value());
  StartWorker("survivor");

  CommandResult watched = Cli({"watch", std::to_string(id)}, seconds(400));
  EXPECT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  for (const Json& t : Trials(id)) {
    EXPECT_EQ(t["state"], "TRIAL_SUCCEEDED") << t.dump();
    if (std::to_string(t["trial_id"].get<int64_t>()) == victim) {
      EXPECT_GE(t["attempt"].get<int>(), 2);
      EXPECT_NE(t["worker"].get<std::string>().find("survivor"), std::string::npos);
    }
  }
}

TEST_F(EndToEnd, KilledCoordinatorRestartsAndTheSweepCompletesExactlyOnce) {
  StartCoordinator();
  StartWorker("w1");
  StartWorker("w2");
  Json spec = QuickSpec();
  spec["base"]["epochs"] = 6;
  int64_t id = Submit(spec);
  // A watcher that outlives the coordinator: it reconnects and resumes from its last seq.
  Process watcher({MOESWEEP_CLI_BIN, "watch", std::to_string(id), "--json", "--coordinator", address_},
                  (dir_ / "watch.jsonl").string());
  ASSERT_TRUE(WaitFor([&] { return CliJson({"show", std::to_string(id)})["sweep"].value("trials_done", 0) >= 3; },
                      seconds(120), "three finished trials"));
  coordinator_->Signal(SIGKILL);
  ASSERT_TRUE(coordinator_->Wait(seconds(10)).has_value());
  std::this_thread::sleep_for(milliseconds(500));
  StartCoordinator();

  std::optional<int> watch_exit = watcher.Wait(seconds(300));
  ASSERT_TRUE(watch_exit.has_value()) << "watch did not end";
  EXPECT_EQ(*watch_exit, 0) << ReadFile(watcher.log_path());

  // The watcher saw every event once, in order, across the restart.
  std::istringstream lines(ReadFile(watcher.log_path()));
  std::string line;
  int64_t expected_seq = 1;
  std::map<int64_t, int> finished;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;  // Reconnect notices go to stderr lines too.
    Json event = Json::parse(line);
    ASSERT_EQ(event["seq"].get<int64_t>(), expected_seq) << line;
    ++expected_seq;
    if (event["type"] == "TRIAL_FINISHED") ++finished[event["trial"]["trial_id"].get<int64_t>()];
  }
  EXPECT_EQ(finished.size(), 8u);
  for (auto& [trial, n] : finished) EXPECT_EQ(n, 1) << "trial " << trial << " finished " << n << " times";
  for (const Json& t : Trials(id)) EXPECT_EQ(t["state"], "TRIAL_SUCCEEDED") << t.dump();
  EXPECT_EQ(CliJson({"show", std::to_string(id)})["sweep"]["state"], "SWEEP_SUCCEEDED");
}

TEST_F(EndToEnd, CancelStopsRunningTrialsAndEndsTheSweepCancelled) {
  StartCoordinator();
  int64_t id = Submit(SlowSpec(3));
  StartWorker("w1");
  ASSERT_TRUE(WaitFor([&] { return !Trials(id, "running").empty(); }, seconds(120), "a running trial"));
  CommandResult cancel = Cli({"cancel", std::to_string(id)});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  CommandResult watched = Cli({"watch", std::to_string(id)}, seconds(120));
  EXPECT_EQ(watched.exit_code, 1) << watched.out << watched.err;  // Cancelled.
  EXPECT_EQ(CliJson({"show", std::to_string(id)})["sweep"]["state"], "SWEEP_CANCELLED");
  for (const Json& t : Trials(id)) {
    EXPECT_TRUE(t["state"] == "TRIAL_CANCELLED" || t["state"] == "TRIAL_SUCCEEDED") << t.dump();
  }
  EXPECT_FALSE(Trials(id, "cancelled").empty());
  EXPECT_TRUE(workers_[0]->Running());  // The worker goes on.
}

TEST_F(EndToEnd, InvalidSpecFromTheCliExits2WithThePathAndStoresNothing) {
  StartCoordinator();
  Json spec = QuickSpec();
  spec["stages"][0]["grid"]["temprature"] = {0.5, 1.0};
  CommandResult r = Cli({"submit", WriteSpec(spec, "bad.json")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("stages[0].grid.temprature: unknown trial config key (did you mean \"temperature\"?)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(CliJson({"sweeps"}).value("sweeps", Json::array()).size(), 0u);

  CommandResult offline = e2e::Run({MOESWEEP_CLI_BIN, "validate", (dir_ / "bad.json").string()});
  EXPECT_EQ(offline.exit_code, 2);
  EXPECT_NE(offline.err.find("stages[0].grid.temprature"), std::string::npos);
}

TEST_F(EndToEnd, ShippedSweepFilesValidateWithTheCli) {
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(MOESWEEP_SOURCE_DIR) / "sweeps")) {
    CommandResult r = e2e::Run({MOESWEEP_CLI_BIN, "validate", entry.path().string()});
    EXPECT_EQ(r.exit_code, 0) << entry.path() << ": " << r.err;
  }
}

}  // namespace
}  // namespace moesweep::e2e
