// Command line of moesweep-worker.
//
//   moesweep-worker --coordinator HOST:PORT [--slots N] [--threads-per-trial T] [--name NAME]
//                   [--gpus 0,1,...] [--log-dir DIR] [--runs-dir DIR] [--kill-grace SECONDS]
//                   [--exit-when-idle SECONDS] [--give-up-after SECONDS] [--token-file PATH] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]
//   moesweep-worker run CONFIG.json [--threads T]      (built-in trainer only)
#ifndef MOESWEEP_WORKER_AGENT_FLAGS_H_
#define MOESWEEP_WORKER_AGENT_FLAGS_H_

#include <string>
#include <vector>

#include "common/status.h"
#include "rpc/channel.h"

namespace moesweep::worker {

// Exit codes of moesweep-worker's worker mode (docs/worker.md, "Exit codes"). A second signal
// exits at once with 128 + its number.
inline constexpr int kExitDone = 0;     // Idle for --exit-when-idle, or a signal: trials handed back.
inline constexpr int kExitUsage = 2;    // A bad flag, token or TLS file.
inline constexpr int kExitGaveUp = 3;   // The coordinator was unreachable for --give-up-after.

struct WorkerFlags {
  bool help = false;
  bool run = false;          // `run CONFIG.json`
  std::string config_file;   // run
  int threads = 1;           // run: --threads
  std::string coordinator;   // serve
  int slots = 0;             // serve: 0 = one per GPU with --gpus, else one per core / threads_per_trial
  int threads_per_trial = 1;
  std::string name;          // serve: "" = host name
  std::vector<int> gpus;     // serve: --gpus 0,1,2,3
  std::string log_dir = "moesweep-logs";   // Command trainers' output, one file per attempt.
  std::string runs_dir = "moesweep-runs";  // Command trainers' {output_dir} folders.
  double kill_grace_seconds = 10;          // SIGTERM -> SIGKILL for a command trainer.
  double exit_when_idle_seconds = 0;       // 0 = never (WorkerOptions::exit_when_idle_seconds).
  double give_up_after_seconds = 0;        // 0 = never (WorkerOptions::give_up_after_seconds).
  rpc::ClientSecurityFlags security;       // serve: --token-file, --tls-ca, --tls-cert, --tls-key
};

// Parses argv[1..]; an unknown flag, a missing or malformed value is an error naming the flag.
Status ParseWorkerFlags(const std::vector<std::string>& args, WorkerFlags* out);

// `with_builtin`: this build has the LibTorch trainer (and so `run`).
std::string WorkerUsage(bool with_builtin = true);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_FLAGS_H_
