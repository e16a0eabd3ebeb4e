#include "common/json.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include "common/limits.h"

namespace moesweep {
namespace {

std::string Position(std::string_view text, size_t byte) {
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
  return fmt::format("line {}, column {}", line, column);
}

Status AtByte(std::string_view text, size_t byte, const std::string& what) {
  return Status::InvalidArgument(fmt::format("invalid JSON at {}: {}", Position(text, byte), what));
}

bool IsNumberChar(char c) { return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'; }

// One pass over the text, outside strings: depth, members per object, numbers that overflow.
// Malformed text passes through to the parser, which names the syntax error.
Status PreScan(std::string_view text) {
  struct Level {
    bool object;
    size_t commas;
  };
  std::vector<Level> levels;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (levels.size() == static_cast<size_t>(kMaxJsonDepth)) {
          return AtByte(text, i, fmt::format("nested deeper than {} levels", kMaxJsonDepth));
        }
        levels.push_back({c == '{', 0});
        break;
      case ']':
      case '}':
        if (!levels.empty()) levels.pop_back();
        break;
      case ',':
        if (!levels.empty() && levels.back().object && ++levels.back().commas >= kMaxJsonObjectMembers) {
          return AtByte(text, i, fmt::format("an object with more than {} keys", kMaxJsonObjectMembers));
        }
        break;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) {
          size_t end = i;
          while (end < text.size() && IsNumberChar(text[end])) ++end;
          std::string number(text.substr(i, end - i));
          errno = 0;
          double v = std::strtod(number.c_str(), nullptr);
          if (std::isinf(v)) {
            return AtByte(text, i, fmt::format("number {} is out of the range of a double", Clip(number, kMaxEchoChars)));
          }
          i = end - 1;
        }
    }
  }
  return Status::Ok();
}

}  // namespace

Status ParseJson(std::string_view text, Json* out) {
  if (Status s = PreScan(text); !s.ok()) return s;
  try {
    *out = Json::parse(text.begin(), text.end());
    return Status::Ok();
  } catch (const Json::parse_error& e) {
    // e.byte is 1-based and points just past the offending character; turn it into line:column.
    size_t byte = e.byte == 0 ? 0 : e.byte - 1;
    std::string what = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] parse error at line 1, column 2: "; keep
    // only the explanation, our own position goes in front.
    auto colon = what.find(": ");
    if (colon != std::string::npos) what = what.substr(colon + 2);
    return AtByte(text, byte, Clip(what, 2 * kMaxEchoChars));
  } catch (const std::exception& e) {
    // Anything else nlohmann throws (out_of_range, ...) has no position; the pre-scan should have
    // caught it, and an exception must never reach the coordinator's thread.
    return Status::InvalidArgument(fmt::format("invalid JSON: {}", Clip(e.what(), 2 * kMaxEchoChars)));
  }
}

size_t FindInvalidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid too.
    bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string Clip(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t cut = max_bytes;
  // Do not split a UTF-8 sequence: back up over continuation bytes.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut)) + "…";
}

std::string Abbreviate(const Json& value) {
  return Clip(value.dump(-1, ' ', false, Json::error_handler_t::replace), kMaxEchoChars);
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
  // Keys come from users: a 10 MB key must not become a 10 MB path in every message.
  std::string k = Clip(key, kMaxEchoChars);
  return path.empty() ? k : path + "." + k;
}

std::string IndexPath(const std::string& path, size_t index) {
  return fmt::format("{}[{}]", path, index);
}

}  // namespace moesweep
