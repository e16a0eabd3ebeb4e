// The `run` subcommand of moesweep-worker: one built-in trial, locally (flags: agent/flags.h).
#ifndef MOESWEEP_WORKER_CLI_H_
#define MOESWEEP_WORKER_CLI_H_

#include <iosfwd>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/agent/flags.h"
#include "worker/trainer.h"

namespace moesweep::worker {

// The final result as JSON: {"metrics": {...}, "expert_stats": [{"layer": 0, "usage": [...], ...}]}.
std::string ResultToJson(const TrialResult& result);

// Runs the config file's trial on this thread: per-epoch lines to `err`, the final JSON to `out`.
// Returns the process exit code (0 ok, 1 the trial failed).
int RunLocalTrial(const std::string& config_file, int threads, std::ostream& out, std::ostream& err);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_CLI_H_
