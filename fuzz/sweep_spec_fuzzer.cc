// Fuzzes ParseSweepSpec (parsing and validation of a submitted spec) with spec text.
// Invariants: no exception escapes; a refusal says why; an accepted spec keeps the limits
// (stages, trials per stage, seed range, no "seed" in base or grids, unique grid values) and its
// normalised JSON parses again to the same normalised JSON ("parsing it again yields an equal spec").
#include <set>
#include <string_view>

#include "common/limits.h"
#include "common/sweep_spec.h"
#include "fuzz/fuzz_util.h"

using namespace moesweep;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::NoThrow("ParseSweepSpec", [&] {
    const SpecLimits limits;
    SweepSpec spec;
    Status s = ParseSweepSpec(text, limits, &spec);
    if (!s.ok()) {
      FUZZ_CHECK(!s.message().empty(), "a refusal without a reason");
      return;
    }
    FUZZ_CHECK(!spec.name.empty() && spec.name.size() <= kMaxStringBytes, "name of {} bytes", spec.name.size());
    FUZZ_CHECK(!spec.metric.empty(), "empty metric");
    FUZZ_CHECK(!spec.seeds.empty(), "no seeds");
    std::set<int64_t> seeds(spec.seeds.begin(), spec.seeds.end());
    FUZZ_CHECK(seeds.size() == spec.seeds.size(), "duplicate seeds");
    FUZZ_CHECK(*seeds.begin() >= 0 && *seeds.rbegin() <= kMaxSeed, "seed out of range");
    FUZZ_CHECK(spec.base.is_object() && !spec.base.contains("seed"), "base {}", Abbreviate(spec.base));
    FUZZ_CHECK(!spec.baseline || (spec.baseline->is_object() && !spec.baseline->contains("seed")), "baseline");
    FUZZ_CHECK(spec.max_attempts >= 1 && spec.max_attempts <= 100, "max_attempts {}", spec.max_attempts);
    FUZZ_CHECK(spec.lease_seconds >= 1 && spec.lease_seconds <= 86400, "lease_seconds {}", spec.lease_seconds);
    FUZZ_CHECK(!spec.trainer.is_command() || !spec.trainer.command.empty(), "command trainer without a command");
    FUZZ_CHECK(!spec.stages.empty() && spec.stages.size() <= kMaxStages, "{} stages", spec.stages.size());
    std::set<std::string> stage_names;
    for (const StageSpec& stage : spec.stages) {
      FUZZ_CHECK(!stage.name.empty() && stage_names.insert(stage.name).second, "stage name \"{}\"", Clip(stage.name, 80));
      FUZZ_CHECK(!stage.axes.empty(), "stage \"{}\" without axes", Clip(stage.name, 80));
      for (const auto& [key, values] : stage.axes) {
        FUZZ_CHECK(key != "seed", "a grid sets seed");
        FUZZ_CHECK(!values.empty() && values.size() <= kMaxGridValues, "axis {} has {} values", key, values.size());
        std::set<Json> unique(values.begin(), values.end());
        FUZZ_CHECK(unique.size() == values.size(), "axis {} has duplicate values", key);
      }
      const size_t points = stage.NumPoints();
      FUZZ_CHECK(points >= 1 && points * spec.seeds.size() <= static_cast<size_t>(limits.max_stage_trials),
                 "{} points x {} seeds", points, spec.seeds.size());
      for (size_t p : {size_t{0}, points - 1}) {
        Json point = stage.Point(p);
        FUZZ_CHECK(point.size() == stage.axes.size(), "point {} has {} keys", p, point.size());
      }
    }

    const std::string normal = spec.ToJson().dump();
    FUZZ_CHECK(normal.size() <= kMaxSpecBytes, "normalised spec of {} bytes", normal.size());
    SweepSpec again;
    Status s2 = ParseSweepSpec(normal, limits, &again);
    FUZZ_CHECK(s2.ok(), "the normalised spec is refused: {}\nnormalised: {}", s2.message(), Clip(normal, 4000));
    const std::string normal2 = again.ToJson().dump();
    FUZZ_CHECK(normal2 == normal, "normalised twice differs:\n{}\n{}", Clip(normal, 4000), Clip(normal2, 4000));
  });
  return 0;
}
