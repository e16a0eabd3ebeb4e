// The metric registry's text exposition, the /metrics HTTP server, and the coordinator's own
// metrics as a Coordinator (in-process, fake clock) changes state.
#include <httplib.h>

#include <gtest/gtest.h>

#include <cmath>
#include <future>
#include <limits>

#include "server/coordinator.h"
#include "server/coordinator_metrics.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "tests/server/coordinator_test_util.h"
#include "tests/server/exposition_grammar.h"

namespace moesweep {
namespace {

using moesweep::testing::ExpositionProblems;
using moesweep::testing::SampleValue;

TEST(MetricRegistryTest, CountersAndGaugesWithHelpTypeAndLabels) {
  MetricRegistry r;
  Counter* ok = r.AddCounter("rpc_total", "Calls answered.", {{"method", "Get"}, {"code", "OK"}});
  Counter* bad = r.AddCounter("rpc_total", "Calls answered.", {{"method", "Get"}, {"code", "NOT_FOUND"}});
  Gauge* depth = r.AddGauge("queue_depth", "Pending.");
  ok->Increment();
  ok->Increment(2);
  bad->Increment();
  depth->Set(2.5);
  EXPECT_EQ(r.Exposition(),
            "# HELP rpc_total Calls answered.\n"
            "# TYPE rpc_total counter\n"
            "rpc_total{method=\"Get\",code=\"OK\"} 3\n"
            "rpc_total{method=\"Get\",code=\"NOT_FOUND\"} 1\n"
            "# HELP queue_depth Pending.\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth 2.5\n");
}

TEST(MetricRegistryTest, AskingAgainReturnsTheSameSeries) {
  MetricRegistry r;
  Counter* a = r.AddCounter("c_total", "C.", {{"x", "1"}});
  EXPECT_EQ(r.AddCounter("c_total", "C.", {{"x", "1"}}), a);
  EXPECT_NE(r.AddCounter("c_total", "C.", {{"x", "2"}}), a);
  Histogram* h = r.AddHistogram("h_seconds", "H.", {1, 2});
  EXPECT_EQ(r.AddHistogram("h_seconds", "H.", {1, 2}), h);
}

TEST(MetricRegistryTest, HistogramBucketsAreCumulativeWithSumCountAndInf) {
  MetricRegistry r;
  Histogram* h = r.AddHistogram("latency_seconds", "Latency.", {0.001, 0.01, 0.1}, {{"method", "Acquire"}});
  for (double v : {0.0005, 0.001, 0.005, 0.05, 0.05, 3.0}) h->Observe(v);
  EXPECT_EQ(r.Exposition(),
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{method=\"Acquire\",le=\"0.001\"} 2\n"  // le: a bound counts as in.
            "latency_seconds_bucket{method=\"Acquire\",le=\"0.01\"} 3\n"
            "latency_seconds_bucket{method=\"Acquire\",le=\"0.1\"} 5\n"
            "latency_seconds_bucket{method=\"Acquire\",le=\"+Inf\"} 6\n"
            "latency_seconds_sum{method=\"Acquire\"} 3.1065\n"
            "latency_seconds_count{method=\"Acquire\"} 6\n");
  EXPECT_TRUE(ExpositionProblems(r.Exposition()).empty());
}

TEST(MetricRegistryTest, EmptyHistogramWithoutLabelsHasZeroes) {
  MetricRegistry r;
  r.AddHistogram("batch_commands", "Per batch.", {1, 2, 4});
  EXPECT_EQ(r.Exposition(),
            "# HELP batch_commands Per batch.\n"
            "# TYPE batch_commands histogram\n"
            "batch_commands_bucket{le=\"1\"} 0\n"
            "batch_commands_bucket{le=\"2\"} 0\n"
            "batch_commands_bucket{le=\"4\"} 0\n"
            "batch_commands_bucket{le=\"+Inf\"} 0\n"
            "batch_commands_sum 0\n"
            "batch_commands_count 0\n");
}

TEST(MetricRegistryTest, NanObservationsCountOnlyInInf) {
  MetricRegistry r;
  Histogram* h = r.AddHistogram("h", "H.", {1});
  h->Observe(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(h->CumulativeCounts(), (std::vector<uint64_t>{0, 1}));
}

TEST(MetricRegistryTest, LabelValuesAndHelpAreEscaped) {
  MetricRegistry r;
  r.AddGauge("g", "Line one\nback\\slash \"quoted\"", {{"path", "C:\\dir\n\"x\""}})->Set(1);
  std::string text = r.Exposition();
  EXPECT_EQ(text,
            "# HELP g Line one\\nback\\\\slash \"quoted\"\n"
            "# TYPE g gauge\n"
            "g{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n");
  EXPECT_TRUE(ExpositionProblems(text).empty()) << text;
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(MetricRegistryTest, ValuesUseTheShortestFormAndSpellInfinitiesAsPrometheusDoes) {
  EXPECT_EQ(FormatMetricValue(3), "3");
  EXPECT_EQ(FormatMetricValue(0.25), "0.25");
  EXPECT_EQ(FormatMetricValue(1.7e9), "1700000000");
  EXPECT_EQ(FormatMetricValue(1e-05), "1e-05");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(MetricRegistryDeathTest, BadNamesAreProgrammingErrors) {
  MetricRegistry r;
  EXPECT_DEATH(r.AddCounter("bad-name", "x"), "bad metric name");
  EXPECT_DEATH(r.AddCounter("ok", "x", {{"9lives", "v"}}), "bad label name");
  EXPECT_DEATH(r.AddHistogram("h", "x", {1}, {{"le", "1"}}), "label 'le'");
  r.AddGauge("taken", "x");
  EXPECT_DEATH(r.AddCounter("taken", "x"), "is a gauge");
}

TEST(ExpositionGrammarTest, CatchesMalformedLines) {
  EXPECT_FALSE(ExpositionProblems("# TYPE a counter\na 1\n").size());
  EXPECT_EQ(ExpositionProblems("a 1\n").size(), 1u);                          // No TYPE.
  EXPECT_EQ(ExpositionProblems("# TYPE a gauge\na{x=\"\n\"} 1\n").size(), 2u);  // Raw newline.
  EXPECT_EQ(ExpositionProblems("# TYPE a gauge\na one\n").size(), 1u);
  EXPECT_EQ(ExpositionProblems("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n").size(),
            1u);
}

// ---------------------------------------------------------------------------------------------
// The HTTP server

TEST(SplitHostPortTest, AcceptsHostPortAndBracketedIpv6) {
  std::string host;
  int port = -1;
  EXPECT_TRUE(SplitHostPort("127.0.0.1:9100", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9100);
  EXPECT_TRUE(SplitHostPort("[::1]:0", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  for (const char* bad : {"9100", ":9100", "host:", "host:x", "host:70000", "::1:9100", "[::1:9100"}) {
    EXPECT_FALSE(SplitHostPort(bad, &host, &port)) << bad;
  }
}

TEST(MetricsHttpServerTest, ServesMetricsAndNothingElse) {
  std::unique_ptr<MetricsHttpServer> server;
  Status s = MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string("# TYPE up gauge\nup 1\n"); }, &server);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_GT(server->port(), 0);
  httplib::Client client("127.0.0.1", server->port());
  auto r = client.Get("/metrics");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "# TYPE up gauge\nup 1\n");
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  auto missing = client.Get("/");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto other = client.Get("/metrics/extra");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  auto post = client.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  server->Stop();
  server->Stop();  // Idempotent.
  EXPECT_FALSE(client.Get("/metrics"));
}

TEST(MetricsHttpServerTest, ATakenPortIsAClearError) {
  std::unique_ptr<MetricsHttpServer> first;
  ASSERT_TRUE(MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string(); }, &first).ok());
  std::string address = "127.0.0.1:" + std::to_string(first->port());
  std::unique_ptr<MetricsHttpServer> second;
  Status s = MetricsHttpServer::Start(address, [] { return std::string(); }, &second);
  EXPECT_EQ(s.code(), Status::Code::kUnavailable);
  EXPECT_EQ(s.message(), "cannot listen for metrics on " + address + " (address in use or invalid?)");
  EXPECT_EQ(MetricsHttpServer::Start("nonsense", [] { return std::string(); }, &second).code(),
            Status::Code::kInvalidArgument);
}

TEST(MetricsHttpServerTest, StopRightAfterStartReturns) {
  for (int i = 0; i < 20; ++i) {
    std::unique_ptr<MetricsHttpServer> server;
    ASSERT_TRUE(MetricsHttpServer::Start("127.0.0.1:0", [] { return std::string(); }, &server).ok());
  }  // Each destructor stops and joins.
}

// ---------------------------------------------------------------------------------------------
// The coordinator's metrics

constexpr const char* kSpec = R"({
  "name": "metrics",
  "objective": {"metric": "val_accuracy", "goal": "maximize"},
  "seeds": [1, 2],
  "base": {"epochs": 3},
  "stages": [{"name": "core", "grid": {"temperature": [0.5, 1.0, 1.5]}}],
  "max_attempts": 2,
  "lease_seconds": 10
})";

class CoordinatorMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    registry_ = std::make_unique<MetricRegistry>();
    metrics_ = std::make_unique<CoordinatorMetrics>(registry_.get(), db_.path());
    CoordinatorOptions options;
    options.metrics = metrics_.get();
    Status s = Coordinator::Open(db_.path(), options, &clock_, &coordinator_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // The value of `series` after everything queued so far has run.
  double Value(const std::string& series) {
    coordinator_->Sync();
    std::string text = metrics_->Scrape();
    std::optional<double> v = SampleValue(text, series);
    EXPECT_TRUE(v.has_value()) << series << " missing from\n" << text;
    return v.value_or(std::nan(""));
  }

  v1::AcquireTrialResponse Acquire() {
    v1::AcquireTrialRequest req;
    req.set_worker("w1");
    v1::AcquireTrialResponse resp;
    std::promise<Status> done;
    coordinator_->AcquireTrial(req, &resp, std::chrono::seconds(0), nullptr,
                               [&done](const Status& s) { done.set_value(s); });
    EXPECT_TRUE(done.get_future().get().ok());
    return resp;
  }

  TempDb db_{"metrics_test"};
  FakeClock clock_;
  std::unique_ptr<MetricRegistry> registry_;  // Declared before the coordinator: outlives it.
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorMetricsTest, TrialsSweepsAndLeasesFollowTheEngine) {
  EXPECT_EQ(Value("moesweep_trials{state=\"pending\"}"), 0);
  v1::SubmitSweepRequest submit;
  submit.set_spec_json(kSpec);
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::SubmitSweep, submit, &submitted).ok());
  EXPECT_EQ(Value("moesweep_trials{state=\"pending\"}"), 6);
  EXPECT_EQ(Value("moesweep_sweeps{state=\"running\"}"), 1);
  EXPECT_EQ(Value("moesweep_queue_depth"), 6);

