// Proto messages as the JSON that `--json` prints. Unlike protobuf's own JSON mapping this keeps
// the proto's field names, prints 64-bit integers as numbers, and embeds every `*_json` string
// field as the JSON value it holds, so `jq .config_json.temperature` works.
#ifndef MOESWEEP_CLIENT_PROTO_JSON_H_
#define MOESWEEP_CLIENT_PROTO_JSON_H_

#include <google/protobuf/message.h>

#include "common/json.h"

namespace moesweep::client {

// Every field, defaults included; enums by name; map fields as objects with sorted keys.
Json ProtoToJson(const google::protobuf::Message& message);

// `text` parsed as JSON, or the text itself as a JSON string when it does not parse (or is empty:
// null), so a bad field never hides the rest of the output.
Json EmbeddedJson(const std::string& text);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_PROTO_JSON_H_
