// Fuzzes the worker's trial-config parser, ParseTrialConfigText (worker/trial_config.cc, which needs
// only common/, not LibTorch), and with it the schema in common/trial_schema: ValidateTrialConfig,
// WithDefaults and CheckCrossKeyRules.
// Invariants: no exception escapes; the parser accepts exactly the objects that pass the schema and
// the cross-key rules; CheckCrossKeyRules runs on any JSON (its contract: rules whose values have
// the wrong types are skipped); WithDefaults gives every key and is idempotent; an accepted config
// keeps the cross-key rules and parses the same with its defaults written out.
#include <string_view>

#include "common/json.h"
#include "common/trial_schema.h"
#include "fuzz/fuzz_util.h"
#include "worker/trial_config.h"

using namespace moesweep;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::NoThrow("ParseTrialConfigText", [&] {
    worker::TrialConfig config;
    Status parsed = worker::ParseTrialConfigText(text, &config);
    Json json;
    if (!ParseJson(text, &json).ok()) {
      FUZZ_CHECK(!parsed.ok(), "accepted text that is not JSON");
      return;
    }
    Status valid = ValidateTrialConfig(json);
    std::vector<std::string> cross;
    CheckCrossKeyRules(json, "config", &cross);
    FUZZ_CHECK(parsed.ok() == (json.is_object() && valid.ok() && cross.empty()),
               "parse {} but schema {} and {} cross-key errors: {}", parsed.ok(), valid.ok(), cross.size(),
               parsed.message());
    if (!json.is_object()) return;

    Json full = WithDefaults(json);
    FUZZ_CHECK(full.size() == TrialConfigKeys().size(), "WithDefaults gave {} keys", full.size());
    FUZZ_CHECK(WithDefaults(full) == full, "WithDefaults is not idempotent");
    std::vector<std::string> cross_full;
    CheckCrossKeyRules(full, "config", &cross_full);
    FUZZ_CHECK(cross_full.size() == cross.size(), "defaults written out change the cross-key rules");
    if (!valid.ok()) return;
    FUZZ_CHECK(ValidateTrialConfig(full).ok(), "a valid config with its defaults is invalid");
    if (!parsed.ok()) return;

    FUZZ_CHECK(!config.use_moe || config.top_k <= config.num_experts, "top_k {} > num_experts {}", config.top_k,
               config.num_experts);
    FUZZ_CHECK(config.model != "moe_transformer" || config.d_model % config.num_heads == 0, "num_heads {} d_model {}",
               config.num_heads, config.d_model);
    FUZZ_CHECK(config.dataset != "csv" || !config.path.empty(), "csv without a path");
    worker::TrialConfig again;
    Status s2 = worker::ParseTrialConfigText(full.dump(), &again);
    FUZZ_CHECK(s2.ok(), "with defaults written out: {}", s2.message());
    FUZZ_CHECK(again.seed == config.seed && again.top_k == config.top_k && again.lr == config.lr &&
                   again.model == config.model && again.d_model == config.d_model,
               "with defaults written out, the config reads differently");
  });
  return 0;
}
