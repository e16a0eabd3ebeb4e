// BuiltinRunner: the worker's own LibTorch models as a TrialRunner (trainer kind "builtin").
#ifndef MOESWEEP_WORKER_BUILTIN_RUNNER_H_
#define MOESWEEP_WORKER_BUILTIN_RUNNER_H_

#include <memory>
#include <string>

#include "worker/agent/trial_runner.h"

namespace moesweep::worker {

class DatasetCache;

class BuiltinRunner final : public TrialRunner {
 public:
  // `threads`: intra-op threads per trial. `cache`: shared between slots; nullptr = one owned here.
  BuiltinRunner(int threads, DatasetCache* cache);
  ~BuiltinRunner() override;

  std::string kind() const override;
  // CUDA devices this process's LibTorch sees: 0 in a CPU-only build (for the startup log).
  static int CudaDevices();
  Status Run(const LeasedTrial& trial, const RunnerHooks& hooks, RunOutcome* outcome) override;

 private:
  int threads_;
  std::unique_ptr<DatasetCache> owned_cache_;
  DatasetCache* cache_;
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_BUILTIN_RUNNER_H_
