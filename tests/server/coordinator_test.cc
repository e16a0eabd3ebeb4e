#include "server/coordinator.h"

#include <cmath>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/json.h"
#include "tests/server/coordinator_test_util.h"

namespace moesweep {
namespace {

constexpr const char* kSpec = R"({
  "name": "two-stage",
  "objective": {"metric": "val_accuracy", "goal": "maximize"},
  "seeds": [1, 2],
  "base": {"epochs": 3, "temperature": 0.7},
  "stages": [
    {"name": "core", "grid": {"temperature": [0.5, 1.0, 1.5]}},
    {"name": "structure", "grid": {"expert_layers": [1, 2]}}
  ],
  "max_attempts": 2,
  "lease_seconds": 10
})";

// The objective a fake worker reports: temperature 1.0 and expert_layers 2 win.
double Score(const Json& config) {
  double t = config.value("temperature", 0.7);
  int layers = config.value("expert_layers", 2);
  return 0.5 - (t - 1.0) * (t - 1.0) + 0.01 * layers + 0.001 * config["seed"].get<int>();
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    Status s = Coordinator::Open(db_.path(), options_, &clock_, &coordinator_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void Restart() {
    coordinator_.reset();
    Open();
  }

  int64_t Submit(const std::string& spec = kSpec) {
    v1::SubmitSweepRequest req;
    req.set_spec_json(spec);
    v1::SubmitSweepResponse resp;
    Status s = CallSync(coordinator_.get(), &Coordinator::SubmitSweep, req, &resp);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return resp.sweep_id();
  }

  v1::AcquireTrialResponse Acquire(const std::string& worker = "w1", int free_gpus = 0) {
    v1::AcquireTrialRequest req;
    req.set_worker(worker);
    req.set_free_gpus(free_gpus);
    v1::AcquireTrialResponse resp;
    std::promise<Status> done;
    coordinator_->AcquireTrial(req, &resp, std::chrono::seconds(0), nullptr,
                               [&done](const Status& s) { done.set_value(s); });
    EXPECT_TRUE(done.get_future().get().ok());
    return resp;
  }

  Status Report(const std::string& token, int64_t step, double value, v1::ReportProgressResponse* resp = nullptr) {
    v1::ReportProgressRequest req;
    req.set_lease_token(token);
    req.set_step(step);
    (*req.mutable_metrics())["val_accuracy"] = value;
    v1::ReportProgressResponse local;
    return CallSync(coordinator_.get(), &Coordinator::ReportProgress, req, resp ? resp : &local);
  }

  Status Complete(const std::string& token, v1::CompleteTrialRequest::Outcome outcome,
                  std::map<std::string, double> metrics, const std::string& error = "",
                  v1::CompleteTrialResponse* resp = nullptr) {
    v1::CompleteTrialRequest req;
    req.set_lease_token(token);
    req.set_outcome(outcome);
    for (auto& [k, v] : metrics) (*req.mutable_metrics())[k] = v;
    req.set_error(error);
    v1::CompleteTrialResponse local;
    return CallSync(coordinator_.get(), &Coordinator::CompleteTrial, req, resp ? resp : &local);
  }

  // Plays a worker: takes trials until none is left and completes each with Score().
  int RunAll() {
    int n = 0;
    for (;;) {
      v1::AcquireTrialResponse a = Acquire();
      if (!a.has_trial()) return n;
      Json config = Json::parse(a.config_json());
      EXPECT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", Score(config)}}).ok());
      ++n;
    }
  }

  v1::GetSweepResponse GetSweep(int64_t id) {
    v1::GetSweepRequest req;
    req.set_sweep_id(id);
    v1::GetSweepResponse resp;
    EXPECT_TRUE(CallSync(coordinator_.get(), &Coordinator::GetSweep, req, &resp).ok());
    return resp;
  }

  std::vector<v1::Trial> Trials(int64_t id, std::optional<int> stage = std::nullopt) {
    v1::ListTrialsRequest req;
    req.set_sweep_id(id);
    if (stage) req.set_stage(*stage);
    v1::ListTrialsResponse resp;
    EXPECT_TRUE(CallSync(coordinator_.get(), &Coordinator::ListTrials, req, &resp).ok());
    return {resp.trials().begin(), resp.trials().end()};
  }

  std::vector<v1::SweepEvent> StoredEvents(int64_t id) {
    auto sink = std::make_shared<RecordingSink>(coordinator_.get(), id);
    coordinator_->Watch(id, 0, false, sink);
    auto finished = [&] {
      auto e = sink->events();
      return !e.empty() && e.back().type() == v1::SWEEP_FINISHED;
    };
    for (int i = 0; i < 200 && !sink->live() && !sink->closed() && !finished(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return sink->events();
  }

  TempDb db_{"coordinator_test"};
  FakeClock clock_;
  CoordinatorOptions options_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, StageTwoCarriesStageOneWinnerAndSweepSucceeds) {
  int64_t id = Submit();
  EXPECT_EQ(Trials(id).size(), 6u);  // Only stage 1 exists before it is decided.
  // Stage 2's expert_layers=2 point (2 is the default) is stage 1's winner again: its two trials
  // take the winner's results instead of running.
  EXPECT_EQ(RunAll(), 8);

  v1::GetSweepResponse sweep = GetSweep(id);
  EXPECT_EQ(sweep.sweep().state(), v1::SWEEP_SUCCEEDED);
  EXPECT_EQ(sweep.sweep().trials_total(), 10);
  ASSERT_EQ(sweep.stages_size(), 2);
  EXPECT_EQ(sweep.stages(0).state(), v1::STAGE_SUCCEEDED);
  EXPECT_EQ(sweep.stages(0).winner().point_json(), R"({"temperature":1.0})");
  for (const v1::Trial& t : Trials(id, 2)) {
    Json config = Json::parse(t.config_json());
    EXPECT_EQ(config["temperature"], 1.0) << t.config_json();
    EXPECT_EQ(config["epochs"], 3);
  }
  // The reported mean is the mean of the winner's stored trials.
  double sum = 0;
  int n = 0;
  for (const v1::Trial& t : Trials(id, 2)) {
    if (t.point_index() == sweep.stages(1).winner().point_index()) {
      sum += t.metrics().at("val_accuracy");
      ++n;
    }
  }
  EXPECT_EQ(n, 2);
  EXPECT_DOUBLE_EQ(sweep.stages(1).winner().mean(), sum / n);
  EXPECT_EQ(sweep.stages(1).winner().n(), 2);

  v1::GetBestConfigRequest best_req;
  best_req.set_sweep_id(id);
  v1::GetBestConfigResponse best;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::GetBestConfig, best_req, &best).ok());
  EXPECT_EQ(best.best_config_json(), R"({"epochs":3,"temperature":1.0,"expert_layers":2})");
  best_req.set_stage(1);
  best.Clear();
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::GetBestConfig, best_req, &best).ok());
  ASSERT_EQ(best.stages_size(), 1);
  EXPECT_EQ(best.stages(0).stage(), 1);
  best_req.set_stage(7);
  EXPECT_EQ(CallSync(coordinator_.get(), &Coordinator::GetBestConfig, best_req, &best).code(),
            Status::Code::kInvalidArgument);
}

