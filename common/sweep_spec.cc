#include "common/sweep_spec.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>

#include <fmt/format.h>

#include "common/command_template.h"
#include "common/limits.h"
#include "common/trial_schema.h"

namespace moesweep {
namespace {

constexpr size_t kSizeMax = std::numeric_limits<size_t>::max();

// a * b, or SIZE_MAX when that does not fit: counts of points and trials never wrap.
size_t SaturatingMul(size_t a, size_t b) {
  if (a != 0 && b > kSizeMax / a) return kSizeMax;
  return a * b;
}

std::string CountText(size_t n) { return n == kSizeMax ? "more than 2^64" : fmt::format("{}", n); }

// Failing configurations reported per rule and stage; the rest are counted.
constexpr size_t kMaxCrossKeyReports = 3;
// Combinations of one rule's values tried per stage (see CheckStageCrossKeys).
constexpr size_t kMaxCrossKeyCombinations = 100000;

// Collects every problem of a spec, so one submission shows them all.
std::vector<Json> SampleSpace(const std::vector<std::pair<std::string, Json>>& space, uint64_t seed, int trials);

class SpecChecker {
 public:
  explicit SpecChecker(const SpecLimits& limits) : limits_(limits) {}

  void Check(const Json& root, SweepSpec* spec) {
    if (!root.is_object()) {
      Error("", fmt::format("the spec must be a JSON object, got {}", JsonTypeName(root)));
      return;
    }
    static const std::set<std::string> kKeys = {"name",     "objective",    "seeds",         "base",   "stages",
                                                "baseline", "max_attempts", "lease_seconds", "trainer",
                                                "success",  "reuse",        "pruner"};
    for (auto it = root.begin(); it != root.end(); ++it) {
      if (!kKeys.count(it.key())) UnknownKey("", it.key(), kKeys);
    }
    // First: the trainer decides which keys and metrics exist.
    if (auto it = root.find("trainer"); it != root.end()) CheckTrainerSpec(*it, "trainer", &spec->trainer, &errors);
    command_trainer_ = spec->trainer.is_command();
    CheckName(root, spec);
    CheckObjective(root, spec);
    CheckSeeds(root, spec);
    if (auto it = root.find("base"); it != root.end()) {
      if (it->is_object()) {
        CheckConfig(*it, "base");
        spec->base = *it;
      } else {
        Error("base", fmt::format("expected an object of trial config keys, got {}", JsonTypeName(*it)));
      }
    }
    if (auto it = root.find("baseline"); it != root.end()) {
      if (it->is_object()) {
        CheckConfig(*it, "baseline");
        spec->baseline = *it;
      } else {
        Error("baseline", fmt::format("expected an object of trial config keys, got {}", JsonTypeName(*it)));
      }
    }
    if (auto it = root.find("pruner"); it != root.end()) spec->pruner = CheckPruner(*it, "pruner", *spec);
    CheckStages(root, spec);
    if (spec->trainer.is_command()) CheckCommandUsesConfig(root, *spec);
    CheckSuccess(root, spec);
    if (auto it = root.find("reuse"); it != root.end()) {
      if (it->is_boolean()) {
        spec->reuse = it->get<bool>();
      } else {
        Error("reuse", fmt::format("expected true or false, got {}", Abbreviate(*it)));
      }
    }
    spec->max_attempts = static_cast<int>(Integer(root, "max_attempts", 3, 1, 100));
    if (auto it = root.find("lease_seconds"); it != root.end()) {
      if (!it->is_number() || it->get<double>() < 1 || it->get<double>() > 86400) {
        Error("lease_seconds", fmt::format("expected a number of seconds in [1, 86400], got {}", Abbreviate(*it)));
      } else {
        spec->lease_seconds = it->get<double>();
      }
    }
  }

  // The worker's cross-key rules (CheckCrossKeyRules) on every config the spec can produce, as far
  // as submission can know them: base + baseline; and for each stage, every combination of the
  // values each rule's keys can take there: the stage's own axis values, else those of the latest
  // earlier stage that grids the key (which one wins is not known yet, so each might), else the
  // base value or default. A spec is refused when some earlier winner would make trials that every
  // worker refuses. Not caught: combinations past kMaxCrossKeyCombinations per rule and stage.
  void CheckCrossKeys(const SweepSpec& spec) {
    if (spec.baseline) {
      Json config = spec.base;
      for (auto it = spec.baseline->begin(); it != spec.baseline->end(); ++it) config[it.key()] = it.value();
      CheckCrossKeyRules(config, "baseline", &errors);
    }
    std::vector<bool> base_reported(CrossKeyRuleKeys().size(), false);
    for (size_t i = 0; i < spec.stages.size(); ++i) {
      std::string path = JoinPath(IndexPath("stages", i), "grid");
      for (size_t g = 0; g < CrossKeyRuleKeys().size(); ++g) {
        const std::vector<std::string>& group = CrossKeyRuleKeys()[g];
        std::vector<std::vector<Json>> candidates;
        std::vector<std::string> sources;
        bool gridded = false;
        for (const std::string& key : group) {
          const std::vector<Json>* values = nullptr;
          for (size_t j = i + 1; j-- > 0 && values == nullptr;) {
            values = StageValues(spec.stages[j], key);
            if (values != nullptr) {
              sources.push_back(j == i ? "" : fmt::format("{} from stages[{}].{}", key, j,
                                                          spec.stages[j].random ? "space" : "grid"));
            }
          }
          if (values != nullptr) {
            gridded = true;
            candidates.push_back(*values);
          } else if (auto it = spec.base.find(key); it != spec.base.end()) {
            candidates.push_back({*it});
            sources.push_back(fmt::format("{} from base", key));
          } else {
            candidates.push_back({FindConfigKey(key)->default_value});
            sources.push_back("");
          }
        }
        if (!gridded) {
          // Base (and defaults) alone: one report for the whole spec.
          if (base_reported[g]) continue;
          base_reported[g] = true;
        }
        std::string where = gridded ? path : "base";
        if (spec.stages[i].random) {
          // A random stage's own keys come in the combinations it sampled, not in every product of
          // their values: each sampled point stands for itself.
          std::vector<size_t> own;
          for (size_t k = 0; k < group.size(); ++k) {
            if (StageSetsKey(spec.stages[i], group[k])) own.push_back(k);
          }
          if (!own.empty()) {
            CheckSampledPoints(*spec.stages[i].random, group, own, candidates,
                               JoinPath(IndexPath("stages", i), "space"), sources);
            continue;
          }
        }
        std::vector<std::string> from;
        for (const std::string& source : sources) {
          if (!source.empty() && gridded) from.push_back(source);
        }
        const size_t failing = CheckCombinations(group, candidates, where, from, 0);
        if (failing > kMaxCrossKeyReports) {
          errors.push_back(fmt::format("{}: and {} more combinations break the same rule", where,
                                       failing - kMaxCrossKeyReports));
        }
      }
    }
  }

