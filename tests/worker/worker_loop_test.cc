#include "worker/agent/worker_loop.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "moesweep/v1/moesweep.grpc.pb.h"
#include "worker/builtin_runner.h"

namespace moesweep::worker {
namespace {

namespace pb = ::moesweep::v1;
using Clock = std::chrono::steady_clock;

// An in-memory coordinator: a queue of trial configs, a record of every call, and knobs for the
// directives and errors the worker must handle.
class FakeCoordinator final : public pb::WorkerService::Service {
 public:
  struct Report {
    std::string token;
    int64_t step;
    std::map<std::string, double> metrics;
    int expert_layers;
    Clock::time_point at;
  };
  struct Completion {
    std::string token;
    pb::CompleteTrialRequest::Outcome outcome;
    std::string error;
    std::map<std::string, double> metrics;
    int expert_layers;
  };

  void AddTrial(const std::string& config) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(config);
    cv_.notify_all();
  }

  // Knobs (set before the worker starts).
  double lease_seconds = 30;
  int stop_after_reports = -1;      // Answer STOP from this many reports of a lease on.
  std::string lost_lease;           // ReportProgress for this token -> FAILED_PRECONDITION.
  int unavailable_acquires = 0;     // The first N AcquireTrial calls fail with UNAVAILABLE.
  int unavailable_reports = 0;      // The first N ReportProgress calls fail with UNAVAILABLE.
  bool no_report_stream = false;    // Serve ReportProgressStream as an older coordinator would not.

  grpc::Status AcquireTrial(grpc::ServerContext* ctx, const pb::AcquireTrialRequest* req,
                            pb::AcquireTrialResponse* resp) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++acquires_;
    acquired_at_ = Clock::now();
    if (unavailable_acquires > 0) {
      --unavailable_acquires;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    }
    const auto deadline = Clock::now() + std::chrono::duration<double>(std::min(req->wait_seconds(), 0.2));
    cv_.wait_until(lock, deadline, [&] { return !queue_.empty(); });
    if (queue_.empty()) return grpc::Status::OK;
    const int64_t id = ++next_id_;
    resp->set_has_trial(true);
    resp->set_trial_id(id);
    resp->set_attempt(1);
    resp->set_lease_token("lease-" + std::to_string(id));
    resp->set_lease_seconds(lease_seconds);
    resp->set_config_json(queue_.front());
    queue_.pop_front();
    workers_.push_back(req->worker());
    return grpc::Status::OK;
  }

  grpc::Status ReportProgress(grpc::ServerContext*, const pb::ReportProgressRequest* req,
                              pb::ReportProgressResponse* resp) override {
    return HandleReport(*req, resp);
  }

