// Requests and situations written to hurt the coordinator: each must end in an error value or a
// bounded cost, never a crash, a hang or unbounded memory.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <thread>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/json.h"
#include "common/limits.h"
#include "moesweep/v1/moesweep.grpc.pb.h"
#include "server/service.h"
#include "tests/server/service_fixture.h"
#include "server/stage_planner.h"
#include "server/sweep_store.h"
#include "tests/server/coordinator_test_util.h"

namespace moesweep {
namespace {

constexpr const char* kSpec = R"({
  "name": "hostile",
  "objective": {"metric": "val_loss", "goal": "minimize"},
  "seeds": [1, 2],
  "stages": [{"name": "width", "grid": {"expert_hidden_dim": [16, 32, 64]}}]
})";

constexpr double kInf = std::numeric_limits<double>::infinity();

class HostileServiceTest : public ServiceFixture {
 protected:
  grpc::Status Submit(const std::string& spec, v1::SubmitSweepResponse* out) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    v1::SubmitSweepRequest req;
    req.set_spec_json(spec);
    return sweeps_->SubmitSweep(&ctx, req, out);
  }
  v1::AcquireTrialResponse Acquire() {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    v1::AcquireTrialRequest req;
    req.set_worker("w");
    v1::AcquireTrialResponse out;
    EXPECT_TRUE(workers_->AcquireTrial(&ctx, req, &out).ok());
    return out;
  }
};

TEST_F(HostileServiceTest, SpecWithThousandsOfErrorsGetsACappedInvalidArgument) {
  // 900 unknown keys made ~30 KB of error text: RESOURCE_EXHAUSTED "metadata size exceeds limit".
  Json spec = Json::parse(kSpec);
  for (int i = 0; i < 900; ++i) spec["base"]["unknown_key_number_" + std::to_string(i)] = i;
  v1::SubmitSweepResponse out;
  grpc::Status s = Submit(spec.dump(), &out);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message().substr(0, 200);
  EXPECT_LE(s.error_message().size(), kMaxErrorTextBytes);
  EXPECT_EQ(s.error_message().find("base.unknown_key_number_0: unknown trial config key"), 0u);
  EXPECT_NE(s.error_message().find("more"), std::string::npos);
}

TEST_F(HostileServiceTest, SpecThatIsNotUtf8GetsInvalidArgumentWithItsOffset) {
  // Sent as raw bytes: a generated stub would refuse to serialize it.
  std::string spec = std::string(kSpec).replace(12, 1, "\xff");
  std::string bytes = "\x0a";  // Field 1, length-delimited; then the length as a varint.
  for (size_t n = spec.size(); ; n >>= 7) {
    bytes += static_cast<char>((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    if (n <= 0x7f) break;
  }
  bytes += spec;
  grpc::Slice slice(bytes);
  grpc::ByteBuffer send(&slice, 1), reply;
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  Deadline(&ctx);
  auto call = stub.PrepareUnaryCall(&ctx, "/moesweep.v1.SweepService/SubmitSweep", send, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&reply, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "spec_json: invalid UTF-8 at byte offset 12");
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  // A good spec still goes through the raw path.
  v1::SubmitSweepResponse out;
  ASSERT_TRUE(Submit(kSpec, &out).ok());
  EXPECT_EQ(out.trials_in_first_stage(), 6);
}

TEST_F(HostileServiceTest, OversizedRequestsAreRefusedAtTheEdgeNamingTheLimit) {
  v1::SubmitSweepResponse out;
  grpc::Status s = Submit(std::string(kMaxSpecBytes + 1, '['), &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "spec_json: 1048577 bytes is more than the limit of 1048576");

  ASSERT_TRUE(Submit(kSpec, &out).ok());
  v1::AcquireTrialResponse trial = Acquire();
  ASSERT_TRUE(trial.has_trial());
  auto start = std::chrono::steady_clock::now();
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::ReportProgressRequest report;
  report.set_lease_token(trial.lease_token());
  for (int i = 0; i < 100000; ++i) (*report.mutable_metrics())["m" + std::to_string(i)] = i;
  v1::ReportProgressResponse reply;
  s = workers_->ReportProgress(&ctx, report, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "metrics: 100000 entries is more than the limit of 256");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));

  grpc::ClientContext ctx2;
  Deadline(&ctx2);
  v1::CompleteTrialRequest complete;
  complete.set_lease_token(trial.lease_token());
  complete.set_outcome(v1::CompleteTrialRequest::SUCCEEDED);
  complete.mutable_expert_stats()->add_layers()->mutable_usage()->Resize(kMaxExpertsPerLayer + 1, 0.0);
  v1::CompleteTrialResponse done;
  s = workers_->CompleteTrial(&ctx2, complete, &done);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "expert_stats.layers[0]: 1025 experts is more than the limit of 1024");
}

