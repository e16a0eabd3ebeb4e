// The trial-config schema: every key a worker understands, with its type, allowed values and
// default. Shared by the worker (to read configs), the coordinator (to refuse typos at submission)
// and the CLI (offline validation and docs). No LibTorch here.
#ifndef MOESWEEP_COMMON_TRIAL_SCHEMA_H_
#define MOESWEEP_COMMON_TRIAL_SCHEMA_H_

#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace moesweep {

enum class ValueType { kInt, kNumber, kString, kBool };

struct ConfigKey {
  std::string name;
  ValueType type;
  Json default_value;
  std::string help;
  std::vector<std::string> choices;  // For kString: allowed values; empty means any string.
  double min = -std::numeric_limits<double>::infinity();  // Inclusive bounds for kInt / kNumber.
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
};

// Every key, in documentation order.
const std::vector<ConfigKey>& TrialConfigKeys();

// nullptr when `name` is not a key.
const ConfigKey* FindConfigKey(std::string_view name);

// The closest key to `name` by edit distance, or "" when nothing is close.
std::string SuggestConfigKey(std::string_view name);

// Checks one value against its key; `path` names it in the error ("stages[0].grid.top_k[1]").
Status CheckConfigValue(const ConfigKey& key, const Json& value, const std::string& path);

// Checks that `config` is an object of known keys with valid values. Unknown keys are errors with
// a "did you mean" suggestion. Appends one message per problem to `errors`.
void CheckTrialConfig(const Json& config, const std::string& path, std::vector<std::string>* errors);

// Same as CheckTrialConfig, as one Status (every problem on its own line).
Status ValidateTrialConfig(const Json& config, const std::string& path = "config");

// The rules between keys that every worker enforces (top_k <= num_experts when use_moe;
// num_heads divides d_model for moe_transformer; dataset "csv" needs a path): the one definition,
// used by the worker on each trial and by the coordinator on every config a spec can produce.
// Keys missing from `config` take their defaults. Appends "<path>.<key>: ..." per broken rule.
void CheckCrossKeyRules(const Json& config, const std::string& path, std::vector<std::string>* errors);

// The keys each cross-key rule reads, one group per rule.
const std::vector<std::vector<std::string>>& CrossKeyRuleKeys();

// The `device` key of a built-in trial: "cpu", "auto", "cuda" or "cuda:N" (index N among the
// GPUs the worker gave the trial; -1 for plain "cuda").
struct DeviceRequest {
  enum Kind { kCpu, kAuto, kCuda } kind = kCpu;
  int index = -1;
};
// false when `text` is none of those.
bool ParseDevice(const std::string& text, DeviceRequest* out);

// Whether a built-in trial with this config must have a GPU (device "cuda" or "cuda:N"): the
// coordinator leases it only to a worker that offers a free one. "auto" trials go anywhere.
bool TrialNeedsGpu(const Json& config);

// `config` with every missing key set to its default.
Json WithDefaults(const Json& config);

// Metrics the worker reports (per epoch or at the end); an objective must name one of them.
const std::vector<std::string>& KnownMetrics();
std::string SuggestMetric(std::string_view name);
// The ones it reports after every epoch (the rest only at the end): what a pruner can compare.
const std::vector<std::string>& PerEpochMetrics();

// Names longer than this get no "did you mean" (no key or metric is close to that long).
inline constexpr size_t kMaxSuggestedNameBytes = 64;

// Levenshtein distance, for suggestions.
size_t EditDistance(std::string_view a, std::string_view b);

}  // namespace moesweep

#endif  // MOESWEEP_COMMON_TRIAL_SCHEMA_H_