  std::vector<std::string> errors;

 private:
  static bool StageSetsKey(const StageSpec& stage, const std::string& key) {
    const std::vector<std::string> keys = stage.Keys();
    return std::find(keys.begin(), keys.end(), key) != keys.end();
  }

  // The values `stage` gives `key`: its grid axis, or the distinct values its random search
  // sampled; null when it does not set the key.
  const std::vector<Json>* StageValues(const StageSpec& stage, const std::string& key) {
    for (const auto& axis : stage.axes) {
      if (axis.first == key) return &axis.second;
    }
    if (!stage.random || !StageSetsKey(stage, key)) return nullptr;
    std::vector<Json>& values = sampled_values_[{&stage, key}];
    if (values.empty()) {
      for (const Json& point : stage.random->points) {
        auto v = point.find(key);
        if (v != point.end() && std::find(values.begin(), values.end(), *v) == values.end()) values.push_back(*v);
      }
    }
    return &values;
  }

  // Every combination of `candidates` (one list per key of `group`, at most
  // kMaxCrossKeyCombinations) through the cross-key rules; reports the failures while fewer than
  // kMaxCrossKeyReports were reported, each naming `where` and the sources in `from`. Returns
  // `failing` plus this call's failures.
  size_t CheckCombinations(const std::vector<std::string>& group, const std::vector<std::vector<Json>>& candidates,
                           const std::string& where, const std::vector<std::string>& from, size_t failing) {
    size_t combinations = 1;
    for (const auto& c : candidates) combinations = SaturatingMul(combinations, c.size());
    combinations = std::min(combinations, kMaxCrossKeyCombinations);
    for (size_t n = 0; n < combinations; ++n) {
      Json config = Json::object();
      for (size_t k = group.size(), rest = n; k-- > 0;) {
        config[group[k]] = candidates[k][rest % candidates[k].size()];
        rest /= candidates[k].size();
      }
      std::vector<std::string> found;
      CheckCrossKeyRules(config, where, &found);
      if (found.empty() || ++failing > kMaxCrossKeyReports) continue;
      for (const std::string& f : found) {
        errors.push_back(from.empty() ? f : fmt::format("{} ({})", f, fmt::join(from, ", ")));
      }
    }
    return failing;
  }

  // The cross-key rule of `group` on each sampled point of a random stage, with the keys the point
  // does not set taking every value in `candidates`.
  void CheckSampledPoints(const RandomSearch& random, const std::vector<std::string>& group,
                          const std::vector<size_t>& own, const std::vector<std::vector<Json>>& candidates,
                          const std::string& where, const std::vector<std::string>& sources) {
    size_t failing = 0;
    for (size_t p = 0; p < random.points.size(); ++p) {
      std::vector<std::vector<Json>> options = candidates;
      for (size_t k : own) {
        if (auto v = random.points[p].find(group[k]); v != random.points[p].end()) options[k] = {*v};
      }
      std::vector<std::string> from = {fmt::format("sampled point {}", p)};
      for (const std::string& source : sources) {
        if (!source.empty()) from.push_back(source);
      }
      failing = CheckCombinations(group, options, where, from, failing);
    }
    if (failing > kMaxCrossKeyReports) {
      errors.push_back(fmt::format("{}: and {} more sampled combinations break the same rule", where,
                                   failing - kMaxCrossKeyReports));
    }
  }

  std::map<std::pair<const StageSpec*, std::string>, std::vector<Json>> sampled_values_;

  void Error(const std::string& path, const std::string& what) {
    errors.push_back(path.empty() ? what : path + ": " + what);
  }

  void UnknownKey(const std::string& path, const std::string& key, const std::set<std::string>& known) {
    std::string best;
    size_t best_d = 3;
    for (const std::string& k : known) {
      if (key.size() > kMaxSuggestedNameBytes) break;  // Nothing known is close; EditDistance is O(n*m).
      size_t d = EditDistance(key, k);
      if (d < best_d) best_d = d, best = k;
    }
    std::string where = JoinPath(path, key);
    Error(where, best.empty() ? fmt::format("unknown key (known: {})", fmt::join(known, ", "))
                              : fmt::format("unknown key (did you mean \"{}\"?)", best));
  }

  void CheckName(const Json& root, SweepSpec* spec) {
    auto it = root.find("name");
    if (it == root.end()) return Error("name", "required");
    if (!it->is_string() || it->get<std::string>().empty()) {
      return Error("name", fmt::format("expected a non-empty string, got {}", Abbreviate(*it)));
    }
    if (it->get_ref<const std::string&>().size() > kMaxStringBytes) {
      return Error("name", fmt::format("{} bytes is longer than the limit of {} bytes", it->get_ref<const std::string&>().size(),
                                       kMaxStringBytes));
    }
    spec->name = it->get<std::string>();
  }