TEST_F(HostileServiceTest, ListingsArePagedAndLeaveOutSpecs) {
  v1::SubmitSweepResponse out;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Submit(kSpec, &out).ok());
  std::vector<int64_t> ids;
  std::string token;
  do {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    v1::ListSweepsRequest req;
    req.set_limit(2);
    req.set_page_token(token);
    v1::ListSweepsResponse resp;
    ASSERT_TRUE(sweeps_->ListSweeps(&ctx, req, &resp).ok());
    for (const v1::Sweep& sweep : resp.sweeps()) {
      ids.push_back(sweep.sweep_id());
      EXPECT_TRUE(sweep.spec_json().empty());
      EXPECT_EQ(sweep.objective_metric(), "val_loss");
    }
    token = resp.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(ids, (std::vector<int64_t>{3, 2, 1}));

  std::vector<int64_t> trials;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    v1::ListTrialsRequest req;
    req.set_sweep_id(1);
    req.set_limit(4);
    req.set_page_token(token);
    v1::ListTrialsResponse resp;
    ASSERT_TRUE(sweeps_->ListTrials(&ctx, req, &resp).ok());
    for (const v1::Trial& t : resp.trials()) trials.push_back(t.trial_id());
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, 2);
  EXPECT_EQ(trials, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  // Old clients (no limit) get everything that fits in a page: here, all.
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::ListTrialsRequest req;
  req.set_sweep_id(1);
  v1::ListTrialsResponse resp;
  ASSERT_TRUE(sweeps_->ListTrials(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.trials_size(), 6);
  EXPECT_TRUE(resp.next_page_token().empty());
}

TEST_F(HostileServiceTest, StalledWatcherHoldsABoundedBacklog) {
  v1::SubmitSweepResponse out;
  ASSERT_TRUE(Submit(kSpec, &out).ok());
  v1::AcquireTrialResponse trial = Acquire();
  // A watcher that never reads.
  grpc::ClientContext wctx;
  Deadline(&wctx, 60);
  v1::WatchSweepRequest wreq;
  wreq.set_sweep_id(out.sweep_id());
  auto reader = sweeps_->WatchSweep(&wctx, wreq);
  // 1,000 reports of 256 long metric names: about 30 MB of events.
  v1::ReportProgressRequest report;
  report.set_lease_token(trial.lease_token());
  for (int i = 0; i < 256; ++i) (*report.mutable_metrics())[std::string(100, 'a') + std::to_string(i)] = i;
  size_t event_bytes = 0;
  for (int step = 1; step <= 1000; ++step) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    report.set_step(step);
    v1::ReportProgressResponse reply;
    ASSERT_TRUE(workers_->ReportProgress(&ctx, report, &reply).ok());
    event_bytes = std::max(event_bytes, report.ByteSizeLong());
  }
  coordinator_->Sync();
  EXPECT_GT(event_bytes * 1000, size_t{20} << 20);
  EXPECT_LE(server_->queued_watch_bytes(), (size_t{4} << 20) + 2 * event_bytes);
  wctx.TryCancel();
}