TEST_F(CoordinatorTest, TrialsAreCreatedAndServedInGridThenSeedOrder) {
  int64_t id = Submit();
  std::vector<std::pair<int, int64_t>> order;
  for (int i = 0; i < 6; ++i) {
    v1::AcquireTrialResponse a = Acquire();
    ASSERT_TRUE(a.has_trial());
    Json config = Json::parse(a.config_json());
    order.emplace_back(static_cast<int>(config["temperature"].get<double>() * 10), config["seed"].get<int64_t>());
    EXPECT_EQ(a.sweep_id(), id);
    EXPECT_EQ(a.attempt(), 1);
    EXPECT_DOUBLE_EQ(a.lease_seconds(), 10);
  }
  EXPECT_EQ(order, (std::vector<std::pair<int, int64_t>>{{5, 1}, {5, 2}, {10, 1}, {10, 2}, {15, 1}, {15, 2}}));
  EXPECT_FALSE(Acquire().has_trial());
}

TEST_F(CoordinatorTest, OldestSweepIsServedFirst) {
  int64_t first = Submit();
  int64_t second = Submit();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(Acquire().sweep_id(), first);
  EXPECT_EQ(Acquire().sweep_id(), second);  // The first sweep's stage 1 is all leased.
}

TEST_F(CoordinatorTest, ExpiredLeaseRequeuesThenFailsAfterMaxAttempts) {
  int64_t id = Submit();
  v1::AcquireTrialResponse a = Acquire("dead-worker");
  clock_.Advance(10.5);
  coordinator_->Sync();
  v1::Trial t = Trials(id, 1)[0];
  EXPECT_EQ(t.state(), v1::TRIAL_PENDING);
  EXPECT_NE(t.error().find("lease of worker dead-worker expired"), std::string::npos) << t.error();

  // It goes to the back of the queue; its next lease has attempt 2.
  v1::AcquireTrialResponse again;
  for (int i = 0; i < 6 && (!again.has_trial() || again.trial_id() != a.trial_id()); ++i) again = Acquire();
  ASSERT_EQ(again.trial_id(), a.trial_id());
  EXPECT_EQ(again.attempt(), 2);
  clock_.Advance(10.5);
  coordinator_->Sync();
  t = Trials(id, 1)[0];
  EXPECT_EQ(t.state(), v1::TRIAL_FAILED);
  EXPECT_NE(t.error().find("gave up after max_attempts=2"), std::string::npos) << t.error();
}

TEST_F(CoordinatorTest, ReportsRenewTheLease) {
  int64_t id = Submit();
  v1::AcquireTrialResponse a = Acquire();
  for (int step = 1; step <= 3; ++step) {
    clock_.Advance(8);
    v1::ReportProgressResponse r;
    ASSERT_TRUE(Report(a.lease_token(), step, 0.1 * step, &r).ok());
    EXPECT_EQ(r.directive(), v1::CONTINUE);
    coordinator_->Sync();
  }
  v1::Trial t = Trials(id, 1)[0];
  EXPECT_EQ(t.state(), v1::TRIAL_RUNNING);  // 24 s after acquire, but never 10 s without a report.
  EXPECT_NEAR(t.metrics().at("val_accuracy"), 0.3, 1e-12);
}

TEST_F(CoordinatorTest, HeartbeatRenewsTheLeaseAndRecordsNothing) {
  int64_t id = Submit();
  v1::AcquireTrialResponse a = Acquire();
  size_t events_before = StoredEvents(id).size();
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(8);
    v1::ReportProgressRequest heartbeat;
    heartbeat.set_lease_token(a.lease_token());
    v1::ReportProgressResponse r;
    ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::ReportProgress, heartbeat, &r).ok());
    EXPECT_EQ(r.directive(), v1::CONTINUE);
    coordinator_->Sync();
  }
  EXPECT_EQ(Trials(id, 1)[0].state(), v1::TRIAL_RUNNING);
  EXPECT_TRUE(Trials(id, 1)[0].metrics().empty());
  EXPECT_EQ(StoredEvents(id).size(), events_before);
}

TEST_F(CoordinatorTest, StaleTokenIsRefusedAndChangesNothing) {
  int64_t id = Submit();
  v1::AcquireTrialResponse first = Acquire("slow");
  clock_.Advance(11);
  coordinator_->Sync();
  v1::AcquireTrialResponse second;
  while (!second.has_trial() || second.trial_id() != first.trial_id()) second = Acquire("fast");
  size_t events_before = StoredEvents(id).size();

  EXPECT_EQ(Report(first.lease_token(), 1, 0.99).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(Complete(first.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.99}}).code(),
            Status::Code::kFailedPrecondition);
  EXPECT_EQ(Complete("never-issued", v1::CompleteTrialRequest::FAILED, {}, "x").code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(StoredEvents(id).size(), events_before);
  v1::Trial t = Trials(id, 1)[0];
  EXPECT_EQ(t.state(), v1::TRIAL_RUNNING);
  EXPECT_EQ(t.worker(), "fast");
  EXPECT_TRUE(t.metrics().empty());
}

TEST_F(CoordinatorTest, RepeatedCompletionIsAnsweredAsTheFirst) {
  int64_t id = Submit();
  v1::AcquireTrialResponse a = Acquire();
  v1::CompleteTrialResponse r1, r2;
  ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.8}}, "", &r1).ok());
  ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::FAILED, {{"val_accuracy", 0.1}}, "retry", &r2).ok());
  EXPECT_EQ(r1.state(), v1::TRIAL_SUCCEEDED);
  EXPECT_EQ(r2.state(), v1::TRIAL_SUCCEEDED);
  v1::Trial t = Trials(id, 1)[0];
  EXPECT_DOUBLE_EQ(t.metrics().at("val_accuracy"), 0.8);
  int finished = 0;
  for (const auto& e : StoredEvents(id)) finished += e.type() == v1::TRIAL_FINISHED;
  EXPECT_EQ(finished, 1);

  // Still idempotent once the stage is decided and the trial lives only in the database.
  RunAll();
  v1::CompleteTrialResponse r3;
  ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.8}}, "", &r3).ok());
  EXPECT_EQ(r3.state(), v1::TRIAL_SUCCEEDED);
}