  void CheckObjective(const Json& root, SweepSpec* spec) {
    auto it = root.find("objective");
    if (it == root.end()) return Error("objective", "required, e.g. {\"metric\": \"val_accuracy\", \"goal\": \"maximize\"}");
    if (!it->is_object()) return Error("objective", fmt::format("expected an object, got {}", JsonTypeName(*it)));
    for (auto k = it->begin(); k != it->end(); ++k) {
      if (k.key() != "metric" && k.key() != "goal") UnknownKey("objective", k.key(), {"metric", "goal"});
    }
    auto metric = it->find("metric");
    if (metric == it->end() || !metric->is_string() || metric->get<std::string>().empty()) {
      Error("objective.metric", "required: a non-empty string naming a metric, e.g. \"val_accuracy\"");
    } else {
      spec->metric = Clip(metric->get_ref<const std::string&>(), kMaxStringBytes);
      const auto& known = KnownMetrics();
      // A command trainer's metrics are its own: nothing to check them against.
      if (!spec->trainer.is_command() && std::find(known.begin(), known.end(), spec->metric) == known.end()) {
        std::string s = SuggestMetric(spec->metric);
        std::string quoted = Clip(spec->metric, kMaxEchoChars);
        Error("objective.metric",
              s.empty() ? fmt::format("unknown metric \"{}\" (known: {})", quoted, fmt::join(known, ", "))
                        : fmt::format("unknown metric \"{}\" (did you mean \"{}\"?)", quoted, s));
      }
    }
    auto goal = it->find("goal");
    if (goal == it->end()) {
      spec->maximize = true;
    } else if (*goal == "maximize" || *goal == "minimize") {
      spec->maximize = *goal == "maximize";
    } else {
      Error("objective.goal", fmt::format("expected \"maximize\" or \"minimize\", got {}", Abbreviate(*goal)));
    }
  }

  void CheckSeeds(const Json& root, SweepSpec* spec) {
    auto it = root.find("seeds");
    if (it == root.end()) {
      spec->seeds = {0};
      return;
    }
    if (!it->is_array() || it->empty()) return Error("seeds", "expected a non-empty array of non-negative integers");
    std::set<int64_t> seen;
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& s = (*it)[i];
      if (!s.is_number_integer() || s.get<int64_t>() < 0) {
        Error(IndexPath("seeds", i), fmt::format("expected a non-negative integer, got {}", Abbreviate(s)));
        continue;
      }
      // Workers read the seed as a JSON number; above 2^53 - 1 it is not exact everywhere.
      if (s.get<int64_t>() > kMaxSeed) {
        Error(IndexPath("seeds", i), fmt::format("{} is above the largest seed, 2^53 - 1 = {}", Abbreviate(s), kMaxSeed));
        continue;
      }
      if (!seen.insert(s.get<int64_t>()).second) {
        Error(IndexPath("seeds", i), fmt::format("duplicate seed {}", s.get<int64_t>()));
        continue;
      }
      spec->seeds.push_back(s.get<int64_t>());
    }
  }

  void CheckConfig(const Json& config, const std::string& path) {
    if (!command_trainer_) CheckTrialConfig(config, path, &errors);
    if (config.contains("seed")) Error(JoinPath(path, "seed"), "set by the sweep's \"seeds\", not here");
  }

  void CheckStages(const Json& root, SweepSpec* spec) {
    auto it = root.find("stages");
    if (it == root.end()) return Error("stages", "required: a non-empty array of {\"name\", \"grid\"}");
    if (!it->is_array() || it->empty()) return Error("stages", "expected a non-empty array of {\"name\", \"grid\"}");
    if (it->size() > kMaxStages) {
      return Error("stages", fmt::format("{} stages is more than the limit of {}", it->size(), kMaxStages));
    }
    std::set<std::string> names;
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& s = (*it)[i];
      std::string path = IndexPath("stages", i);
      if (!s.is_object()) {
        Error(path, fmt::format("expected an object with \"name\" and \"grid\", got {}", JsonTypeName(s)));
        continue;
      }
      StageSpec stage;
      for (auto k = s.begin(); k != s.end(); ++k) {
        if (k.key() != "name" && k.key() != "grid" && k.key() != "extend_edges" && k.key() != "search" &&
            k.key() != "space" && k.key() != "pruner") {
          UnknownKey(path, k.key(), {"name", "grid", "extend_edges", "search", "space", "pruner"});
        }
      }
      auto name = s.find("name");
      if (name == s.end() || !name->is_string() || name->get<std::string>().empty()) {
        Error(JoinPath(path, "name"), "required: a non-empty string");
      } else {
        stage.name = name->get<std::string>();
        if (stage.name.size() > kMaxStringBytes) {
          Error(JoinPath(path, "name"),
                fmt::format("{} bytes is longer than the limit of {} bytes", stage.name.size(), kMaxStringBytes));
          stage.name = Clip(stage.name, kMaxStringBytes);
        }
        if (!names.insert(stage.name).second) {
          Error(JoinPath(path, "name"), fmt::format("duplicate stage name \"{}\"", Clip(stage.name, kMaxEchoChars)));
        }
      }
      if (s.contains("search")) {
        CheckRandomSearch(s, path, &stage);
      } else {
        CheckGrid(s, path, &stage);
      }
      if (auto e = s.find("extend_edges"); e != s.end()) CheckEdgeExtension(*e, JoinPath(path, "extend_edges"), &stage);
      if (auto p = s.find("pruner"); p != s.end()) {
        if (p->is_boolean() && !p->get<bool>()) {
          stage.pruner_off = true;
        } else {
          stage.pruner = CheckPruner(*p, JoinPath(path, "pruner"), *spec);
        }
      }
      size_t points = stage.NumPoints();
      size_t trials = SaturatingMul(points, std::max<size_t>(1, spec->seeds.size()));
      if (!stage.axes.empty() && trials > static_cast<uint64_t>(limits_.max_stage_trials)) {
        Error(JoinPath(path, "grid"),
              fmt::format("{} points x {} seeds = {} trials exceeds the limit of {} trials per stage", CountText(points),
                          spec->seeds.size(), CountText(trials), limits_.max_stage_trials));
      } else if (!stage.axes.empty()) {
        // Every point is written out in the stage's results: keep them within one message.
        size_t point_bytes = 2;
        for (const auto& [key, values] : stage.axes) {
          size_t widest = 0;
          for (const Json& v : values) widest = std::max(widest, v.dump().size());
          point_bytes += key.size() + 4 + widest;
        }
        size_t grid_bytes = SaturatingMul(points, point_bytes + 32);
        if (grid_bytes > kMaxStageGridBytes) {
          Error(JoinPath(path, "grid"),
                fmt::format("{} points of up to {} bytes each are more than the limit of {} bytes of grid points per "
                            "stage; use fewer or shorter values",
                            points, point_bytes, kMaxStageGridBytes));
        }
      }
      spec->stages.push_back(std::move(stage));
    }
  }

