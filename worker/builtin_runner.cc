#include "worker/builtin_runner.h"

#include <torch/cuda.h>

#include "common/sweep_spec.h"
#include "worker/datasets.h"
#include "worker/trainer.h"
#include "worker/trial_config.h"

namespace moesweep::worker {

BuiltinRunner::BuiltinRunner(int threads, DatasetCache* cache) : threads_(threads), cache_(cache) {
  if (cache_ == nullptr) {
    owned_cache_ = std::make_unique<DatasetCache>();
    cache_ = owned_cache_.get();
  }
}

BuiltinRunner::~BuiltinRunner() = default;

std::string BuiltinRunner::kind() const { return TrainerSpec::kBuiltin; }

int BuiltinRunner::CudaDevices() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

Status BuiltinRunner::Run(const LeasedTrial& trial, const RunnerHooks& hooks, RunOutcome* outcome) {
  TrialConfig config;
  if (Status s = ParseTrialConfigText(trial.config_json, &config); !s.ok()) return s;
  TrialHooks trial_hooks;
  trial_hooks.between_batches = hooks.keep_going;
  trial_hooks.on_epoch = [&](int epoch, const Metrics& metrics, const std::vector<ExpertLayerSummary>& stats) {
    return hooks.on_progress(epoch, metrics, stats);
  };
  TrainOptions options;
  options.threads = threads_;
  options.cache = cache_;
  options.gpus = trial.gpus;  // config.device "cuda" -> this slot's GPU (worker/device.h)
  options.gpus_managed = trial.gpus_managed;
  TrialResult result;
  Status s = RunTrial(config, options, trial_hooks, &result);
  outcome->metrics = std::move(result.metrics);
  outcome->expert_stats = std::move(result.expert_stats);
  outcome->stopped = result.stopped;
  return s;
}

}  // namespace moesweep::worker
