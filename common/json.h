// The one JSON type of the project. ordered_json keeps keys in the order a person wrote them, so
// configs print and grids expand in that order.
#ifndef MOESWEEP_COMMON_JSON_H_
#define MOESWEEP_COMMON_JSON_H_

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace moesweep {

using Json = nlohmann::ordered_json;

// Parses `text`; on a syntax error the message names the line and column ("line 3, column 14: ...").
// Never throws. Before parsing, a linear pre-scan refuses what would cost the parser a deep stack
// or quadratic time: nesting deeper than kMaxJsonDepth, objects over kMaxJsonObjectMembers keys,
// and numbers a double cannot hold (1e400).
Status ParseJson(std::string_view text, Json* out);

// Byte offset of the first invalid UTF-8 sequence in `text`, or npos when it is valid.
size_t FindInvalidUtf8(std::string_view text);

// `text` cut to at most `max_bytes` (at a UTF-8 boundary) with "…" appended when cut: for quoting
// what a user sent in an error message.
std::string Clip(std::string_view text, size_t max_bytes);
// value.dump(), clipped to kMaxEchoChars.
std::string Abbreviate(const Json& value);

// "object", "array", "string", "integer", "number", "boolean" or "null", for error messages.
std::string JsonTypeName(const Json& value);

// Appends a key to a JSON path: JoinPath("stages[1].grid", "temperature").
std::string JoinPath(const std::string& path, const std::string& key);
std::string IndexPath(const std::string& path, size_t index);

}  // namespace moesweep

#endif  // MOESWEEP_COMMON_JSON_H_