  void CheckGrid(const Json& stage_json, const std::string& stage_path, StageSpec* stage) {
    std::string path = JoinPath(stage_path, "grid");
    auto grid = stage_json.find("grid");
    if (grid == stage_json.end() || !grid->is_object() || grid->empty()) {
      return Error(path, "required: a non-empty object mapping trial config keys to arrays of values");
    }
    for (auto axis = grid->begin(); axis != grid->end(); ++axis) {
      std::string axis_path = JoinPath(path, axis.key());
      if (axis.key() == "seed") {
        Error(axis_path, "seeds are set by the sweep's \"seeds\", not by a grid");
        continue;
      }
      const ConfigKey* key = command_trainer_ ? nullptr : FindConfigKey(axis.key());
      if (key == nullptr && !command_trainer_) {
        std::string s = SuggestConfigKey(axis.key());
        Error(axis_path, s.empty() ? "unknown trial config key" : fmt::format("unknown trial config key (did you mean \"{}\"?)", s));
        continue;
      }
      const Json& values = axis.value();
      if (!values.is_array() || values.empty()) {
        Error(axis_path, fmt::format("expected a non-empty array of {}", key ? TypeWord(key->type) : "values"));
        continue;
      }
      if (values.size() > kMaxGridValues) {
        Error(axis_path, fmt::format("{} values is more than the limit of {} per axis", values.size(), kMaxGridValues));
        continue;
      }
      bool ok = true;
      // First index of each value: duplicates in O(n log n). Json's < and == agree (1 == 1.0).
      std::map<Json, size_t> seen;
      for (size_t v = 0; v < values.size(); ++v) {
        const Json& value = values[v];
        std::string value_path = IndexPath(axis_path, v);
        if (!value.is_number() && !value.is_string() && !value.is_boolean()) {
          Error(value_path, fmt::format("grid values must be numbers, strings or booleans, got {}", JsonTypeName(value)));
          ok = false;
          continue;
        }
        Status s = key ? CheckConfigValue(*key, value, value_path) : Status::Ok();
        if (!s.ok()) {
          errors.push_back(s.message());
          ok = false;
        }
        if (!seen.emplace(value, v).second) {
          Error(value_path, fmt::format("duplicate value {}", Abbreviate(value)));
          ok = false;
        }
      }
      if (ok) stage->axes.emplace_back(axis.key(), std::vector<Json>(values.begin(), values.end()));
    }
  }

  void CheckSuccess(const Json& root, SweepSpec* spec) {
    auto it = root.find("success");
    if (it == root.end()) return;
    if (!it->is_object()) {
      return Error("success", fmt::format("expected an object such as {{\"min_delta\": 0.02}}, got {}", JsonTypeName(*it)));
    }
    for (auto k = it->begin(); k != it->end(); ++k) {
      if (k.key() != "min_delta") UnknownKey("success", k.key(), {"min_delta"});
    }
    auto delta = it->find("min_delta");
    if (delta == it->end() || !delta->is_number() || !std::isfinite(delta->get<double>()) || delta->get<double>() < 0) {
      return Error("success.min_delta",
                   "required: a non-negative number, the improvement over the baseline a winner must reach");
    }
    if (!root.contains("baseline")) Error("success", "needs a \"baseline\" to compare the winners against");
    spec->success_min_delta = delta->get<double>();
  }

  // A command trainer's keys are free-form, so typos are caught by how the command uses them: every
  // {KEY} must have a value in every trial, and when the command does not pass the whole config
  // ({args}, {overrides}, {config_file}), every key must be named by some {KEY}.
  void CheckCommandUsesConfig(const Json& root, const SweepSpec& spec) {
    CommandUsage usage;
    Status s = AnalyzeCommand(spec.trainer.command, "trainer.command", &usage);
    if (!s.ok()) return;  // CheckTrainerSpec reported it.
    std::set<std::string> known;  // Keys with a value so far: base, then each stage's grid.
    for (auto it = spec.base.begin(); it != spec.base.end(); ++it) known.insert(it.key());
    auto missing_in = [&](const std::set<std::string>& have, const std::string& where) {
      for (const std::string& key : usage.keys) {
        if (have.count(key)) continue;
        Error("trainer.command", fmt::format("placeholder {{{}}} has no value in {} (it is in neither base nor the grid "
                                             "of that or an earlier stage)",
                                             key, where));
      }
    };
    if (spec.baseline) {
      std::set<std::string> have = known;
      for (auto it = spec.baseline->begin(); it != spec.baseline->end(); ++it) have.insert(it.key());
      missing_in(have, "the baseline");
    }
    for (size_t i = 0; i < spec.stages.size(); ++i) {
      for (const std::string& key : spec.stages[i].Keys()) known.insert(key);
      missing_in(known, fmt::format("stage {} \"{}\"", i + 1, spec.stages[i].name));
    }
    if (usage.passes_whole_config) return;
    // EditDistance costs |a| x |b|: suggestions stop past this many cells in all, else a spec of long
    // or many keys and placeholders would hold the coordinator's thread for minutes.
    size_t suggestion_budget = 10'000'000;
    auto unused = [&](const Json& object, const std::string& path) {
      if (!object.is_object()) return;
      for (auto it = object.begin(); it != object.end(); ++it) {
        if (usage.keys.count(it.key())) continue;
        std::string best;
        size_t best_d = 3;
        for (const std::string& k : usage.keys) {
          size_t cost = (it.key().size() + 1) * (k.size() + 1);
          if (cost > suggestion_budget) break;
          suggestion_budget -= cost;
          if (size_t d = EditDistance(it.key(), k); d < best_d) best_d = d, best = k;
        }
        Error(JoinPath(path, it.key()),
              best.empty() ? "not used by trainer.command (name it as a {KEY} placeholder, or pass the whole config "
                             "with {args}, {overrides} or {config_file})"
                           : fmt::format("not used by trainer.command (did you mean {{{}}}?)", best));
      }
    };
    unused(spec.base, "base");
    if (spec.baseline) unused(*spec.baseline, "baseline");
    // "stages" may be missing or not an array (CheckStages reported it): const operator[] on a
    // missing key reads past the end, and on a non-array it throws.
    auto stages = root.find("stages");
    if (stages == root.end() || !stages->is_array()) return;
    for (size_t i = 0; i < stages->size(); ++i) {
      const Json& stage = (*stages)[i];
      for (const char* part : {"grid", "space"}) {
        if (auto it = stage.is_object() ? stage.find(part) : stage.end(); it != stage.end()) {
          unused(*it, JoinPath(IndexPath("stages", i), part));
        }
      }
    }
  }

