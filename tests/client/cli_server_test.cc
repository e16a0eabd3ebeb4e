// The CLI against a fake coordinator: what it sends, prints, and exits with.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>

#include "client/format.h"
#include "common/json.h"
#include "client/watch.h"
#include "fake_sweep_service.h"
#include "test_util.h"

namespace moesweep::client {
namespace {

using cli_testing::CliResult;
using cli_testing::Contains;
using cli_testing::FakeCoordinator;
using cli_testing::FakeSweepService;
using cli_testing::Lines;
using cli_testing::SweepHistory;

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/moesweep_cli_" + name;
  std::ofstream(path) << text;
  return path;
}

// A port on 127.0.0.1 that nothing listens on (bound, then released).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class CliServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_.events = SweepHistory(v1::SWEEP_SUCCEEDED);
    v1::GetSweepResponse& s = fake_.sweep;
    *s.mutable_sweep() = cli_testing::MakeSweep(v1::SWEEP_RUNNING);
    s.mutable_sweep()->set_current_stage(1);
    *s.add_stages() = fake_.events[8].stage();  // Baseline, decided.
    *s.add_stages() = fake_.events[9].stage();  // Stage 1 "core", decided.
  }

  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.end(), {"--coordinator", coordinator_.address()});
    return cli_testing::Cli(args);
  }

  // The whole history rendered without any interruption: what a reconnecting watch must match.
  std::string UninterruptedOutput() {
    WatchView view(false);
    std::string text;
    for (const auto& e : fake_.events) {
      for (const auto& line : view.Render(e)) text += line + "\n";
    }
    return text;
  }

  FakeSweepService fake_;
  FakeCoordinator coordinator_{&fake_};
};

TEST_F(CliServerTest, SubmitSendsTheSpecAndPrintsTheSweepId) {
  fake_.submit_response.set_sweep_id(7);
  fake_.submit_response.set_trials_in_first_stage(15);
  std::string spec = R"({"name": "moe-core"})";
  auto r = Cli({"submit", WriteTemp("submit.json", spec)});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out).at(0), "submitted sweep 7: 15 trials in the first stage");
  EXPECT_EQ(fake_.submitted_spec, spec);

  auto json = Cli({"submit", WriteTemp("submit.json", spec), "--json"});
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(Json::parse(json.out)["sweep_id"], 7);
}

TEST_F(CliServerTest, SubmitPrintsTheDashboardUrlWhenMoesweepDashboardIsSet) {
  fake_.submit_response.set_sweep_id(7);
  std::string path = WriteTemp("submit.json", R"({"name": "moe-core"})");
  auto r = cli_testing::CliWith({"submit", path, "--coordinator", coordinator_.address()},
                                [](CliEnv& env) { env.dashboard_env = "http://127.0.0.1:8080/"; });
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Lines(r.out).back(), "dashboard: http://127.0.0.1:8080/sweeps/7");
  // Unset: no such line.
  EXPECT_EQ(Cli({"submit", path}).out.find("dashboard:"), std::string::npos);
}

