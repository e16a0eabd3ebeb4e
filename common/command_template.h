// CommandTemplate: the argv template of a command trainer ("trainer.command" in a sweep spec) and
// its expansion into one trial's argv. The coordinator validates templates with it at submission
// and the worker expands them with it, so both agree on every placeholder.
//
//   {KEY}          a trial-config key's value          {seed} {trial_id} {trial_name}
//   {config_file}  the trial config as a JSON file      {output_dir}  a fresh folder per attempt
//   {args}         one element per config key, --KEY=VALUE (a whole element only)
//   {overrides}    one element per config key, KEY=VALUE   (a whole element only)
//   {{ and }}      literal braces
//
// Values print as JSON numbers (1024, 0.7), true/false, strings raw, objects and arrays as JSON.
// {args} and {overrides} leave out "seed" ({seed} and MOESWEEP_SEED carry it).
#ifndef MOESWEEP_COMMON_COMMAND_TEMPLATE_H_
#define MOESWEEP_COMMON_COMMAND_TEMPLATE_H_

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace moesweep {

// One piece of an argv element: literal text, or a placeholder's name.
struct TemplatePart {
  bool placeholder = false;
  std::string text;
};
using ArgTemplate = std::vector<TemplatePart>;

// Placeholders the worker fills itself (everything else names a config key).
bool IsTrialPlaceholder(std::string_view name);  // seed, trial_id, trial_name, config_file, output_dir
bool IsSpreadPlaceholder(std::string_view name);  // args, overrides

// Parses one element; `path` names it in errors ("trainer.command[2]: unmatched '{' at column 5").
Status ParseArgTemplate(std::string_view arg, const std::string& path, ArgTemplate* out);

// What a parsed command needs: the config keys it names, and whether it passes the whole config.
struct CommandUsage {
  std::set<std::string> keys;       // {KEY} placeholders (not the trial placeholders).
  bool passes_whole_config = false;  // {args}, {overrides} or {config_file} appear.
};
// Parses every element (errors for all of them, one per line) and says what the command uses.
Status AnalyzeCommand(const std::vector<std::string>& command, const std::string& path, CommandUsage* usage);

// The values of the trial placeholders.
struct TrialPlaceholders {
  int64_t trial_id = 0;
  int64_t seed = 0;
  std::string trial_name;
  std::string config_file;
  std::string output_dir;
};

// A config value as it appears in an argv: 1024, 0.7, true, raw string, JSON for the rest.
std::string FormatConfigValue(const Json& value);

// Expands `command` for one trial. A {KEY} missing from `config` is an error naming it.
Status ExpandCommand(const std::vector<std::string>& command, const Json& config, const TrialPlaceholders& trial,
                     std::vector<std::string>* argv);

// "baseline-seed42" or "s1-p3-seed42": readable and unique within a sweep.
std::string TrialName(int stage, int point_index, int64_t seed);

}  // namespace moesweep

#endif  // MOESWEEP_COMMON_COMMAND_TEMPLATE_H_
