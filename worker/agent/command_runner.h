// CommandRunner: runs a command trainer (the user's own program) for a trial, and turns its
// "@moesweep" report lines into progress reports (report_line.h, docs/trainers.md).
//
// The program runs in a process group of its own with the trial config in a JSON file and in the
// environment (MOESWEEP_CONFIG_FILE, MOESWEEP_TRIAL_ID, MOESWEEP_SEED, MOESWEEP_OUTPUT_DIR), its
// GPUs in CUDA_VISIBLE_DEVICES. Its stdout and stderr go to one log file per attempt. To stop it
// (STOP, shutdown, timeout) the group gets SIGTERM, then SIGKILL after a grace period; when the
// program exits, whatever it left in its group is killed.
#ifndef MOESWEEP_WORKER_AGENT_COMMAND_RUNNER_H_
#define MOESWEEP_WORKER_AGENT_COMMAND_RUNNER_H_

#include <functional>
#include <string>

#include "worker/agent/trial_runner.h"

namespace moesweep::worker {

struct CommandRunnerOptions {
  std::string log_dir = "moesweep-logs";   // trial-<id>-attempt-<n>.log per attempt.
  std::string runs_dir = "moesweep-runs";  // <trial_name>-t<id>-a<n>/ per attempt: {output_dir}.
  double kill_grace_seconds = 10;          // SIGTERM -> SIGKILL.
  // Where a warning about a trial goes (malformed report lines); nullptr = stderr.
  std::function<void(const std::string&)> warn;
};

class CommandRunner final : public TrialRunner {
 public:
  explicit CommandRunner(CommandRunnerOptions options);

  std::string kind() const override;
  Status Run(const LeasedTrial& trial, const RunnerHooks& hooks, RunOutcome* outcome) override;

 private:
  CommandRunnerOptions options_;
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_COMMAND_RUNNER_H_