TEST_F(CoordinatorTest, ReleasedTrialIsQueuedAgainWithoutCountingAsAFailure) {
  int64_t id = Submit();
  int64_t trial = 0;
  for (int i = 0; i < 4; ++i) {  // More releases than max_attempts.
    v1::AcquireTrialResponse a = Acquire();
    trial = a.trial_id();
    v1::CompleteTrialResponse r;
    ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::RELEASED, {}, "", &r).ok());
    EXPECT_EQ(r.state(), v1::TRIAL_PENDING);
  }
  v1::AcquireTrialResponse a = Acquire();
  EXPECT_EQ(a.trial_id(), trial);  // Released trials go to the front.
  EXPECT_EQ(a.attempt(), 5);
  EXPECT_EQ(Trials(id, 1)[0].state(), v1::TRIAL_RUNNING);
}

TEST_F(CoordinatorTest, CancelStopsRunningTrialsAndCancelsPendingOnes) {
  int64_t id = Submit();
  v1::AcquireTrialResponse running = Acquire();
  v1::CancelSweepRequest req;
  req.set_sweep_id(id);
  v1::CancelSweepResponse resp;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::CancelSweep, req, &resp).ok());
  EXPECT_EQ(resp.state(), v1::SWEEP_CANCELLING);
  EXPECT_EQ(resp.trials_cancelled(), 5);
  EXPECT_EQ(resp.trials_stopping(), 1);
  EXPECT_FALSE(Acquire().has_trial());

  v1::ReportProgressResponse r;
  ASSERT_TRUE(Report(running.lease_token(), 1, 0.5, &r).ok());
  EXPECT_EQ(r.directive(), v1::STOP);
  ASSERT_TRUE(Complete(running.lease_token(), v1::CompleteTrialRequest::FAILED, {}, "stopped").ok());

  v1::GetSweepResponse sweep = GetSweep(id);
  EXPECT_EQ(sweep.sweep().state(), v1::SWEEP_CANCELLED);
  for (const v1::Trial& t : Trials(id)) EXPECT_EQ(t.state(), v1::TRIAL_CANCELLED);
  for (const v1::StageResult& s : sweep.stages()) EXPECT_EQ(s.state(), v1::STAGE_CANCELLED);
  auto events = StoredEvents(id);
  EXPECT_EQ(events.back().type(), v1::SWEEP_FINISHED);
  EXPECT_EQ(events.back().sweep().state(), v1::SWEEP_CANCELLED);
  // Cancelling again is a no-op that reports the state.
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::CancelSweep, req, &resp).ok());
  EXPECT_EQ(resp.state(), v1::SWEEP_CANCELLED);
  req.set_sweep_id(999);
  EXPECT_EQ(CallSync(coordinator_.get(), &Coordinator::CancelSweep, req, &resp).code(), Status::Code::kNotFound);
}

TEST_F(CoordinatorTest, StageWhereEveryTrialFailedFailsTheSweepQuotingTheFirstError) {
  int64_t id = Submit();
  for (int i = 0; i < 6; ++i) {
    v1::AcquireTrialResponse a = Acquire();
    ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::FAILED, {}, "loss is NaN at epoch " + std::to_string(i)).ok());
  }
  v1::GetSweepResponse sweep = GetSweep(id);
  EXPECT_EQ(sweep.sweep().state(), v1::SWEEP_FAILED);
  EXPECT_NE(sweep.sweep().error().find("stage 1 \"core\": every trial failed; first error"), std::string::npos)
      << sweep.sweep().error();
  EXPECT_NE(sweep.sweep().error().find("loss is NaN at epoch 0"), std::string::npos);
  EXPECT_EQ(sweep.stages(0).state(), v1::STAGE_FAILED);
  EXPECT_EQ(sweep.stages(1).state(), v1::STAGE_CANCELLED);
}

TEST_F(CoordinatorTest, ObjectiveThatNoTrialReportedFailsTheSweep) {
  int64_t id = Submit();
  for (int i = 0; i < 6; ++i) {
    v1::AcquireTrialResponse a = Acquire();
    ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_loss", 0.3}}).ok());
  }
  v1::GetSweepResponse sweep = GetSweep(id);
  EXPECT_EQ(sweep.sweep().state(), v1::SWEEP_FAILED);
  EXPECT_NE(sweep.sweep().error().find("no trial reported the objective metric \"val_accuracy\""), std::string::npos)
      << sweep.sweep().error();
}

TEST_F(CoordinatorTest, InvalidSpecIsRefusedWithItsPathAndStoresNothing) {
  Json spec = Json::parse(kSpec);
  spec["stages"][1]["grid"]["temperature"] = Json::array();
  v1::SubmitSweepRequest req;
  req.set_spec_json(spec.dump());
  v1::SubmitSweepResponse resp;
  Status s = CallSync(coordinator_.get(), &Coordinator::SubmitSweep, req, &resp);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "stages[1].grid.temperature: expected a non-empty array of numbers");
  v1::ListSweepsResponse list;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::ListSweeps, v1::ListSweepsRequest(), &list).ok());
  EXPECT_EQ(list.sweeps_size(), 0);
}

TEST_F(CoordinatorTest, BaselineRunsFirstAndWinnersReportTheirDifference) {
  Json spec = Json::parse(kSpec);
  spec["baseline"] = {{"temperature", 1.5}};
  int64_t id = Submit(spec.dump());
  v1::AcquireTrialResponse first = Acquire();
  EXPECT_EQ(first.stage(), 0);  // Baseline trials are queued first.
  EXPECT_EQ(Json::parse(first.config_json())["temperature"], 1.5);
  ASSERT_TRUE(Complete(first.lease_token(), v1::CompleteTrialRequest::SUCCEEDED,
                       {{"val_accuracy", Score(Json::parse(first.config_json()))}}).ok());
  RunAll();
  v1::GetSweepResponse sweep = GetSweep(id);
  EXPECT_EQ(sweep.sweep().state(), v1::SWEEP_SUCCEEDED);
  ASSERT_EQ(sweep.stages_size(), 3);
  EXPECT_EQ(sweep.stages(0).name(), "baseline");
  double baseline = sweep.stages(0).winner().mean();
  for (const v1::StageResult& s : sweep.stages()) {
    EXPECT_TRUE(s.has_baseline());
    EXPECT_DOUBLE_EQ(s.delta_to_baseline(), s.winner().mean() - baseline);
  }
  EXPECT_GT(sweep.stages(2).delta_to_baseline(), 0);
}

