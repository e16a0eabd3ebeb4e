// moesweep-coordinator: flags, signals, and nothing else.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

#include <fmt/format.h>

#include "server/clock.h"
#include "server/coordinator.h"
#include "server/service.h"

namespace {

constexpr const char* kUsage = R"(usage: moesweep-coordinator [--listen HOST:PORT] [--db PATH] [--max-stage-trials N]

Serves the moesweep API (SweepService, WorkerService, grpc.health.v1, reflection) and keeps every
sweep, trial, metric and event in a SQLite database. Unfinished sweeps resume on start.

  --listen HOST:PORT      address to serve on (default 127.0.0.1:50051; 0.0.0.0:50051 for other hosts)
  --db PATH               SQLite database file (default ./moesweep.db)
  --max-stage-trials N    refuse sweeps with a stage of more than N trials (default 10000)
)";

int Usage(const std::string& error) {
  std::cerr << "moesweep-coordinator: " << error << "\n\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:50051";
  std::string db = "./moesweep.db";
  moesweep::CoordinatorOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (flag == "--listen") {
      if (!value(&listen)) return Usage("--listen needs HOST:PORT");
    } else if (flag == "--db") {
      if (!value(&db)) return Usage("--db needs a path");
    } else if (flag == "--max-stage-trials") {
      if (!value(&v)) return Usage("--max-stage-trials needs a number");
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (*end != '\0' || n < 1) return Usage(fmt::format("--max-stage-trials: '{}' is not a positive integer", v));
      options.engine.spec_limits.max_stage_trials = n;
    } else {
      return Usage(fmt::format("unknown flag '{}'", flag));
    }
  }

  // Signals are taken by sigwait below, so block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  moesweep::SystemClock clock;
  std::unique_ptr<moesweep::Coordinator> coordinator;
  moesweep::Status s = moesweep::Coordinator::Open(db, options, &clock, &coordinator);
  if (!s.ok()) {
    std::cerr << "moesweep-coordinator: " << s.message() << "\n";
    return 1;
  }
  std::unique_ptr<moesweep::CoordinatorServer> server;
  s = moesweep::CoordinatorServer::Start(coordinator.get(), listen, &server);
  if (!s.ok()) {
    std::cerr << "moesweep-coordinator: " << s.message() << "\n";
    return 1;
  }
  std::cerr << fmt::format("moesweep-coordinator: serving on {} (port {}), database {}\n", listen, server->port(), db);

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << fmt::format("moesweep-coordinator: {} received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server->Shutdown();
  coordinator.reset();
  std::cerr << "moesweep-coordinator: stopped\n";
  return 0;
}
