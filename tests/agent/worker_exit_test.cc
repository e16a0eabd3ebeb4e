// When the pull loop ends by itself: idle for exit_when_idle_seconds (a Slurm array task frees its
// GPUs when the sweep is done), or cut off from the coordinator for give_up_after_seconds. A fake
// WorkerService over an in-process channel, a fake runner; no LibTorch, no child processes.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "moesweep/v1/moesweep.grpc.pb.h"
#include "worker/agent/trial_runner.h"
#include "worker/agent/worker_loop.h"

namespace moesweep::worker {
namespace {

namespace pb = ::moesweep::v1;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Hands out queued trials; `down` makes every call fail with UNAVAILABLE, as a coordinator that
// is gone would (a channel that cannot connect says the same).
class FakeCoordinator final : public pb::WorkerService::Service {
 public:
  void AddTrial() {
    std::lock_guard<std::mutex> lock(mu_);
    ++queued_;
    cv_.notify_all();
  }
  void SetDown(bool down) {
    std::lock_guard<std::mutex> lock(mu_);
    down_ = down;
  }
  std::vector<pb::CompleteTrialRequest::Outcome> outcomes() {
    std::lock_guard<std::mutex> lock(mu_);
    return outcomes_;
  }
  int leased() {
    std::lock_guard<std::mutex> lock(mu_);
    return next_id_;
  }

  grpc::Status AcquireTrial(grpc::ServerContext*, const pb::AcquireTrialRequest* req,
                            pb::AcquireTrialResponse* resp) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (down_) return Unavailable();
    cv_.wait_for(lock, std::chrono::duration<double>(std::min(req->wait_seconds(), 0.05)), [&] { return queued_ > 0; });
    if (queued_ == 0) return grpc::Status::OK;
    --queued_;
    const int64_t id = ++next_id_;
    resp->set_has_trial(true);
    resp->set_trial_id(id);
    resp->set_attempt(1);
    resp->set_lease_token("lease-" + std::to_string(id));
    resp->set_lease_seconds(0.3);  // Heartbeats every 0.1 s.
    resp->set_config_json("{}");
    resp->set_trainer_json(R"({"kind": "fake"})");
    return grpc::Status::OK;
  }

  grpc::Status ReportProgress(grpc::ServerContext*, const pb::ReportProgressRequest*,
                              pb::ReportProgressResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (down_) return Unavailable();
    resp->set_directive(pb::CONTINUE);
    resp->set_lease_seconds(0.3);
    return grpc::Status::OK;
  }