TEST_F(CoordinatorTest, WatchReplaysThenFollowsLiveWithoutGapOrDuplicate) {
  options_.replay_page = 3;  // Several replay pages.
  Restart();
  int64_t id = Submit();
  for (int i = 0; i < 3; ++i) {
    v1::AcquireTrialResponse a = Acquire();
    ASSERT_TRUE(Report(a.lease_token(), 1, 0.1).ok());
    ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.2}}).ok());
  }
  auto sink = std::make_shared<RecordingSink>(coordinator_.get(), id);
  coordinator_->Watch(id, 2, false, sink);
  RunAll();
  coordinator_->Sync();
  coordinator_->Sync();
  auto events = sink->events();
  ASSERT_FALSE(events.empty());
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 3));
  EXPECT_EQ(events.back().type(), v1::SWEEP_FINISHED);
  EXPECT_GT(sink->replay_pages(), 2);
  EXPECT_EQ(events.size() + 2, StoredEvents(id).size());

  // A watcher that comes after the end gets the full history, and one past the end is closed OK.
  auto late = StoredEvents(id);
  EXPECT_EQ(late.front().type(), v1::SWEEP_SUBMITTED);
  auto past = std::make_shared<RecordingSink>(coordinator_.get(), id);
  coordinator_->Watch(id, late.back().seq(), false, past);
  coordinator_->Sync();
  Status closed;
  EXPECT_TRUE(past->closed(&closed));
  EXPECT_TRUE(closed.ok());
  auto unknown = std::make_shared<RecordingSink>(coordinator_.get(), 999);
  coordinator_->Watch(999, 0, false, unknown);
  coordinator_->Sync();
  EXPECT_TRUE(unknown->closed(&closed));
  EXPECT_EQ(closed.code(), Status::Code::kNotFound);
}

TEST_F(CoordinatorTest, WatchCanLeaveOutProgressReportsInReplayAndLive) {
  int64_t id = Submit();
  v1::AcquireTrialResponse a = Acquire();
  ASSERT_TRUE(Report(a.lease_token(), 1, 0.1).ok());
  auto sink = std::make_shared<RecordingSink>(coordinator_.get(), id, /*skip_progress=*/true);
  coordinator_->Watch(id, 0, true, sink);
  coordinator_->Sync();
  ASSERT_TRUE(sink->live());
  ASSERT_TRUE(Report(a.lease_token(), 2, 0.2).ok());
  ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.3}}).ok());
  RunAll();
  coordinator_->Sync();
  auto events = sink->events();
  auto all = StoredEvents(id);
  size_t progress = 0;
  for (const auto& e : all) progress += e.type() == v1::TRIAL_PROGRESS;
  EXPECT_EQ(progress, 2u);
  EXPECT_EQ(events.size(), all.size() - progress);
  for (const auto& e : events) EXPECT_NE(e.type(), v1::TRIAL_PROGRESS);
  EXPECT_EQ(events.back().type(), v1::SWEEP_FINISHED);
}

TEST_F(CoordinatorTest, RestartResumesSweepsAndKeepsLiveLeases) {
  int64_t id = Submit();
  v1::AcquireTrialResponse live = Acquire("survivor");
  ASSERT_TRUE(Report(live.lease_token(), 1, 0.3).ok());
  v1::AcquireTrialResponse done = Acquire();
  ASSERT_TRUE(Complete(done.lease_token(), v1::CompleteTrialRequest::SUCCEEDED,
                       {{"val_accuracy", Score(Json::parse(done.config_json()))}}).ok());

  Restart();

  // The live worker keeps reporting on its lease and completes it.
  v1::ReportProgressResponse r;
  ASSERT_TRUE(Report(live.lease_token(), 2, 0.4, &r).ok());
  EXPECT_EQ(r.directive(), v1::CONTINUE);
  ASSERT_TRUE(Complete(live.lease_token(), v1::CompleteTrialRequest::SUCCEEDED,
                       {{"val_accuracy", Score(Json::parse(live.config_json()))}}).ok());
  // The completed trial's token is still answered idempotently.
  v1::CompleteTrialResponse again;
  ASSERT_TRUE(Complete(done.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {}, "", &again).ok());
  EXPECT_EQ(again.state(), v1::TRIAL_SUCCEEDED);

  EXPECT_EQ(RunAll(), 6);  // Two of stage 2's trials are stage 1's winner again, reused.
  EXPECT_EQ(GetSweep(id).sweep().state(), v1::SWEEP_SUCCEEDED);
  std::map<int64_t, int> finished;
  auto events = StoredEvents(id);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
    if (events[i].type() == v1::TRIAL_FINISHED) ++finished[events[i].trial().trial_id()];
  }
  EXPECT_EQ(finished.size(), 10u);
  for (auto& [trial, n] : finished) EXPECT_EQ(n, 1) << "trial " << trial;
}

TEST_F(CoordinatorTest, LeaseOfADeadWorkerExpiresAfterRestart) {
  int64_t id = Submit();
  Acquire("dies-with-the-coordinator");
  Restart();
  clock_.Advance(10.5);
  coordinator_->Sync();
  EXPECT_EQ(Trials(id, 1)[0].state(), v1::TRIAL_PENDING);
}

TEST_F(CoordinatorTest, LongPollIsAnsweredWhenATrialArrives) {
  v1::AcquireTrialRequest req;
  req.set_worker("waiting");
  v1::AcquireTrialResponse resp;
  std::promise<Status> done;
  auto start = std::chrono::steady_clock::now();
  coordinator_->AcquireTrial(req, &resp, std::chrono::seconds(20), [] { return false; },
                             [&done](const Status& s) { done.set_value(s); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Submit();
  ASSERT_TRUE(done.get_future().get().ok());
  EXPECT_TRUE(resp.has_trial());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));

  // With nothing to hand out, the long-poll ends empty at its deadline.
  for (int i = 0; i < 5; ++i) Acquire();
  v1::AcquireTrialResponse empty;
  std::promise<Status> done2;
  start = std::chrono::steady_clock::now();
  coordinator_->AcquireTrial(req, &empty, std::chrono::milliseconds(300), [] { return false; },
                             [&done2](const Status& s) { done2.set_value(s); });
  ASSERT_TRUE(done2.get_future().get().ok());
  EXPECT_FALSE(empty.has_trial());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
}

