// The end-to-end fixture: a temporary folder, a free port, and the real coordinator, workers and
// CLI as processes.
#ifndef MOESWEEP_TESTS_E2E_E2E_FIXTURE_H_
#define MOESWEEP_TESTS_E2E_E2E_FIXTURE_H_

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/json.h"
#include "tests/e2e/process.h"

namespace moesweep::e2e {

using std::chrono::milliseconds;
using std::chrono::seconds;

class EndToEnd : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("moesweep_e2e_{}_{}", ::getpid(), ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    port_ = FreePort();
    address_ = fmt::format("127.0.0.1:{}", port_);
  }
  void TearDown() override {
    workers_.clear();
    coordinator_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  void StartCoordinator() {
    coordinator_ = std::make_unique<Process>(
        std::vector<std::string>{MOESWEEP_COORDINATOR_BIN, "--listen", address_, "--db", (dir_ / "sweeps.db").string()},
        (dir_ / fmt::format("coordinator{}.log", coordinator_starts_++)).string());
    for (int i = 0; i < 200; ++i) {
      if (Cli({"health", "--timeout", "1"}).exit_code == 0) return;
      std::this_thread::sleep_for(milliseconds(50));
    }
    FAIL() << "coordinator did not become healthy: " << ReadFile(coordinator_->log_path());
  }

  // A worker with one slot of one thread; `extra` flags after those. `binary`: another build of it.
  Process* StartWorker(const std::string& name, const std::vector<std::string>& extra = {},
                       const std::string& binary = MOESWEEP_WORKER_BIN) {
    std::vector<std::string> argv{binary,  "--coordinator", address_, "--slots", "1", "--threads-per-trial",
                                  "1",     "--name",        name,     "--log-dir", (dir_ / "logs").string(),
                                  "--runs-dir", (dir_ / "runs").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    workers_.push_back(std::make_unique<Process>(argv, (dir_ / (name + ".log")).string()));
    return workers_.back().get();
  }

  CommandResult Cli(std::vector<std::string> args, seconds limit = seconds(60)) {
    args.insert(args.begin(), MOESWEEP_CLI_BIN);
    args.push_back("--coordinator");
    args.push_back(address_);
    return e2e::Run(args, limit);
  }

  Json CliJson(std::vector<std::string> args) {
    args.push_back("--json");
    CommandResult r = Cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Json::parse(r.out);
  }

  std::string WriteSpec(const Json& spec, const std::string& name = "spec.json") {
    std::string path = (dir_ / name).string();
    std::ofstream(path) << spec.dump(2);
    return path;
  }

  int64_t Submit(const Json& spec) { return CliJson({"submit", WriteSpec(spec)})["sweep_id"].get<int64_t>(); }

  std::vector<Json> Trials(int64_t id, const std::string& state = "") {
    std::vector<std::string> args = {"trials", std::to_string(id)};
    if (!state.empty()) args.insert(args.end(), {"--state", state});
    Json j = CliJson(args);
    std::vector<Json> out;
    for (const Json& t : j.value("trials", Json::array())) out.push_back(t);
    return out;
  }

  // Waits until `predicate` holds, polling; fails the test after `limit`.
  template <typename Predicate>
  bool WaitFor(Predicate predicate, seconds limit, const std::string& what) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (predicate()) return true;
      std::this_thread::sleep_for(milliseconds(200));
    }
    ADD_FAILURE() << "timed out waiting for " << what;
    return false;
  }

  std::filesystem::path dir_;
  int port_ = 0;
  std::string address_;
  int coordinator_starts_ = 0;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> workers_;
};

}  // namespace moesweep::e2e

#endif  // MOESWEEP_TESTS_E2E_E2E_FIXTURE_H_
