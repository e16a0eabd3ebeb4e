// Fuzzes the command template (common/command_template.cc): ParseArgTemplate, AnalyzeCommand and
// ExpandCommand. Input: NUL-separated fields; the first is the trial config (JSON; anything but an
// object stands for {}), the rest are the command's elements; trial placeholders are fixed.
// Invariants: no exception escapes; a parsed element has no empty or adjacent literals, no empty
// placeholder, spreads only alone, and printed back ({{ }} for braces) gives the element again;
// AnalyzeCommand accepts exactly when every element parses and lists exactly the {KEY}s;
// ExpandCommand succeeds exactly when every {KEY} has a value, with one argument per element, or
// one per config key except "seed" for {args}/{overrides}; an element without placeholders expands
// to its literal text.
#include <set>
#include <string>
#include <string_view>

#include "common/command_template.h"
#include "common/json.h"
#include "fuzz/fuzz_util.h"

using namespace moesweep;

namespace {

std::string Print(const ArgTemplate& parts) {
  std::string out;
  for (const TemplatePart& p : parts) {
    if (p.placeholder) {
      out += "{" + p.text + "}";
      continue;
    }
    for (char c : p.text) {
      if (c == '{' || c == '}') out += c;
      out += c;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string_view> fields = fuzz::SplitNul(std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::NoThrow("command template", [&] {
    Json config;
    if (!ParseJson(fields[0], &config).ok() || !config.is_object()) config = Json::object();
    std::vector<std::string> command(fields.begin() + 1, fields.end());

    bool all_parse = true;
    std::set<std::string> keys;
    bool whole_config = false;
    size_t expected_args = 0;
    for (size_t i = 0; i < command.size(); ++i) {
      ArgTemplate parts;
      Status s = ParseArgTemplate(command[i], "command", &parts);
      if (!s.ok()) {
        all_parse = false;
        continue;
      }
      bool spread = false;
      for (size_t k = 0; k < parts.size(); ++k) {
        const TemplatePart& p = parts[k];
        FUZZ_CHECK(!p.text.empty(), "element {}: an empty part", i);
        FUZZ_CHECK(p.placeholder || k == 0 || parts[k - 1].placeholder, "element {}: adjacent literals", i);
        if (!p.placeholder) continue;
        FUZZ_CHECK(p.text.find_first_of("{}") == std::string::npos, "element {}: placeholder {}", i, p.text);
        if (IsSpreadPlaceholder(p.text)) {
          FUZZ_CHECK(parts.size() == 1, "element {}: {{{}}} is not alone", i, p.text);
          spread = true;
        }
        if (IsSpreadPlaceholder(p.text) || p.text == "config_file") whole_config = true;
        else if (!IsTrialPlaceholder(p.text)) keys.insert(p.text);
      }
      FUZZ_CHECK(Print(parts) == command[i], "element {} printed back: \"{}\"", i, Clip(Print(parts), 200));
      if (spread) {
        expected_args += config.size() - (config.contains("seed") ? 1 : 0);
      } else {
        expected_args += 1;
      }
    }

    CommandUsage usage;
    Status analyzed = AnalyzeCommand(command, "trainer.command", &usage);
    FUZZ_CHECK(analyzed.ok() == all_parse, "AnalyzeCommand {} but elements parse {}", analyzed.ok(), all_parse);
    if (analyzed.ok()) {
      FUZZ_CHECK(usage.keys == keys && usage.passes_whole_config == whole_config, "AnalyzeCommand's usage");
    }

    TrialPlaceholders trial;
    trial.trial_id = 7;
    trial.seed = 42;
    trial.trial_name = TrialName(1, 2, 42);
    trial.config_file = "/tmp/config.json";
    trial.output_dir = "/tmp/out";
    std::vector<std::string> argv;
    Status expanded = ExpandCommand(command, config, trial, &argv);
    if (!all_parse) {
      FUZZ_CHECK(!expanded.ok(), "a command that does not parse expanded");
      return;
    }
    bool have_all = true;
    for (const std::string& k : keys) have_all = have_all && config.contains(k);
    FUZZ_CHECK(expanded.ok() == have_all, "ExpandCommand {} but every key has a value: {}: {}", expanded.ok(), have_all,
               expanded.message());
    if (!expanded.ok()) return;
    FUZZ_CHECK(argv.size() == expected_args, "{} arguments, expected {}", argv.size(), expected_args);
    if (command.size() == argv.size()) {
      for (size_t i = 0; i < command.size(); ++i) {
        if (command[i].find_first_of("{}") == std::string::npos) {
          FUZZ_CHECK(argv[i] == command[i], "literal element {} changed", i);
        }
      }
    }
    for (auto it = config.begin(); it != config.end(); ++it) FormatConfigValue(it.value());
  });
  return 0;
}
