// `moesweep-coordinator --metrics-listen` as a real process: a worker's calls over gRPC move the
// numbers at /metrics (read with httplib's client), every line is well formed, other paths are
// 404, and a metrics port that is taken stops the start with a clear error.
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "moesweep/v1/moesweep.grpc.pb.h"
#include "tests/e2e/process.h"
#include "tests/server/exposition_grammar.h"

namespace moesweep {
namespace {

using e2e::FreePort;
using e2e::Process;
using e2e::ReadFile;
using moesweep::testing::ExpositionProblems;
using moesweep::testing::SampleValue;

constexpr const char* kSpec = R"({
  "name": "metrics-process",
  "objective": {"metric": "val_accuracy", "goal": "maximize"},
  "seeds": [1],
  "base": {"epochs": 1},
  "stages": [{"name": "core", "grid": {"temperature": [0.5, 1.0]}}]
})";

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/moesweep_metrics_" + std::to_string(::getpid()) + "_" + name;
}

class MetricsProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    metrics_port_ = FreePort();
    db_ = TempPath("db_" + std::to_string(port_));
  }
  void TearDown() override {
    if (coordinator_) {
      coordinator_->Signal(SIGTERM);
      EXPECT_EQ(coordinator_->Wait(std::chrono::seconds(10)), 0) << ReadFile(coordinator_->log_path());
    }
    for (const char* suffix : {"", "-wal", "-shm", ".lock"}) std::remove((db_ + suffix).c_str());
  }

  std::vector<std::string> Argv() {
    return {MOESWEEP_COORDINATOR_BIN, "--listen", "127.0.0.1:" + std::to_string(port_), "--db", db_,
            "--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port_)};
  }

  void Start() {
    coordinator_ = std::make_unique<Process>(Argv(), TempPath("log_" + std::to_string(port_)));
    for (int i = 0; i < 500 && !Contains(ReadFile(coordinator_->log_path()), "serving on"); ++i) {
      ASSERT_TRUE(coordinator_->Running()) << ReadFile(coordinator_->log_path());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(Contains(ReadFile(coordinator_->log_path()), "serving on")) << ReadFile(coordinator_->log_path());
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials());
    sweeps_ = v1::SweepService::NewStub(channel);
    workers_ = v1::WorkerService::NewStub(channel);
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }

  std::string Scrape() {
    httplib::Client client("127.0.0.1", metrics_port_);
    auto r = client.Get("/metrics");
    EXPECT_TRUE(r) << httplib::to_string(r.error());
    if (!r) return "";
    EXPECT_EQ(r->status, 200);
    return r->body;
  }

  // Scrapes until `series` has `value`: a call is counted once its answer has gone out, which
  // may be just after the client has it. Returns the last scrape.
  std::string ScrapeUntil(const std::string& series, double value) {
    std::string text;
    for (int i = 0; i < 250; ++i) {
      text = Scrape();
      if (SampleValue(text, series) == value) return text;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << series << " never reached " << value << " in\n" << text;
    return text;
  }

  int port_ = 0;
  int metrics_port_ = 0;
  std::string db_;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<v1::SweepService::Stub> sweeps_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

TEST_F(MetricsProcessTest, AWorkersCallsMoveTheNumbers) {
  Start();
  EXPECT_TRUE(Contains(ReadFile(coordinator_->log_path()),
                       "metrics on http://127.0.0.1:" + std::to_string(metrics_port_) + "/metrics"));
  std::string text = Scrape();
  EXPECT_EQ(SampleValue(text, "moesweep_rpc_requests_total{method=\"SubmitSweep\",code=\"OK\"}"), 0);
  EXPECT_EQ(SampleValue(text, "moesweep_trials{state=\"pending\"}"), 0);
  EXPECT_GT(SampleValue(text, "process_start_time_seconds").value_or(0), 1.7e9);

  v1::SubmitSweepRequest submit;
  submit.set_spec_json(kSpec);
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(sweeps_->SubmitSweep(Context().get(), submit, &submitted).ok());
  v1::SubmitSweepRequest bad;
  bad.set_spec_json("{}");
  v1::SubmitSweepResponse refused;
  EXPECT_EQ(sweeps_->SubmitSweep(Context().get(), bad, &refused).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::AcquireTrialRequest acquire;
  acquire.set_worker("metrics-test");
  v1::AcquireTrialResponse lease;
  ASSERT_TRUE(workers_->AcquireTrial(Context().get(), acquire, &lease).ok());
  ASSERT_TRUE(lease.has_trial());
  text = ScrapeUntil("moesweep_rpc_requests_total{method=\"AcquireTrial\",code=\"OK\"}", 1);
  EXPECT_EQ(SampleValue(text, "moesweep_rpc_requests_total{method=\"SubmitSweep\",code=\"OK\"}"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_rpc_requests_total{method=\"SubmitSweep\",code=\"INVALID_ARGUMENT\"}"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_rpc_duration_seconds_count{method=\"SubmitSweep\"}"), 2);
  EXPECT_EQ(SampleValue(text, "moesweep_trials{state=\"pending\"}"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_trials{state=\"running\"}"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_sweeps{state=\"running\"}"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_leases_granted_total"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_queue_depth"), 1);

  v1::ReportProgressRequest report;
  report.set_lease_token(lease.lease_token());
  report.set_step(1);
  (*report.mutable_metrics())["val_accuracy"] = 0.5;
  v1::ReportProgressResponse directive;
  ASSERT_TRUE(workers_->ReportProgress(Context().get(), report, &directive).ok());
  v1::CompleteTrialRequest complete;
  complete.set_lease_token(lease.lease_token());
  complete.set_outcome(v1::CompleteTrialRequest::SUCCEEDED);
  (*complete.mutable_metrics())["val_accuracy"] = 0.6;
  v1::CompleteTrialResponse completed;
  ASSERT_TRUE(workers_->CompleteTrial(Context().get(), complete, &completed).ok());
  text = ScrapeUntil("moesweep_rpc_requests_total{method=\"CompleteTrial\",code=\"OK\"}", 1);
  EXPECT_EQ(SampleValue(text, "moesweep_rpc_requests_total{method=\"ReportProgress\",code=\"OK\"}"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_trials{state=\"succeeded\"}"), 1);
  EXPECT_EQ(SampleValue(text, "moesweep_trials{state=\"running\"}"), 0);
  EXPECT_GE(SampleValue(text, "moesweep_commit_duration_seconds_count").value_or(0), 4);
  EXPECT_GT(SampleValue(text, "moesweep_database_bytes").value_or(0), 0);

  std::vector<std::string> problems = ExpositionProblems(text);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems);

  httplib::Client client("127.0.0.1", metrics_port_);
  auto missing = client.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST_F(MetricsProcessTest, ATakenMetricsPortStopsTheStart) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(metrics_port_));
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  e2e::CommandResult r = e2e::Run(Argv(), std::chrono::seconds(20));
  close(fd);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "moesweep-coordinator: --metrics-listen: cannot listen for metrics on 127.0.0.1:" +
                                  std::to_string(metrics_port_)))
      << r.err;
  EXPECT_FALSE(Contains(r.err, "serving on")) << r.err;
}

TEST_F(MetricsProcessTest, AMalformedAddressIsAUsageError) {
  e2e::CommandResult r = e2e::Run({MOESWEEP_COORDINATOR_BIN, "--db", db_, "--metrics-listen", "9100"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "--metrics-listen: '9100' is not HOST:PORT")) << r.err;
}

TEST_F(MetricsProcessTest, OffByDefault) {
  coordinator_ = std::make_unique<Process>(
      std::vector<std::string>{MOESWEEP_COORDINATOR_BIN, "--listen", "127.0.0.1:" + std::to_string(port_), "--db", db_},
      TempPath("log_off_" + std::to_string(port_)));
  for (int i = 0; i < 500 && !Contains(ReadFile(coordinator_->log_path()), "serving on"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(Contains(ReadFile(coordinator_->log_path()), "metrics on"));
  httplib::Client client("127.0.0.1", metrics_port_);
  EXPECT_FALSE(client.Get("/metrics"));
}

}  // namespace
}  // namespace moesweep
