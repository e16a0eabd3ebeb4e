// moesweep-worker: flags only; everything else lives in moesweep_worker_lib.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "worker/cli.h"
#include "worker/worker_loop.h"

namespace mw = moesweep::worker;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  mw::WorkerFlags flags;
  moesweep::Status s = mw::ParseWorkerFlags(args, &flags);
  if (!s.ok()) {
    std::fprintf(stderr, "moesweep-worker: %s\n%s", s.message().c_str(), mw::WorkerUsage().c_str());
    return 2;
  }
  if (flags.help) {
    std::fputs(mw::WorkerUsage().c_str(), stdout);
    return 0;
  }
  if (flags.run) return mw::RunLocalTrial(flags.config_file, flags.threads, std::cout, std::cerr);

  // Signals are taken by one thread with sigwait, so Shutdown() runs in a normal context; block
  // them before any other thread starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  moesweep::rpc::ClientSecurity security;
  const char* token_env = std::getenv(moesweep::rpc::kTokenEnv);
  s = moesweep::rpc::LoadClientSecurity(flags.security, token_env ? token_env : "", &security);
  if (!s.ok()) {
    std::fprintf(stderr, "moesweep-worker: %s\n", s.message().c_str());
    return 2;
  }

  mw::WorkerOptions options;
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  options.threads_per_trial = flags.threads_per_trial;
  options.slots = flags.slots > 0 ? flags.slots : std::max(1, cores / flags.threads_per_trial);
  options.name = flags.name;
  if (options.name.empty()) {
    char host[256] = {0};
    options.name = gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0' ? host : "worker";
  }
  mw::WorkerLoop loop(mw::MakeCoordinatorChannel(flags.coordinator, security), options);
  std::fprintf(stderr, "moesweep-worker: %s: %d slot(s) x %d thread(s), coordinator %s (%s, %s)\n",
               options.name.c_str(), options.slots, options.threads_per_trial, flags.coordinator.c_str(),
               security.tls_ca_pem.empty() ? "plaintext" : "TLS", security.token.empty() ? "no token" : "token");

  std::thread([&loop, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "moesweep-worker: signal %d: releasing running trials (again to quit at once)\n", sig);
    loop.Shutdown();
    sigwait(&signals, &sig);
    std::_Exit(128 + sig);
  }).detach();
  loop.Run();
  return 0;
}