  void CheckRandomSearch(const Json& stage_json, const std::string& stage_path, StageSpec* stage) {
    const std::string path = JoinPath(stage_path, "search");
    const Json& search = stage_json["search"];
    if (stage_json.contains("grid")) Error(JoinPath(stage_path, "grid"), "a stage has either a grid or a search, not both");
    if (!search.is_object()) return Error(path, "expected {\"method\": \"random\", \"trials\": N}");
    for (auto k = search.begin(); k != search.end(); ++k) {
      if (k.key() != "method" && k.key() != "trials" && k.key() != "seed") {
        UnknownKey(path, k.key(), {"method", "trials", "seed"});
      }
    }
    if (search.value("method", Json()) != "random") Error(JoinPath(path, "method"), "expected \"random\"");
    RandomSearch random;
    auto trials = search.find("trials");
    if (trials == search.end() || !trials->is_number_integer() || trials->get<int64_t>() < 1 ||
        trials->get<int64_t>() > static_cast<int64_t>(kMaxGridValues)) {
      Error(JoinPath(path, "trials"), fmt::format("required: an integer in [1, {}], the points to sample", kMaxGridValues));
    } else {
      random.trials = static_cast<int>(trials->get<int64_t>());
    }
    if (auto seed = search.find("seed"); seed != search.end()) {
      if (!seed->is_number_integer() || seed->get<int64_t>() < 0 || seed->get<int64_t>() > kMaxSeed) {
        Error(JoinPath(path, "seed"), fmt::format("expected an integer in [0, {}]", kMaxSeed));
      } else {
        random.seed = seed->get<uint64_t>();
      }
    } else {
      random.seed = std::random_device{}() & 0xffffffffu;  // Stored with the sweep: fixed from here on.
    }
    const std::string space_path = JoinPath(stage_path, "space");
    auto space = stage_json.find("space");
    if (space == stage_json.end() || !space->is_object() || space->empty()) {
      return Error(space_path, "required with a search: {\"KEY\": {\"uniform\": [a, b]} | {\"log_uniform\": [a, b]} | "
                               "{\"int\": [a, b]} | {\"choice\": [values]}, ...}");
    }
    bool ok = true;
    for (auto it = space->begin(); it != space->end(); ++it) {
      const std::string key_path = JoinPath(space_path, it.key());
      const Json& d = it.value();
      if (it.key() == "seed") {
        Error(key_path, "seeds are set by the sweep's \"seeds\"");
        ok = false;
        continue;
      }
      const ConfigKey* key = command_trainer_ ? nullptr : FindConfigKey(it.key());
      if (!command_trainer_ && key == nullptr) {
        std::string s = SuggestConfigKey(it.key());
        Error(key_path, s.empty() ? "unknown trial config key" : fmt::format("unknown trial config key (did you mean \"{}\"?)", s));
        ok = false;
        continue;
      }
      if (!d.is_object() || d.size() != 1) {
        Error(key_path, "expected one of {\"uniform\": [a, b]}, {\"log_uniform\": [a, b]}, {\"int\": [a, b]}, {\"choice\": [...]}");
        ok = false;
        continue;
      }
      const std::string kind = d.begin().key();
      const Json& v = d.begin().value();
      const std::string kind_path = JoinPath(key_path, kind);
      std::vector<Json> edges;  // Values to check against the key's own range.
      if (kind == "choice") {
        if (!v.is_array() || v.empty()) {
          Error(kind_path, "expected a non-empty array of values");
          ok = false;
          continue;
        }
        edges.assign(v.begin(), v.end());
      } else if (kind == "uniform" || kind == "log_uniform" || kind == "int") {
        if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number() ||
            !(v[0].get<double>() < v[1].get<double>()) || (kind == "int" && (!v[0].is_number_integer() || !v[1].is_number_integer())) ||
            (kind == "log_uniform" && !(v[0].get<double>() > 0))) {
          Error(kind_path, kind == "int" ? "expected [a, b], integers with a < b"
                           : kind == "log_uniform" ? "expected [a, b] with 0 < a < b" : "expected [a, b], numbers with a < b");
          ok = false;
          continue;
        }
        if (key && kind != "int" && key->type == ValueType::kInt) {
          Error(kind_path, "this key takes integers: use {\"int\": [a, b]}");
          ok = false;
          continue;
        }
        edges = {v[0], v[1]};
      } else {
        Error(key_path, fmt::format("unknown distribution \"{}\" (known: uniform, log_uniform, int, choice)", Clip(kind, kMaxEchoChars)));
        ok = false;
        continue;
      }
      for (size_t e = 0; e < edges.size() && key; ++e) {
        if (Status s = CheckConfigValue(*key, edges[e], IndexPath(kind_path, e)); !s.ok()) {
          errors.push_back(s.message());
          ok = false;
        }
      }
      random.space.emplace_back(it.key(), d);
    }
    if (ok && random.trials > 0) {
      random.points = SampleSpace(random.space, random.seed, random.trials);
      stage->random = std::move(random);
    }
  }

  // A "pruner" object (the sweep's, or a stage's own). Runs after CheckObjective: the compared
  // metric and its goal default to the objective's.
  std::optional<PrunerSpec> CheckPruner(const Json& p, const std::string& path, const SweepSpec& spec) {
    if (!p.is_object()) {
      Error(path, fmt::format("expected an object such as {{\"method\": \"median\", \"warmup_steps\": 2}}{}, got {}",
                              path == "pruner" ? "" : " or false", Abbreviate(p)));
      return std::nullopt;
    }
    static const std::set<std::string> kKeys = {"method", "metric", "goal", "warmup_steps", "min_trials",
                                                "min_steps", "reduction_factor", "compare"};
    for (auto k = p.begin(); k != p.end(); ++k) {
      if (!kKeys.count(k.key())) UnknownKey(path, k.key(), kKeys);
    }
    PrunerSpec pruner;
    auto method = p.find("method");
    if (method == p.end()) {
      Error(JoinPath(path, "method"), "required: \"median\" or \"asha\"");
    } else if (*method == "median" || *method == "asha") {
      pruner.method = *method == "median" ? PrunerSpec::Method::kMedian : PrunerSpec::Method::kAsha;
    } else {
      Error(JoinPath(path, "method"), fmt::format("expected \"median\" or \"asha\", got {}", Abbreviate(*method)));
    }
    auto integer = [&](const char* key, int def, int min, int max) {
      return static_cast<int>(Integer(p, key, def, min, max, path));
    };
    pruner.warmup_steps = integer("warmup_steps", pruner.warmup_steps, 0, 1000000);
    pruner.min_trials = integer("min_trials", pruner.min_trials, 1, 100000);
    const bool asha = pruner.method == PrunerSpec::Method::kAsha;
    for (const char* key : {"min_steps", "reduction_factor"}) {
      if (!asha && p.contains(key)) Error(JoinPath(path, key), "only for \"method\": \"asha\"");
    }
    pruner.min_steps = integer("min_steps", pruner.min_steps, 1, 1000000);
    pruner.reduction_factor = integer("reduction_factor", pruner.reduction_factor, 2, 100);

    if (auto c = p.find("compare"); c != p.end()) {
      if (*c == "same_seed" || *c == "all") {
        pruner.same_seed = *c == "same_seed";
      } else {
        Error(JoinPath(path, "compare"), fmt::format("expected \"same_seed\" or \"all\", got {}", Abbreviate(*c)));
      }
    }
    pruner.metric = spec.metric;
    pruner.maximize = spec.maximize;
    bool own_metric = false;
    if (auto m = p.find("metric"); m != p.end()) {
      if (!m->is_string() || m->get<std::string>().empty()) {
        Error(JoinPath(path, "metric"), fmt::format("expected a metric name, got {}", Abbreviate(*m)));
      } else {
        pruner.metric = Clip(m->get_ref<const std::string&>(), kMaxStringBytes);
        own_metric = pruner.metric != spec.metric;
      }
    }
    if (auto g = p.find("goal"); g != p.end()) {
      if (*g == "maximize" || *g == "minimize") {
        pruner.maximize = *g == "maximize";
      } else {
        Error(JoinPath(path, "goal"), fmt::format("expected \"maximize\" or \"minimize\", got {}", Abbreviate(*g)));
      }
    } else if (own_metric && spec.trainer.is_command()) {
      Error(JoinPath(path, "goal"), fmt::format("required when \"metric\" is not the objective's (is a higher \"{}\" better?)",
                                                Clip(pruner.metric, kMaxEchoChars)));
    } else if (own_metric) {
      pruner.maximize = pruner.metric.find("loss") == std::string::npos;  // Built-in: losses go down.
    }
    if (!spec.trainer.is_command() && !pruner.metric.empty()) {
      const auto& per_epoch = PerEpochMetrics();
      if (std::find(per_epoch.begin(), per_epoch.end(), pruner.metric) == per_epoch.end()) {
        Error(own_metric ? JoinPath(path, "metric") : path,
              fmt::format("the built-in trainer reports \"{}\" only at the end of a trial, so it cannot be compared "
                          "step by step; set \"metric\" to one it reports every epoch ({})",
                          Clip(pruner.metric, kMaxEchoChars), fmt::join(per_epoch, ", ")));
      }
    }
    return pruner;
  }

  void CheckEdgeExtension(const Json& e, const std::string& path, StageSpec* stage) {
    if (!e.is_object()) {
      return Error(path, fmt::format("expected an object such as {{\"max_extensions\": 2}}, got {}", JsonTypeName(e)));
    }
    for (auto k = e.begin(); k != e.end(); ++k) {
      if (k.key() != "max_extensions" && k.key() != "bounds") UnknownKey(path, k.key(), {"max_extensions", "bounds"});
    }
    EdgeExtension ext;
    if (auto m = e.find("max_extensions"); m != e.end()) {
      if (!m->is_number_integer() || m->get<int64_t>() < 1 || m->get<int64_t>() > 10) {
        Error(JoinPath(path, "max_extensions"), fmt::format("expected an integer in [1, 10], got {}", Abbreviate(*m)));
      } else {
        ext.max_extensions = static_cast<int>(m->get<int64_t>());
      }
    }
    bool numeric_axis = false;
    for (const auto& axis : stage->axes) {
      numeric_axis |= axis.second.size() >= 2 &&
                      std::all_of(axis.second.begin(), axis.second.end(), [](const Json& v) { return v.is_number(); });
    }
    if (!numeric_axis) Error(path, "needs a grid axis of two or more numbers to extend");
    if (auto b = e.find("bounds"); b != e.end()) {
      if (!b->is_object()) {
        Error(JoinPath(path, "bounds"), "expected an object of KEY: [min, max]");
      } else {
        for (auto k = b->begin(); k != b->end(); ++k) {
          const std::string key_path = JoinPath(JoinPath(path, "bounds"), k.key());
          const Json& v = k.value();
          if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number() ||
              v[0].get<double>() > v[1].get<double>()) {
            Error(key_path, "expected [min, max], two numbers with min <= max");
            continue;
          }
          bool in_grid = std::any_of(stage->axes.begin(), stage->axes.end(), [&](const auto& a) { return a.first == k.key(); });
          if (!in_grid) Error(key_path, "not an axis of this stage's grid");
          ext.bounds[k.key()] = {v[0].get<double>(), v[1].get<double>()};
        }
      }
    }
    stage->extend_edges = ext;
  }

  static const char* TypeWord(ValueType t) {
    switch (t) {
      case ValueType::kInt: return "integers";
      case ValueType::kNumber: return "numbers";
      case ValueType::kString: return "strings";
      case ValueType::kBool: return "booleans";
    }
    return "values";
  }

  // `object[key]`, an integer in [min, max], else `def` (and an error at `path`.key when given).
  int64_t Integer(const Json& object, const char* key, int64_t def, int64_t min, int64_t max,
                  const std::string& path = "") {
    auto it = object.find(key);
    if (it == object.end()) return def;
    if (!it->is_number_integer() || it->get<int64_t>() < min || it->get<int64_t>() > max) {
      Error(JoinPath(path, key), fmt::format("expected an integer in [{}, {}], got {}", min, max, Abbreviate(*it)));
      return def;
    }
    return it->get<int64_t>();
  }

  const SpecLimits& limits_;
  bool command_trainer_ = false;
};