TEST_F(CoordinatorTest, ShutdownAnswersParkedLongPollsAndRefusesNewCalls) {
  v1::AcquireTrialRequest req;
  v1::AcquireTrialResponse resp;
  std::promise<Status> done;
  coordinator_->AcquireTrial(req, &resp, std::chrono::seconds(30), nullptr,
                             [&done](const Status& s) { done.set_value(s); });
  coordinator_->Sync();
  coordinator_->Shutdown();
  ASSERT_TRUE(done.get_future().get().ok());
  EXPECT_FALSE(resp.has_trial());
  v1::ListSweepsResponse list;
  EXPECT_EQ(CallSync(coordinator_.get(), &Coordinator::ListSweeps, v1::ListSweepsRequest(), &list).code(),
            Status::Code::kUnavailable);
}


// Seed 001's question, "which value, and is it really better?": the decided stage carries its
// runner-up, Welch p-values against it and the baseline, and the success criterion's verdict.
TEST_F(CoordinatorTest, DecidedStageSaysHowSureItsWinnerIs) {
  int64_t id = Submit(R"({
    "name": "sure",
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "seeds": [1, 2, 3],
    "baseline": {"use_moe": false},
    "success": {"min_delta": 0.02},
    "stages": [{"name": "width", "grid": {"expert_hidden_dim": [16, 32, 64]}}]
  })");
  // Baseline ~0.70; width 16 ~0.80 with spread; 32 ~0.81 (winner, close to 16); 64 ~0.60.
  const std::map<std::pair<int64_t, int64_t>, double> score = {
      {{0, 1}, 0.70}, {{0, 2}, 0.71}, {{0, 3}, 0.69},
      {{16, 1}, 0.78}, {{16, 2}, 0.82}, {{16, 3}, 0.80},
      {{32, 1}, 0.80}, {{32, 2}, 0.83}, {{32, 3}, 0.80},
      {{64, 1}, 0.60}, {{64, 2}, 0.61}, {{64, 3}, 0.59}};
  for (;;) {
    v1::AcquireTrialResponse a = Acquire();
    if (!a.has_trial()) break;
    Json config = Json::parse(a.config_json());
    int64_t width = config.value("use_moe", true) ? config["expert_hidden_dim"].get<int64_t>() : 0;
    ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED,
                         {{"val_accuracy", score.at({width, config["seed"].get<int64_t>()})}})
                    .ok());
  }
  v1::GetSweepResponse sweep = GetSweep(id);
  ASSERT_EQ(sweep.stages_size(), 2);
  const v1::StageResult& stage = sweep.stages(1);
  ASSERT_EQ(stage.state(), v1::STAGE_SUCCEEDED);
  EXPECT_EQ(stage.winner().point_index(), 1);
  EXPECT_EQ(stage.runner_up().point_index(), 0);
  // Against scipy.stats.ttest_ind([.80, .83, .80], [.78, .82, .80], equal_var=False): p = 0.5491.
  ASSERT_TRUE(stage.has_p_vs_runner_up());
  EXPECT_NEAR(stage.p_vs_runner_up(), 0.5491104389176992, 1e-9);
  ASSERT_TRUE(stage.has_p_vs_baseline());
  EXPECT_LT(stage.p_vs_baseline(), 0.01);
  EXPECT_TRUE(stage.has_success_criterion());
  EXPECT_DOUBLE_EQ(stage.min_delta(), 0.02);
  EXPECT_TRUE(stage.meets_success());  // 0.81 - 0.70 >= 0.02.
  EXPECT_FALSE(sweep.stages(0).has_p_vs_baseline());  // The baseline is not compared with itself.
}


// kSpec's stage 2 has expert_layers=2, the default, so its point 1 is stage 1's winner again.
TEST_F(CoordinatorTest, IdenticalTrialsReuseTheSucceededOnesResultsAndAreNeverLeased) {
  int64_t id = Submit();
  // Stage 1 by hand, restarting half-way: reuse reads what the database holds.
  for (int i = 0; i < 3; ++i) {
    v1::AcquireTrialResponse a = Acquire();
    ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED,
                         {{"val_accuracy", Score(Json::parse(a.config_json()))}, {"extra", 7.0 + i}}).ok());
  }
  Restart();
  EXPECT_EQ(RunAll(), 3 + 2);  // The rest of stage 1, then stage 2's expert_layers=1 point only.
  std::map<int64_t, v1::Trial> winner_by_seed;
  for (const v1::Trial& t : Trials(id, 1)) {
    if (Json::parse(t.point_json())["temperature"] == 1.0) winner_by_seed[t.seed()] = t;
  }
  int reused = 0;
  for (const v1::Trial& t : Trials(id, 2)) {
    EXPECT_EQ(t.state(), v1::TRIAL_SUCCEEDED);
    if (t.point_index() != 1) {
      EXPECT_EQ(t.reused_trial_id(), 0);
      continue;
    }
    ++reused;
    const v1::Trial& original = winner_by_seed.at(t.seed());
    EXPECT_EQ(t.reused_trial_id(), original.trial_id());
    EXPECT_EQ(t.attempt(), 0);  // Never leased.
    EXPECT_EQ(t.metrics().at("val_accuracy"), original.metrics().at("val_accuracy"));
    EXPECT_EQ(t.metrics().size(), original.metrics().size());
  }
  EXPECT_EQ(reused, 2);
  // Its TRIAL_FINISHED event says so too, and no TRIAL_STARTED exists for it.
  int finished_reused = 0;
  for (const v1::SweepEvent& e : StoredEvents(id)) {
    if (e.trial().reused_trial_id() == 0) continue;
    EXPECT_EQ(e.type(), v1::TRIAL_FINISHED);
    ++finished_reused;
  }
  EXPECT_EQ(finished_reused, 2);
  EXPECT_EQ(GetSweep(id).sweep().state(), v1::SWEEP_SUCCEEDED);
}

TEST_F(CoordinatorTest, ReuseOffRunsIdenticalTrialsAgain) {
  Json spec = Json::parse(kSpec);
  spec["reuse"] = false;
  int64_t id = Submit(spec.dump());
  EXPECT_EQ(RunAll(), 10);
  for (const v1::Trial& t : Trials(id)) EXPECT_EQ(t.reused_trial_id(), 0);
}

