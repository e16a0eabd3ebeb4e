// The Mixture-of-Experts layer: router, stacked experts, sparse dispatch, auxiliary losses and
// routing statistics. Tokens are rows of a [N, d_model] tensor.
//
//   p   = softmax(router(x) / temperature)
//   top_k largest of p, renormalised to sum to 1; a selected expert whose renormalised weight is
//   below activation_threshold is dropped (top-1 always stays) and the rest renormalised again
//   out = LayerNorm(residual_weight * x + sum_selected w_e * expert_e(x))
//
// Experts run only on the tokens routed to them: tokens are grouped by expert with a counting sort
// and each expert does one matrix product per layer on its contiguous slice (GroupedFfn), so a
// step costs O(top_k), not O(num_experts). The generic path (worker/compute.h) groups with a
// stable sort on the device and runs each layer of all experts as one batched GEMM.
#ifndef MOESWEEP_WORKER_MOE_LAYER_H_
#define MOESWEEP_WORKER_MOE_LAYER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "worker/agent/expert_stats.h"
#include "worker/compute.h"
#include "worker/linear.h"
#include "worker/rng.h"

namespace moesweep::worker {

// num_experts experts of identical shape, stored stacked: weight(l) is [E, in_l, out_l] and
// bias(l) is [E, out_l] for the expert_layers + 1 linear layers
// Linear(d, h) -> GELU -> Dropout -> [Linear(h, h) -> GELU -> Dropout] x (L-1) -> Linear(h, d).
// With num_experts = 1 this is the dense FFN of use_moe = false.
struct GroupedExpertsImpl : torch::nn::Module {
  GroupedExpertsImpl(int64_t num_experts, int64_t d_model, int64_t hidden, int64_t layers, double dropout,
                     TrialRng* rng, Compute compute = {});

  // x_sorted holds counts[0] rows for expert 0, then counts[1] rows for expert 1, ...; returns the
  // expert outputs in the same order. Dropout is applied when the module is training. With
  // `diversity` given, also sets it to ParamCosineSimilarity(stacked_params()), computed inside
  // the expert passes (same value and gradient, less memory traffic; see moe_layer.cc).
  // `row_experts` (the expert of each row, on x's device) saves the generic path rebuilding it.
  at::Tensor forward(const at::Tensor& x_sorted, const std::vector<int64_t>& counts, at::Tensor* diversity = nullptr,
                     const at::Tensor& row_experts = at::Tensor());
  // Every expert on every row of x, without dropout: [E, N, d]. For the output-diversity losses.
  at::Tensor ForwardAll(const at::Tensor& x);

  int64_t num_experts() const { return num_experts_; }
  int64_t params_per_expert() const;
  // weight(0), bias(0), weight(1), bias(1), ...: each has the expert index as dimension 0.
  const std::vector<at::Tensor>& stacked_params() const { return params_; }

 private:
  // The generic path: each layer of every expert as one batched GEMM over [E, capacity, width].
  at::Tensor ForwardBatched(const at::Tensor& x_sorted, const std::vector<int64_t>& counts,
                            const at::Tensor& row_experts);
  // h [E, rows, d] through the expert layers; `dropout` (may be empty) masks each hidden activation.
  at::Tensor BatchedLayers(at::Tensor h, const std::function<at::Tensor(const at::Tensor&)>& dropout);

