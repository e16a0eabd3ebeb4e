// AdamW with global-norm gradient clipping. Same update as torch.optim.AdamW (decoupled weight
// decay on every parameter, bias-corrected moments), in two versions behind one interface:
// FusedAdamW, one hand-written pass per parameter on the CPU (the per-op version reads and writes
// the expert parameters ~20 times a step, a large share of a small MoE step), and TensorAdamW,
// LibTorch foreach ops on any device for the generic path (worker/compute.h).
#ifndef MOESWEEP_WORKER_OPTIMIZER_H_
#define MOESWEEP_WORKER_OPTIMIZER_H_

#include <cstdint>
#include <memory>
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

class AdamW {
 public:
  virtual ~AdamW() = default;
  // Global L2 norm of all gradients (missing gradients count as zero).
  virtual double GradNorm() const = 0;
  // One update with learning rate `lr`; gradients are multiplied by `grad_scale` first (clipping).
  // Parameters without a gradient are treated as having a zero gradient. Consumes the gradients:
  // .grad() is undefined afterwards.
  virtual void Step(double lr, double grad_scale) = 0;
  // Clears the gradients (only needed when a backward is not followed by Step).
  virtual void ZeroGrad() = 0;
};

// FusedAdamW for CPU float32 parameters, TensorAdamW for the generic path. Parameters must be
// contiguous float32 (with bf16 compute too: they are the master weights).
std::unique_ptr<AdamW> MakeAdamW(std::vector<at::Tensor> params, AdamWOptions options, bool generic);

class FusedAdamW final : public AdamW {
 public:
  FusedAdamW(std::vector<at::Tensor> params, AdamWOptions options);
  ~FusedAdamW() override;
  FusedAdamW(const FusedAdamW&) = delete;
  FusedAdamW& operator=(const FusedAdamW&) = delete;

  // Uses a gradient's sum of squares recorded by its last writer when there is one
  // (worker/param_cache.h).
  double GradNorm() const override;

  // Each gradient is parked (ParkGrad), so the next backward reuses the memory without zeroing it
  // first. Also records the sum of squares of every dim-0 slice of the new weights
  // (RecordSliceSumSquares), which the parameter-diversity loss needs next step.
  void Step(double lr, double grad_scale = 1.0) override;

  // Parks the gradients.
  void ZeroGrad() override;

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// The same update with LibTorch foreach ops (a few kernel launches for all parameters), on the
// parameters' device; gradients come from plain autograd and are dropped after each step.
class TensorAdamW final : public AdamW {
 public:
  TensorAdamW(std::vector<at::Tensor> params, AdamWOptions options);
  double GradNorm() const override;
  void Step(double lr, double grad_scale = 1.0) override;
  void ZeroGrad() override;

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
