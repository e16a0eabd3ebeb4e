#include "common/json.h"

#include <fmt/format.h>

namespace moesweep {

Status ParseJson(std::string_view text, Json* out) {
  try {
    *out = Json::parse(text.begin(), text.end());
    return Status::Ok();
  } catch (const Json::parse_error& e) {
    // e.byte is 1-based and points just past the offending character; turn it into line:column.
    size_t byte = e.byte == 0 ? 0 : e.byte - 1;
    if (byte > text.size()) byte = text.size();
    size_t line = 1, column = 1;
    for (size_t i = 0; i < byte; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    std::string what = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] parse error at line 1, column 2: "; keep
    // only the explanation, our own position goes in front.
    auto colon = what.find(": ");
    if (colon != std::string::npos) what = what.substr(colon + 2);
    return Status::InvalidArgument(fmt::format("invalid JSON at line {}, column {}: {}", line, column, what));
  }
}

std::string JsonTypeName(const Json& value) {
  switch (value.type()) {
    case Json::value_t::object: return "object";
    case Json::value_t::array: return "array";
    case Json::value_t::string: return "string";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "integer";
    case Json::value_t::number_float: return "number";
    case Json::value_t::null: return "null";
    default: return "value";
  }
}

std::string JoinPath(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string IndexPath(const std::string& path, size_t index) {
  return fmt::format("{}[{}]", path, index);
}

}  // namespace moesweep
