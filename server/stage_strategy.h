// StageStrategy: what one stage does. It plans the stage's first trials, and when every trial it
// made so far has finished, it either adds trials (a grid's edge extension) or lets the stage be
// decided. It keeps no state of its own: what it decides follows from the stored trials, so a
// restarted coordinator decides the same.
#ifndef MOESWEEP_SERVER_STAGE_STRATEGY_H_
#define MOESWEEP_SERVER_STAGE_STRATEGY_H_

#include <memory>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/sweep_spec.h"
#include "server/stage_planner.h"

namespace moesweep {

class StageStrategy {
 public:
  virtual ~StageStrategy() = default;
  // The stage's first trials; `carried` is base + earlier winners.
  virtual std::vector<PlannedTrial> Plan(const Json& carried) const = 0;
  // Every trial so far has finished and `decision` scored them. More trials to run before the stage
  // is decided, or none. `winner_config` is the winner's config without "seed"; `tried` holds the
  // point JSON of every point tried so far (grid points and earlier additions).
  virtual std::vector<PlannedTrial> More(const StageDecision& decision, const Json& winner_config,
                                         const std::vector<Json>& tried) const = 0;
};

// The baseline (stage 0) or spec stage `stage` of `spec`.
std::unique_ptr<StageStrategy> MakeStageStrategy(const SweepSpec& spec, int stage);

// The points an edge extension adds (exposed for tests): for each numeric axis of `stage` on whose
// first or last value (among `tried`) `winner_point` sits, the winner with that axis moved one step
// beyond the edge. The step continues the axis' own: a constant ratio (512, 1024, 2048 -> 4096) or
// the difference at that edge (0.5, 1.0, 1.5 -> 2.0; 0.3, 0.5 -> 0.1); integer axes stay integers. Never more than
// max_extensions values beyond an edge, never past the spec's bounds or the built-in key's range.
std::vector<Json> EdgeExtensionPoints(const SweepSpec& spec, const StageSpec& stage, const Json& winner_point,
                                      const std::vector<Json>& tried);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_STAGE_STRATEGY_H_