TEST_F(CoordinatorTest, AFailedTrialIsNeverReused) {
  int64_t id = Submit();
  // Stage 1: the winner's seed 2 fails; every other trial succeeds.
  for (;;) {
    v1::AcquireTrialResponse a = Acquire();
    if (!a.has_trial()) break;
    Json config = Json::parse(a.config_json());
    if (a.stage() == 1 && config["temperature"] == 1.0 && config["seed"] == 2) {
      ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::FAILED, {}, "out of memory").ok());
      continue;
    }
    ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", Score(config)}}).ok());
  }
  std::map<int64_t, int64_t> reused_by_seed;
  for (const v1::Trial& t : Trials(id, 2)) {
    if (t.point_index() == 1) reused_by_seed[t.seed()] = t.reused_trial_id();
  }
  EXPECT_GT(reused_by_seed.at(1), 0);
  EXPECT_EQ(reused_by_seed.at(2), 0);  // Ran: its identical trial had failed.
}


// A winner on the grid's edge extends the stage, across a restart, until the winner is inside or
// max_extensions is reached; the decision then covers the added points.
TEST_F(CoordinatorTest, AStageExtendsItsGridEdgeUntilTheWinnerIsInside) {
  int64_t id = Submit(R"({
    "name": "edges",
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "seeds": [1, 2],
    "stages": [{"name": "width", "grid": {"expert_hidden_dim": [16, 32, 64]}, "extend_edges": {"max_extensions": 3}}]
  })");
  // Accuracy peaks at width 128: 64 wins the grid, then 128 wins over 256, so the stage adds 128 and
  // 256 and stops.
  auto score = [](const Json& c) {
    return 1.0 - std::abs(std::log2(c["expert_hidden_dim"].get<double>()) - 7) * 0.1 + 0.001 * c["seed"].get<int>();
  };
  auto run = [&](int limit) {
    for (int n = 0; n < limit; ++n) {
      v1::AcquireTrialResponse a = Acquire();
      if (!a.has_trial()) return;
      ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED,
                           {{"val_accuracy", score(Json::parse(a.config_json()))}}).ok());
    }
  };
  run(6);  // The grid: 64 wins on the edge, so 128 is added.
  EXPECT_EQ(Trials(id).size(), 6u + 2u);
  Restart();  // In the middle of the extension.
  run(1000);  // 128 wins as the new edge: 256 is added; then 128 wins inside.
  EXPECT_EQ(Trials(id).size(), 6u + 2u + 2u);
  v1::GetSweepResponse sweep = GetSweep(id);
  EXPECT_EQ(sweep.sweep().state(), v1::SWEEP_SUCCEEDED);
  const v1::StageResult& stage = sweep.stages(0);
  EXPECT_EQ(stage.winner().point_json(), R"({"expert_hidden_dim":128})");
  EXPECT_EQ(stage.winner().point_index(), 3);
  ASSERT_EQ(stage.extended_points_json_size(), 2);
  EXPECT_EQ(stage.extended_points_json(0), R"({"expert_hidden_dim":128})");
  EXPECT_EQ(stage.extended_points_json(1), R"({"expert_hidden_dim":256})");
  int extended_events = 0;
  for (const v1::SweepEvent& e : StoredEvents(id)) extended_events += e.type() == v1::STAGE_EXTENDED;
  EXPECT_EQ(extended_events, 2);
}


// A random-search stage runs each sampled point with every seed and is decided like a grid; the
// next stage carries its winner.
TEST_F(CoordinatorTest, ARandomSearchStageIsScoredLikeAGridAndCarriesItsWinner) {
  int64_t id = Submit(R"({
    "name": "random",
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "seeds": [1, 2],
    "stages": [{"name": "wide", "search": {"method": "random", "trials": 5, "seed": 11},
                "space": {"temperature": {"uniform": [0.3, 1.5]}}},
               {"name": "depth", "grid": {"expert_layers": [1, 2]}}]
  })");
  EXPECT_EQ(Trials(id, 1).size(), 10u);
  RunAll();
  v1::GetSweepResponse sweep = GetSweep(id);
  EXPECT_EQ(sweep.sweep().state(), v1::SWEEP_SUCCEEDED);
  // Score() peaks at temperature 1.0: the sampled point closest to it wins.
  double best_distance = 1e9, winner_temperature = 0;
  for (const v1::Trial& t : Trials(id, 1)) {
    double temperature = Json::parse(t.point_json())["temperature"].get<double>();
    if (std::abs(temperature - 1.0) < best_distance) best_distance = std::abs(temperature - 1.0), winner_temperature = temperature;
  }
  EXPECT_DOUBLE_EQ(Json::parse(sweep.stages(0).winner().point_json())["temperature"].get<double>(), winner_temperature);
  for (const v1::Trial& t : Trials(id, 2)) {
    EXPECT_DOUBLE_EQ(Json::parse(t.config_json())["temperature"].get<double>(), winner_temperature);
  }
}

// One stage of 6 points x 1 seed with a median pruner that judges from step 2 on, against at
// least 2 other trials.
constexpr const char* kPrunedSpec = R"({
  "name": "pruned",
  "objective": {"metric": "val_accuracy", "goal": "maximize"},
  "seeds": [1],
  "stages": [{"name": "core", "grid": {"temperature": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}},
             {"name": "structure", "grid": {"expert_layers": [1, 2]}, "pruner": false}],
  "pruner": {"method": "median", "warmup_steps": 1, "min_trials": 2},
  "lease_seconds": 10
})";

class PruningTest : public CoordinatorTest {
 protected:
  // Leases the next stage-1 trial and reports `curve` (step 1, 2, ...); returns the last directive.
  v1::Directive RunCurve(const std::vector<double>& curve, v1::AcquireTrialResponse* lease) {
    *lease = Acquire();
    EXPECT_TRUE(lease->has_trial());
    v1::ReportProgressResponse resp;
    for (size_t i = 0; i < curve.size(); ++i) {
      EXPECT_TRUE(Report(lease->lease_token(), static_cast<int64_t>(i + 1), curve[i], &resp).ok());
      if (resp.directive() == v1::STOP) break;
    }
    return resp.directive();
  }
};