  v1::AcquireTrialResponse a = Acquire(), b = Acquire();
  ASSERT_TRUE(a.has_trial() && b.has_trial());
  EXPECT_EQ(Value("moesweep_trials{state=\"running\"}"), 2);
  EXPECT_EQ(Value("moesweep_leases_granted_total"), 2);
  EXPECT_EQ(Value("moesweep_queue_depth"), 4);

  v1::CompleteTrialRequest complete;
  complete.set_lease_token(a.lease_token());
  complete.set_outcome(v1::CompleteTrialRequest::SUCCEEDED);
  (*complete.mutable_metrics())["val_accuracy"] = 0.5;
  v1::CompleteTrialResponse completed;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::CompleteTrial, complete, &completed).ok());
  clock_.Advance(10.5);  // b's lease expires; with max_attempts 2 it is queued again.
  EXPECT_EQ(Value("moesweep_leases_expired_total"), 1);
  EXPECT_EQ(Value("moesweep_trials{state=\"succeeded\"}"), 1);
  EXPECT_EQ(Value("moesweep_trials{state=\"running\"}"), 0);
  EXPECT_EQ(Value("moesweep_trials{state=\"pending\"}"), 5);

  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(submitted.sweep_id());
  v1::CancelSweepResponse cancelled;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::CancelSweep, cancel, &cancelled).ok());
  EXPECT_EQ(Value("moesweep_trials{state=\"cancelled\"}"), 5);
  EXPECT_EQ(Value("moesweep_trials{state=\"pending\"}"), 0);
  EXPECT_EQ(Value("moesweep_sweeps{state=\"running\"}"), 0);
  EXPECT_EQ(Value("moesweep_sweeps{state=\"cancelled\"}"), 1);
  EXPECT_GT(Value("moesweep_database_bytes"), 0);
  EXPECT_GE(Value("moesweep_batch_commands_count"), 5);
  EXPECT_GE(Value("moesweep_commit_duration_seconds_count"), 4);
  std::string text = metrics_->Scrape();
  EXPECT_TRUE(ExpositionProblems(text).empty()) << ::testing::PrintToString(ExpositionProblems(text));
}

