// SweepSpec: a staged sweep as submitted (JSON), parsed and validated. The CLI's offline
// `validate` and the coordinator's SubmitSweep run the same code, so they give the same messages.
#ifndef MOESWEEP_COMMON_SWEEP_SPEC_H_
#define MOESWEEP_COMMON_SWEEP_SPEC_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace moesweep {

// One stage: a grid of axes; its points are the cartesian product in the order written, the last
// axis varying fastest.
// "extend_edges": when a stage's winner sits on the first or last value of a numeric axis, the
// stage adds the next value beyond that edge (seed 001: "if 2048 wins, test 4096 next").
struct EdgeExtension {
  int max_extensions = 1;  // Values added beyond each edge of an axis, at most.
  std::map<std::string, std::pair<double, double>> bounds;  // Per axis: never past [min, max].
};

// "search": {"method": "random", "trials": N, "seed": S} with a "space": N points sampled from the
// space with seed S, each run with every seed and scored like a grid point. The seed is stored
// with the sweep (chosen at submission when not given), so the points are the same after a restart.
struct RandomSearch {
  int trials = 0;
  uint64_t seed = 0;
  // Per key, in the order written: {"uniform": [a, b]}, {"log_uniform": [a, b]}, {"int": [a, b]} or
  // {"choice": [values]}.
  std::vector<std::pair<std::string, Json>> space;
  std::vector<Json> points;  // The sampled points, in order.
};

// "pruner": running trials whose per-step metric falls behind the stage's other trials are told to
// STOP and end PRUNED (their grid point cannot win). "median" is Optuna's MedianPruner: after
// warm-up, a trial worse than the median of the other trials at the same step. "asha" is
// asynchronous successive halving: at rung steps min_steps * reduction_factor^k, a trial outside
// the best 1/reduction_factor of the trials that reached that rung.
struct PrunerSpec {
  enum class Method { kMedian, kAsha };
  Method method = Method::kMedian;
  std::string metric;          // The per-step metric compared; the objective's unless given.
  bool maximize = true;        // Its goal.
  int warmup_steps = 0;        // No trial is pruned at a step <= warmup_steps.
  int min_trials = 5;          // Other trials with a value at the step before one is pruned there.
  int min_steps = 1;           // asha: the first rung.
  int reduction_factor = 3;    // asha: the share kept at each rung is 1/reduction_factor.
  // "compare": "same_seed" (default) judges a trial only against trials of its own seed, which share
  // its initialisation and data order (a paired comparison: seed noise cancels); "all" against all.
  bool same_seed = true;

  const char* method_name() const { return method == Method::kMedian ? "median" : "asha"; }
  Json ToJson() const;
};

struct StageSpec {
  std::string name;
  std::vector<std::pair<std::string, std::vector<Json>>> axes;  // Empty for a random search.
  std::optional<EdgeExtension> extend_edges;
  std::optional<RandomSearch> random;
  // This stage's own "pruner": an object replaces the sweep's, false turns pruning off here.
  std::optional<PrunerSpec> pruner;
  bool pruner_off = false;
  // The keys this stage sets: its grid axes or its search space.
  std::vector<std::string> Keys() const;

  size_t NumPoints() const;
  // The grid values of point `index` (0 <= index < NumPoints()) as {"key": value, ...}.
  Json Point(size_t index) const;
};

// How trials run. "builtin": the worker's LibTorch models, configs checked against the trial-config
// schema. "command": the user's own program (see common/command_template.h and docs/trainers.md);
// config keys and metric names are the program's own.
struct TrainerSpec {
  static constexpr const char* kBuiltin = "builtin";
  static constexpr const char* kCommand = "command";

  std::string kind = kBuiltin;
  std::vector<std::string> command;                         // argv template (no shell).
  std::string workdir;                                      // "" = the worker's working directory.
  std::vector<std::pair<std::string, std::string>> env;     // Added to the worker's environment.
  double timeout_seconds = 0;                               // 0 = no limit.
  int gpus = 0;                                             // GPUs per trial.

  bool is_command() const { return kind == kCommand; }
  Json ToJson() const;
};

// Checks a "trainer" object's shape (not how the command uses the config: that needs the stages).
// Appends one message per problem, each starting with its path under `path`.
void CheckTrainerSpec(const Json& trainer, const std::string& path, TrainerSpec* out, std::vector<std::string>* errors);

struct SweepSpec {
  std::string name;
  std::string metric;                 // objective.metric
  bool maximize = true;               // objective.goal == "maximize"
  std::vector<int64_t> seeds;
  Json base = Json::object();         // Trial-config keys shared by every trial.
  std::optional<Json> baseline;       // Overrides of `base` run once per seed before stage 1.
  TrainerSpec trainer;
  std::vector<StageSpec> stages;
  // "success": {"min_delta": D}: a stage's winner should beat the baseline by D (seed 001's "+2
  // points"); stage results say whether it does.
  std::optional<double> success_min_delta;
  // A trial whose config and seed equal a SUCCEEDED trial's of the sweep takes its results instead
  // of running again ("reuse": false for trainers that are not deterministic).
  bool reuse = true;
  std::optional<PrunerSpec> pruner;   // The sweep's pruner; stages may override it.
  int max_attempts = 3;
  double lease_seconds = 60;

  // Normalised JSON (defaults filled in); parsing it again yields an equal spec.
  Json ToJson() const;
  // The pruner of spec stage `stage` (1-based), or null. The baseline (0) is never pruned.
  const PrunerSpec* PrunerFor(int stage) const;
};

struct SpecLimits {
  int64_t max_stage_trials = 10000;  // Grid points x seeds of one stage.
};

// Parses and validates `text`. On failure the status lists every problem, one per line, each
// starting with its JSON path ("stages[1].grid.temperature: expected a non-empty array ...").
Status ParseSweepSpec(std::string_view text, const SpecLimits& limits, SweepSpec* out);

}  // namespace moesweep

#endif  // MOESWEEP_COMMON_SWEEP_SPEC_H_
