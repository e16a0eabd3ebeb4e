#include "client/proto_json.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>

namespace moesweep::client {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

bool IsEmbeddedJson(const FieldDescriptor* field) {
  const std::string& name = field->name();
  return field->type() == FieldDescriptor::TYPE_STRING && name.size() > 5 &&
         name.compare(name.size() - 5, 5, "_json") == 0;
}

// One value of `field`; `index` < 0 for a singular field.
Json FieldValue(const Message& m, const FieldDescriptor* field, int index) {
  const Reflection* r = m.GetReflection();
  bool rep = index >= 0;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: return rep ? r->GetRepeatedInt32(m, field, index) : r->GetInt32(m, field);
    case FieldDescriptor::CPPTYPE_INT64: return rep ? r->GetRepeatedInt64(m, field, index) : r->GetInt64(m, field);
    case FieldDescriptor::CPPTYPE_UINT32: return rep ? r->GetRepeatedUInt32(m, field, index) : r->GetUInt32(m, field);
    case FieldDescriptor::CPPTYPE_UINT64: return rep ? r->GetRepeatedUInt64(m, field, index) : r->GetUInt64(m, field);
    case FieldDescriptor::CPPTYPE_DOUBLE: return rep ? r->GetRepeatedDouble(m, field, index) : r->GetDouble(m, field);
    case FieldDescriptor::CPPTYPE_FLOAT: return rep ? r->GetRepeatedFloat(m, field, index) : r->GetFloat(m, field);
    case FieldDescriptor::CPPTYPE_BOOL: return rep ? r->GetRepeatedBool(m, field, index) : r->GetBool(m, field);
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* value = rep ? r->GetRepeatedEnum(m, field, index) : r->GetEnum(m, field);
      return value->name();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(m, field, index) : r->GetString(m, field);
      if (IsEmbeddedJson(field)) return EmbeddedJson(s);
      return s;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJson(rep ? r->GetRepeatedMessage(m, field, index) : r->GetMessage(m, field));
  }
  return nullptr;
}

}  // namespace

Json EmbeddedJson(const std::string& text) {
  if (text.empty()) return nullptr;
  Json value;
  if (ParseJson(text, &value).ok()) return value;
  return text;
}

Json ProtoToJson(const Message& message) {
  Json out = Json::object();
  const auto* descriptor = message.GetDescriptor();
  const Reflection* r = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (field->is_map()) {
      // Map entries are repeated {key, value} messages in no particular order: sort for stable output.
      std::vector<std::pair<std::string, Json>> entries;
      const FieldDescriptor* key = field->message_type()->map_key();
      const FieldDescriptor* value = field->message_type()->map_value();
      for (int e = 0; e < r->FieldSize(message, field); ++e) {
        const Message& entry = r->GetRepeatedMessage(message, field, e);
        Json k = FieldValue(entry, key, -1);
        entries.emplace_back(k.is_string() ? k.get<std::string>() : k.dump(), FieldValue(entry, value, -1));
      }
      std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      Json map = Json::object();
      for (auto& [k, v] : entries) map[k] = std::move(v);
      out[field->name()] = std::move(map);
    } else if (field->is_repeated()) {
      Json list = Json::array();
      for (int e = 0; e < r->FieldSize(message, field); ++e) list.push_back(FieldValue(message, field, e));
      out[field->name()] = std::move(list);
    } else if (field->has_presence() && !r->HasField(message, field) &&
               field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      out[field->name()] = nullptr;  // An unset `optional` scalar.
    } else {
      out[field->name()] = FieldValue(message, field, -1);
    }
  }
  return out;
}

}  // namespace moesweep::client
