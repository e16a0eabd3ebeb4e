// The coordinator end to end over gRPC, in-process: a client submits and watches while fake
// workers pull, report and complete trials through the real services.
#include "server/service.h"
#include "tests/server/service_fixture.h"

#include <atomic>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/json.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "moesweep/v1/moesweep.grpc.pb.h"
#include "tests/server/coordinator_test_util.h"

namespace moesweep {
namespace {

constexpr const char* kSpec = R"({
  "name": "service-test",
  "objective": {"metric": "val_loss", "goal": "minimize"},
  "seeds": [1, 2],
  "base": {"epochs": 2},
  "stages": [
    {"name": "width", "grid": {"expert_hidden_dim": [16, 32, 64]}},
    {"name": "depth", "grid": {"expert_layers": [1, 2]}}
  ],
  "lease_seconds": 30
})";

class ServiceTest : public ServiceFixture {
 protected:
  // A fake worker: pulls until `stop`, reports each epoch, completes with a loss that favours
  // expert_hidden_dim 32 and expert_layers 2.
  void WorkerLoop(const std::string& name, std::atomic<bool>* stop) {
    while (!*stop) {
      grpc::ClientContext ctx;
      Deadline(&ctx, 5);
      v1::AcquireTrialRequest req;
      req.set_worker(name);
      req.set_wait_seconds(0.2);
      v1::AcquireTrialResponse trial;
      if (!workers_->AcquireTrial(&ctx, req, &trial).ok() || !trial.has_trial()) continue;
      Json config = Json::parse(trial.config_json());
      double loss = std::abs(config["expert_hidden_dim"].get<int>() - 32) / 32.0 +
                    (config.value("expert_layers", 2) == 2 ? 0.0 : 0.1) + 0.01 * config["seed"].get<int>();
      for (int epoch = 1; epoch <= 2; ++epoch) {
        grpc::ClientContext rctx;
        Deadline(&rctx);
        v1::ReportProgressRequest report;
        report.set_lease_token(trial.lease_token());
        report.set_step(epoch);
        (*report.mutable_metrics())["val_loss"] = loss + 1.0 / epoch;
        v1::ReportProgressResponse reply;
        ASSERT_TRUE(workers_->ReportProgress(&rctx, report, &reply).ok());
      }
      grpc::ClientContext cctx;
      Deadline(&cctx);
      v1::CompleteTrialRequest complete;
      complete.set_lease_token(trial.lease_token());
      complete.set_outcome(v1::CompleteTrialRequest::SUCCEEDED);
      (*complete.mutable_metrics())["val_loss"] = loss;
      auto* layer = complete.mutable_expert_stats()->add_layers();
      layer->add_usage(0.5);
      layer->add_usage(0.5);
      layer->set_load_cv(0.0);
      v1::CompleteTrialResponse done;
      ASSERT_TRUE(workers_->CompleteTrial(&cctx, complete, &done).ok());
    }
  }

};