  // The stream answers each report as the unary call would, and ends with the first error.
  grpc::Status ReportProgressStream(
      grpc::ServerContext*, grpc::ServerReaderWriter<pb::ReportProgressResponse, pb::ReportProgressRequest>* stream) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++streams_;
      if (no_report_stream) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method");
    }
    pb::ReportProgressRequest req;
    while (stream->Read(&req)) {
      pb::ReportProgressResponse resp;
      grpc::Status s = HandleReport(req, &resp);
      if (!s.ok()) return s;
      if (!stream->Write(resp)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status HandleReport(const pb::ReportProgressRequest& request, pb::ReportProgressResponse* resp) {
    const pb::ReportProgressRequest* req = &request;
    std::lock_guard<std::mutex> lock(mu_);
    reports_.push_back({req->lease_token(), req->step(), {req->metrics().begin(), req->metrics().end()},
                        req->expert_stats().layers_size(), Clock::now()});
    if (unavailable_reports > 0) {
      --unavailable_reports;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    }
    if (req->lease_token() == lost_lease) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "stale lease");
    int count = 0;
    for (const Report& r : reports_) count += r.token == req->lease_token();
    resp->set_directive(stop_after_reports >= 0 && count >= stop_after_reports ? pb::STOP : pb::CONTINUE);
    resp->set_lease_seconds(lease_seconds);
    cv_.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status CompleteTrial(grpc::ServerContext*, const pb::CompleteTrialRequest* req,
                             pb::CompleteTrialResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    completions_.push_back({req->lease_token(), req->outcome(), req->error(),
                            {req->metrics().begin(), req->metrics().end()}, req->expert_stats().layers_size()});
    resp->set_state(pb::TRIAL_SUCCEEDED);
    cv_.notify_all();
    return grpc::Status::OK;
  }

  // Waits until `pred` (called under the lock) holds; false on timeout.
  template <typename Pred>
  bool WaitFor(Pred pred, double seconds = 30) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return pred(); });
  }

  std::vector<Report> reports() {
    std::lock_guard<std::mutex> lock(mu_);
    return reports_;
  }
  std::vector<Completion> completions() {
    std::lock_guard<std::mutex> lock(mu_);
    return completions_;
  }
  int acquires() {
    std::lock_guard<std::mutex> lock(mu_);
    return acquires_;
  }
  int streams() {
    std::lock_guard<std::mutex> lock(mu_);
    return streams_;
  }
  std::vector<std::string> workers() {
    std::lock_guard<std::mutex> lock(mu_);
    return workers_;
  }
  size_t completed_unlocked() const { return completions_.size(); }
  size_t reports_unlocked() const { return reports_.size(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  int64_t next_id_ = 0;
  int acquires_ = 0;
  int streams_ = 0;  // ReportProgressStream calls opened.
  Clock::time_point acquired_at_;
  std::vector<std::string> workers_;
  std::vector<Report> reports_;
  std::vector<Completion> completions_;
};

// A worker (one slot) against a fake coordinator over an in-process channel.
class WorkerLoopTest : public ::testing::Test {
 protected:
  void Start() {
    grpc::ServerBuilder builder;
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    WorkerOptions o;
    o.name = "test";
    o.slots = 1;
    o.acquire_wait_seconds = 0.2;
    o.backoff_initial_seconds = 0.02;
    o.backoff_max_seconds = 0.1;
    o.verbose = false;
    o.runners = {&runner_};
    o.gpus = gpus_;
    loop_ = std::make_unique<WorkerLoop>(server_->InProcessChannel(grpc::ChannelArguments()), o);
    thread_ = std::thread([this] { loop_->Run(); });
  }

  // Shuts down and returns how long Run() took to return.
  double Stop() {
    const auto start = Clock::now();
    if (loop_) {
      loop_->Shutdown();
      thread_.join();
      loop_.reset();
    }
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

  void TearDown() override { Stop(); }

  FakeCoordinator fake_;
  std::vector<int> gpus_;  // The worker's --gpus.
  BuiltinRunner runner_{1, nullptr};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<WorkerLoop> loop_;
  std::thread thread_;
};

const char* kQuick = R"({"train_size": 256, "val_size": 64, "input_dim": 6, "num_classes": 3, "d_model": 16,
    "expert_hidden_dim": 16, "expert_layers": 1, "num_experts": 4, "epochs": 2, "batch_size": 64})";
const char* kLong = R"({"train_size": 256, "val_size": 64, "input_dim": 6, "num_classes": 3, "d_model": 16,
    "expert_hidden_dim": 16, "expert_layers": 1, "num_experts": 4, "epochs": 100000, "batch_size": 64})";

TEST_F(WorkerLoopTest, CompletesTrialWithEpochReportsAndFinalMetrics) {
  fake_.AddTrial(kQuick);
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 1; }));
  auto done = fake_.completions();
  EXPECT_EQ(done[0].token, "lease-1");
  EXPECT_EQ(done[0].outcome, pb::CompleteTrialRequest::SUCCEEDED);
  for (const char* key : {"val_accuracy", "val_top5_accuracy", "mAP", "rank1", "rank5", "params_total",
                          "params_active", "train_seconds", "best_epoch"}) {
    EXPECT_EQ(done[0].metrics.count(key), 1u) << key;
  }
  EXPECT_EQ(done[0].expert_layers, 1);
  auto reports = fake_.reports();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].step, 1);
  EXPECT_EQ(reports[1].step, 2);
  EXPECT_EQ(reports[1].metrics.at("epoch"), 2);
  // Retrieval every epoch too, so that a pruner can judge by seed 001's objective.
  EXPECT_GT(reports[0].metrics.at("mAP"), 0);
  EXPECT_EQ(reports[0].metrics.count("val_top5_accuracy"), 0u);
  EXPECT_EQ(reports[1].expert_layers, 1);
  EXPECT_EQ(fake_.workers()[0], "test/slot-0");
  EXPECT_EQ(fake_.streams(), 1);  // Both reports over one ReportProgressStream.
}

