// Router statistics of one MoE layer: running sums filled batch by batch during evaluation, and
// the summary the proto's ExpertLayerStats carries. No LibTorch here, so the gRPC side and the
// report printer need not include it.
#ifndef MOESWEEP_WORKER_AGENT_EXPERT_STATS_H_
#define MOESWEEP_WORKER_AGENT_EXPERT_STATS_H_

#include <cstdint>
#include <vector>

namespace moesweep::worker {

struct ExpertLayerSummary {
  int layer = 0;
  std::vector<double> usage;       // Share of routed (computed) slots per expert; sums to 1.
  std::vector<double> importance;  // Mean router probability per expert.
  double usage_variance = 0;       // Population variance of usage.
  double activation_rate = 0;      // Share of top-k slots whose renormalised weight >= threshold.
  double gate_weight_variance = 0; // Mean over tokens of the (population) variance of p.
  double router_entropy = 0;       // Mean entropy of p / log(E); 0 when E == 1.
  double load_cv = 0;              // std / mean of usage (population std).
  // Optional: num_classes rows x E, row-major; row c = share of class c's kept slots per expert.
  int num_classes = 0;
  std::vector<double> class_routing;
};

// Kept slots per (class, expert), summed over batches; Rows() normalises each class's row.
struct ClassRoutingAccumulator {
  int64_t num_classes = 0;
  int64_t num_experts = 0;
  std::vector<double> counts;  // [num_classes * num_experts]

  void Reset(int64_t classes, int64_t experts);
  // Row-normalised shares; a class with no slot keeps a row of zeros.
  std::vector<double> Rows() const;
};

// Sums over the tokens seen since Reset(); Summarize() turns them into the statistics above.
struct RoutingStatsAccumulator {
  std::vector<double> routed_slots;  // Per expert: slots actually computed (after threshold drops).
  std::vector<double> prob_sum;      // Per expert: sum of router probabilities.
  double tokens = 0;
  double topk_slots = 0;             // tokens * top_k.
  double slots_above_threshold = 0;
  double prob_variance_sum = 0;
  double entropy_sum = 0;            // Natural-log entropy, summed over tokens.

  void Reset(int64_t num_experts);
  ExpertLayerSummary Summarize(int layer) const;
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_EXPERT_STATS_H_
