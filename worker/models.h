// The two model families of a trial, behind one interface the trainer uses.
//   moe_mlp:         flatten -> Linear(in, d) -> GELU -> num_blocks MoE layers -> Linear(d, classes)
//   moe_transformer: tokens (image patches, or token_dim features zero-padded) -> Linear + learned
//                    position embedding -> num_blocks pre-norm blocks
//                    (x + Attn(LN x), then x + MoE(LN x)) -> mean over tokens -> LN -> head
// "MoE" is MoELayer, which is a dense expert-shaped FFN when use_moe is false.
#ifndef MOESWEEP_WORKER_MODELS_H_
#define MOESWEEP_WORKER_MODELS_H_

#include <memory>
#include <vector>

#include <torch/nn/module.h>

#include "common/status.h"
#include "worker/compute.h"
#include "worker/moe_layer.h"
#include "worker/trial_config.h"

namespace moesweep::worker {

struct ModelOutput {
  at::Tensor logits;    // [B, classes]
  at::Tensor features;  // [B, d_model]: pooled features before the head (retrieval embeddings).
};

// What the data looks like to the model.
struct InputShape {
  int64_t features = 0;     // Values per sample (flattened).
  int64_t num_classes = 0;
  int64_t channels = 0;     // Image layout of `features` (C x H x W), or all 0 for flat data.
  int64_t height = 0;
  int64_t width = 0;
};

class ModelImpl : public torch::nn::Module {
 public:
  // x: [B, features].
  virtual ModelOutput forward(const at::Tensor& x) = 0;
  const std::vector<MoELayer>& moe_layers() const { return moe_layers_; }

 protected:
  std::vector<MoELayer> moe_layers_;
};

// Builds the model the config describes, on the CPU, initialised from `rng` (which must outlive
// it), its layers computing as `compute` says (move it with ->to(device) for another device).
Status BuildModel(const TrialConfig& config, const InputShape& shape, const Compute& compute, TrialRng* rng,
                  std::shared_ptr<ModelImpl>* out);

// MoE layer options from a config (aux losses enabled where their weight is non-zero).
MoELayerOptions MoEOptionsFromConfig(const TrialConfig& config);

// The sum over MoE layers of the auxiliary losses of the last forward, each weighted as the config
// says; undefined when none is on. The trainer adds it to the task loss.
at::Tensor AuxLoss(const ModelImpl& model, const TrialConfig& c);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_MODELS_H_
