#include "server/stage_planner.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

namespace moesweep {

std::vector<PlannedTrial> PlanStage(const StageSpec& stage, const Json& carried, const std::vector<int64_t>& seeds) {
  std::vector<PlannedTrial> trials;
  size_t points = stage.NumPoints();
  trials.reserve(points * seeds.size());
  for (size_t p = 0; p < points; ++p) {
    Json point = stage.Point(p);
    Json config = carried;
    for (auto it = point.begin(); it != point.end(); ++it) config[it.key()] = it.value();
    for (int64_t seed : seeds) {
      Json with_seed = config;
      with_seed["seed"] = seed;
      trials.push_back({static_cast<int>(p), seed, point, std::move(with_seed)});
    }
  }
  return trials;
}

std::vector<PlannedTrial> PlanBaseline(const Json& base, const Json& baseline, const std::vector<int64_t>& seeds) {
  Json config = base;
  for (auto it = baseline.begin(); it != baseline.end(); ++it) config[it.key()] = it.value();
  std::vector<PlannedTrial> trials;
  for (int64_t seed : seeds) {
    Json with_seed = config;
    with_seed["seed"] = seed;
    trials.push_back({0, seed, baseline, std::move(with_seed)});
  }
  return trials;
}

bool CanWin(const v1::PointScore& point) { return point.n() > 0 && !point.not_finite() && point.pruned() == 0; }

StageDecision DecideStage(const std::vector<TrialOutcome>& outcomes, bool maximize, const std::string& metric,
                          const std::string& stage_label) {
  struct Acc {
    std::vector<double> values;
    int failed = 0;
    int pruned = 0;
    std::string point_json;
  };
  std::map<int, Acc> by_point;  // Ordered by point index: grid order.
  const TrialOutcome* first_error = nullptr;
  int succeeded = 0, finished = 0;
  for (const TrialOutcome& t : outcomes) {
    bool terminal = t.state == v1::TRIAL_SUCCEEDED || t.state == v1::TRIAL_FAILED ||
                    t.state == v1::TRIAL_CANCELLED || t.state == v1::TRIAL_PRUNED;
    if (!terminal) continue;
    ++finished;
    Acc& acc = by_point[t.point_index];
    acc.point_json = t.point_json;
    if (t.state == v1::TRIAL_PRUNED) {
      ++acc.pruned;
      continue;
    }
    if (t.state == v1::TRIAL_SUCCEEDED) ++succeeded;
    if (t.state == v1::TRIAL_SUCCEEDED && t.objective && std::isfinite(*t.objective)) {
      acc.values.push_back(*t.objective);
    } else {
      ++acc.failed;
      if (t.state == v1::TRIAL_FAILED && (first_error == nullptr || t.trial_id < first_error->trial_id)) first_error = &t;
    }
  }

  StageDecision decision;
  for (auto& [index, acc] : by_point) {
    v1::PointScore score;
    score.set_point_index(index);
    score.set_point_json(acc.point_json);
    score.set_n(static_cast<int>(acc.values.size()));
    score.set_failed(acc.failed);
    score.set_pruned(acc.pruned);
    if (!acc.values.empty()) {
      double sum = 0;
      for (double v : acc.values) sum += v;
      double mean = sum / acc.values.size();
      double ss = 0;
      for (double v : acc.values) ss += (v - mean) * (v - mean);
      score.set_mean(mean);
      score.set_std(acc.values.size() > 1 ? std::sqrt(ss / (acc.values.size() - 1)) : 0.0);
      // Finite values can still sum to infinity (two seeds at 1e308); such a score cannot win.
      score.set_not_finite(!std::isfinite(score.mean()) || !std::isfinite(score.std()));
    }
    decision.points.push_back(score);
  }
  for (size_t i = 0; i < decision.points.size(); ++i) {
    const v1::PointScore& p = decision.points[i];
    if (!CanWin(p)) continue;
    if (decision.winner < 0) {
      decision.winner = static_cast<int>(i);
      continue;
    }
    double best = decision.points[decision.winner].mean();
    // Strictly better only: on a tie the earlier grid point keeps the win.
    if (maximize ? p.mean() > best : p.mean() < best) decision.winner = static_cast<int>(i);
  }
  for (size_t i = 0; i < decision.points.size(); ++i) {
    const v1::PointScore& p = decision.points[i];
    if (!CanWin(p) || static_cast<int>(i) == decision.winner) continue;
    if (decision.runner_up < 0) {
      decision.runner_up = static_cast<int>(i);
      continue;
    }
    double second = decision.points[decision.runner_up].mean();
    if (maximize ? p.mean() > second : p.mean() < second) decision.runner_up = static_cast<int>(i);
  }
  if (decision.winner < 0 && finished > 0) {
    bool any_not_finite = std::any_of(decision.points.begin(), decision.points.end(),
                                      [](const v1::PointScore& p) { return p.not_finite(); });
    const int pruned_points = static_cast<int>(std::count_if(
        decision.points.begin(), decision.points.end(), [](const v1::PointScore& p) { return p.pruned() > 0; }));
    if (pruned_points > 0 && std::all_of(decision.points.begin(), decision.points.end(), [](const v1::PointScore& p) {
          return p.pruned() > 0 || p.n() == 0;
        })) {
      decision.failure = fmt::format("{}: every grid point with a score had a seed pruned ({} points); a lower "
                                     "pruner.min_trials or more pruner.warmup_steps prunes less",
                                     stage_label, pruned_points);
    } else if (any_not_finite) {
      decision.failure = fmt::format("{}: no grid point has a finite score for \"{}\" (their means or deviations "
                                     "overflowed)", stage_label, metric);
    } else if (succeeded > 0) {
      decision.failure = fmt::format("{}: no trial reported the objective metric \"{}\" ({} of {} trials succeeded)",
                                     stage_label, metric, succeeded, finished);
    } else if (first_error != nullptr) {
      decision.failure = fmt::format("{}: every trial failed; first error (trial {}, seed {}): {}", stage_label,
                                     first_error->trial_id, first_error->seed, first_error->error);
    } else {
      decision.failure = fmt::format("{}: every trial was cancelled", stage_label);
    }
  }
  return decision;
}

}  // namespace moesweep
