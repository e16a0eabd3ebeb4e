#include "server/stage_strategy.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "common/trial_schema.h"

namespace moesweep {
namespace {

bool AllIntegers(const std::vector<Json>& values) {
  return std::all_of(values.begin(), values.end(), [](const Json& v) { return v.is_number_integer(); });
}

// The value one step past `edge` (up or down), continuing the axis' own spacing.
std::optional<double> Step(const std::vector<double>& original, double edge, bool up) {
  std::vector<double> s = original;
  std::sort(s.begin(), s.end());
  bool geometric = s.front() > 0;
  for (size_t i = 2; geometric && i < s.size(); ++i) {
    geometric = std::fabs(s[i] / s[i - 1] - s[1] / s[0]) < 1e-9 * (s[1] / s[0]);
  }
  // Two values are taken as geometric only when their ratio is a round 2 or 10 (512, 1024).
  if (geometric && s.size() == 2) geometric = std::fabs(s[1] / s[0] - 2) < 1e-9 || std::fabs(s[1] / s[0] - 10) < 1e-9;
  if (geometric && s.size() >= 2) {
    const double ratio = s[1] / s[0];
    return up ? edge * ratio : edge / ratio;
  }
  // Each edge continues its own step: 0.3, 0.5, ..., 1.0, 1.5 goes down by 0.2 and up by 0.5.
  const double step = up ? s[s.size() - 1] - s[s.size() - 2] : s[1] - s[0];
  if (!(step > 0)) return std::nullopt;
  // Rounded to 12 significant digits, so that 0.3 - 0.2 is 0.1, not 0.09999999999999998.
  const double next = up ? edge + step : edge - step;
  if (next == 0) return next;
  const double scale = std::pow(10.0, 11 - std::floor(std::log10(std::fabs(next))));
  return std::round(next * scale) / scale;
}

class GridStrategy final : public StageStrategy {
 public:
  GridStrategy(const SweepSpec& spec, int stage) : spec_(spec), stage_(spec.stages[stage - 1]) {}

  std::vector<PlannedTrial> Plan(const Json& carried) const override { return PlanStage(stage_, carried, spec_.seeds); }

  std::vector<PlannedTrial> More(const StageDecision& decision, const Json& winner_config,
                                 const std::vector<Json>& tried) const override {
    if (!stage_.extend_edges || decision.winner < 0) return {};
    Json winner_point;
    if (!ParseJson(decision.points[decision.winner].point_json(), &winner_point).ok()) return {};
    std::vector<PlannedTrial> out;
    int next_index = static_cast<int>(tried.size());
    for (const Json& point : EdgeExtensionPoints(spec_, stage_, winner_point, tried)) {
      Json config = winner_config;
      for (auto it = point.begin(); it != point.end(); ++it) config[it.key()] = it.value();
      for (int64_t seed : spec_.seeds) {
        Json with_seed = config;
        with_seed["seed"] = seed;
        out.push_back({next_index, seed, point, std::move(with_seed)});
      }
      ++next_index;
    }
    return out;
  }

 private:
  const SweepSpec& spec_;
  const StageSpec& stage_;
};

class BaselineStrategy final : public StageStrategy {
 public:
  explicit BaselineStrategy(const SweepSpec& spec) : spec_(spec) {}
  std::vector<PlannedTrial> Plan(const Json&) const override {
    return PlanBaseline(spec_.base, *spec_.baseline, spec_.seeds);
  }
  std::vector<PlannedTrial> More(const StageDecision&, const Json&, const std::vector<Json>&) const override {
    return {};
  }

 private:
  const SweepSpec& spec_;
};

}  // namespace

std::unique_ptr<StageStrategy> MakeStageStrategy(const SweepSpec& spec, int stage) {
  if (stage == 0) return std::make_unique<BaselineStrategy>(spec);
  return std::make_unique<GridStrategy>(spec, stage);
}

std::vector<Json> EdgeExtensionPoints(const SweepSpec& spec, const StageSpec& stage, const Json& winner_point,
                                      const std::vector<Json>& tried) {
  std::vector<Json> out;
  if (!stage.extend_edges || !winner_point.is_object()) return out;
  for (const auto& [key, values] : stage.axes) {
    if (values.size() < 2 || !std::all_of(values.begin(), values.end(), [](const Json& v) { return v.is_number(); })) {
      continue;
    }
    auto w = winner_point.find(key);
    if (w == winner_point.end() || !w->is_number()) continue;
    std::vector<double> original;
    for (const Json& v : values) original.push_back(v.get<double>());
    const double lo = *std::min_element(original.begin(), original.end());
    const double hi = *std::max_element(original.begin(), original.end());
    std::set<double> known(original.begin(), original.end());
    for (const Json& p : tried) {
      if (auto v = p.find(key); v != p.end() && v->is_number()) known.insert(v->get<double>());
    }
    const double value = w->get<double>();
    // Bounds: the spec's, and the built-in key's own range.
    double min = -INFINITY, max = INFINITY;
    bool min_exclusive = false;
    if (!spec.trainer.is_command()) {
      if (const ConfigKey* k = FindConfigKey(key)) min = k->min, max = k->max, min_exclusive = k->min_exclusive;
    }
    if (auto b = stage.extend_edges->bounds.find(key); b != stage.extend_edges->bounds.end()) {
      if (b->second.first > min) min_exclusive = false;  // The spec's bounds are inclusive.
      min = std::max(min, b->second.first);
      max = std::min(max, b->second.second);
    }
    for (bool up : {true, false}) {
      const double edge = up ? *known.rbegin() : *known.begin();
      if (value != edge) continue;
      const long beyond = std::count_if(known.begin(), known.end(), [&](double v) { return up ? v > hi : v < lo; });
      if (beyond >= stage.extend_edges->max_extensions) continue;
      std::optional<double> next = Step(original, edge, up);
      if (!next || !std::isfinite(*next)) continue;
      Json next_value;
      if (AllIntegers(values)) {
        const double rounded = std::round(*next);
        if (rounded == edge || std::fabs(rounded) > 9.0e15) continue;
        next_value = static_cast<int64_t>(rounded);
        next = rounded;
      } else {
        next_value = *next;
      }
      if (*next > max || *next < min || (min_exclusive && *next <= min) || known.count(*next)) continue;
      Json point = winner_point;
      point[key] = next_value;
      out.push_back(std::move(point));
    }
  }
  return out;
}

}  // namespace moesweep
