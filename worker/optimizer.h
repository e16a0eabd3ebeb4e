// AdamW with global-norm gradient clipping, fused into one pass per parameter. Same update as
// torch.optim.AdamW (decoupled weight decay on every parameter, bias-corrected moments); fused
// because the per-op version reads and writes the expert parameters ~20 times a step, which is a
// large share of a small MoE step.
#ifndef MOESWEEP_WORKER_OPTIMIZER_H_
#define MOESWEEP_WORKER_OPTIMIZER_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace moesweep::worker {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

class FusedAdamW {
 public:
  FusedAdamW(std::vector<at::Tensor> params, AdamWOptions options);
  ~FusedAdamW();
  FusedAdamW(const FusedAdamW&) = delete;
  FusedAdamW& operator=(const FusedAdamW&) = delete;

  // Global L2 norm of all gradients (missing gradients count as zero). Uses a gradient's sum of
  // squares recorded by its last writer when there is one (worker/param_cache.h).
  double GradNorm() const;

  // One update with learning rate `lr`; gradients are multiplied by `grad_scale` first (clipping).
  // Parameters without a gradient are treated as having a zero gradient. Consumes the gradients:
  // each is parked (ParkGrad), so .grad() is undefined afterwards and the next backward reuses
  // the memory without zeroing it first. Also records the sum of squares of every dim-0 slice of
  // the new weights (RecordSliceSumSquares), which the parameter-diversity loss needs next step.
  void Step(double lr, double grad_scale = 1.0);

  // Clears the gradients (parks them; only needed when a backward is not followed by Step).
  void ZeroGrad();

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// The scale that brings `norm` down to `max_norm` (1 when max_norm is 0 or not exceeded), like
// torch.nn.utils.clip_grad_norm_.
double ClipScale(double norm, double max_norm);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_OPTIMIZER_H_