TEST_F(PruningTest, ATrialBelowTheMedianIsStoppedEndsPrunedAndItsPointCannotWin) {
  int64_t id = Submit(kPrunedSpec);
  v1::AcquireTrialResponse a, b, c, d;
  // Two trials set the field: nothing is pruned before min_trials others reported the step.
  EXPECT_EQ(RunCurve({0.50, 0.60, 0.70}, &a), v1::CONTINUE);
  ASSERT_TRUE(Complete(a.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.70}}).ok());
  EXPECT_EQ(RunCurve({0.52, 0.62, 0.72}, &b), v1::CONTINUE);
  ASSERT_TRUE(Complete(b.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.72}}).ok());
  // Step 1 is warm-up: a bad first epoch is forgiven. At step 2, 0.40 is below the median 0.61.
  v1::ReportProgressResponse resp;
  c = Acquire();
  ASSERT_TRUE(Report(c.lease_token(), 1, 0.10, &resp).ok());
  EXPECT_EQ(resp.directive(), v1::CONTINUE);
  ASSERT_TRUE(Report(c.lease_token(), 2, 0.40, &resp).ok());
  EXPECT_EQ(resp.directive(), v1::STOP);
  // It stays told to stop (a heartbeat gets STOP too) until it completes.
  v1::ReportProgressRequest heartbeat;
  heartbeat.set_lease_token(c.lease_token());
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::ReportProgress, heartbeat, &resp).ok());
  EXPECT_EQ(resp.directive(), v1::STOP);
  // The worker finished the epoch anyway and reports the best score of all: still PRUNED.
  v1::CompleteTrialResponse done;
  ASSERT_TRUE(Complete(c.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.99}}, "", &done).ok());
  EXPECT_EQ(done.state(), v1::TRIAL_PRUNED);
  // A trial above the median goes on.
  EXPECT_EQ(RunCurve({0.55, 0.65, 0.75}, &d), v1::CONTINUE);
  ASSERT_TRUE(Complete(d.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.75}}).ok());
  for (int i = 0; i < 2; ++i) {  // The rest of stage 1 (no reports) succeed with Score(), below 0.75.
    v1::AcquireTrialResponse rest = Acquire();
    ASSERT_EQ(rest.stage(), 1);
    ASSERT_TRUE(Complete(rest.lease_token(), v1::CompleteTrialRequest::SUCCEEDED,
                         {{"val_accuracy", Score(Json::parse(rest.config_json()))}}).ok());
  }

  v1::GetSweepResponse sweep = GetSweep(id);
  const v1::StageResult& stage = sweep.stages(0);
  EXPECT_EQ(stage.state(), v1::STAGE_SUCCEEDED);
  EXPECT_EQ(stage.trials_pruned(), 1);
  EXPECT_EQ(sweep.sweep().trials_pruned(), 1);
  EXPECT_EQ(stage.winner().point_index(), d.trial_id() - a.trial_id());  // Not the pruned 0.99.
  const v1::Trial pruned = Trials(id, 1).at(c.trial_id() - a.trial_id());
  EXPECT_EQ(pruned.state(), v1::TRIAL_PRUNED);
  EXPECT_EQ(pruned.error(), "pruned at step 2: val_accuracy 0.4 is lower than the median 0.61 of 2 other trials "
                            "with seed 1 at that step (median pruner)");
  EXPECT_EQ(pruned.metrics().at("val_accuracy"), 0.99);  // What the worker sent last.
  for (const v1::PointScore& p : stage.points()) {
    EXPECT_EQ(p.pruned(), p.point_index() == pruned.point_index() ? 1 : 0);
  }
  // The decision is an event, before the trial's TRIAL_FINISHED.
  std::vector<v1::EventType> types;
  for (const v1::SweepEvent& e : StoredEvents(id)) {
    if (e.trial().trial_id() == c.trial_id()) types.push_back(e.type());
  }
  EXPECT_EQ(types, (std::vector<v1::EventType>{v1::TRIAL_STARTED, v1::TRIAL_PROGRESS, v1::TRIAL_PROGRESS,
                                               v1::PRUNE_DECIDED, v1::TRIAL_FINISHED}));
}

TEST_F(PruningTest, AStoppedPrunedTrialKeepsItsLastReportedMetrics) {
  int64_t id = Submit(kPrunedSpec);
  v1::AcquireTrialResponse a, b, c;
  RunCurve({0.5, 0.6}, &a);
  RunCurve({0.5, 0.6}, &b);
  EXPECT_EQ(RunCurve({0.5, 0.3}, &c), v1::STOP);
  // A worker that stops calls it a failure without metrics: the trial is PRUNED with its last report.
  ASSERT_TRUE(Complete(c.lease_token(), v1::CompleteTrialRequest::FAILED, {}, "stopped by the coordinator (STOP)").ok());
  const v1::Trial pruned = Trials(id, 1).at(2);
  EXPECT_EQ(pruned.state(), v1::TRIAL_PRUNED);
  EXPECT_EQ(pruned.metrics().at("val_accuracy"), 0.3);
  EXPECT_NE(pruned.error().find("pruned at step 2"), std::string::npos);
}

TEST_F(PruningTest, DecisionsAndTheirEvidenceSurviveARestart) {
  int64_t id = Submit(kPrunedSpec);
  v1::AcquireTrialResponse a, b, c, d;
  RunCurve({0.5, 0.6}, &a);
  RunCurve({0.5, 0.62}, &b);
  EXPECT_EQ(RunCurve({0.5, 0.3}, &c), v1::STOP);
  d = Acquire();
  ASSERT_TRUE(Report(d.lease_token(), 1, 0.5).ok());
  Restart();
  // The decision was stored: c is still told to stop, and ends PRUNED even when its lease expires.
  v1::ReportProgressResponse resp;
  ASSERT_TRUE(Report(c.lease_token(), 3, 0.3, &resp).ok());
  EXPECT_EQ(resp.directive(), v1::STOP);
  // The history was rebuilt from the stored reports: 0.45 at step 2 is below the median of a, b
  // and c (0.6), so d is pruned right after the restart.
  ASSERT_TRUE(Report(d.lease_token(), 2, 0.45, &resp).ok());
  EXPECT_EQ(resp.directive(), v1::STOP);
  clock_.Advance(11);
  coordinator_->Sync();
  for (const v1::Trial& t : Trials(id, 1)) {
    if (t.trial_id() == c.trial_id() || t.trial_id() == d.trial_id()) {
      EXPECT_EQ(t.state(), v1::TRIAL_PRUNED) << t.trial_id();
      EXPECT_EQ(t.attempt(), 1);  // Never leased again.
    }
  }
  EXPECT_EQ(GetSweep(id).sweep().trials_pruned(), 2);
}