TEST_F(ServiceTest, SubmitWatchAndBestEndToEnd) {
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::SubmitSweepRequest submit;
  submit.set_spec_json(kSpec);
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(sweeps_->SubmitSweep(&ctx, submit, &submitted).ok());
  EXPECT_EQ(submitted.trials_in_first_stage(), 6);

  // Watch from the start while two workers run the sweep.
  std::vector<v1::SweepEvent> events;
  grpc::Status watch_status;
  std::thread watcher([&] {
    grpc::ClientContext wctx;
    Deadline(&wctx, 60);
    v1::WatchSweepRequest req;
    req.set_sweep_id(submitted.sweep_id());
    auto reader = sweeps_->WatchSweep(&wctx, req);
    v1::SweepEvent e;
    while (reader->Read(&e)) events.push_back(e);
    watch_status = reader->Finish();
  });
  std::atomic<bool> stop{false};
  std::thread w1([&] { WorkerLoop("w1", &stop); });
  std::thread w2([&] { WorkerLoop("w2", &stop); });
  watcher.join();  // Ends with the sweep.
  stop = true;
  w1.join();
  w2.join();

  ASSERT_TRUE(watch_status.ok()) << watch_status.error_message();
  ASSERT_FALSE(events.empty());
  for (size_t i = 0; i < events.size(); ++i) ASSERT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
  EXPECT_EQ(events.front().type(), v1::SWEEP_SUBMITTED);
  EXPECT_EQ(events.back().type(), v1::SWEEP_FINISHED);
  EXPECT_EQ(events.back().sweep().state(), v1::SWEEP_SUCCEEDED);
  int progress = 0, finished = 0;
  for (const auto& e : events) {
    progress += e.type() == v1::TRIAL_PROGRESS;
    if (e.type() == v1::TRIAL_FINISHED) {
      ++finished;
      EXPECT_EQ(e.trial().expert_stats().layers(0).usage_size(), 2);
    }
  }
  EXPECT_EQ(progress, 16);  // Stage 2's expert_layers=2 trials reuse stage 1's winner: no reports.
  EXPECT_EQ(finished, 10);

  grpc::ClientContext bctx;
  Deadline(&bctx);
  v1::GetBestConfigRequest best_req;
  best_req.set_sweep_id(submitted.sweep_id());
  v1::GetBestConfigResponse best;
  ASSERT_TRUE(sweeps_->GetBestConfig(&bctx, best_req, &best).ok());
  EXPECT_EQ(best.best_config_json(), R"({"epochs":2,"expert_hidden_dim":32,"expert_layers":2})");
  ASSERT_EQ(best.stages_size(), 2);
  EXPECT_NEAR(best.stages(0).winner().mean(), 0.015 + 0.0, 1e-12);  // (0.01 + 0.02) / 2

  grpc::ClientContext tctx;
  Deadline(&tctx);
  v1::ListTrialsRequest trials_req;
  trials_req.set_sweep_id(submitted.sweep_id());
  trials_req.set_stage(2);
  trials_req.set_state(v1::TRIAL_SUCCEEDED);
  v1::ListTrialsResponse trials;
  ASSERT_TRUE(sweeps_->ListTrials(&tctx, trials_req, &trials).ok());
  EXPECT_EQ(trials.trials_size(), 4);
}