TEST_F(WorkerLoopTest, ACoordinatorWithoutTheReportStreamGetsUnaryReports) {
  fake_.no_report_stream = true;
  fake_.AddTrial(kQuick);
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 1; }));
  EXPECT_EQ(fake_.completions()[0].outcome, pb::CompleteTrialRequest::SUCCEEDED);
  auto reports = fake_.reports();
  ASSERT_EQ(reports.size(), 2u);  // Both epochs, through ReportProgress.
  EXPECT_EQ(reports[1].step, 2);
  EXPECT_EQ(fake_.streams(), 1);  // Tried once per lease.
}

TEST_F(WorkerLoopTest, AReportStreamEndedByAnErrorIsReopenedForTheNextReport) {
  fake_.unavailable_reports = 1;
  fake_.lease_seconds = 0.5;  // Retry the report 0.05 s after the failure.
  fake_.AddTrial(R"({"train_size": 128, "val_size": 32, "input_dim": 4, "num_classes": 3, "d_model": 8,
      "expert_hidden_dim": 8, "expert_layers": 1, "num_experts": 2, "epochs": 400, "batch_size": 128})");
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 1; }));
  EXPECT_EQ(fake_.completions()[0].outcome, pb::CompleteTrialRequest::SUCCEEDED);
  EXPECT_EQ(fake_.streams(), 2);
  auto reports = fake_.reports();
  ASSERT_GE(reports.size(), 3u);
  EXPECT_EQ(reports.back().step, 400);  // The last epoch's report went through the second stream.
}

TEST_F(WorkerLoopTest, StopDirectiveEndsTrialPromptly) {
  fake_.stop_after_reports = 2;
  fake_.AddTrial(kLong);
  fake_.AddTrial(kQuick);
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 2; }));
  auto done = fake_.completions();
  EXPECT_EQ(done[0].token, "lease-1");
  EXPECT_EQ(done[0].outcome, pb::CompleteTrialRequest::FAILED);
  EXPECT_NE(done[0].error.find("STOP"), std::string::npos) << done[0].error;
  int lease1_reports = 0;
  for (const auto& r : fake_.reports()) lease1_reports += r.token == "lease-1";
  EXPECT_EQ(lease1_reports, 2);  // nothing trained after the STOP reply
  // The next trial still runs (and is told to stop after its second report too).
  EXPECT_EQ(done[1].token, "lease-2");
}

TEST_F(WorkerLoopTest, FailuresAreReportedWithReasonAndWorkerGoesOn) {
  fake_.AddTrial(R"({"temprature": 0.5})");
  fake_.AddTrial(R"({"lr": 1e38, "grad_clip": 0, "train_size": 256, "val_size": 64, "epochs": 3})");
  fake_.AddTrial(R"({"dataset": "csv", "path": "/nonexistent/data.csv"})");
  fake_.AddTrial(kQuick);
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 4; }));
  auto done = fake_.completions();
  EXPECT_EQ(done[0].outcome, pb::CompleteTrialRequest::FAILED);
  EXPECT_NE(done[0].error.find("did you mean \"temperature\""), std::string::npos) << done[0].error;
  EXPECT_EQ(done[1].outcome, pb::CompleteTrialRequest::FAILED);
  EXPECT_NE(done[1].error.find("training loss is"), std::string::npos) << done[1].error;
  EXPECT_EQ(done[2].outcome, pb::CompleteTrialRequest::FAILED);
  EXPECT_NE(done[2].error.find("/nonexistent/data.csv"), std::string::npos) << done[2].error;
  EXPECT_EQ(done[3].outcome, pb::CompleteTrialRequest::SUCCEEDED);
}

TEST_F(WorkerLoopTest, CudaTrialOnAWorkerWhoseLibTorchHasNoGpuFailsClearly) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this LibTorch has a GPU";
  gpus_ = {0};  // Started with --gpus 0, so the coordinator would lease it cuda trials.
  fake_.AddTrial(R"({"device": "cuda", "train_size": 256, "val_size": 64, "epochs": 1})");
  fake_.AddTrial(R"({"device": "auto", "train_size": 256, "val_size": 64, "epochs": 1})");
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 2; }));
  auto done = fake_.completions();
  EXPECT_EQ(done[0].outcome, pb::CompleteTrialRequest::FAILED);
  EXPECT_NE(done[0].error.find("config.device: \"cuda\" needs a GPU, but this worker's LibTorch sees no CUDA device"),
            std::string::npos)
      << done[0].error;
  // "auto" falls back to the CPU, and its metrics say so.
  EXPECT_EQ(done[1].outcome, pb::CompleteTrialRequest::SUCCEEDED);
  EXPECT_EQ(done[1].metrics.at("device_cuda"), 0);
}