TEST_F(CoordinatorMetricsTest, ARestartCountsWhatTheEngineCountedAsItWent) {
  v1::SubmitSweepRequest submit;
  submit.set_spec_json(kSpec);
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::SubmitSweep, submit, &submitted).ok());
  v1::AcquireTrialResponse a = Acquire();
  v1::CompleteTrialRequest complete;
  complete.set_lease_token(a.lease_token());
  complete.set_outcome(v1::CompleteTrialRequest::FAILED);
  v1::CompleteTrialResponse completed;
  ASSERT_TRUE(CallSync(coordinator_.get(), &Coordinator::CompleteTrial, complete, &completed).ok());
  Acquire();
  std::vector<std::string> series = {"moesweep_trials{state=\"pending\"}", "moesweep_trials{state=\"running\"}",
                                     "moesweep_trials{state=\"failed\"}", "moesweep_sweeps{state=\"running\"}"};
  std::vector<double> before;
  for (const auto& s : series) before.push_back(Value(s));
  EXPECT_EQ(before, (std::vector<double>{4, 1, 1, 1}));

  coordinator_.reset();
  Open();  // Fresh metrics; the engine counts from the database.
  for (size_t i = 0; i < series.size(); ++i) EXPECT_EQ(Value(series[i]), before[i]) << series[i];
  EXPECT_EQ(Value("moesweep_leases_granted_total"), 0);  // A counter of this process.
}

}  // namespace
}  // namespace moesweep