TEST(HostileCoordinatorTest, LiveEventsAfterAFarAfterSeqAreNotSent) {
  TempDb db("after_seq");
  FakeClock clock;
  std::unique_ptr<Coordinator> c;
  ASSERT_TRUE(Coordinator::Open(db.path(), {}, &clock, &c).ok());
  v1::SubmitSweepRequest submit;
  submit.set_spec_json(kSpec);
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(CallSync(c.get(), &Coordinator::SubmitSweep, submit, &submitted).ok());
  auto sink = std::make_shared<RecordingSink>(c.get(), submitted.sweep_id());
  c->Watch(submitted.sweep_id(), 1000000000000, false, sink);
  c->Sync();
  ASSERT_TRUE(sink->live());
  std::promise<Status> done;
  v1::AcquireTrialRequest req;
  v1::AcquireTrialResponse resp;
  c->AcquireTrial(req, &resp, std::chrono::seconds(0), nullptr, [&done](const Status& s) { done.set_value(s); });
  ASSERT_TRUE(done.get_future().get().ok());
  ASSERT_TRUE(resp.has_trial());
  c->Sync();
  EXPECT_TRUE(sink->events().empty());
}

TEST(HostileCoordinatorTest, NonFiniteMetricsComeBackAsReported) {
  TempDb db("non_finite");
  FakeClock clock;
  std::unique_ptr<Coordinator> c;
  ASSERT_TRUE(Coordinator::Open(db.path(), {}, &clock, &c).ok());
  v1::SubmitSweepRequest submit;
  submit.set_spec_json(kSpec);
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(CallSync(c.get(), &Coordinator::SubmitSweep, submit, &submitted).ok());
  std::promise<Status> done;
  v1::AcquireTrialRequest req;
  v1::AcquireTrialResponse trial;
  c->AcquireTrial(req, &trial, std::chrono::seconds(0), nullptr, [&done](const Status& s) { done.set_value(s); });
  ASSERT_TRUE(done.get_future().get().ok());
  v1::CompleteTrialRequest complete;
  complete.set_lease_token(trial.lease_token());
  complete.set_outcome(v1::CompleteTrialRequest::SUCCEEDED);
  (*complete.mutable_metrics())["val_loss"] = kInf;
  (*complete.mutable_metrics())["train_loss"] = -kInf;
  (*complete.mutable_metrics())["lr"] = std::nan("");
  v1::CompleteTrialResponse completed;
  ASSERT_TRUE(CallSync(c.get(), &Coordinator::CompleteTrial, complete, &completed).ok());
  v1::ListTrialsRequest list;
  list.set_sweep_id(submitted.sweep_id());
  v1::ListTrialsResponse trials;
  ASSERT_TRUE(CallSync(c.get(), &Coordinator::ListTrials, list, &trials).ok());
  const auto& m = trials.trials(0).metrics();
  EXPECT_EQ(m.at("val_loss"), kInf);
  EXPECT_EQ(m.at("train_loss"), -kInf);
  EXPECT_TRUE(std::isnan(m.at("lr")));
}

TEST(HostileCoordinatorTest, AHugeMetricsMapIsStoredInLinearishTime) {
  std::map<std::string, double> metrics;
  for (int i = 0; i < 100000; ++i) metrics["metric_" + std::to_string(i)] = i;
  auto start = std::chrono::steady_clock::now();
  std::string json = MetricsToJson(metrics);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_GT(json.size(), 1000000u);
}

TEST(HostileCoordinatorTest, OverflowingMeanCannotWin) {
  // Two seeds at 1e308 sum to inf: that point used to win a maximize stage.
  std::vector<TrialOutcome> outcomes = {
      {1, 0, 1, v1::TRIAL_SUCCEEDED, 1e308, "", "{\"a\":1}"},
      {2, 0, 2, v1::TRIAL_SUCCEEDED, 1e308, "", "{\"a\":1}"},
      {3, 1, 1, v1::TRIAL_SUCCEEDED, 0.5, "", "{\"a\":2}"},
      {4, 1, 2, v1::TRIAL_SUCCEEDED, 0.7, "", "{\"a\":2}"},
  };
  StageDecision d = DecideStage(outcomes, /*maximize=*/true, "val_accuracy", "stage 1");
  ASSERT_EQ(d.points.size(), 2u);
  EXPECT_TRUE(d.points[0].not_finite());
  EXPECT_FALSE(d.points[1].not_finite());
  EXPECT_EQ(d.winner, 1);
  outcomes.resize(2);
  d = DecideStage(outcomes, true, "val_accuracy", "stage 1");
  EXPECT_EQ(d.winner, -1);
  EXPECT_NE(d.failure.find("no grid point has a finite score"), std::string::npos) << d.failure;
}

