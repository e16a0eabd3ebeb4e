// TrialRunner: how a worker runs one leased trial of some trainer kind. The pull loop
// (worker_loop.h) owns leases, reports and retries; a runner only trains and calls back. The
// built-in LibTorch trainer (worker/builtin_runner.h) and the user's own program
// (command_runner.h) are the two runners. No LibTorch here.
#ifndef MOESWEEP_WORKER_AGENT_TRIAL_RUNNER_H_
#define MOESWEEP_WORKER_AGENT_TRIAL_RUNNER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/agent/expert_stats.h"

namespace moesweep::worker {

// Metric name -> value, in the order they were produced.
using Metrics = std::vector<std::pair<std::string, double>>;

// Looks up a metric by name; false if absent.
bool FindMetric(const Metrics& metrics, const std::string& name, double* value);

// One leased trial, as the coordinator described it (AcquireTrialResponse).
struct LeasedTrial {
  int64_t trial_id = 0;
  int attempt = 1;
  int64_t sweep_id = 0;
  int stage = 0;
  std::string trial_name;        // "s1-p3-seed42"
  std::string config_json;       // Full trial config, including "seed".
  std::string trainer_json;      // The sweep's "trainer" object; "" for built-in.
  std::string objective_metric;  // Must be finite for the trial to succeed.
  std::vector<int> gpus;         // Devices this trial may use (from the worker's --gpus), maybe none.
  bool gpus_managed = false;     // The worker hands out GPUs: a trial sees only its own.
};

// Callbacks into the pull loop. Both are called on the runner's thread.
struct RunnerHooks {
  // Called often (between batches, or every ~100 ms while a program runs): cheap, may send a
  // heartbeat. false = stop now (the coordinator said STOP, the lease is gone, or the worker is
  // shutting down).
  std::function<bool()> keep_going;
  // A progress report (an epoch's metrics and expert statistics). false = stop.
  std::function<bool(int64_t step, const Metrics& metrics, const std::vector<ExpertLayerSummary>& stats)> on_progress;
};

struct RunOutcome {
  Metrics metrics;                               // Final metrics, or the last known on failure.
  std::vector<ExpertLayerSummary> expert_stats;  // Last known, one per MoE layer.
  bool stopped = false;                          // keep_going/on_progress said stop; metrics are partial.
};

class TrialRunner {
 public:
  virtual ~TrialRunner() = default;
  // The trainer kind it runs: "builtin" or "command" (TrainerSpec::kind).
  virtual std::string kind() const = 0;
  // Runs the trial on the calling thread until it ends or a hook says stop (then returns OK with
  // outcome->stopped). A failed trial is an error status whose message is the reason users see.
  // Thread-safe: slots call it concurrently.
  virtual Status Run(const LeasedTrial& trial, const RunnerHooks& hooks, RunOutcome* outcome) = 0;
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_TRIAL_RUNNER_H_
