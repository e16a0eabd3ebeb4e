// Fuzzes the stage planner (server/stage_planner.cc) as the coordinator drives it: a fuzzed spec
// (the bytes before the first NUL, through ParseSweepSpec) is planned stage by stage, each stage's
// trials get fuzzed outcomes (the bytes after the NUL: states, objectives with NaN, infinities and
// 1e308, errors, order), DecideStage picks a winner and the winner's point is carried into the next
// stage, as SweepEngine does.
// Invariants: no exception escapes; the baseline has one trial per seed; a stage has points x seeds
// trials in grid order with seeds in spec order, each config = carried + point + seed; for the
// built-in trainer every planned config passes the trial-config schema and the cross-key rules
// (ParseSweepSpec promises that, within kMaxCrossKeyCombinations); DecideStage's scores count
// every finished trial once, a winner has a finite best mean (ties to the earlier point), and no
// winner after finished trials comes with a reason.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string_view>

#include "common/sweep_spec.h"
#include "common/trial_schema.h"
#include "fuzz/fuzz_util.h"
#include "server/stage_planner.h"

using namespace moesweep;

namespace {

// Few trials per stage keep each run fast; the spec target covers the real limit.
constexpr int64_t kMaxStageTrials = 256;
// Below this many combinations of carried and gridded values, ParseSweepSpec has checked the
// cross-key rules of every config a stage can produce.
constexpr size_t kCheckedCombinations = 100000;

void CheckConfig(const SweepSpec& spec, const Json& config, bool cross_keys_checked, const std::string& where) {
  FUZZ_CHECK(config.is_object() && config.contains("seed"), "{}: config without a seed", where);
  if (spec.trainer.is_command()) return;
  Status valid = ValidateTrialConfig(config, where);
  FUZZ_CHECK(valid.ok(), "a planned config fails the schema: {}", valid.message());
  if (!cross_keys_checked) return;
  std::vector<std::string> errors;
  CheckCrossKeyRules(config, where, &errors);
  FUZZ_CHECK(errors.empty(), "an accepted spec plans a config that every worker refuses: {}\nconfig: {}", errors[0],
             Abbreviate(config));
}

// config == carried, then the point's keys, then "seed".
void CheckMerged(const Json& config, const Json& carried, const Json& point, int64_t seed, const std::string& where) {
  std::set<std::string> keys;
  for (auto it = carried.begin(); it != carried.end(); ++it) keys.insert(it.key());
  for (auto it = point.begin(); it != point.end(); ++it) keys.insert(it.key());
  keys.insert("seed");
  FUZZ_CHECK(config.size() == keys.size(), "{}: {} keys, expected {}", where, config.size(), keys.size());
  for (auto it = carried.begin(); it != carried.end(); ++it) {
    if (it.key() != "seed" && !point.contains(it.key())) {
      FUZZ_CHECK(config.at(it.key()) == it.value(), "{}: carried {} lost", where, it.key());
    }
  }
  for (auto it = point.begin(); it != point.end(); ++it) {
    FUZZ_CHECK(config.at(it.key()) == it.value(), "{}: point's {} lost", where, it.key());
  }
  FUZZ_CHECK(config.at("seed") == seed, "{}: seed {} instead of {}", where, Abbreviate(config.at("seed")), seed);
}

std::vector<TrialOutcome> FuzzOutcomes(const std::vector<PlannedTrial>& trials, fuzz::ByteReader* in) {
  static constexpr v1::TrialState kStates[] = {v1::TRIAL_STATE_UNSPECIFIED, v1::TRIAL_PENDING, v1::TRIAL_RUNNING,
                                               v1::TRIAL_SUCCEEDED, v1::TRIAL_FAILED, v1::TRIAL_CANCELLED};
  std::vector<TrialOutcome> outcomes;
  int64_t id = 1;
  for (const PlannedTrial& t : trials) {
    TrialOutcome o;
    o.trial_id = id++;
    o.point_index = t.point_index;
    o.seed = t.seed;
    o.point_json = t.point.dump();
    // With no bytes left every trial succeeds with objective 0: a run always gets to its end.
    uint8_t b = in->empty() ? 3 : in->Byte();
    o.state = kStates[b % 6];
    if (b & 0x40) o.objective = in->Double();
    else if (in->empty()) o.objective = 0.0;
    if (o.state == v1::TRIAL_FAILED) o.error = in->String(32);
    outcomes.push_back(std::move(o));
  }
  // The store returns trials in id order; the rules must not depend on it.
  if (in->Byte() & 1) std::reverse(outcomes.begin(), outcomes.end());
  return outcomes;
}

bool Terminal(v1::TrialState s) {
  return s == v1::TRIAL_SUCCEEDED || s == v1::TRIAL_FAILED || s == v1::TRIAL_CANCELLED;
}

void CheckDecision(const std::vector<TrialOutcome>& outcomes, bool maximize, const StageDecision& d) {
  std::map<int, std::pair<int, int>> expected;  // point -> (n, failed)
  int finished = 0;
  for (const TrialOutcome& o : outcomes) {
    if (!Terminal(o.state)) continue;
    ++finished;
    bool counts = o.state == v1::TRIAL_SUCCEEDED && o.objective && std::isfinite(*o.objective);
    auto& e = expected[o.point_index];
    (counts ? e.first : e.second)++;
  }
  FUZZ_CHECK(d.points.size() == expected.size(), "{} scored points, expected {}", d.points.size(), expected.size());
  size_t i = 0;
  for (const auto& [index, e] : expected) {
    const v1::PointScore& p = d.points[i++];
    FUZZ_CHECK(p.point_index() == index, "points out of grid order");
    FUZZ_CHECK(p.n() == e.first && p.failed() == e.second, "point {}: n {} failed {}, expected {} and {}", index, p.n(),
               p.failed(), e.first, e.second);
    if (p.n() > 0 && !p.not_finite()) {
      FUZZ_CHECK(std::isfinite(p.mean()) && std::isfinite(p.std()) && p.std() >= 0, "point {}: mean {} std {}", index,
                 p.mean(), p.std());
    }
  }
  FUZZ_CHECK(d.winner >= -1 && d.winner < static_cast<int>(d.points.size()), "winner {}", d.winner);
  if (d.winner < 0) {
    for (const v1::PointScore& p : d.points) FUZZ_CHECK(p.n() == 0 || p.not_finite(), "a scored point did not win");
    FUZZ_CHECK(finished == 0 || !d.failure.empty(), "no winner and no reason");
    return;
  }
  FUZZ_CHECK(d.failure.empty(), "a winner and a failure: {}", d.failure);
  const v1::PointScore& w = d.points[d.winner];
  FUZZ_CHECK(w.n() > 0 && !w.not_finite(), "the winner has no finite score");
  for (int j = 0; j < static_cast<int>(d.points.size()); ++j) {
    const v1::PointScore& p = d.points[j];
    if (j == d.winner || p.n() == 0 || p.not_finite()) continue;
    bool better = maximize ? p.mean() > w.mean() : p.mean() < w.mean();
    bool tie_before = j < d.winner && p.mean() == w.mean();
    FUZZ_CHECK(!better && !tie_before, "point {} (mean {}) should beat the winner {} (mean {})", p.point_index(),
               p.mean(), w.point_index(), w.mean());
  }
}

size_t SaturatingMul(size_t a, size_t b) {
  if (a != 0 && b > SIZE_MAX / a) return SIZE_MAX;
  return a * b;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  std::string_view spec_text = input.substr(0, nul);
  fuzz::ByteReader in(nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1));
  fuzz::NoThrow("stage planner", [&] {
    SpecLimits limits;
    limits.max_stage_trials = kMaxStageTrials;
    SweepSpec spec;
    if (!ParseSweepSpec(spec_text, limits, &spec).ok()) return;
    const size_t seeds = spec.seeds.size();

    if (spec.baseline) {
      std::vector<PlannedTrial> trials = PlanBaseline(spec.base, *spec.baseline, spec.seeds);
      FUZZ_CHECK(trials.size() == seeds, "baseline: {} trials for {} seeds", trials.size(), seeds);
      for (size_t k = 0; k < trials.size(); ++k) {
        const PlannedTrial& t = trials[k];
        FUZZ_CHECK(t.point_index == 0 && t.seed == spec.seeds[k] && t.point == *spec.baseline, "baseline trial {}", k);
        CheckMerged(t.config, spec.base, *spec.baseline, t.seed, "baseline");
        CheckConfig(spec, t.config, true, "baseline");
      }
    }

    Json carried = spec.base;
    size_t combinations = 1;
    for (size_t i = 0; i < spec.stages.size(); ++i) {
      const StageSpec& stage = spec.stages[i];
      const std::string where = fmt::format("stages[{}]", i);
      combinations = SaturatingMul(combinations, stage.NumPoints());
      std::vector<PlannedTrial> trials = PlanStage(stage, carried, spec.seeds);
      FUZZ_CHECK(trials.size() == stage.NumPoints() * seeds, "{}: {} trials for {} points x {} seeds", where,
                 trials.size(), stage.NumPoints(), seeds);
      for (size_t k = 0; k < trials.size(); ++k) {
        const PlannedTrial& t = trials[k];
        FUZZ_CHECK(t.point_index == static_cast<int>(k / seeds) && t.seed == spec.seeds[k % seeds],
                   "{}: trial {} is point {} seed {}", where, k, t.point_index, t.seed);
        FUZZ_CHECK(t.point == stage.Point(t.point_index), "{}: trial {} has the wrong point", where, k);
        CheckMerged(t.config, carried, t.point, t.seed, where);
        CheckConfig(spec, t.config, combinations <= kCheckedCombinations, where);
      }

      std::vector<TrialOutcome> outcomes = FuzzOutcomes(trials, &in);
      StageDecision decision = DecideStage(outcomes, spec.maximize, spec.metric, where);
      CheckDecision(outcomes, spec.maximize, decision);
      if (decision.winner < 0) return;  // The sweep fails (or waits) here.
      Json point = stage.Point(decision.points[decision.winner].point_index());
      FUZZ_CHECK(point.dump() == decision.points[decision.winner].point_json(), "{}: winner's point_json", where);
      for (auto it = point.begin(); it != point.end(); ++it) carried[it.key()] = it.value();
    }
  });
  return 0;
}
