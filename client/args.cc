#include "client/args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace moesweep::client {

std::optional<std::string> ParsedArgs::Value(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end()) return std::nullopt;
  return it->second;
}

Status ParseArgs(const std::vector<std::string>& args, const std::vector<FlagSpec>& flags, ParsedArgs* out) {
  auto find = [&](const std::string& name) -> const FlagSpec* {
    for (const FlagSpec& f : flags) {
      if (f.name == name) return &f;
    }
    return nullptr;
  };
  bool flags_ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_ended || arg == "-" || arg.empty() || arg[0] != '-') {
      out->positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_ended = true;
      continue;
    }
    std::string name = arg == "-h" ? "help" : arg.substr(arg.rfind('-', 1) + 1);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    // Single-dash long flags ("-stage") are accepted only as "-h"; anything else is unknown.
    const FlagSpec* spec = (arg.rfind("--", 0) == 0 || arg == "-h") ? find(name) : nullptr;
    if (spec == nullptr) {
      std::string shown = inline_value ? arg.substr(0, arg.find('=')) : arg;
      return Status::InvalidArgument(fmt::format("unknown flag '{}'", shown));
    }
    if (spec->value_name.empty()) {
      if (inline_value) return Status::InvalidArgument(fmt::format("--{} takes no value", name));
      out->switches[name] = true;
      continue;
    }
    if (inline_value) {
      out->values[name] = *inline_value;
    } else if (i + 1 < args.size()) {
      out->values[name] = args[++i];
    } else {
      return Status::InvalidArgument(fmt::format("--{} needs a value ({})", name, spec->value_name));
    }
  }
  return Status::Ok();
}

std::optional<int64_t> ParseInt(const std::string& text) {
  if (text.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size()) return std::nullopt;
  return static_cast<int64_t>(v);
}

std::optional<double> ParseDouble(const std::string& text) {
  if (text.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace moesweep::client
