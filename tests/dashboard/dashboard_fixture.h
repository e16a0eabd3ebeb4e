// The dashboard's tests: a real coordinator and worker as processes (tests/e2e/process.h), a
// command trainer (tests/e2e/testdata/fake_trainer.py), and the dashboard in this process.
#ifndef MOESWEEP_TESTS_DASHBOARD_DASHBOARD_FIXTURE_H_
#define MOESWEEP_TESTS_DASHBOARD_DASHBOARD_FIXTURE_H_

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "common/json.h"
#include "dashboard/dashboard.h"
#include "moesweep/v1/moesweep.grpc.pb.h"
#include "tests/e2e/process.h"

namespace moesweep::dashboard {

using std::chrono::milliseconds;
using std::chrono::seconds;

inline const std::string kFakeTrainer = std::string(MOESWEEP_SOURCE_DIR) + "/tests/e2e/testdata/fake_trainer.py";

// A baseline and two stages of the fake trainer's "experts" behaviour, two seeds.
inline Json ExpertsSpec(double epoch_sleep = 0, int epochs = 3) {
  Json spec = Json::parse(R"({
    "name": "dashboard-test",
    "objective": {"metric": "val_accuracy", "goal": "maximize"},
    "seeds": [1, 2],
    "base": {"behaviour": "experts", "width": 16, "temp": 1.5, "epochs": 3, "experts": 4, "epoch_sleep": 0},
    "baseline": {"width": 4},
    "stages": [
      {"name": "width", "grid": {"width": [16, 64]}},
      {"name": "temp", "grid": {"temp": [0.3, 0.7]}}
    ],
    "max_attempts": 2,
    "lease_seconds": 10
  })");
  spec["base"]["epoch_sleep"] = epoch_sleep;
  spec["base"]["epochs"] = epochs;
  spec["trainer"] = {{"command", {"/usr/bin/python3", kFakeTrainer, "{trial_name}", "{overrides}"}}, {"env", {{"PYTHONUNBUFFERED", "1"}}}};
  return spec;
}

class DashboardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("moesweep_dash_{}_{}", ::getpid(), ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    address_ = fmt::format("127.0.0.1:{}", e2e::FreePort());
  }
  void TearDown() override {
    if (dashboard_) dashboard_->Stop();
    workers_.clear();
    coordinator_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  void StartCoordinator() {
    coordinator_ = std::make_unique<e2e::Process>(
        std::vector<std::string>{MOESWEEP_COORDINATOR_BIN, "--listen", address_, "--db", (dir_ / "sweeps.db").string()},
        (dir_ / fmt::format("coordinator{}.log", starts_++)).string());
    for (int i = 0; i < 200; ++i) {
      if (e2e::Run({MOESWEEP_CLI_BIN, "health", "--timeout", "1", "--coordinator", address_}).exit_code == 0) return;
      std::this_thread::sleep_for(milliseconds(50));
    }
    FAIL() << "coordinator did not become healthy: " << e2e::ReadFile(coordinator_->log_path());
  }

  void StartWorker(const std::string& name) {
    workers_.push_back(std::make_unique<e2e::Process>(
        std::vector<std::string>{MOESWEEP_WORKER_BIN, "--coordinator", address_, "--slots", "1", "--threads-per-trial", "1",
                                 "--name", name, "--log-dir", (dir_ / "logs").string(), "--runs-dir", (dir_ / "runs").string()},
        (dir_ / (name + ".log")).string()));
  }

  void StartDashboard() {
    DashboardOptions options;
    options.coordinator = address_;
    options.listen_port = 0;
    options.static_dir = std::string(MOESWEEP_SOURCE_DIR) + "/dashboard/static";
    options.keepalive = milliseconds(300);
    dashboard_ = std::make_unique<Dashboard>(options);
    Status s = dashboard_->Start();
    ASSERT_TRUE(s.ok()) << s.message();
    http_ = std::make_unique<httplib::Client>("127.0.0.1", dashboard_->port());
    http_->set_read_timeout(30, 0);
  }

  int64_t Submit(const Json& spec) {
    auto stub = v1::SweepService::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(10));
    v1::SubmitSweepRequest request;
    request.set_spec_json(spec.dump());
    v1::SubmitSweepResponse response;
    grpc::Status status = stub->SubmitSweep(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.sweep_id();
  }

  // GET `path`: the status and the body as JSON (null when it is not JSON).
  std::pair<int, Json> GetJson(const std::string& path) {
    auto res = http_->Get(path.c_str());
    if (!res) return {0, Json()};
    return {res->status, Json::parse(res->body, nullptr, false)};
  }

  bool WaitForState(int64_t id, const std::string& state, seconds limit) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      auto [status, body] = GetJson(fmt::format("/api/sweeps/{}", id));
      if (status == 200 && body["sweep"]["state"] == state) return true;
      std::this_thread::sleep_for(milliseconds(200));
    }
    ADD_FAILURE() << "sweep " << id << " did not reach " << state;
    return false;
  }

  std::filesystem::path dir_;
  std::string address_;
  int starts_ = 0;
  std::unique_ptr<e2e::Process> coordinator_;
  std::vector<std::unique_ptr<e2e::Process>> workers_;
  std::unique_ptr<Dashboard> dashboard_;
  std::unique_ptr<httplib::Client> http_;
};

// One Server-Sent Event as the browser sees it.
struct Sse {
  std::string id, type, data;
};

// Reads `path` as an event stream until `stop` says so (given every event so far) or the stream
// ends; `last_event_id` is sent as the Last-Event-ID header when not empty.
template <typename Stop>
std::vector<Sse> ReadEvents(int port, const std::string& path, const std::string& last_event_id, Stop stop,
                            seconds limit = seconds(60)) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(limit.count(), 0);
  httplib::Headers headers;
  if (!last_event_id.empty()) headers.emplace("Last-Event-ID", last_event_id);
  std::vector<Sse> events;
  std::string buffer;
  auto deadline = std::chrono::steady_clock::now() + limit;
  client.Get(path.c_str(), headers, [&](const char* data, size_t size) {
    buffer.append(data, size);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      std::string block = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      Sse e;
      size_t start = 0;
      while (start <= block.size()) {
        size_t nl = block.find('\n', start);
        std::string line = block.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        if (line.rfind("id: ", 0) == 0) e.id = line.substr(4);
        if (line.rfind("event: ", 0) == 0) e.type = line.substr(7);
        if (line.rfind("data: ", 0) == 0) e.data = line.substr(6);
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
      if (!e.type.empty()) events.push_back(e);
      if (stop(events)) return false;
    }
    return std::chrono::steady_clock::now() < deadline;
  });
  return events;
}

inline bool EndsStream(const std::vector<Sse>& events) {
  return !events.empty() && (events.back().type == "end" || events.back().type == "notfound");
}

}  // namespace moesweep::dashboard

#endif  // MOESWEEP_TESTS_DASHBOARD_DASHBOARD_FIXTURE_H_