TEST(HostileCoordinatorTest, MaximalReportMakesAnEventUnderFourMiB) {
  v1::SweepEvent event;
  v1::Trial* t = event.mutable_trial();
  t->set_point_json(std::string(kMaxStageGridBytes / 2, 'p'));
  t->set_error(std::string(kMaxTrialErrorBytes, 'e'));
  t->set_worker(std::string(kMaxStringBytes, 'w'));
  for (size_t i = 0; i < kMaxMetricsPerReport; ++i) {
    (*t->mutable_metrics())[std::string(kMaxMetricNameBytes - 4, 'm') + std::to_string(i)] = 1.0 / 3;
  }
  for (size_t l = 0; l < kMaxLayersPerReport; ++l) {
    v1::ExpertLayerStats* layer = t->mutable_expert_stats()->add_layers();
    layer->mutable_usage()->Resize(kMaxExpertsPerLayer, 1.0 / 3);
    layer->mutable_importance()->Resize(kMaxExpertsPerLayer, 1.0 / 3);
  }
  EXPECT_LT(event.ByteSizeLong(), size_t{4} << 20);
}

TEST(HostileCoordinatorTest, SecondCoordinatorOnTheSameDatabaseIsRefused) {
  TempDb db("two_coordinators");
  FakeClock clock;
  std::unique_ptr<Coordinator> first, second;
  ASSERT_TRUE(Coordinator::Open(db.path(), {}, &clock, &first).ok());
  Status s = Coordinator::Open(db.path(), {}, &clock, &second);
  ASSERT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find(db.path() + " is in use by another coordinator (pid " + std::to_string(::getpid())),
            std::string::npos)
      << s.message();
  first.reset();
  EXPECT_TRUE(Coordinator::Open(db.path(), {}, &clock, &second).ok());  // Released with the first.
}

TEST(HostileCoordinatorTest, CorruptDatabaseIsRefusedAtStart) {
  TempDb db("corrupt");
  FakeClock clock;
  {
    std::unique_ptr<Coordinator> c;
    ASSERT_TRUE(Coordinator::Open(db.path(), {}, &clock, &c).ok());
    for (int i = 0; i < 20; ++i) {
      v1::SubmitSweepRequest submit;
      submit.set_spec_json(kSpec);
      v1::SubmitSweepResponse out;
      ASSERT_TRUE(CallSync(c.get(), &Coordinator::SubmitSweep, submit, &out).ok());
    }
  }
  {
    // Every page but the first (the header and schema) becomes junk.
    size_t size = std::filesystem::file_size(db.path());
    ASSERT_GT(size, 4096u);
    std::fstream f(db.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    std::string junk(size - 4096, '\xA5');
    f.write(junk.data(), junk.size());
  }
  std::unique_ptr<Coordinator> c;
  Status s = Coordinator::Open(db.path(), {}, &clock, &c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(db.path()), std::string::npos) << s.message();
}

TEST(HostileCoordinatorTest, ReadOnlyDatabaseIsRefusedAtStart) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes read-only files";
  TempDb db("read_only");
  FakeClock clock;
  {
    std::unique_ptr<Coordinator> c;
    ASSERT_TRUE(Coordinator::Open(db.path(), {}, &clock, &c).ok());
  }
  std::filesystem::permissions(db.path(), std::filesystem::perms::owner_read);
  std::unique_ptr<Coordinator> c;
  Status s = Coordinator::Open(db.path(), {}, &clock, &c);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("read-only"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace moesweep
