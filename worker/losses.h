// Auxiliary losses of the MoE layer, as plain differentiable functions of tensors the layer already
// has. Each returns a 0-dim tensor.
#ifndef MOESWEEP_WORKER_LOSSES_H_
#define MOESWEEP_WORKER_LOSSES_H_

#include <vector>

#include <ATen/core/Tensor.h>

namespace moesweep::worker {

// Switch load balancing: E * sum_e f_e * P_e, with f = slot_share ([E], share of routed slots per
// expert, no gradient) and P = probs.mean(0). 1 when both are uniform.
at::Tensor BalanceLoss(const at::Tensor& probs, const at::Tensor& slot_share);

// Mean over tokens of -sum_e p log p (natural log).
at::Tensor RouterEntropy(const at::Tensor& probs, const at::Tensor& log_probs);

// mean(logsumexp(logits, 1)^2).
at::Tensor RouterZLoss(const at::Tensor& logits);

// Mean over pairs i != j of cos(theta_i, theta_j), theta_e = all of expert e's parameters
// flattened; `stacked` holds tensors with the expert index as dim 0. Uses
// sum_{i != j} u_i . u_j = |sum_i u_i|^2 - E for unit vectors u, so it costs O(E * P), not
// O(E^2 * P) (worker/param_diversity.h). 0 when E == 1. Its backward writes the gradient straight
// into each tensor's .grad (see worker/param_cache.h; the tensors must be contiguous float
// leaves, and torch::autograd::grad() does not see it). The MoE layer does not call this: its
// expert FFN computes the same loss inside its own passes (GroupedExperts::forward).
at::Tensor ParamCosineSimilarity(const std::vector<at::Tensor>& stacked);

// The same in O(E * P) with LibTorch ops and plain autograd, on any device: the generic path's
// version (worker/compute.h). Gradients come back through autograd as usual.
at::Tensor ParamCosineSimilarityTensorOps(const std::vector<at::Tensor>& stacked);

// The same through the E x E Gram matrix with plain autograd (for tests).
at::Tensor ParamCosineSimilarityReference(const std::vector<at::Tensor>& stacked);

// Mean over pairs i != j of cos(m_i, m_j) for rows m_e of `mean_outputs` [E, d]. 0 when E == 1.
at::Tensor OutputCosineSimilarity(const at::Tensor& mean_outputs);

// Mean over pairs i != j of JS(softmax(m_i), softmax(m_j)) (natural log, in [0, log 2]).
at::Tensor MeanPairwiseJsDivergence(const at::Tensor& mean_outputs);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_LOSSES_H_