TEST_F(WorkerLoopTest, HeartbeatsRenewTheLeaseDuringLongEpochs) {
  fake_.lease_seconds = 0.6;
  // One epoch of 4000 batches of 4 takes well over a lease.
  fake_.AddTrial(R"({"train_size": 16000, "val_size": 64, "input_dim": 6, "num_classes": 3, "d_model": 16,
      "expert_hidden_dim": 16, "expert_layers": 1, "num_experts": 4, "epochs": 1, "batch_size": 4})");
  Start();
  const auto start = Clock::now();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 1; }, 60));
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  auto reports = fake_.reports();
  ASSERT_GE(elapsed, 1.2) << "the epoch was too short to need heartbeats";
  int heartbeats = 0;
  for (const auto& r : reports) heartbeats += r.step == 0;
  EXPECT_GE(heartbeats, 2);
  // No gap between lease renewals (start, reports) came near the lease length.
  auto last = start;
  for (const auto& r : reports) {
    EXPECT_LT(std::chrono::duration<double>(r.at - last).count(), fake_.lease_seconds);
    last = r.at;
  }
  EXPECT_EQ(fake_.completions()[0].outcome, pb::CompleteTrialRequest::SUCCEEDED);
}

TEST_F(WorkerLoopTest, ShutdownReleasesRunningTrial) {
  fake_.AddTrial(kLong);
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.reports_unlocked() >= 1; }));
  const double took = Stop();
  EXPECT_LT(took, 5.0);
  auto done = fake_.completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].outcome, pb::CompleteTrialRequest::RELEASED);
}

TEST_F(WorkerLoopTest, ShutdownWhileIdleReturnsQuickly) {
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return true; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LT(Stop(), 2.0);
  EXPECT_TRUE(fake_.completions().empty());
}

TEST_F(WorkerLoopTest, LostLeaseIsAbandonedSilently) {
  fake_.lost_lease = "lease-1";
  fake_.AddTrial(kLong);
  fake_.AddTrial(R"({"train_size": 128, "val_size": 64, "epochs": 1, "d_model": 8, "expert_hidden_dim": 8})");
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 1; }));
  auto done = fake_.completions();
  EXPECT_EQ(done[0].token, "lease-2");  // lease-1 was dropped without CompleteTrial
  EXPECT_EQ(done[0].outcome, pb::CompleteTrialRequest::SUCCEEDED);
  int lease1_reports = 0;
  for (const auto& r : fake_.reports()) lease1_reports += r.token == "lease-1";
  EXPECT_EQ(lease1_reports, 1);
}

TEST_F(WorkerLoopTest, RetriesWhileCoordinatorIsUnavailable) {
  fake_.unavailable_acquires = 4;
  fake_.AddTrial(kQuick);
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 1; }));
  EXPECT_GE(fake_.acquires(), 5);
  EXPECT_EQ(fake_.completions()[0].outcome, pb::CompleteTrialRequest::SUCCEEDED);
}

TEST_F(WorkerLoopTest, UnreachableCoordinatorDuringTrainingIsRetriedNotHammered) {
  fake_.unavailable_reports = 1000000;  // every report fails
  fake_.AddTrial(R"({"train_size": 128, "val_size": 32, "input_dim": 4, "num_classes": 3, "d_model": 8,
      "expert_hidden_dim": 8, "expert_layers": 1, "num_experts": 2, "epochs": 60, "batch_size": 128})");
  Start();
  ASSERT_TRUE(fake_.WaitFor([&] { return fake_.completed_unlocked() >= 1; }));
  // Training went on to the end; after the first failure the 60 short epochs did not each try.
  EXPECT_EQ(fake_.completions()[0].outcome, pb::CompleteTrialRequest::SUCCEEDED);
  EXPECT_EQ(fake_.completions()[0].metrics.at("epoch"), 60);
  EXPECT_LT(fake_.reports().size(), 10u);
}

}  // namespace
}  // namespace moesweep::worker