TEST_F(CliServerTest, SubmitRejectedSpecPrintsEachServerLineAndExits2) {
  fake_.submit_status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                     "objective.metric: unknown metric \"val_acc\" (did you mean \"val_accuracy\"?)\n"
                                     "stages[0].grid.top_k[0]: 0 is out of range (must be in [1, 1024])");
  std::string path = WriteTemp("rejected.json", "{}");
  auto r = Cli({"submit", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(Lines(r.err),
            (std::vector<std::string>{
                "moesweep: " + path + ": objective.metric: unknown metric \"val_acc\" (did you mean \"val_accuracy\"?)",
                "moesweep: " + path + ": stages[0].grid.top_k[0]: 0 is out of range (must be in [1, 1024])"}));
}

TEST_F(CliServerTest, SubmitWatchFollowsTheNewSweep) {
  fake_.submit_response.set_sweep_id(7);
  auto r = Cli({"submit", WriteTemp("submit_watch.json", "{}"), "--watch"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "submitted sweep 7: 0 trials in the first stage\n" + UninterruptedOutput());
  EXPECT_EQ(fake_.AfterSeqs(), std::vector<int64_t>{0});
}

TEST_F(CliServerTest, WatchShowsTheWholeHistoryAndExits0OnSuccess) {
  auto r = Cli({"watch", "7"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, UninterruptedOutput());
  EXPECT_TRUE(Contains(r.out, "sweep 7 succeeded")) << r.out;
  EXPECT_EQ(fake_.AfterSeqs(), std::vector<int64_t>{0});  // A late watch replays from the start.
}

TEST_F(CliServerTest, WatchExits1WithTheErrorWhenTheSweepFails) {
  fake_.events = SweepHistory(v1::SWEEP_FAILED);
  auto r = Cli({"watch", "7"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "moesweep: sweep 7 failed: stage 1 \"core\": no grid point had a usable result"))
      << r.err;
}

TEST_F(CliServerTest, WatchExits1WhenTheSweepWasCancelled) {
  fake_.events = SweepHistory(v1::SWEEP_CANCELLED);
  auto r = Cli({"watch", "7"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Contains(r.err, "moesweep: sweep 7 was cancelled")) << r.err;
}

TEST_F(CliServerTest, WatchReconnectsAfterUnavailableAndResumesAfterTheLastSeq) {
  fake_.drop_after = {4, 4, 9};  // Two breaks at seq 4 (the second sends nothing new), one at 9.
  auto r = Cli({"watch", "7"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fake_.AfterSeqs(), (std::vector<int64_t>{0, 4, 4, 9}));
  EXPECT_EQ(r.out, UninterruptedOutput());  // Nothing shown twice, nothing missing.
  EXPECT_TRUE(Contains(r.err, "reconnecting")) << r.err;
  EXPECT_TRUE(Contains(r.err, "resuming after event 9")) << r.err;
}

TEST_F(CliServerTest, WatchGivesUpWhenTheStreamStaysBroken) {
  fake_.drop_after.assign(100000, 3);  // Every stream after the first breaks before any event.
  auto r = cli_testing::CliWith({"watch", "7", "--coordinator", coordinator_.address()},
                                [](CliEnv& env) { env.watch.give_up_after = std::chrono::milliseconds(300); });
  EXPECT_EQ(r.code, 3);
  EXPECT_TRUE(Contains(r.err, "moesweep: gave up watching sweep 7: coordinator at " + coordinator_.address() +
                                  " is unavailable: coordinator restarting"))
      << r.err;
  EXPECT_EQ(Lines(r.err).size(), 2u) << "the outage is reported once, then the give-up: " << r.err;
  EXPECT_EQ(Lines(r.out).size(), 3u);
}

TEST_F(CliServerTest, WatchDropsEventsItHasAlreadyShown) {
  fake_.drop_after = {6};
  fake_.resend_overlap = 3;  // The reconnected stream repeats seq 4..6.
  auto r = Cli({"watch", "7"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, UninterruptedOutput());
}

TEST_F(CliServerTest, WatchSurvivesACoordinatorRestartOnTheSamePort) {
  FakeSweepService first;
  first.events.assign(fake_.events.begin(), fake_.events.begin() + 5);
  first.hold_open = true;
  auto server = std::make_unique<FakeCoordinator>(&first);
  int port = server->port();
  auto watch = std::async(std::launch::async, [&] {
    return cli_testing::Cli({"watch", "7", "--coordinator", server->address()});
  });
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (first.events_written < 5 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(first.events_written, 5);
  server->Stop();  // The coordinator goes down mid-stream...
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  FakeCoordinator restarted(&fake_, port);  // ...and comes back on the same address.
  ASSERT_EQ(restarted.port(), port);
  CliResult r = watch.get();
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, UninterruptedOutput());
  ASSERT_FALSE(fake_.AfterSeqs().empty());
  EXPECT_EQ(fake_.AfterSeqs().front(), 5);
  EXPECT_TRUE(Contains(r.err, "resuming after event 5")) << r.err;
  EXPECT_TRUE(Contains(r.err, "reconnected to " + restarted.address())) << r.err;
}

TEST_F(CliServerTest, WatchJsonPrintsEveryEventAsOneLine) {
  auto r = Cli({"watch", "7", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), fake_.events.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    Json event = Json::parse(lines[i]);
    EXPECT_EQ(event["seq"], static_cast<int64_t>(i + 1));
  }
  EXPECT_EQ(Json::parse(lines[4])["type"], "TRIAL_PROGRESS");  // --json hides nothing.
  EXPECT_EQ(Json::parse(lines[9])["stage"]["winner_config_json"]["top_k"], 2);
}

TEST_F(CliServerTest, CtrlCStopsWatchingButNotTheSweep) {
  fake_.events.resize(6);  // Still running: no SWEEP_FINISHED.
  fake_.hold_open = true;
  InterruptFlag interrupt;
  auto watch = std::async(std::launch::async, [&] {
    return cli_testing::CliWith({"watch", "7", "--coordinator", coordinator_.address()},
                            [&](CliEnv& env) { env.watch.interrupt = &interrupt; });
  });
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((fake_.events_written < 6 || !interrupt.armed) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  interrupt.requested = true;  // What main's SIGINT handler does.
  CliResult r = watch.get();
  EXPECT_EQ(r.code, 130);
  EXPECT_TRUE(Contains(r.err, "stopped watching sweep 7 (the sweep goes on)")) << r.err;
  EXPECT_EQ(fake_.cancel_calls, 0);
  EXPECT_FALSE(interrupt.armed);  // A later Ctrl-C ends the process as usual.
  EXPECT_EQ(Lines(r.out).size(), 5u);  // The progress event is hidden.
}

TEST(CliUnreachableTest, ExitCode3NamesTheAddress) {
  std::string address = "127.0.0.1:" + std::to_string(FreePort());
  for (std::vector<std::string> args : {std::vector<std::string>{"show", "7"}, {"watch", "7"}, {"sweeps"}}) {
    args.insert(args.end(), {"--coordinator", address, "--timeout", "2"});
    auto r = cli_testing::Cli(args);
    EXPECT_EQ(r.code, 3) << args[0];
    EXPECT_EQ(r.err, "moesweep: cannot reach coordinator at " + address + " (connection refused)\n") << args[0];
  }
}

TEST(CliUnreachableTest, AddressComesFromTheEnvironmentUnlessGiven) {
  std::string from_env = "127.0.0.1:" + std::to_string(FreePort());
  auto r = cli_testing::CliWith({"show", "7"}, [&](CliEnv& env) { env.coordinator_env = from_env; });
  EXPECT_EQ(r.code, 3);
  EXPECT_TRUE(Contains(r.err, from_env)) << r.err;

  std::string flag = "127.0.0.1:" + std::to_string(FreePort());
  r = cli_testing::CliWith({"show", "7", "--coordinator", flag}, [&](CliEnv& env) { env.coordinator_env = from_env; });
  EXPECT_TRUE(Contains(r.err, flag)) << r.err;

  r = cli_testing::Cli({"show", "7", "--timeout", "0.5"});
  EXPECT_TRUE(Contains(r.err, "127.0.0.1:50051")) << r.err;  // The default.
}

TEST_F(CliServerTest, SlowCoordinatorHitsTheDeadline) {
  fake_.unary_delay = std::chrono::milliseconds(1500);
  auto start = std::chrono::steady_clock::now();
  auto r = Cli({"show", "7", "--timeout", "0.2"});
  EXPECT_EQ(r.code, 3);
  EXPECT_TRUE(Contains(r.err, "coordinator at " + coordinator_.address() + " did not answer within 0.2 s")) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1200));
}

TEST_F(CliServerTest, UnknownSweepExits4) {
  for (const char* command : {"show", "watch", "best", "trials", "cancel"}) {
    auto r = Cli({command, "99"});
    EXPECT_EQ(r.code, 4) << command;
    EXPECT_EQ(r.err, "moesweep: no sweep with id 99\n") << command;
  }
}

TEST_F(CliServerTest, ShowPrintsStagesWithWinners) {
  auto r = Cli({"show", "7"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "sweep 7 \"moe-core\": running, stage 1 of 1")) << r.out;
  EXPECT_TRUE(Contains(r.out, "objective: val_accuracy (maximize)")) << r.out;
  auto lines = Lines(r.out);
  auto row = std::find_if(lines.begin(), lines.end(), [](const std::string& l) { return l.rfind("1 ", 0) == 0; });
  ASSERT_NE(row, lines.end()) << r.out;
  for (const char* part : {"core", "decided", "2/2", "temperature=0.5", "0.85 ± 0.01 (n=3)", "+0.05"}) {
    EXPECT_TRUE(Contains(*row, part)) << part << " in " << *row;
  }
}

TEST_F(CliServerTest, ShowJsonKeepsProtoNamesWithNumbersAndEmbeddedJson) {
  auto r = Cli({"show", "7", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["sweep"]["sweep_id"], 7);  // A number, not protobuf's "7".
  EXPECT_EQ(j["sweep"]["state"], "SWEEP_RUNNING");
  EXPECT_EQ(j["stages"][1]["winner_config_json"]["temperature"], 0.5);
  EXPECT_EQ(j["stages"][1]["winner"]["n"], 3);
}

TEST_F(CliServerTest, TrialsPassesFiltersAndShowsTheObjective) {
  *fake_.trials.add_trials() = fake_.events[5].trial();
  auto r = Cli({"trials", "7", "--stage", "0", "--state", "succeeded"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fake_.trials_request.has_stage());
  EXPECT_EQ(fake_.trials_request.stage(), 0);
  EXPECT_EQ(fake_.trials_request.state(), v1::TRIAL_SUCCEEDED);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_TRUE(Contains(lines[0], "val_accuracy")) << lines[0];
  for (const char* part : {"succeeded", "0.8", "load_cv=0.12 act=0.91", "use_moe=false"}) {
    EXPECT_TRUE(Contains(lines[1], part)) << part << " in " << lines[1];
  }

  auto all = Cli({"trials", "7", "--json"});
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_FALSE(fake_.trials_request.has_stage());
  EXPECT_EQ(fake_.trials_request.state(), v1::TRIAL_STATE_UNSPECIFIED);
  EXPECT_EQ(Json::parse(all.out)["trials"][0]["metrics"]["val_accuracy"], 0.8);
}

TEST_F(CliServerTest, BestPrintsEachStageAndTheBestConfig) {
  *fake_.best.mutable_stages() = fake_.sweep.stages();
  fake_.best.set_best_config_json(R"({"temperature": 0.5, "top_k": 2})");
  auto r = Cli({"best", "7", "--stage", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fake_.best_request.has_stage());
  EXPECT_EQ(fake_.best_request.stage(), 1);
  for (const char* part : {"baseline", "use_moe=false", "0.8 ± 0.02 (n=2)", "core", "temperature=0.5",
                           "0.85 ± 0.01 (n=3)", "+0.05", "best config:\n{\n  \"temperature\": 0.5,\n  \"top_k\": 2\n}"}) {
    EXPECT_TRUE(Contains(r.out, part)) << part << " in\n" << r.out;
  }
}

TEST_F(CliServerTest, CancelReportsWhatStopped) {
  fake_.cancel.set_state(v1::SWEEP_CANCELLING);
  fake_.cancel.set_trials_cancelled(3);
  fake_.cancel.set_trials_stopping(2);
  auto r = Cli({"cancel", "7"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "sweep 7 is cancelling: 3 pending trials cancelled, 2 running trials asked to stop\n");

  fake_.cancel.Clear();
  fake_.cancel.set_state(v1::SWEEP_SUCCEEDED);
  r = Cli({"cancel", "7"});
  EXPECT_EQ(r.out, "sweep 7 is succeeded; nothing to cancel\n");
}

TEST_F(CliServerTest, SweepsPassesTheLimit) {
  *fake_.sweeps.add_sweeps() = fake_.sweep.sweep();
  auto r = Cli({"sweeps", "--limit", "5"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fake_.sweeps_limit, 5);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind("ID", 0), 0u);
  EXPECT_TRUE(Contains(lines[1], "moe-core")) << lines[1];
}

TEST_F(CliServerTest, ExportWritesRecordsWithStageNames) {
  *fake_.trials.add_trials() = fake_.events[5].trial();
  *fake_.trials.add_trials() = fake_.events[7].trial();
  std::string json_path = ::testing::TempDir() + "/moesweep_cli_export.json";
  auto r = Cli({"export", "7", "--output", json_path});  // The extension picks the format.
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "exported 2 trials of sweep 7 to " + json_path + "\n");
  std::ifstream file(json_path);
  Json records = Json::parse(file);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["experiment_name"], "moe-core / baseline / use_moe=false / seed 42");
  EXPECT_EQ(records[1]["stage_name"], "core");
  EXPECT_EQ(records[1]["status"], "failed");

  auto csv = Cli({"export", "7", "--format", "csv", "--stage", "1"});
  ASSERT_EQ(csv.code, 0) << csv.err;
  EXPECT_EQ(fake_.trials_request.stage(), 1);
  EXPECT_EQ(Lines(csv.out).at(0).rfind("experiment_id,sweep_id,trial_id,stage,stage_name", 0), 0u);

  auto unwritable = Cli({"export", "7", "--format", "csv", "--output", "/nonexistent/dir/out.csv"});
  EXPECT_EQ(unwritable.code, 5);
  EXPECT_TRUE(Contains(unwritable.err, "moesweep: cannot write /nonexistent/dir/out.csv")) << unwritable.err;
}

TEST_F(CliServerTest, TrialsAndExportFollowEveryPage) {
  for (int i = 1; i <= 5; ++i) {
    v1::Trial* t = fake_.trials.add_trials();
    t->set_trial_id(i);
    t->set_sweep_id(FakeSweepService::kSweepId);
    t->set_state(v1::TRIAL_SUCCEEDED);
  }
  fake_.trials_page = 2;
  auto r = Cli({"trials", "7", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["trials"].size(), 5u);
  r = Cli({"export", "7", "--format", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 5u);
}

TEST_F(CliServerTest, SubmitRefusesInvalidUtf8BeforeSending) {
  std::string path = ::testing::TempDir() + "/moesweep_bad_utf8.json";
  std::ofstream(path) << "{\"name\": \"caf\xe9\"}";
  auto r = Cli({"submit", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "moesweep: " + path + ": invalid UTF-8 at byte offset 13\n");
  EXPECT_TRUE(fake_.submitted_spec.empty());
}

TEST_F(CliServerTest, HugeTimeoutIsAFlagError) {
  auto r = Cli({"sweeps", "--timeout", "1e308"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--timeout must be a positive number of seconds, got '1e308' (at most 86400, a day)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(Cli({"sweeps", "--timeout", "86400"}).code, 0);
}

}  // namespace
}  // namespace moesweep::client
