// Pruner: the pure rule that tells a running trial to stop early (the spec's "pruner"), kept apart
// from the engine so it can be tested directly. The engine feeds it each report's value of the
// pruner's metric and the values the stage's other trials reported at the same step.
#ifndef MOESWEEP_SERVER_PRUNER_H_
#define MOESWEEP_SERVER_PRUNER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/sweep_spec.h"

namespace moesweep {

// Why the trial that reported `value` at `step` should stop, or nullopt to let it go on. `others`
// are the values the trials it is compared with reported at `step` (a non-finite value counts as
// the worst possible); `peers` names those trials in the reason ("other trials with seed 42").
std::optional<std::string> ShouldPrune(const PrunerSpec& pruner, int64_t step, double value,
                                       const std::vector<double>& others, const std::string& peers = "other trials");

// Whether `step` is a rung of an asha pruner: min_steps * reduction_factor^k.
bool IsAshaRung(const PrunerSpec& pruner, int64_t step);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_PRUNER_H_