// A point with a pruned seed cannot win, so its other seeds stop too: running ones are told to
// STOP, waiting ones end PRUNED without ever being leased.
TEST_F(PruningTest, APrunedSeedStopsTheOtherSeedsOfItsPoint) {
  Json spec = Json::parse(kPrunedSpec);
  spec["seeds"] = {1, 2};
  spec["pruner"]["compare"] = "all";  // Seed 1 of point 1 is judged against both seeds of point 0.
  int64_t id = Submit(spec.dump());
  v1::AcquireTrialResponse a, b, c, d, e;
  RunCurve({0.6, 0.6}, &a);  // Point 0, seeds 1 and 2.
  RunCurve({0.6, 0.6}, &b);
  c = Acquire();  // Point 1, seed 1...
  d = Acquire();  // ...and seed 2, both running.
  v1::ReportProgressResponse resp;
  ASSERT_TRUE(Report(d.lease_token(), 1, 0.7, &resp).ok());
  ASSERT_TRUE(Report(c.lease_token(), 1, 0.5, &resp).ok());
  ASSERT_TRUE(Report(c.lease_token(), 2, 0.3, &resp).ok());  // Below the median 0.6 of a and b.
  EXPECT_EQ(resp.directive(), v1::STOP);
  ASSERT_TRUE(Report(d.lease_token(), 2, 0.9, &resp).ok());  // Its sibling was pruned: it stops too.
  EXPECT_EQ(resp.directive(), v1::STOP);
  ASSERT_TRUE(Complete(c.lease_token(), v1::CompleteTrialRequest::FAILED, {}, "stopped").ok());
  ASSERT_TRUE(Complete(d.lease_token(), v1::CompleteTrialRequest::SUCCEEDED, {{"val_accuracy", 0.95}}).ok());
  // Point 2, seed 1 is pruned while its seed 2 still waits: that one never runs.
  EXPECT_EQ(RunCurve({0.5, 0.1}, &e), v1::STOP);
  v1::AcquireTrialResponse next = Acquire();
  EXPECT_EQ(Json::parse(next.config_json())["temperature"], 0.8) << "point 2 seed 2 was leased";
  std::vector<v1::Trial> trials = Trials(id, 1);
  EXPECT_EQ(trials.at(3).state(), v1::TRIAL_PRUNED);  // d
  EXPECT_EQ(trials.at(3).error(), fmt::format("pruned with its grid point: seed 1 of the point was pruned (trial {})",
                                              c.trial_id()));
  EXPECT_EQ(trials.at(5).state(), v1::TRIAL_PRUNED);  // Point 2, seed 2.
  EXPECT_EQ(trials.at(5).attempt(), 0);
  EXPECT_EQ(GetSweep(id).sweep().trials_pruned(), 3);  // c, d and point 2 seed 2 (e still runs).
}

TEST_F(CoordinatorTest, CudaTrialsGoOnlyToWorkersWithAFreeGpuAndOthersPassThem) {
  // Stage 1 runs device cuda, then cpu, then auto; one seed each.
  int64_t id = Submit(R"({
    "name": "devices", "objective": {"metric": "val_accuracy", "goal": "maximize"}, "seeds": [1],
    "stages": [{"name": "d", "grid": {"device": ["cuda:0", "cpu", "auto"]}}]
  })");
  auto device = [](const v1::AcquireTrialResponse& a) { return Json::parse(a.config_json())["device"].get<std::string>(); };
  // A worker without a free GPU skips the cuda trial at the head of the queue.
  v1::AcquireTrialResponse cpu1 = Acquire("cpu-box", 0);
  ASSERT_TRUE(cpu1.has_trial());
  EXPECT_EQ(device(cpu1), "cpu");
  v1::AcquireTrialResponse cpu2 = Acquire("cpu-box", 0);
  ASSERT_TRUE(cpu2.has_trial());
  EXPECT_EQ(device(cpu2), "auto");
  EXPECT_FALSE(Acquire("cpu-box", 0).has_trial());
  // The cuda trial waits for a worker that offers a GPU.
  v1::AcquireTrialResponse gpu = Acquire("gpu-box", 1);
  ASSERT_TRUE(gpu.has_trial());
  EXPECT_EQ(device(gpu), "cuda:0");
  EXPECT_EQ(GetSweep(id).sweep().state(), v1::SWEEP_RUNNING);

  // After a restart the rule still holds (it is rebuilt from the stored configs).
  int64_t again = Submit(R"({
    "name": "devices2", "objective": {"metric": "val_accuracy", "goal": "maximize"}, "seeds": [1],
    "stages": [{"name": "d", "grid": {"device": ["cuda"]}}]
  })");
  Restart();
  EXPECT_FALSE(Acquire("cpu-box", 0).has_trial());
  v1::AcquireTrialResponse later = Acquire("gpu-box", 2);
  ASSERT_TRUE(later.has_trial());
  EXPECT_EQ(later.sweep_id(), again);
}

TEST_F(CoordinatorTest, DeviceKeyIsCheckedAtSubmissionWithItsPath) {
  v1::SubmitSweepRequest req;
  req.set_spec_json(R"({
    "name": "bad-device", "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "stages": [{"name": "d", "grid": {"device": ["cuda:0", "gpu"], "precision": ["bf16", "fp16"]}}]
  })");
  v1::SubmitSweepResponse resp;
  Status s = CallSync(coordinator_.get(), &Coordinator::SubmitSweep, req, &resp);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("stages[0].grid.device[1]: \"gpu\" is not one of: cpu, cuda, cuda:N, auto"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("stages[0].grid.precision[1]: \"fp16\" is not one of: fp32, bf16"), std::string::npos)
      << s.message();
}

// By default a trial is judged against the trials of its own seed only (same initialisation and
// data order): a seed that is simply luckier does not prune the other seeds' trials.
TEST_F(PruningTest, TrialsAreComparedWithTheirOwnSeedByDefault) {
  Json spec = Json::parse(kPrunedSpec);
  spec["seeds"] = {1, 2};
  int64_t id = Submit(spec.dump());
  v1::AcquireTrialResponse p0s1, p0s2, p1s1, p1s2, p2s1, p2s2;
  RunCurve({0.5, 0.50}, &p0s1);
  RunCurve({0.9, 0.90}, &p0s2);  // Seed 2 is the lucky one.
  RunCurve({0.5, 0.52}, &p1s1);
  RunCurve({0.9, 0.92}, &p1s2);
  // 0.60 at step 2 is below the median of all four (0.71), but above seed 1's (0.51): it goes on.
  EXPECT_EQ(RunCurve({0.5, 0.60}, &p2s1), v1::CONTINUE);
  // 0.80 is below seed 2's median (0.91): pruned, though better than every seed-1 trial.
  EXPECT_EQ(RunCurve({0.9, 0.80}, &p2s2), v1::STOP);
  ASSERT_TRUE(Complete(p2s2.lease_token(), v1::CompleteTrialRequest::FAILED, {}, "stopped").ok());
  EXPECT_EQ(Trials(id, 1).at(5).error(),
            "pruned at step 2: val_accuracy 0.8 is lower than the median 0.91 of 2 other trials with seed 2 at that "
            "step (median pruner)");
}

}  // namespace
}  // namespace moesweep
