// StagePlanner: the pure rules of a staged sweep, kept apart from storage and threads so they can
// be tested directly. Which trials a stage has, and how a finished stage picks its winner.
#ifndef MOESWEEP_SERVER_STAGE_PLANNER_H_
#define MOESWEEP_SERVER_STAGE_PLANNER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/sweep_spec.h"
#include "moesweep/v1/moesweep.pb.h"

namespace moesweep {

// One trial to create: its grid point and full config (including "seed").
struct PlannedTrial {
  int point_index;
  int64_t seed;
  Json point;   // This stage's grid values only.
  Json config;  // carried config + point + seed.
};

// Trials of a stage, in the deterministic order they are created and served: grid points in grid
// order, seeds in the spec's order within each point. `carried` is base + earlier winners.
std::vector<PlannedTrial> PlanStage(const StageSpec& stage, const Json& carried, const std::vector<int64_t>& seeds);

// The baseline's trials: base + baseline overrides, one per seed, all at point 0.
std::vector<PlannedTrial> PlanBaseline(const Json& base, const Json& baseline, const std::vector<int64_t>& seeds);

// What a finished (or running) trial contributes to its stage's score.
struct TrialOutcome {
  int64_t trial_id = 0;
  int point_index = 0;
  int64_t seed = 0;
  v1::TrialState state = v1::TRIAL_PENDING;
  std::optional<double> objective;  // Set when the trial succeeded and reported the metric.
  std::string error;
  std::string point_json;
};

struct StageDecision {
  std::vector<v1::PointScore> points;  // Points with at least one finished trial, in grid order.
  int winner = -1;                     // Index into `points`, or -1 when no point has a score.
  int runner_up = -1;                  // The best scored point after the winner, or -1.
  std::string failure;                 // Why there is no winner (only when every trial has finished).
};

// Whether a scored point may win its stage: some seed succeeded, its score is finite and no seed
// was pruned.
bool CanWin(const v1::PointScore& point);

// Scores every point (mean, sample std and n over seeds that succeeded with a finite objective)
// and picks the best by goal; ties go to the earlier grid point. A point whose mean or std is not
// finite is marked not_finite and cannot win; nor can a point with a PRUNED seed (the other
// seeds still give its score). `stage_label` names the stage in
// failure messages, e.g. `stage 2 "structure"`.
StageDecision DecideStage(const std::vector<TrialOutcome>& outcomes, bool maximize, const std::string& metric,
                          const std::string& stage_label);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_STAGE_PLANNER_H_
