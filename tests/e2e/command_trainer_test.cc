// Command trainers end to end: the real coordinator, workers and CLI, and the user's program
// played by tests/e2e/testdata/fake_trainer.py as real processes.
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "tests/e2e/e2e_fixture.h"

namespace moesweep::e2e {
namespace {

const std::string kTrainer = std::string(MOESWEEP_SOURCE_DIR) + "/tests/e2e/testdata/fake_trainer.py";

// Seed 001's shape on a stand-in program: a baseline, then width, then temperature.
Json CommandSpec() {
  Json spec = Json::parse(R"({
    "name": "command-e2e",
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "seeds": [1, 2],
    "base": {"behaviour": "ok", "width": 16, "temp": 1.5, "epochs": 3},
    "baseline": {"width": 4},
    "stages": [
      {"name": "width", "grid": {"width": [16, 64, 256]}},
      {"name": "temp", "grid": {"temp": [0.3, 0.7, 1.5]}}
    ],
    "max_attempts": 2,
    "lease_seconds": 10
  })");
  spec["trainer"] = {{"command", {"/usr/bin/python3", kTrainer, "{trial_name}", "width={width}", "temp={temp}",
                                  "behaviour={behaviour}", "epochs={epochs}"}},
                     {"env", {{"PYTHONUNBUFFERED", "1"}}}};
  return spec;
}

// One trial that runs until it is stopped.
Json SlowSpec() {
  Json spec = CommandSpec();
  spec.erase("baseline");
  spec["seeds"] = {1};
  spec["stages"] = Json::parse(R"([{"name": "slow", "grid": {"behaviour": ["slow"]}}])");
  return spec;
}

// The pids a "slow" trial wrote into its output folder (the trainer and its child), once written.
std::vector<pid_t> SlowTrialPids(const std::filesystem::path& runs) {
  std::vector<pid_t> pids;
  if (!std::filesystem::exists(runs)) return pids;
  for (const auto& entry : std::filesystem::directory_iterator(runs)) {
    std::ifstream f(entry.path() / "pids");
    pid_t a = 0, b = 0;
    if (f >> a >> b) pids.insert(pids.end(), {a, b});
  }
  return pids;
}

// Running, not a zombie waiting to be reaped.
bool Alive(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return !stat.empty() && paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

class CommandTrainerEndToEnd : public EndToEnd {
 protected:
  bool AllGone(const std::vector<pid_t>& pids, seconds limit) {
    return WaitFor([&] { return std::none_of(pids.begin(), pids.end(), Alive); }, limit, "the trial's processes to end");
  }
};

TEST_F(CommandTrainerEndToEnd, StagedSweepWithSeedsAndBaselineRunsToTheEndAndItsWinnersMatchTheReports) {
  StartCoordinator();
  StartWorker("w1");
  StartWorker("w2");
  CommandResult watched = Cli({"submit", WriteSpec(CommandSpec()), "--watch"}, seconds(300));
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  EXPECT_NE(watched.out.find("stage 2/2 \"temp\" decided"), std::string::npos) << watched.out;

  Json best = CliJson({"best", "1"});
  ASSERT_EQ(best["stages"].size(), 3u);  // Baseline + 2.
  // fake_trainer.py peaks at width 64 and temp 0.7.
  EXPECT_EQ(best["best_config_json"]["width"], 64) << best.dump();
  EXPECT_EQ(best["best_config_json"]["temp"], 0.7) << best.dump();

  std::vector<Json> trials = Trials(1);
  ASSERT_EQ(trials.size(), 2u + 6u + 6u);
  std::map<std::pair<int, int>, std::vector<double>> by_point;
  for (const Json& t : trials) {
    ASSERT_EQ(t["state"], "TRIAL_SUCCEEDED") << t.dump();
    if (t["stage"] == 2) EXPECT_EQ(t["config_json"]["width"], 64) << "stage 2 without stage 1's winner: " << t.dump();
    // The final metric is the last epoch's: what the program reported.
    const Json& c = t["config_json"];
    double expected = 0.9 - 0.05 * std::abs(std::log2(c["width"].get<double>()) - 6) -
                      0.2 * std::abs(c["temp"].get<double>() - 0.7) + 0.001 * c["seed"].get<int>();
    EXPECT_NEAR(t["metrics"]["val_accuracy"].get<double>(), expected, 1e-9) << t.dump();
    EXPECT_NEAR(t["metrics"]["train_loss"].get<double>(), 1.0 / 3, 1e-9);
    by_point[{t["stage"].get<int>(), t.value("point_index", 0)}].push_back(t["metrics"]["val_accuracy"].get<double>());
  }
  for (const Json& stage : best["stages"]) {
    const auto& values = by_point[{stage["stage"].get<int>(), stage["winner"].value("point_index", 0)}];
    ASSERT_EQ(values.size(), 2u);
    EXPECT_NEAR(stage["winner"]["mean"].get<double>(), (values[0] + values[1]) / 2, 1e-12) << stage.dump();
  }
  // Each attempt's output is kept on the worker's host.
  EXPECT_TRUE(std::filesystem::exists(dir_ / "logs" / "trial-1-attempt-1.log"));
  // Export treats command trials like any other.
  CommandResult csv = Cli({"export", "1", "--format", "csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  EXPECT_EQ(std::count(csv.out.begin(), csv.out.end(), '\n'), 1 + 14) << csv.out;
}

TEST_F(CommandTrainerEndToEnd, CrashingHangingAndNoisyTrainersAreReportedAndTheWorkerGoesOn) {
  StartCoordinator();
  Json spec = CommandSpec();
  spec.erase("baseline");
  spec["seeds"] = {1};
  spec["trainer"]["timeout_seconds"] = 2;
  spec["stages"] = Json::parse(R"([{"name": "behaviour", "grid": {"behaviour": ["crash", "hang", "nan", "noisy", "ok"]}}])");
  StartWorker("only");
  CommandResult watched = Cli({"submit", WriteSpec(spec), "--watch"}, seconds(120));
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  std::map<std::string, Json> by_behaviour;
  for (const Json& t : Trials(1)) by_behaviour[t["config_json"]["behaviour"]] = t;
  const Json& crash = by_behaviour["crash"];
  EXPECT_EQ(crash["state"], "TRIAL_FAILED");
  EXPECT_NE(crash["error"].get<std::string>().find("exit status 3: "), std::string::npos) << crash.dump();
  EXPECT_NE(crash["error"].get<std::string>().find("ZeroDivisionError: division by zero"), std::string::npos);
  EXPECT_EQ(by_behaviour["hang"]["state"], "TRIAL_FAILED");
  EXPECT_NE(by_behaviour["hang"]["error"].get<std::string>().find("timed out after 2 s"), std::string::npos);
  EXPECT_EQ(by_behaviour["nan"]["state"], "TRIAL_FAILED");
  EXPECT_NE(by_behaviour["nan"]["error"].get<std::string>().find("the objective val_accuracy is nan"), std::string::npos);
  // Malformed, huge and non-finite lines are ignored; the good report counts.
  EXPECT_EQ(by_behaviour["noisy"]["state"], "TRIAL_SUCCEEDED") << by_behaviour["noisy"].dump();
  EXPECT_EQ(by_behaviour["ok"]["state"], "TRIAL_SUCCEEDED");
  std::string log = ReadFile(workers_[0]->log_path());
  EXPECT_NE(log.find("ignored a malformed @moesweep line"), std::string::npos) << log;
  EXPECT_EQ(CliJson({"show", "1"})["sweep"]["state"], "SWEEP_SUCCEEDED");
  EXPECT_TRUE(workers_[0]->Running());
}

TEST_F(CommandTrainerEndToEnd, CancelDuringATrialEndsItsWholeProcessGroup) {
  StartCoordinator();
  int64_t id = Submit(SlowSpec());
  StartWorker("w1");
  std::vector<pid_t> pids;
  ASSERT_TRUE(WaitFor([&] { return (pids = SlowTrialPids(dir_ / "runs")).size() == 2; }, seconds(60), "the trainer"));
  ASSERT_TRUE(Alive(pids[0]) && Alive(pids[1]));
  CommandResult cancel = Cli({"cancel", std::to_string(id)});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_TRUE(AllGone(pids, seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return CliJson({"show", std::to_string(id)})["sweep"]["state"] == "SWEEP_CANCELLED"; },
                      seconds(30), "the sweep to be cancelled"));
  EXPECT_TRUE(workers_[0]->Running());
}

TEST_F(CommandTrainerEndToEnd, WorkerSigtermReleasesTheTrialAndLeavesNoOrphan) {
  StartCoordinator();
  int64_t id = Submit(SlowSpec());
  Process* worker = StartWorker("w1", {"--kill-grace", "5"});
  std::vector<pid_t> pids;
  ASSERT_TRUE(WaitFor([&] { return (pids = SlowTrialPids(dir_ / "runs")).size() == 2; }, seconds(60), "the trainer"));
  worker->Signal(SIGTERM);
  std::optional<int> code = worker->Wait(seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_TRUE(AllGone(pids, seconds(5)));
  std::vector<Json> trials = Trials(id);
  ASSERT_EQ(trials.size(), 1u);
  EXPECT_EQ(trials[0]["state"], "TRIAL_PENDING") << trials[0].dump();  // Handed back, not failed.
  EXPECT_NE(ReadFile(worker->log_path()).find("releasing trial"), std::string::npos);
  Cli({"cancel", std::to_string(id)});
}

TEST_F(CommandTrainerEndToEnd, AWorkerWithoutLibTorchIsNeverLeasedABuiltinTrial) {
  StartCoordinator();
  Json builtin = Json::parse(R"({"name": "builtin", "objective": {"metric": "val_accuracy"}, "seeds": [1],
    "base": {"dataset": "synthetic", "train_size": 512, "val_size": 128, "input_dim": 8, "num_classes": 3, "d_model": 16,
             "expert_hidden_dim": 16, "num_experts": 2, "epochs": 1, "batch_size": 64},
    "stages": [{"name": "t", "grid": {"temperature": [0.5, 1.0]}}]})");
  int64_t builtin_id = Submit(builtin);  // Older: served first when a worker can run it.
  Json command = CommandSpec();
  command.erase("baseline");
  command["seeds"] = {1};
  int64_t command_id = Submit(command);
  StartWorker("agent-only", {}, MOESWEEP_AGENT_WORKER_BIN);
  CommandResult watched = Cli({"watch", std::to_string(command_id)}, seconds(120));
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  for (const Json& t : Trials(builtin_id)) EXPECT_EQ(t["state"], "TRIAL_PENDING") << t.dump();
  EXPECT_NE(ReadFile(workers_[0]->log_path()).find("trainers command,"), std::string::npos);
  CommandResult run = e2e::Run({MOESWEEP_AGENT_WORKER_BIN, "run", "x.json"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("this build has no LibTorch"), std::string::npos) << run.err;
  // A worker with the built-in trainer takes the built-in sweep.
  StartWorker("full");
  CommandResult rest = Cli({"watch", std::to_string(builtin_id)}, seconds(120));
  ASSERT_EQ(rest.exit_code, 0) << rest.out << rest.err;
  for (const Json& t : Trials(builtin_id)) EXPECT_NE(t["worker"].get<std::string>().find("full"), std::string::npos);
}

TEST_F(CommandTrainerEndToEnd, GpusAreHandedOutThroughCudaVisibleDevices) {
  StartCoordinator();
  Json spec = CommandSpec();
  spec.erase("baseline");
  spec["seeds"] = {1, 2, 3};
  spec["base"]["behaviour"] = "gpus";
  spec["trainer"]["gpus"] = 1;
  spec["stages"] = Json::parse(R"([{"name": "w", "grid": {"width": [16, 64]}}])");
  int64_t id = Submit(spec);
  Json greedy = spec;
  greedy["trainer"]["gpus"] = 3;  // More than the worker has: never leased to it.
  int64_t greedy_id = Submit(greedy);
  StartWorker("gpu-box", {"--gpus", "3,5", "--slots", "2"});
  CommandResult watched = Cli({"watch", std::to_string(id)}, seconds(120));
  ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  std::vector<Json> trials = Trials(id);
  ASSERT_EQ(trials.size(), 6u);
  for (const Json& a : trials) {
    ASSERT_EQ(a["state"], "TRIAL_SUCCEEDED") << a.dump();
    double gpu = a["metrics"]["gpu"].get<double>();
    EXPECT_TRUE(gpu == 3 || gpu == 5) << a.dump();
    EXPECT_EQ(a["metrics"]["gpu_count"], 1);
    for (const Json& b : trials) {  // Trials that ran at the same time had different GPUs.
      if (a["trial_id"] == b["trial_id"]) continue;
      bool overlap = a["metrics"]["start"].get<double>() < b["metrics"]["end"].get<double>() &&
                     b["metrics"]["start"].get<double>() < a["metrics"]["end"].get<double>();
      if (overlap) EXPECT_NE(gpu, b["metrics"]["gpu"].get<double>()) << a.dump() << b.dump();
    }
  }
  for (const Json& t : Trials(greedy_id)) EXPECT_EQ(t["state"], "TRIAL_PENDING") << t.dump();
}

TEST_F(CommandTrainerEndToEnd, SubmissionRefusesUnresolvedPlaceholdersAndUnusedKeys) {
  StartCoordinator();
  Json spec = CommandSpec();
  spec["stages"][1]["grid"]["tmep"] = {0.1};
  spec["trainer"]["command"].push_back("--lr={lr}");
  CommandResult r = Cli({"submit", WriteSpec(spec)});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("stages[1].grid.tmep: not used by trainer.command (did you mean {temp}?)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("trainer.command: placeholder {lr} has no value in stage 1 \"width\""), std::string::npos)
      << r.err;
  EXPECT_TRUE(CliJson({"sweeps"})["sweeps"].empty());
  // validate shows what the first trial will run.
  CommandResult v = e2e::Run({MOESWEEP_CLI_BIN, "validate", WriteSpec(CommandSpec(), "good.json")});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_NE(v.out.find("first trial runs: /usr/bin/python3 " + kTrainer + " s1-p0-seed1 width=16 temp=1.5 behaviour=ok epochs=3"),
            std::string::npos)
      << v.out;
}

// The shipped example trainers (real PyTorch for pytorch_moe) as a worker runs them: each sweep file
// cut to its baseline and two points of its first stage, one seed.
TEST_F(CommandTrainerEndToEnd, ShippedExampleTrainersRunUnderAWorker) {
  StartCoordinator();
  StartWorker("w1");
  StartWorker("w2");
  const std::filesystem::path source = MOESWEEP_SOURCE_DIR;
  for (const char* file : {"sweeps/pytorch_moe.json", "examples/seed001_quick_test/sweep.json",
                           "examples/yacs_config/sweep.json"}) {
    SCOPED_TRACE(file);
    Json spec = Json::parse(ReadFile(source / file));
    spec["trainer"]["workdir"] = source.string();  // Its paths are relative to the repository root.
    spec["seeds"] = {spec["seeds"][0]};
    Json first = spec["stages"][0];
    Json grid = Json::object();
    for (auto axis = first["grid"].begin(); axis != first["grid"].end(); ++axis) {
      grid[axis.key()] = grid.empty() ? Json{(*axis)[0], (*axis)[1]} : Json{(*axis)[0]};
    }
    spec["stages"] = {{{"name", first["name"]}, {"grid", grid}}};
    CommandResult watched = Cli({"submit", WriteSpec(spec), "--watch"}, seconds(300));
    ASSERT_EQ(watched.exit_code, 0) << watched.out << watched.err;
    int64_t id = CliJson({"sweeps"})["sweeps"][0]["sweep_id"].get<int64_t>();
    std::vector<Json> trials = Trials(id);
    ASSERT_EQ(trials.size(), spec.contains("baseline") ? 3u : 2u);
    for (const Json& t : trials) {
      EXPECT_EQ(t["state"], "TRIAL_SUCCEEDED") << t.dump();
      double accuracy = t["metrics"].value("val_accuracy", 0.0);
      EXPECT_GT(accuracy, 0.3) << "no better than chance: " << t.dump();  // 10 or fewer classes.
    }
  }
}

}  // namespace
}  // namespace moesweep::e2e
