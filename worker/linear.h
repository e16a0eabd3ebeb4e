// Dense: y = x W^T + b, like torch::nn::Linear (same parameter shapes and default initialisation,
// but drawn from the trial's generator), computed with worker/gemm.h in forward and backward, or
// with at::linear on the generic path (worker/compute.h).
#ifndef MOESWEEP_WORKER_LINEAR_H_
#define MOESWEEP_WORKER_LINEAR_H_

#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "worker/compute.h"
#include "worker/rng.h"

namespace moesweep::worker {

struct DenseImpl : torch::nn::Module {
  // weight [out, in] and bias [out], both U(-1/sqrt(in), 1/sqrt(in)).
  DenseImpl(int64_t in, int64_t out, TrialRng* rng, Compute compute = {});

  // x: [..., in] -> [..., out], in x's dtype. On the kernel path backward() writes the weight and
  // bias gradients straight into their .grad (see worker/param_cache.h); on the generic path
  // autograd returns them as usual.
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias;

 private:
  Compute compute_;
};
TORCH_MODULE(Dense);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_LINEAR_H_