  int64_t num_experts_;
  double dropout_;
  TrialRng* rng_;
  Compute compute_;
  std::vector<at::Tensor> params_;
};
TORCH_MODULE(GroupedExperts);

struct MoELayerOptions {
  int64_t d_model = 64;
  bool use_moe = true;  // false: one expert-shaped FFN, no router.
  int64_t num_experts = 8;
  int64_t top_k = 2;
  int64_t expert_hidden_dim = 256;
  int64_t expert_layers = 1;
  int64_t gate_layers = 1;
  double temperature = 1.0;
  double expert_dropout = 0.0;
  double gate_dropout = 0.0;
  double activation_threshold = 0.0;
  double residual_weight = 1.0;
  // Which auxiliary losses forward() computes in training (the others cost nothing).
  bool want_balance = true;
  bool want_entropy = true;
  bool want_z_loss = false;
  bool want_param_diversity = false;
  bool want_output_losses = false;  // output cosine similarity and JS divergence (run every expert).
  Compute compute;                  // Kernels or generic path, fp32 or bf16 (worker/compute.h).
};

// The routing decision for N tokens.
struct Routing {
  at::Tensor logits;     // [N, E] router logits (before temperature).
  at::Tensor probs;      // [N, E] softmax(logits / temperature).
  at::Tensor log_probs;  // [N, E]
  at::Tensor experts;    // [N, k] int64, the top-k experts by probability, best first.
  at::Tensor first;      // [N, k] top-k probabilities renormalised once (before threshold drops).
  at::Tensor keep;       // [N, k] bool: the slot is computed (first >= threshold, or top-1).
  at::Tensor weights;    // [N, k] final mixing weights: 0 for dropped slots, rows sum to 1.
};

// Top-k selection, renormalisation and threshold dropping; differentiable in `logits`.
Routing Route(const at::Tensor& logits, double temperature, int64_t top_k, double threshold);

// Kept slots grouped by expert (a stable counting sort of the slot list).
struct DispatchPlan {
  at::Tensor token_index;       // [S] int64: token of each routed slot, grouped by expert.
  at::Tensor slot_index;        // [S] int64: flat index (token * k + j) of each routed slot.
  std::vector<int64_t> counts;  // [E] routed slots per expert; sums to S.
  at::Tensor row_experts;       // [S] int64: expert of each routed slot (tensor-op plans only).
};
// `tensor_ops`: a stable sort on the tensors' device (same plan; the counts are copied to the
// host, one synchronisation) instead of a loop over CPU memory.
DispatchPlan PlanDispatch(const at::Tensor& experts, const at::Tensor& keep, int64_t num_experts,
                          bool tensor_ops = false);

// Auxiliary losses of the last training forward(); undefined tensors for the ones not wanted.
struct MoEAux {
  at::Tensor balance;           // E * sum_e f_e * P_e
  at::Tensor entropy;           // mean router entropy
  at::Tensor z_loss;            // mean(logsumexp(logits)^2)
  at::Tensor param_similarity;  // mean pairwise cosine similarity of expert parameters
  at::Tensor output_similarity; // mean pairwise cosine similarity of expert mean outputs
  at::Tensor js_divergence;     // mean pairwise JS divergence of softmaxed expert mean outputs
};

struct MoELayerImpl : torch::nn::Module {
  MoELayerImpl(const MoELayerOptions& options, TrialRng* rng);

  // x: [N, d_model] -> [N, d_model]. In training, fills aux(); with stats collection on, adds this
  // batch to stats().
  at::Tensor forward(const at::Tensor& x);

  const MoELayerOptions& options() const { return options_; }
  const MoEAux& aux() const { return aux_; }
  void set_collect_stats(bool on) { collect_stats_ = on; }
  RoutingStatsAccumulator& stats() { return stats_; }
  // Parameters one token does not touch: (E - top_k) experts' worth; 0 for a dense layer.
  int64_t inactive_params() const;
  GroupedExperts experts() const { return experts_; }
  // The routing of the last forward() (for tests and statistics).
  const Routing& last_routing() const { return routing_; }

 private:
  void AccumulateStats(const Routing& r, const DispatchPlan& plan);

  MoELayerOptions options_;
  TrialRng* rng_;
  Dense gate1_{nullptr}, gate2_{nullptr};
  GroupedExperts experts_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  MoEAux aux_;
  Routing routing_;
  bool collect_stats_ = false;
  RoutingStatsAccumulator stats_;
};
TORCH_MODULE(MoELayer);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_MOE_LAYER_H_
