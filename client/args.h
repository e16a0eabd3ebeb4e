// Command-line flags: a small parser that knows each command's flags, so an unknown or misspelt
// flag is an error that names it instead of being ignored.
#ifndef MOESWEEP_CLIENT_ARGS_H_
#define MOESWEEP_CLIENT_ARGS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace moesweep::client {

struct FlagSpec {
  std::string name;        // Without dashes: "stage" for --stage.
  std::string value_name;  // "N", "FILE"...; empty for a switch that takes no value.
  std::string help;
};

struct ParsedArgs {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // Flags with a value; the last occurrence wins.
  std::map<std::string, bool> switches;

  bool Has(const std::string& name) const { return switches.count(name) || values.count(name); }
  std::optional<std::string> Value(const std::string& name) const;
};

// Parses `args` against `flags`. Accepts "--flag VALUE", "--flag=VALUE", "-h" for --help, and "--"
// to end flags; a lone "-" is positional (stdin). The error names the offending flag.
Status ParseArgs(const std::vector<std::string>& args, const std::vector<FlagSpec>& flags, ParsedArgs* out);

// Strict number parsing for flag values: the whole text must be the number.
std::optional<int64_t> ParseInt(const std::string& text);
std::optional<double> ParseDouble(const std::string& text);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_ARGS_H_
