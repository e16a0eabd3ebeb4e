// Where a built-in trial runs: its config's `device` key, the GPUs the worker gave the trial, and
// the CUDA devices this process can see. In-process, a trial cannot have its own
// CUDA_VISIBLE_DEVICES, so "cuda" is mapped to the trial's GPU by index instead: with --gpus 2,3
// and a slot holding GPU 3, "cuda" and "cuda:0" mean LibTorch's cuda:3. No LibTorch here, so the
// rule is tested without a GPU.
//
// --gpus names GPUs as a child process's CUDA_VISIBLE_DEVICES would (command trainers get exactly
// that); in-process, LibTorch numbers the devices of the worker's own CUDA_VISIBLE_DEVICES. So
// when the worker runs under CUDA_VISIBLE_DEVICES=2,3 (a Slurm job), --gpus 3 is LibTorch's cuda:1.
#ifndef MOESWEEP_WORKER_DEVICE_H_
#define MOESWEEP_WORKER_DEVICE_H_

#include <string>
#include <vector>

#include "common/status.h"

namespace moesweep::worker {

struct DevicePlacement {
  bool cuda = false;
  int index = 0;     // The CUDA device index in this process, when cuda.
  std::string note;  // What "auto" decided and why ("" otherwise), for the log.
};

// `device`: the config value (cpu, cuda, cuda:N, auto). `gpus`, `gpus_managed`: as in LeasedTrial
// (managed = the worker hands out GPUs; then cuda:N is the trial's N-th GPU, else LibTorch's
// cuda:N). `cuda_devices`: CUDA devices LibTorch sees (0 in a CPU-only build).
// `cuda_visible_devices`: the worker's own CUDA_VISIBLE_DEVICES ("" when unset). A "cuda" trial
// that cannot have a GPU is an error naming config.device; "auto" falls back to the CPU.
Status PlaceTrial(const std::string& device, const std::vector<int>& gpus, bool gpus_managed, int cuda_devices,
                  const std::string& cuda_visible_devices, DevicePlacement* out);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_DEVICE_H_