// `trials` points of `space` from `seed`. The generator and the transforms are written out (not
// std's distributions, whose results differ between standard libraries), so a stored seed gives
// the same points on any build.
std::vector<Json> SampleSpace(const std::vector<std::pair<std::string, Json>>& space, uint64_t seed, int trials) {
  std::mt19937_64 rng(seed);
  auto unit = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };  // [0, 1)
  std::vector<Json> points;
  for (int t = 0; t < trials; ++t) {
    Json point = Json::object();
    for (const auto& [key, d] : space) {
      const std::string kind = d.begin().key();
      const Json& v = d.begin().value();
      if (kind == "choice") {
        point[key] = v[static_cast<size_t>(unit() * v.size())];
      } else if (kind == "int") {
        const int64_t a = v[0].get<int64_t>(), b = v[1].get<int64_t>();
        point[key] = a + static_cast<int64_t>(unit() * static_cast<double>(b - a + 1));
      } else if (kind == "log_uniform") {
        const double a = std::log(v[0].get<double>()), b = std::log(v[1].get<double>());
        point[key] = std::exp(a + unit() * (b - a));
      } else {
        const double a = v[0].get<double>(), b = v[1].get<double>();
        point[key] = a + unit() * (b - a);
      }
    }
    points.push_back(std::move(point));
  }
  return points;
}

}  // namespace

