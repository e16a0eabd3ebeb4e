#include "server/pruner.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace moesweep {
namespace {

// Higher is better after this: the goal folded in, NaN and the wrong infinity at the bottom.
double Goodness(const PrunerSpec& pruner, double v) {
  if (std::isnan(v)) return -std::numeric_limits<double>::infinity();
  return pruner.maximize ? v : -v;
}

}  // namespace

bool IsAshaRung(const PrunerSpec& pruner, int64_t step) {
  for (int64_t rung = pruner.min_steps; rung <= step; rung *= pruner.reduction_factor) {
    if (rung == step) return true;
  }
  return false;
}

std::optional<std::string> ShouldPrune(const PrunerSpec& pruner, int64_t step, double value,
                                       const std::vector<double>& others, const std::string& peers) {
  if (step <= pruner.warmup_steps || static_cast<int64_t>(others.size()) < pruner.min_trials) return std::nullopt;
  const double mine = Goodness(pruner, value);
  std::vector<double> theirs;
  theirs.reserve(others.size());
  for (double v : others) theirs.push_back(Goodness(pruner, v));

  if (pruner.method == PrunerSpec::Method::kMedian) {
    std::sort(theirs.begin(), theirs.end());
    const size_t n = theirs.size();
    // The lower middle of an even count is taken as is when the upper one is infinite, so that a
    // NaN trial does not make the median NaN.
    const double median = n % 2 == 1 ? theirs[n / 2]
                          : std::isinf(theirs[n / 2 - 1]) || std::isinf(theirs[n / 2])
                              ? theirs[n / 2 - 1]
                              : (theirs[n / 2 - 1] + theirs[n / 2]) / 2;
    if (!(mine < median)) return std::nullopt;
    const double shown = pruner.maximize ? median : -median;
    return fmt::format("pruned at step {}: {} {:.6g} is {} than the median {:.6g} of {} {} at that step "
                       "(median pruner)",
                       step, pruner.metric, value, pruner.maximize ? "lower" : "higher", shown, n, peers);
  }

  if (!IsAshaRung(pruner, step)) return std::nullopt;
  const size_t n = theirs.size() + 1;
  const size_t keep = std::max<size_t>(1, n / static_cast<size_t>(pruner.reduction_factor));
  const size_t better = static_cast<size_t>(std::count_if(theirs.begin(), theirs.end(), [&](double t) { return t > mine; }));
  if (better < keep) return std::nullopt;
  return fmt::format("pruned at rung step {}: {} {:.6g} is not among the best {} of it and {} {} at that step "
                     "(asha, reduction factor {})",
                     step, pruner.metric, value, keep, n - 1, peers, pruner.reduction_factor);
}

}  // namespace moesweep
