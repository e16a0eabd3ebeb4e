// Dense: y = x W^T + b, like torch::nn::Linear (same parameter shapes and default initialisation,
// but drawn from the trial's generator), computed with worker/gemm.h in forward and backward.
#ifndef MOESWEEP_WORKER_LINEAR_H_
#define MOESWEEP_WORKER_LINEAR_H_

#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "worker/rng.h"

namespace moesweep::worker {

struct DenseImpl : torch::nn::Module {
  // weight [out, in] and bias [out], both U(-1/sqrt(in), 1/sqrt(in)).
  DenseImpl(int64_t in, int64_t out, TrialRng* rng);

  // x: [..., in] -> [..., out]. The weight and bias gradients are accumulated straight into
  // their .grad by backward() (see GroupedFfn in moe_layer.cc for why).
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias;
};
TORCH_MODULE(Dense);

// Adds into t.grad(), allocating a zero gradient the first time; for custom backward functions
// that accumulate parameter gradients in place.
at::Tensor& GradBuffer(const at::Tensor& t);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_LINEAR_H_
