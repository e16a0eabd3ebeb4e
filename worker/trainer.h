// Trains one trial from a parsed config and returns its final metrics and expert statistics.
// The same code runs for `moesweep-worker run` and for leased trials; the caller observes and
// stops training through TrialHooks. No LibTorch in this header.
#ifndef MOESWEEP_WORKER_TRAINER_H_
#define MOESWEEP_WORKER_TRAINER_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/agent/trial_runner.h"
#include "worker/trial_config.h"

namespace moesweep::worker {

class DatasetCache;

struct TrialHooks {
  // After every epoch, with that epoch's metrics (epoch, train_loss, val_loss, val_accuracy, lr,
  // samples_per_sec) and validation expert statistics. Return false to stop training.
  std::function<bool(int epoch, const Metrics& metrics, const std::vector<ExpertLayerSummary>& stats)> on_epoch;
  // Before every training batch (cheap to call; may send a heartbeat). Return false to stop.
  std::function<bool()> between_batches;
};

struct TrainOptions {
  int threads = 1;                // Intra-op threads of the calling thread (at::set_num_threads).
  DatasetCache* cache = nullptr;  // Shared dataset cache; nullptr loads the data privately.
  std::vector<int> gpus;          // The trial's GPUs and whether the worker hands them out: see
  bool gpus_managed = false;      // worker/device.h for how config.device maps onto them.
  bool generic = false;           // For tests: the generic path on the CPU too (worker/compute.h).
};

struct TrialResult {
  Metrics metrics;                                // Final metrics (see docs/worker.md); device_cuda
                                                  // is 1 when the trial ran on a GPU, else 0.
  std::vector<ExpertLayerSummary> expert_stats;   // One per MoE layer; empty for dense models.
  bool stopped = false;                           // A hook asked to stop; metrics are partial.
  int epochs_completed = 0;
};

// Runs the whole trial on the calling thread. A bad config, bad data, an exception inside LibTorch
// or a non-finite loss is returned as an error whose message says what went wrong; `result` then
// holds whatever was measured before the failure.
Status RunTrial(const TrialConfig& config, const TrainOptions& options, const TrialHooks& hooks,
                TrialResult* result);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_TRAINER_H_