void CheckTrainerSpec(const Json& trainer, const std::string& path, TrainerSpec* out, std::vector<std::string>* errors) {
  auto error = [&](const std::string& key, const std::string& what) {
    errors->push_back(fmt::format("{}: {}", key.empty() ? path : JoinPath(path, key), what));
  };
  if (!trainer.is_object()) {
    return error("", fmt::format("expected an object such as {{\"command\": [\"python3\", \"train.py\", \"{{args}}\"]}}, got {}",
                                 JsonTypeName(trainer)));
  }
  static const std::set<std::string> kKeys = {"kind", "command", "workdir", "env", "timeout_seconds", "gpus"};
  for (auto it = trainer.begin(); it != trainer.end(); ++it) {
    if (kKeys.count(it.key())) continue;
    std::string best;
    for (const std::string& k : kKeys) {
      if (EditDistance(it.key(), k) < 3) best = k;
    }
    error(it.key(), best.empty() ? fmt::format("unknown key (known: {})", fmt::join(kKeys, ", "))
                                 : fmt::format("unknown key (did you mean \"{}\"?)", best));
  }
  std::string kind = trainer.contains("command") ? TrainerSpec::kCommand : TrainerSpec::kBuiltin;
  if (auto it = trainer.find("kind"); it != trainer.end()) {
    if (*it == TrainerSpec::kBuiltin || *it == TrainerSpec::kCommand) {
      kind = it->get<std::string>();
    } else {
      error("kind", fmt::format("expected \"builtin\" or \"command\", got {}", it->dump()));
    }
  }
  out->kind = kind;
  if (kind == TrainerSpec::kBuiltin) {
    for (const char* key : {"command", "workdir", "env", "timeout_seconds", "gpus"}) {
      if (trainer.contains(key)) error(key, "only for a command trainer (\"kind\": \"command\")");
    }
    return;
  }
  auto command = trainer.find("command");
  if (command == trainer.end() || !command->is_array() || command->empty()) {
    error("command", "required: a non-empty array of strings, the program and its arguments (no shell)");
  } else {
    for (size_t i = 0; i < command->size(); ++i) {
      const Json& arg = (*command)[i];
      if (!arg.is_string()) {
        error(IndexPath("command", i), fmt::format("expected a string, got {}", JsonTypeName(arg)));
        continue;
      }
      out->command.push_back(arg.get<std::string>());
    }
    if (!out->command.empty() && out->command[0].empty()) error("command[0]", "the program must not be empty");
    CommandUsage usage;
    if (Status s = AnalyzeCommand(out->command, JoinPath(path, "command"), &usage); !s.ok()) {
      errors->push_back(s.message());
    }
  }
  if (auto it = trainer.find("workdir"); it != trainer.end()) {
    if (it->is_string()) {
      out->workdir = it->get<std::string>();
    } else {
      error("workdir", fmt::format("expected a string (a folder on the worker), got {}", JsonTypeName(*it)));
    }
  }
  if (auto it = trainer.find("env"); it != trainer.end()) {
    if (!it->is_object()) {
      error("env", fmt::format("expected an object of NAME: \"value\" strings, got {}", JsonTypeName(*it)));
    } else {
      for (auto e = it->begin(); e != it->end(); ++e) {
        const std::string& name = e.key();
        bool valid = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0]));
        for (char c : name) valid = valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
        if (!valid) {
          error(JoinPath("env", name), "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
        } else if (name.rfind("MOESWEEP_", 0) == 0 || name == "CUDA_VISIBLE_DEVICES") {
          error(JoinPath("env", name), "set by the worker for each trial; it cannot be overridden");
        } else if (!e->is_string()) {
          error(JoinPath("env", name), fmt::format("expected a string, got {}", JsonTypeName(*e)));
        } else {
          out->env.emplace_back(name, e->get<std::string>());
        }
      }
    }
  }
  if (auto it = trainer.find("timeout_seconds"); it != trainer.end()) {
    if (!it->is_number() || !(it->get<double>() >= 0) || it->get<double>() > 30 * 86400) {
      error("timeout_seconds", fmt::format("expected seconds in [0, 2592000] (0 = no limit), got {}", it->dump()));
    } else {
      out->timeout_seconds = it->get<double>();
    }
  }
  if (auto it = trainer.find("gpus"); it != trainer.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 64) {
      error("gpus", fmt::format("expected an integer in [0, 64] (GPUs per trial), got {}", it->dump()));
    } else {
      out->gpus = static_cast<int>(it->get<int64_t>());
    }
  }
}