  grpc::Status ReportProgressStream(
      grpc::ServerContext*, grpc::ServerReaderWriter<pb::ReportProgressResponse, pb::ReportProgressRequest>* stream) override {
    pb::ReportProgressRequest req;
    while (stream->Read(&req)) {
      pb::ReportProgressResponse resp;
      grpc::Status s = ReportProgress(nullptr, &req, &resp);
      if (!s.ok()) return s;
      if (!stream->Write(resp)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status CompleteTrial(grpc::ServerContext*, const pb::CompleteTrialRequest* req,
                             pb::CompleteTrialResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (down_) return Unavailable();
    outcomes_.push_back(req->outcome());
    resp->set_state(pb::TRIAL_SUCCEEDED);
    return grpc::Status::OK;
  }

 private:
  static grpc::Status Unavailable() { return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator down"); }

  std::mutex mu_;
  std::condition_variable cv_;
  int queued_ = 0;     // GUARDED_BY(mu_)
  int64_t next_id_ = 0;  // GUARDED_BY(mu_)
  bool down_ = false;  // GUARDED_BY(mu_)
  std::vector<pb::CompleteTrialRequest::Outcome> outcomes_;  // GUARDED_BY(mu_)
};

// Trains for `seconds` (asking keep_going every 10 ms), reports once, succeeds; stops when told.
class SleepRunner final : public TrialRunner {
 public:
  explicit SleepRunner(double seconds) : seconds_(seconds) {}
  std::string kind() const override { return "fake"; }
  Status Run(const LeasedTrial&, const RunnerHooks& hooks, RunOutcome* outcome) override {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds_);
    while (Clock::now() < end) {
      if (!hooks.keep_going()) {
        outcome->stopped = true;
        return Status::Ok();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    outcome->metrics = {{"val_accuracy", 0.5}};
    hooks.on_progress(1, outcome->metrics, {});
    return Status::Ok();
  }

 private:
  double seconds_;
};

class WorkerExitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    options_.name = "test";
    options_.slots = 2;
    options_.acquire_wait_seconds = 0.05;
    options_.rpc_timeout_seconds = 1;
    options_.backoff_initial_seconds = 0.02;
    options_.backoff_max_seconds = 0.05;
    options_.release_timeout_seconds = 0.3;
    options_.verbose = false;
  }
  void TearDown() override {
    if (loop_) loop_->Shutdown();
    if (run_.valid()) run_.wait();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  void Start(double trial_seconds = 1.0) {
    runner_ = std::make_unique<SleepRunner>(trial_seconds);
    options_.runners = {runner_.get()};
    loop_ = std::make_unique<WorkerLoop>(server_->InProcessChannel(grpc::ChannelArguments()), options_);
    start_ = Clock::now();
    run_ = std::async(std::launch::async, [this] { return loop_->Run(); });
  }

  // Run()'s result, or fails after `limit` seconds.
  WorkerExit Result(double limit = 20) {
    if (run_.wait_for(std::chrono::duration<double>(limit)) != std::future_status::ready) {
      ADD_FAILURE() << "Run() did not return within " << limit << " s";
      loop_->Shutdown();
    }
    WorkerExit why = run_.get();
    elapsed_ = SecondsSince(start_);
    return why;
  }

  FakeCoordinator fake_;
  std::unique_ptr<grpc::Server> server_;
  WorkerOptions options_;
  std::unique_ptr<SleepRunner> runner_;
  std::unique_ptr<WorkerLoop> loop_;
  std::future<WorkerExit> run_;
  Clock::time_point start_;
  double elapsed_ = 0;
};

TEST_F(WorkerExitTest, WithoutLimitsOnlyShutdownEndsTheLoop) {
  fake_.SetDown(true);
  Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_NE(run_.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  loop_->Shutdown();
  EXPECT_EQ(Result(), WorkerExit::kShutdown);
}

TEST_F(WorkerExitTest, AnIdleWorkerExitsAfterExitWhenIdle) {
  options_.exit_when_idle_seconds = 0.4;
  Start();
  EXPECT_EQ(Result(), WorkerExit::kIdle);
  EXPECT_GE(elapsed_, 0.4);
  EXPECT_LT(elapsed_, 5.0);
}

TEST_F(WorkerExitTest, ARunningTrialKeepsTheWorkerFromBeingIdleAndTheClockStartsWhenItEnds) {
  options_.exit_when_idle_seconds = 0.4;
  fake_.AddTrial();
  Start(/*trial_seconds=*/1.5);  // The other slot finds nothing all along.
  EXPECT_EQ(Result(), WorkerExit::kIdle);
  ASSERT_EQ(fake_.outcomes().size(), 1u);
  EXPECT_EQ(fake_.outcomes()[0], pb::CompleteTrialRequest::SUCCEEDED);
  EXPECT_GE(elapsed_, 1.5 + 0.4);
}

TEST_F(WorkerExitTest, AnUnreachableCoordinatorIsNotIdlenessAndTheWorkerGivesUp) {
  options_.exit_when_idle_seconds = 0.2;  // Shorter than give-up: must not count while unreachable.
  options_.give_up_after_seconds = 0.8;
  fake_.SetDown(true);
  Start();
  EXPECT_EQ(Result(), WorkerExit::kGaveUp);
  EXPECT_GE(elapsed_, 0.8);
  EXPECT_LT(elapsed_, 5.0);
}

TEST_F(WorkerExitTest, ACoordinatorBackBeforeTheLimitResetsTheGiveUpClock) {
  options_.give_up_after_seconds = 2.0;  // Each outage below lasts 0.6 s.
  options_.exit_when_idle_seconds = 1.5;
  fake_.SetDown(true);
  Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  fake_.SetDown(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  fake_.SetDown(true);  // Down again: the give-up clock starts over.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  fake_.SetDown(false);
  // Up for good: idle from here on, 1.8 s after the start at the earliest.
  EXPECT_EQ(Result(), WorkerExit::kIdle);
  EXPECT_GE(elapsed_, 1.8 + 1.5);
}

TEST_F(WorkerExitTest, ACoordinatorLostDuringATrialEndsTheTrialAndTheWorkerGivesUp) {
  options_.slots = 1;
  options_.give_up_after_seconds = 0.8;
  fake_.AddTrial();
  Start(/*trial_seconds=*/60);
  for (int i = 0; i < 200 && fake_.leased() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(fake_.leased(), 1);
  fake_.SetDown(true);  // Heartbeats fail from now on.
  EXPECT_EQ(Result(), WorkerExit::kGaveUp);
  EXPECT_LT(elapsed_, 10.0);  // Not the trial's 60 s: it was stopped.
  EXPECT_TRUE(fake_.outcomes().empty());  // Its release could not reach the coordinator either.
}

TEST_F(WorkerExitTest, TheFirstReasonToStopWins) {
  options_.exit_when_idle_seconds = 0.3;
  Start();
  loop_->Shutdown();
  EXPECT_EQ(Result(), WorkerExit::kShutdown);
}

}  // namespace
}  // namespace moesweep::worker