TEST_F(ServiceTest, ErrorsCrossTheWireAsStatusCodes) {
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::SubmitSweepRequest submit;
  submit.set_spec_json(R"({"name": "x", "objective": {"metric": "val_loss"}, "stages": [{"name": "a", "grid": {"temprature": [1]}}]})");
  v1::SubmitSweepResponse resp;
  grpc::Status s = sweeps_->SubmitSweep(&ctx, submit, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "stages[0].grid.temprature: unknown trial config key (did you mean \"temperature\"?)");

  grpc::ClientContext gctx;
  Deadline(&gctx);
  v1::GetSweepRequest get;
  get.set_sweep_id(42);
  v1::GetSweepResponse sweep;
  EXPECT_EQ(sweeps_->GetSweep(&gctx, get, &sweep).error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext rctx;
  Deadline(&rctx);
  v1::ReportProgressRequest report;
  report.set_lease_token("stale");
  v1::ReportProgressResponse reply;
  EXPECT_EQ(workers_->ReportProgress(&rctx, report, &reply).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext wctx;
  Deadline(&wctx);
  v1::WatchSweepRequest watch;
  watch.set_sweep_id(42);
  auto reader = sweeps_->WatchSweep(&wctx, watch);
  v1::SweepEvent e;
  EXPECT_FALSE(reader->Read(&e));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, LongPollEndsEmptyBeforeTheCallersDeadline) {
  grpc::ClientContext ctx;
  Deadline(&ctx, 1);
  v1::AcquireTrialRequest req;
  req.set_wait_seconds(30);  // Longer than the deadline: the coordinator answers first.
  v1::AcquireTrialResponse resp;
  grpc::Status s = workers_->AcquireTrial(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(resp.has_trial());
}

TEST_F(ServiceTest, HealthServiceSaysServing) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const char* service : {"", "moesweep.v1.SweepService", "moesweep.v1.WorkerService"}) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok()) << service;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  grpc::ClientContext ctx;
  Deadline(&ctx);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("moesweep.v1.NoSuchService");
  grpc::health::v1::HealthCheckResponse resp;
  EXPECT_EQ(health->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Leases the first trial of a freshly submitted sweep.
v1::AcquireTrialResponse SubmitAndAcquire(v1::SweepService::Stub* sweeps, v1::WorkerService::Stub* workers) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::SubmitSweepRequest submit;
  submit.set_spec_json(kSpec);
  v1::SubmitSweepResponse submitted;
  EXPECT_TRUE(sweeps->SubmitSweep(&ctx, submit, &submitted).ok());
  grpc::ClientContext actx;
  actx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::AcquireTrialRequest req;
  req.set_worker("stream-test");
  req.set_wait_seconds(2);
  v1::AcquireTrialResponse trial;
  EXPECT_TRUE(workers->AcquireTrial(&actx, req, &trial).ok());
  EXPECT_TRUE(trial.has_trial());
  return trial;
}

TEST_F(ServiceTest, ReportStreamAnswersEachReportAfterStoringItAndEndsOnAStaleLease) {
  v1::AcquireTrialResponse trial = SubmitAndAcquire(sweeps_.get(), workers_.get());
  grpc::ClientContext sctx;
  Deadline(&sctx);
  auto stream = workers_->ReportProgressStream(&sctx);
  for (int step = 1; step <= 3; ++step) {
    v1::ReportProgressRequest report;
    report.set_lease_token(trial.lease_token());
    report.set_step(step);
    (*report.mutable_metrics())["val_loss"] = 1.0 / step;
    ASSERT_TRUE(stream->Write(report));
    v1::ReportProgressResponse reply;
    ASSERT_TRUE(stream->Read(&reply)) << step;
    EXPECT_EQ(reply.directive(), v1::CONTINUE);
    EXPECT_EQ(reply.lease_seconds(), 30);

    // Answered means stored: the trial shows this report's metrics.
    grpc::ClientContext lctx;
    Deadline(&lctx);
    v1::ListTrialsRequest list;
    list.set_sweep_id(trial.sweep_id());
    v1::ListTrialsResponse trials;
    ASSERT_TRUE(sweeps_->ListTrials(&lctx, list, &trials).ok());
    bool found = false;
    for (const v1::Trial& t : trials.trials()) {
      if (t.trial_id() != trial.trial_id()) continue;
      found = true;
      EXPECT_DOUBLE_EQ(t.metrics().at("val_loss"), 1.0 / step);
    }
    EXPECT_TRUE(found);
  }
  v1::ReportProgressRequest stale;
  stale.set_lease_token("stale");
  ASSERT_TRUE(stream->Write(stale));
  v1::ReportProgressResponse reply;
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();

  // A new stream carries on with the live lease.
  grpc::ClientContext sctx2;
  Deadline(&sctx2);
  auto again = workers_->ReportProgressStream(&sctx2);
  v1::ReportProgressRequest report;
  report.set_lease_token(trial.lease_token());
  report.set_step(4);
  ASSERT_TRUE(again->Write(report));
  ASSERT_TRUE(again->Read(&reply));
  EXPECT_EQ(reply.directive(), v1::CONTINUE);
  again->WritesDone();
  EXPECT_TRUE(again->Finish().ok());
}

TEST_F(ServiceTest, ShutdownEndsAnOpenReportStreamWithoutWaitingForItsWorker) {
  v1::AcquireTrialResponse trial = SubmitAndAcquire(sweeps_.get(), workers_.get());
  grpc::ClientContext sctx;
  Deadline(&sctx);
  auto stream = workers_->ReportProgressStream(&sctx);
  v1::ReportProgressRequest report;
  report.set_lease_token(trial.lease_token());
  report.set_step(1);
  ASSERT_TRUE(stream->Write(report));
  v1::ReportProgressResponse reply;
  ASSERT_TRUE(stream->Read(&reply));

  auto start = std::chrono::steady_clock::now();
  server_->Shutdown();  // The stream stays open on the worker's side.
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.5);  // Not the 2 s grace the server gives calls in flight.
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_FALSE(stream->Finish().ok());
}

}  // namespace
}  // namespace moesweep
