#include "common/command_template.h"

#include <fmt/format.h>

namespace moesweep {

bool IsTrialPlaceholder(std::string_view name) {
  return name == "seed" || name == "trial_id" || name == "trial_name" || name == "config_file" ||
         name == "output_dir";
}

bool IsSpreadPlaceholder(std::string_view name) { return name == "args" || name == "overrides"; }

Status ParseArgTemplate(std::string_view arg, const std::string& path, ArgTemplate* out) {
  out->clear();
  std::string literal;
  auto flush = [&] {
    if (!literal.empty()) out->push_back({false, std::move(literal)});
    literal.clear();
  };
  for (size_t i = 0; i < arg.size(); ++i) {
    const char c = arg[i];
    if (c == '}') {
      if (i + 1 < arg.size() && arg[i + 1] == '}') {
        literal += '}';
        ++i;
        continue;
      }
      return Status::InvalidArgument(
          fmt::format("{}: unmatched '}}' at column {} (write '}}}}' for a literal brace)", path, i + 1));
    }
    if (c != '{') {
      literal += c;
      continue;
    }
    if (i + 1 < arg.size() && arg[i + 1] == '{') {
      literal += '{';
      ++i;
      continue;
    }
    const size_t close = arg.find('}', i + 1);
    if (close == std::string_view::npos) {
      return Status::InvalidArgument(
          fmt::format("{}: unmatched '{{' at column {} (write '{{{{' for a literal brace)", path, i + 1));
    }
    std::string_view name = arg.substr(i + 1, close - i - 1);
    if (name.empty() || name.find('{') != std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("{}: empty or malformed placeholder at column {}", path, i + 1));
    }
    flush();
    out->push_back({true, std::string(name)});
    i = close;
  }
  flush();
  for (const TemplatePart& part : *out) {
    if (part.placeholder && IsSpreadPlaceholder(part.text) && out->size() != 1) {
      return Status::InvalidArgument(fmt::format(
          "{}: {{{}}} expands into several arguments, so it must be a whole element of the command", path, part.text));
    }
  }
  return Status::Ok();
}

Status AnalyzeCommand(const std::vector<std::string>& command, const std::string& path, CommandUsage* usage) {
  std::vector<std::string> errors;
  for (size_t i = 0; i < command.size(); ++i) {
    ArgTemplate parts;
    Status s = ParseArgTemplate(command[i], IndexPath(path, i), &parts);
    if (!s.ok()) {
      errors.push_back(s.message());
      continue;
    }
    for (const TemplatePart& part : parts) {
      if (!part.placeholder) continue;
      if (IsSpreadPlaceholder(part.text) || part.text == "config_file") {
        usage->passes_whole_config = true;
      } else if (!IsTrialPlaceholder(part.text)) {
        usage->keys.insert(part.text);
      }
    }
  }
  if (!errors.empty()) return Status::InvalidArgument(fmt::format("{}", fmt::join(errors, "\n")));
  return Status::Ok();
}

std::string FormatConfigValue(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  return value.dump();
}

Status ExpandCommand(const std::vector<std::string>& command, const Json& config, const TrialPlaceholders& trial,
                     std::vector<std::string>* argv) {
  argv->clear();
  for (size_t i = 0; i < command.size(); ++i) {
    ArgTemplate parts;
    const std::string path = IndexPath("trainer.command", i);
    if (Status s = ParseArgTemplate(command[i], path, &parts); !s.ok()) return s;
    if (parts.size() == 1 && parts[0].placeholder && IsSpreadPlaceholder(parts[0].text)) {
      const bool dashes = parts[0].text == "args";
      for (auto it = config.begin(); it != config.end(); ++it) {
        if (it.key() == "seed") continue;
        argv->push_back(fmt::format("{}{}={}", dashes ? "--" : "", it.key(), FormatConfigValue(it.value())));
      }
      continue;
    }
    std::string arg;
    for (const TemplatePart& part : parts) {
      if (!part.placeholder) {
        arg += part.text;
      } else if (part.text == "seed") {
        arg += std::to_string(trial.seed);
      } else if (part.text == "trial_id") {
        arg += std::to_string(trial.trial_id);
      } else if (part.text == "trial_name") {
        arg += trial.trial_name;
      } else if (part.text == "config_file") {
        arg += trial.config_file;
      } else if (part.text == "output_dir") {
        arg += trial.output_dir;
      } else if (auto it = config.find(part.text); it != config.end()) {
        arg += FormatConfigValue(*it);
      } else {
        return Status::InvalidArgument(
            fmt::format("{}: placeholder {{{}}} has no value in this trial's config", path, part.text));
      }
    }
    argv->push_back(std::move(arg));
  }
  return Status::Ok();
}

std::string TrialName(int stage, int point_index, int64_t seed) {
  if (stage == 0) return fmt::format("baseline-seed{}", seed);
  return fmt::format("s{}-p{}-seed{}", stage, point_index, seed);
}

}  // namespace moesweep