Json TrainerSpec::ToJson() const {
  if (!is_command()) return {{"kind", kBuiltin}};
  Json env_json = Json::object();
  for (const auto& [name, value] : env) env_json[name] = value;
  return {{"kind", kCommand}, {"command", command},   {"workdir", workdir}, {"env", env_json},
          {"timeout_seconds", timeout_seconds}, {"gpus", gpus}};
}

std::vector<std::string> StageSpec::Keys() const {
  std::vector<std::string> keys;
  for (const auto& axis : axes) keys.push_back(axis.first);
  if (random) {
    for (const auto& dim : random->space) keys.push_back(dim.first);
  }
  return keys;
}

size_t StageSpec::NumPoints() const {
  if (random) return random->points.size();
  if (axes.empty()) return 0;
  size_t n = 1;
  for (const auto& axis : axes) n = SaturatingMul(n, axis.second.size());
  return n;
}

Json StageSpec::Point(size_t index) const {
  if (random) return random->points.at(index);
  // Mixed-radix decomposition with the last axis varying fastest.
  Json point = Json::object();
  std::vector<size_t> digits(axes.size());
  for (size_t a = axes.size(); a-- > 0;) {
    digits[a] = index % axes[a].second.size();
    index /= axes[a].second.size();
  }
  for (size_t a = 0; a < axes.size(); ++a) point[axes[a].first] = axes[a].second[digits[a]];
  return point;
}

Json PrunerSpec::ToJson() const {
  Json j = {{"method", method_name()},
            {"metric", metric},
            {"goal", maximize ? "maximize" : "minimize"},
            {"warmup_steps", warmup_steps},
            {"min_trials", min_trials},
            {"compare", same_seed ? "same_seed" : "all"}};
  if (method == Method::kAsha) {
    j["min_steps"] = min_steps;
    j["reduction_factor"] = reduction_factor;
  }
  return j;
}

const PrunerSpec* SweepSpec::PrunerFor(int stage) const {
  if (stage < 1 || stage > static_cast<int>(stages.size())) return nullptr;
  const StageSpec& s = stages[stage - 1];
  if (s.pruner_off) return nullptr;
  if (s.pruner) return &*s.pruner;
  return pruner ? &*pruner : nullptr;
}

Json SweepSpec::ToJson() const {
  Json j = Json::object();
  j["name"] = name;
  j["objective"] = {{"metric", metric}, {"goal", maximize ? "maximize" : "minimize"}};
  j["seeds"] = seeds;
  j["base"] = base;
  if (baseline) j["baseline"] = *baseline;
  // Left out for built-in sweeps, so their stored specs read as before.
  if (trainer.is_command()) j["trainer"] = trainer.ToJson();
  Json stages_json = Json::array();
  for (const StageSpec& s : stages) {
    Json grid = Json::object();
    for (const auto& axis : s.axes) grid[axis.first] = axis.second;
    Json stage_json = {{"name", s.name}, {"grid", grid}};
    if (s.random) {
      stage_json.erase("grid");
      stage_json["search"] = {{"method", "random"}, {"trials", s.random->trials}, {"seed", s.random->seed}};
      Json space = Json::object();
      for (const auto& [key, d] : s.random->space) space[key] = d;
      stage_json["space"] = space;
    }
    if (s.extend_edges) {
      Json ext = {{"max_extensions", s.extend_edges->max_extensions}};
      if (!s.extend_edges->bounds.empty()) {
        Json bounds = Json::object();
        for (const auto& [key, range] : s.extend_edges->bounds) bounds[key] = {range.first, range.second};
        ext["bounds"] = bounds;
      }
      stage_json["extend_edges"] = ext;
    }
    if (s.pruner_off) stage_json["pruner"] = false;
    if (s.pruner) stage_json["pruner"] = s.pruner->ToJson();
    stages_json.push_back(std::move(stage_json));
  }
  j["stages"] = stages_json;
  if (success_min_delta) j["success"] = {{"min_delta", *success_min_delta}};
  if (!reuse) j["reuse"] = false;
  if (pruner) j["pruner"] = pruner->ToJson();
  j["max_attempts"] = max_attempts;
  j["lease_seconds"] = lease_seconds;
  return j;
}

Status ParseSweepSpec(std::string_view text, const SpecLimits& limits, SweepSpec* out) {
  if (text.size() > kMaxSpecBytes) {
    return Status::InvalidArgument(
        fmt::format("spec: {} bytes is more than the limit of {} bytes", text.size(), kMaxSpecBytes));
  }
  Json root;
  Status s = ParseJson(text, &root);
  if (!s.ok()) return s;
  SweepSpec spec;
  SpecChecker checker(limits);
  checker.Check(root, &spec);
  // Cross-key rules are the built-in trainer's; a command trainer's keys are its own.
  if (checker.errors.empty() && !spec.trainer.is_command()) checker.CheckCrossKeys(spec);
  if (checker.errors.empty() && spec.ToJson().dump().size() > kMaxSpecBytes) {
    // Numbers written out again can grow ("1e15" -> "1000000000000000.0").
    return Status::InvalidArgument(fmt::format("spec: normalised, it is more than the limit of {} bytes", kMaxSpecBytes));
  }
  if (!checker.errors.empty()) {
    return Status::InvalidArgument(fmt::format("{}", fmt::join(checker.errors, "\n")));
  }
  *out = std::move(spec);
  return Status::Ok();
}

}  // namespace moesweep
