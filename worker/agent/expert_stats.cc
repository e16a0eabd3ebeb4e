#include "worker/agent/expert_stats.h"

#include <cmath>

namespace moesweep::worker {

void RoutingStatsAccumulator::Reset(int64_t num_experts) {
  routed_slots.assign(num_experts, 0.0);
  prob_sum.assign(num_experts, 0.0);
  tokens = topk_slots = slots_above_threshold = prob_variance_sum = entropy_sum = 0;
}

ExpertLayerSummary RoutingStatsAccumulator::Summarize(int layer) const {
  ExpertLayerSummary s;
  s.layer = layer;
  const size_t e = routed_slots.size();
  if (e == 0 || tokens <= 0) return s;
  double total = 0;
  for (double c : routed_slots) total += c;
  s.usage.resize(e);
  s.importance.resize(e);
  for (size_t i = 0; i < e; ++i) {
    s.usage[i] = total > 0 ? routed_slots[i] / total : 0.0;
    s.importance[i] = prob_sum[i] / tokens;
  }
  const double mean = 1.0 / static_cast<double>(e);
  double var = 0;
  for (double u : s.usage) var += (u - mean) * (u - mean);
  var /= static_cast<double>(e);
  s.usage_variance = var;
  s.load_cv = std::sqrt(var) / mean;
  s.activation_rate = topk_slots > 0 ? slots_above_threshold / topk_slots : 0.0;
  s.gate_weight_variance = prob_variance_sum / tokens;
  s.router_entropy = e > 1 ? entropy_sum / tokens / std::log(static_cast<double>(e)) : 0.0;
  return s;
}

void ClassRoutingAccumulator::Reset(int64_t classes, int64_t experts) {
  num_classes = classes;
  num_experts = experts;
  counts.assign(static_cast<size_t>(classes * experts), 0.0);
}

std::vector<double> ClassRoutingAccumulator::Rows() const {
  std::vector<double> rows(counts.size(), 0.0);
  for (int64_t c = 0; c < num_classes; ++c) {
    double total = 0;
    for (int64_t e = 0; e < num_experts; ++e) total += counts[c * num_experts + e];
    if (total <= 0) continue;
    for (int64_t e = 0; e < num_experts; ++e) rows[c * num_experts + e] = counts[c * num_experts + e] / total;
  }
  return rows;
}

}  // namespace moesweep::worker
