// moesweep-worker: flags and signals only. The pull loop and the command trainer live in
// moesweep_worker_agent (no LibTorch); the built-in trainer, when this build has it, in
// moesweep_worker_lib.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "worker/agent/command_runner.h"
#include "worker/agent/flags.h"
#include "worker/agent/worker_loop.h"
#ifdef MOESWEEP_WITH_BUILTIN
#include "worker/builtin_runner.h"
#include "worker/cli.h"
#endif

namespace mw = moesweep::worker;

#ifdef MOESWEEP_WITH_BUILTIN
constexpr bool kWithBuiltin = true;
#else
constexpr bool kWithBuiltin = false;
#endif

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  mw::WorkerFlags flags;
  moesweep::Status s = mw::ParseWorkerFlags(args, &flags);
  if (!s.ok()) {
    std::fprintf(stderr, "moesweep-worker: %s\n%s", s.message().c_str(), mw::WorkerUsage(kWithBuiltin).c_str());
    return mw::kExitUsage;
  }
  if (flags.help) {
    std::fputs(mw::WorkerUsage(kWithBuiltin).c_str(), stdout);
    return 0;
  }
  if (flags.run) {
#ifdef MOESWEEP_WITH_BUILTIN
    return mw::RunLocalTrial(flags.config_file, flags.threads, std::cout, std::cerr);
#else
    std::fprintf(stderr, "moesweep-worker: `run` needs the built-in trainer, and this build has no LibTorch\n");
    return mw::kExitUsage;
#endif
  }

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
    return mw::kExitUsage;
  }

  mw::WorkerOptions options;
  options.exit_when_idle_seconds = flags.exit_when_idle_seconds;
  options.give_up_after_seconds = flags.give_up_after_seconds;
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  options.gpus = flags.gpus;
  if (flags.slots > 0) {
    options.slots = flags.slots;
  } else if (!flags.gpus.empty()) {
    options.slots = static_cast<int>(flags.gpus.size());  // As many trials as GPUs allow.
  } else {
    options.slots = std::max(1, cores / flags.threads_per_trial);
  }
  options.name = flags.name;
  if (options.name.empty()) {
    char host[256] = {0};
    options.name = gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0' ? host : "worker";
  }
  std::vector<std::unique_ptr<mw::TrialRunner>> runners;
#ifdef MOESWEEP_WITH_BUILTIN
  runners.push_back(std::make_unique<mw::BuiltinRunner>(flags.threads_per_trial, nullptr));
  if (!flags.gpus.empty() && mw::BuiltinRunner::CudaDevices() == 0) {
    // Leased cuda trials would fail one by one; say why once, up front.
    std::fprintf(stderr,
                 "moesweep-worker: warning: --gpus given, but this worker's LibTorch sees no CUDA device: built-in "
                 "trials with device \"cuda\" will fail here (command trainers are not affected)\n");
  }
#endif
  mw::CommandRunnerOptions command;
  command.log_dir = flags.log_dir;
  command.runs_dir = flags.runs_dir;
  command.kill_grace_seconds = flags.kill_grace_seconds;
  runners.push_back(std::make_unique<mw::CommandRunner>(command));
  std::string kinds;
  for (const auto& runner : runners) {
    options.runners.push_back(runner.get());
    kinds += (kinds.empty() ? "" : ", ") + runner->kind();
  }

  mw::WorkerLoop loop(mw::MakeCoordinatorChannel(flags.coordinator, security), options);
  std::string gpus;
  for (int g : flags.gpus) gpus += (gpus.empty() ? "" : ",") + std::to_string(g);
  std::fprintf(stderr, "moesweep-worker: %s: %d slot(s) x %d thread(s), trainers %s, GPUs %s, coordinator %s (%s, %s)\n",
               options.name.c_str(), options.slots, flags.threads_per_trial, kinds.c_str(),
               gpus.empty() ? "none" : gpus.c_str(), flags.coordinator.c_str(),
               security.tls_ca_pem.empty() ? "plaintext" : "TLS", security.token.empty() ? "no token" : "token");

  std::thread([&loop, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "moesweep-worker: signal %d: releasing running trials (again to quit at once)\n", sig);
    loop.Shutdown();
    sigwait(&signals, &sig);
    std::_Exit(128 + sig);
  }).detach();
  const mw::WorkerExit why = loop.Run();
  const int code = why == mw::WorkerExit::kGaveUp ? mw::kExitGaveUp : mw::kExitDone;
  std::fprintf(stderr, "moesweep-worker: exiting with code %d (%s)\n", code,
               why == mw::WorkerExit::kIdle     ? "idle: no work left"
               : why == mw::WorkerExit::kGaveUp ? "gave up: coordinator unreachable"
                                                : "stopped by a signal");
  return code;
}
