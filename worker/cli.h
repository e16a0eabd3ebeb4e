// Command line of moesweep-worker, and the `run` subcommand (one trial, locally).
//
//   moesweep-worker --coordinator HOST:PORT [--slots N] [--threads-per-trial T] [--name NAME]
//                   [--token-file PATH] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]
//   moesweep-worker run CONFIG.json [--threads T]
#ifndef MOESWEEP_WORKER_CLI_H_
#define MOESWEEP_WORKER_CLI_H_

#include <iosfwd>
#include <string>
#include <vector>

#include "common/status.h"
#include "rpc/channel.h"
#include "worker/trainer.h"

namespace moesweep::worker {

struct WorkerFlags {
  bool help = false;
  bool run = false;          // `run CONFIG.json`
  std::string config_file;   // run
  int threads = 1;           // run: --threads
  std::string coordinator;   // serve
  int slots = 0;             // serve: 0 = one per core (divided by threads_per_trial)
  int threads_per_trial = 1;
  std::string name;          // serve: "" = host name
  rpc::ClientSecurityFlags security;  // serve: --token-file, --tls-ca, --tls-cert, --tls-key
};

// Parses argv[1..]; an unknown flag, a missing or malformed value is an error naming the flag.
Status ParseWorkerFlags(const std::vector<std::string>& args, WorkerFlags* out);

std::string WorkerUsage();

// The final result as JSON: {"metrics": {...}, "expert_stats": [{"layer": 0, "usage": [...], ...}]}.
std::string ResultToJson(const TrialResult& result);

// Runs the config file's trial on this thread: per-epoch lines to `err`, the final JSON to `out`.
// Returns the process exit code (0 ok, 1 the trial failed).
int RunLocalTrial(const std::string& config_file, int threads, std::ostream& out, std::ostream& err);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_CLI_H_
