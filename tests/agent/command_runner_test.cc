// CommandRunner against real programs (small sh scripts): what a user's trainer can do, and what
// the worker must make of it.
#include "worker/agent/command_runner.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/json.h"

namespace moesweep::worker {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string ReadFile(const fs::path& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Whether `pid` still runs (a zombie waiting for init to reap it does not), after giving a
// SIGKILL sent a moment ago up to a second to land.
bool ProcessAlive(pid_t pid) {
  for (int i = 0; i < 100; ++i) {
    std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    size_t paren = stat.rfind(')');
    if (stat.empty() || paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] == 'Z') return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

class CommandRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moesweep-runner-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    options_.log_dir = (dir_ / "logs").string();
    options_.runs_dir = (dir_ / "runs").string();
    options_.kill_grace_seconds = 1;
    options_.warn = [this](const std::string& w) { warnings_.push_back(w); };
    hooks_.keep_going = [this] {
      ++keep_going_calls_;
      return !stop_;
    };
    hooks_.on_progress = [this](int64_t step, const Metrics& m, const std::vector<ExpertLayerSummary>& stats) {
      steps_.push_back(step);
      progress_.push_back(m);
      if (stop_after_reports_ > 0 && static_cast<int>(steps_.size()) >= stop_after_reports_) stop_ = true;
      return true;
    };
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A trial whose command runs `script` with sh.
  LeasedTrial Trial(const std::string& script, Json trainer_extra = Json::object()) {
    const fs::path path = dir_ / "trainer.sh";
    std::ofstream(path) << script;
    Json trainer = {{"kind", "command"}, {"command", {"/bin/sh", path.string(), "{trial_name}", "W={width}"}}};
    for (auto it = trainer_extra.begin(); it != trainer_extra.end(); ++it) trainer[it.key()] = it.value();
    LeasedTrial t;
    t.trial_id = 7;
    t.attempt = 2;
    t.trial_name = "s1-p0-seed5";
    t.config_json = R"({"width": 64, "seed": 5})";
    t.trainer_json = trainer.dump();
    t.objective_metric = "acc";
    return t;
  }

  Status Run(const LeasedTrial& trial) {
    CommandRunner runner(options_);
    return runner.Run(trial, hooks_, &outcome_);
  }

  double Final(const std::string& name) {
    double v = NAN;
    FindMetric(outcome_.metrics, name, &v);
    return v;
  }

  fs::path dir_;
  CommandRunnerOptions options_;
  RunnerHooks hooks_;
  RunOutcome outcome_;
  std::vector<std::string> warnings_;
  std::vector<int64_t> steps_;
  std::vector<Metrics> progress_;
  std::atomic<bool> stop_{false};
  int stop_after_reports_ = 0;
  int keep_going_calls_ = 0;
};

TEST_F(CommandRunnerTest, ReportsEveryLineAndSucceedsWithTheFinalReport) {
  Status s = Run(Trial(R"(
echo "starting $1 $2"
echo '@moesweep {"step": 1, "metrics": {"acc": 0.5, "loss": 2}}'
echo "warning: something" >&2
echo '@moesweep {"metrics": {"acc": 0.6}, "expert_stats": [{"usage": [0.75, 0.25]}]}'
echo '@moesweep {"metrics": {"acc": 0.55, "best": 0.6}, "final": true}'
)"));
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_FALSE(outcome_.stopped);
  EXPECT_EQ(steps_, (std::vector<int64_t>{1, 2, 3}));  // A report without a step counts reports.
  ASSERT_EQ(outcome_.metrics.size(), 2u);  // Exactly the final report's metrics.
  EXPECT_DOUBLE_EQ(Final("acc"), 0.55);
  EXPECT_DOUBLE_EQ(Final("best"), 0.6);
  ASSERT_EQ(outcome_.expert_stats.size(), 1u);
  EXPECT_NEAR(outcome_.expert_stats[0].load_cv, 0.5, 1e-12);
  // One log per attempt, with stdout and stderr and the command line.
  std::string log = ReadFile(dir_ / "logs" / "trial-7-attempt-2.log");
  EXPECT_NE(log.find("starting s1-p0-seed5 W=64"), std::string::npos) << log;
  EXPECT_NE(log.find("warning: something"), std::string::npos) << log;
  EXPECT_NE(log.find("# moesweep: exit status 0"), std::string::npos) << log;
}

TEST_F(CommandRunnerTest, WithoutAFinalReportTheLastValueOfEveryMetricIsFinal) {
  ASSERT_TRUE(Run(Trial(R"(
echo '@moesweep {"step": 1, "metrics": {"acc": 0.5, "loss": 2}}'
echo '@moesweep {"step": 2, "metrics": {"acc": 0.7}}'
)")).ok());
  EXPECT_DOUBLE_EQ(Final("acc"), 0.7);
  EXPECT_DOUBLE_EQ(Final("loss"), 2);
}

TEST_F(CommandRunnerTest, ConfigFileEnvironmentAndOutputFolderAreTheTrials) {
  options_.kill_grace_seconds = 1;
  LeasedTrial trial = Trial(R"sh(
cat "$MOESWEEP_CONFIG_FILE" > "$MOESWEEP_OUTPUT_DIR/seen.json"
echo "$MOESWEEP_TRIAL_ID $MOESWEEP_SEED $MOESWEEP_TRIAL_NAME $FROM_SPEC gpus=[$CUDA_VISIBLE_DEVICES] cwd=$(pwd)" > "$MOESWEEP_OUTPUT_DIR/env.txt"
echo '@moesweep {"metrics": {"acc": 1}}'
)sh",
                            {{"env", {{"FROM_SPEC", "yes"}}}, {"workdir", dir_.string()}});
  trial.gpus = {2, 3};
  trial.gpus_managed = true;
  ASSERT_TRUE(Run(trial).ok());
  const fs::path out = dir_ / "runs" / "s1-p0-seed5-t7-a2";
  Json seen = Json::parse(ReadFile(out / "seen.json"));
  EXPECT_EQ(seen["width"], 64);
  EXPECT_EQ(seen["seed"], 5);
  EXPECT_EQ(ReadFile(out / "env.txt"), "7 5 s1-p0-seed5 yes gpus=[2,3] cwd=" + dir_.string() + "\n");
}

TEST_F(CommandRunnerTest, ACrashFailsWithTheExitStatusAndTheEndOfStderr) {
  Status s = Run(Trial(R"sh(
echo '@moesweep {"step": 1, "metrics": {"acc": 0.5}}'
for i in $(seq 1 30); do echo "noise $i" >&2; done
echo "RuntimeError: CUDA out of memory" >&2
exit 3
)sh"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().rfind("exit status 3: ", 0), 0u) << s.message();
  EXPECT_NE(s.message().find("RuntimeError: CUDA out of memory"), std::string::npos);
  EXPECT_EQ(s.message().find("noise 5\n"), std::string::npos);  // Only the last lines.
  EXPECT_DOUBLE_EQ(Final("acc"), 0.5);  // What it measured is kept.
}

TEST_F(CommandRunnerTest, DeathBySignalIsNamed) {
  Status s = Run(Trial("kill -SEGV $$\n"));
  EXPECT_NE(s.message().find("killed by signal 11 (SIGSEGV)"), std::string::npos) << s.message();
}

// `scancel` signals every process of a Slurm job: the trainer may die of the SIGTERM a moment
// before the worker takes its own. That is a stop, and the trial is handed back.
TEST_F(CommandRunnerTest, ASigtermThatAlsoStopsTheWorkerIsAStopNotAFailure) {
  std::thread worker_signal([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    stop_ = true;
  });
  Status s = Run(Trial("echo '@moesweep {\"metrics\": {\"acc\": 0.5}}'\nsleep 0.2\nkill -TERM $$\n"));
  worker_signal.join();
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(outcome_.stopped);
  EXPECT_DOUBLE_EQ(Final("acc"), 0.5);
}

TEST_F(CommandRunnerTest, ASigtermFromElsewhereFailsTheTrialASecondLater) {
  const auto start = Clock::now();
  Status s = Run(Trial("exit 143\n"));  // What the Python library exits with on SIGTERM.
  EXPECT_NE(s.message().find("exit status 143"), std::string::npos) << s.message();
  EXPECT_GE(std::chrono::duration<double>(Clock::now() - start).count(), 0.9);
}

TEST_F(CommandRunnerTest, ExitZeroWithoutAReportFails) {
  Status s = Run(Trial("echo 'training done, accuracy 0.9'\n"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("exited with status 0 without a single report"), std::string::npos) << s.message();
}

TEST_F(CommandRunnerTest, NonFiniteObjectiveFails) {
  Status s = Run(Trial(R"(echo '@moesweep {"metrics": {"acc": NaN, "loss": Infinity}}')"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("the objective acc is nan"), std::string::npos) << s.message();
}

TEST_F(CommandRunnerTest, MalformedAndHugeLinesAreLoggedAndIgnored) {
  Status s = Run(Trial(R"(
echo '@moesweep {"metrics": {"acc": 0.1}'
echo '@moesweep not json'
echo '@moesweep {"metrics": {"acc": "high"}}'
head -c 2000000 /dev/zero | tr '\0' 'x' | sed 's/^/@moesweep /'
echo
echo '@moesweep {"metrics": {"acc": 1e308, "big": 1.7e308}}'
echo '@moesweep {"metrics": {"acc": 0.9}}'
)"));
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(steps_.size(), 2u);
  EXPECT_DOUBLE_EQ(Final("acc"), 0.9);
  EXPECT_DOUBLE_EQ(Final("big"), 1.7e308);
  ASSERT_EQ(warnings_.size(), 4u);
  EXPECT_NE(warnings_[0].find("ignored a malformed @moesweep line: invalid JSON"), std::string::npos) << warnings_[0];
  EXPECT_NE(warnings_[2].find("metrics.acc: expected a number, got string"), std::string::npos) << warnings_[2];
  EXPECT_NE(warnings_[3].find("line over"), std::string::npos) << warnings_[3];
  EXPECT_NE(ReadFile(dir_ / "logs" / "trial-7-attempt-2.log").find("# moesweep: trial 7: ignored"), std::string::npos);
}

// The trainer's whole process group: a child it started is gone when the trial is.
TEST_F(CommandRunnerTest, StopEndsTheWholeProcessGroup) {
  stop_after_reports_ = 1;
  const fs::path pid_file = dir_ / "child.pid";
  Status s = Run(Trial("sleep 300 &\necho $! > " + pid_file.string() +
                       "\necho '@moesweep {\"metrics\": {\"acc\": 0.3}}'\nwait\n"));
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(outcome_.stopped);
  EXPECT_DOUBLE_EQ(Final("acc"), 0.3);
  pid_t child = std::stoi(ReadFile(pid_file));
  EXPECT_FALSE(ProcessAlive(child)) << "pid " << child << " outlived its trial";
}

TEST_F(CommandRunnerTest, ATrainerThatIgnoresSigtermIsKilledAfterTheGrace) {
  stop_after_reports_ = 1;
  const auto start = Clock::now();
  Status s = Run(Trial("trap '' TERM\necho '@moesweep {\"metrics\": {\"acc\": 0.3}}'\nwhile :; do sleep 0.1; done\n"));
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(outcome_.stopped);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GE(seconds, 0.9);  // The grace (1 s) was given...
  EXPECT_LT(seconds, 10);   // ...and then SIGKILL.
}

TEST_F(CommandRunnerTest, TimeoutFailsAndKillsTheGroup) {
  const fs::path pid_file = dir_ / "child.pid";
  Status s = Run(Trial("sleep 300 &\necho $! > " + pid_file.string() + "\nwait\n", {{"timeout_seconds", 0.5}}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("timed out after 0.5 s"), std::string::npos) << s.message();
  EXPECT_FALSE(ProcessAlive(std::stoi(ReadFile(pid_file))));
}

TEST_F(CommandRunnerTest, LeftoverChildrenAreKilledWhenTheTrainerExits) {
  const fs::path pid_file = dir_ / "child.pid";
  // The child keeps stdout open; the runner must not wait for it forever.
  Status s = Run(Trial("sleep 300 &\necho $! > " + pid_file.string() + "\necho '@moesweep {\"metrics\": {\"acc\": 1}}'\n"));
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_FALSE(ProcessAlive(std::stoi(ReadFile(pid_file))));
}

TEST_F(CommandRunnerTest, SilentTrainersAreAskedToKeepGoingOften) {
  ASSERT_TRUE(Run(Trial("sleep 1\necho '@moesweep {\"metrics\": {\"acc\": 1}}'\n")).ok());
  EXPECT_GE(keep_going_calls_, 5);  // Heartbeats go out from these calls during the silent second.
}

TEST_F(CommandRunnerTest, AProgramThatCannotStartFailsClearly) {
  LeasedTrial trial = Trial("");
  trial.trainer_json = R"({"kind": "command", "command": ["no-such-trainer-program", "{width}"]})";
  Status s = Run(trial);
  EXPECT_NE(s.message().find("cannot run \"no-such-trainer-program\": No such file or directory"), std::string::npos)
      << s.message();
  trial = Trial("", {{"workdir", "/no/such/folder"}});
  s = Run(trial);
  EXPECT_NE(s.message().find("cannot enter workdir \"/no/such/folder\""), std::string::npos) << s.message();
}

}  // namespace
}  // namespace moesweep::worker
