#include "worker/agent/report_line.h"

#include <cmath>
#include <limits>
#include <string>

#include <fmt/format.h>

#include "common/json.h"

namespace moesweep::worker {
namespace {

// JSON has no NaN or infinities, but Python's json.dumps writes them as bare tokens: quote
// NaN, Infinity and -Infinity outside strings so that the JSON parser takes them.
std::string QuoteNonFiniteTokens(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool matched = false;
    for (std::string_view token : {std::string_view("-Infinity"), std::string_view("Infinity"), std::string_view("NaN")}) {
      if (text.substr(i, token.size()) == token) {
        out += '"';
        out += token;
        out += '"';
        i += token.size() - 1;
        matched = true;
        break;
      }
    }
    if (!matched) out += c;
  }
  return out;
}

Status Number(const Json& value, const std::string& path, double* out) {
  if (value.is_number()) {
    *out = value.get<double>();
    return Status::Ok();
  }
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (s == "NaN") *out = std::numeric_limits<double>::quiet_NaN();
    else if (s == "Infinity") *out = std::numeric_limits<double>::infinity();
    else if (s == "-Infinity") *out = -std::numeric_limits<double>::infinity();
    else return Status::InvalidArgument(fmt::format("{}: expected a number, got string", path));
    return Status::Ok();
  }
  return Status::InvalidArgument(fmt::format("{}: expected a number, got {}", path, JsonTypeName(value)));
}

Status NumberArray(const Json& value, const std::string& path, std::vector<double>* out) {
  if (!value.is_array()) return Status::InvalidArgument(fmt::format("{}: expected an array of numbers", path));
  if (value.size() > kMaxExpertsPerLayer) {
    return Status::InvalidArgument(fmt::format("{}: more than {} experts", path, kMaxExpertsPerLayer));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    double v = 0;
    if (Status s = Number(value[i], IndexPath(path, i), &v); !s.ok()) return s;
    out->push_back(v);
  }
  return Status::Ok();
}

Status Layer(const Json& value, const std::string& path, size_t index, ExpertLayerSummary* out) {
  if (!value.is_object()) return Status::InvalidArgument(fmt::format("{}: expected an object", path));
  out->layer = static_cast<int>(index);
  bool has_variance = false, has_cv = false;
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string& key = it.key();
    const std::string key_path = JoinPath(path, key);
    Status s;
    if (key == "layer") {
      if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 1000000) {
        return Status::InvalidArgument(fmt::format("{}: expected a non-negative integer", key_path));
      }
      out->layer = it->get<int>();
    } else if (key == "usage") {
      s = NumberArray(*it, key_path, &out->usage);
    } else if (key == "importance") {
      s = NumberArray(*it, key_path, &out->importance);
    } else if (key == "usage_variance") {
      s = Number(*it, key_path, &out->usage_variance);
      has_variance = true;
    } else if (key == "activation_rate") {
      s = Number(*it, key_path, &out->activation_rate);
    } else if (key == "gate_weight_variance") {
      s = Number(*it, key_path, &out->gate_weight_variance);
    } else if (key == "router_entropy") {
      s = Number(*it, key_path, &out->router_entropy);
    } else if (key == "load_cv") {
      s = Number(*it, key_path, &out->load_cv);
      has_cv = true;
    } else if (key == "class_routing") {
      // [[share per expert] per class]
      if (!it->is_array() || it->empty() || it->size() > kMaxExpertsPerLayer) {
        return Status::InvalidArgument(fmt::format("{}: expected an array of classes, each an array of expert shares", key_path));
      }
      out->class_routing.clear();
      for (size_t c = 0; c < it->size() && s.ok(); ++c) s = NumberArray((*it)[c], IndexPath(key_path, c), &out->class_routing);
      out->num_classes = static_cast<int>(it->size());
    } else {
      return Status::InvalidArgument(fmt::format(
          "{}: unknown key (known: layer, usage, importance, usage_variance, activation_rate, "
          "gate_weight_variance, router_entropy, load_cv, class_routing)",
          key_path));
    }
    if (!s.ok()) return s;
  }
  if (!out->class_routing.empty() &&
      out->class_routing.size() != static_cast<size_t>(out->num_classes) * out->usage.size()) {
    return Status::InvalidArgument(fmt::format("{}.class_routing: each class needs one share per expert of usage ({})",
                                               path, out->usage.size()));
  }
  // The statistics that are functions of `usage` alone (docs/worker.md), when left out.
  if (!out->usage.empty() && (!has_variance || !has_cv)) {
    const double e = static_cast<double>(out->usage.size());
    double mean = 0;
    for (double u : out->usage) mean += u;
    mean /= e;
    double var = 0;
    for (double u : out->usage) var += (u - mean) * (u - mean);
    var /= e;
    if (!has_variance) out->usage_variance = var;
    if (!has_cv) out->load_cv = mean > 0 ? std::sqrt(var) / mean : 0.0;
  }
  return Status::Ok();
}

}  // namespace

Json ExpertLayerJson(const ExpertLayerSummary& s) {
  Json json{{"layer", s.layer},
              {"usage", s.usage},
              {"importance", s.importance},
              {"usage_variance", s.usage_variance},
              {"activation_rate", s.activation_rate},
              {"gate_weight_variance", s.gate_weight_variance},
              {"router_entropy", s.router_entropy},
              {"load_cv", s.load_cv}};
  if (!s.class_routing.empty() && s.num_classes > 0) {
    const size_t experts = s.class_routing.size() / static_cast<size_t>(s.num_classes);
    Json rows = Json::array();
    for (int c = 0; c < s.num_classes; ++c) {
      rows.push_back(std::vector<double>(s.class_routing.begin() + c * experts, s.class_routing.begin() + (c + 1) * experts));
    }
    json["class_routing"] = rows;
  }
  return json;
}

bool IsReportLine(std::string_view line) { return line.substr(0, kReportPrefix.size()) == kReportPrefix; }

Status ParseReport(std::string_view json_text, ParsedReport* out) {
  if (json_text.size() > kMaxReportLineBytes) {
    return Status::InvalidArgument(fmt::format("report of {} bytes is over the limit of {}", json_text.size(),
                                               kMaxReportLineBytes));
  }
  Json report;
  if (Status s = ParseJson(QuoteNonFiniteTokens(json_text), &report); !s.ok()) return s;
  if (!report.is_object()) {
    return Status::InvalidArgument(fmt::format("expected a JSON object, got {}", JsonTypeName(report)));
  }
  ParsedReport parsed;
  for (auto it = report.begin(); it != report.end(); ++it) {
    const std::string& key = it.key();
    if (key == "step") {
      if (!it->is_number_integer() || it->get<int64_t>() < 0) {
        return Status::InvalidArgument(fmt::format("step: expected a non-negative integer, got {}", it->dump()));
      }
      parsed.step = it->get<int64_t>();
    } else if (key == "final") {
      if (!it->is_boolean()) return Status::InvalidArgument("final: expected true or false");
      parsed.final = it->get<bool>();
    } else if (key == "metrics") {
      if (!it->is_object()) return Status::InvalidArgument("metrics: expected an object of name: number");
      if (it->size() > kMaxMetricsPerReport) {
        return Status::InvalidArgument(fmt::format("metrics: {} entries, over the limit of {}", it->size(),
                                                   kMaxMetricsPerReport));
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (m.key().empty() || m.key().size() > kMaxMetricNameBytes) {
          return Status::InvalidArgument(
              fmt::format("metrics: a metric name must have 1 to {} bytes", kMaxMetricNameBytes));
        }
        double v = 0;
        if (Status s = Number(*m, JoinPath("metrics", m.key()), &v); !s.ok()) return s;
        parsed.metrics.emplace_back(m.key(), v);
      }
    } else if (key == "expert_stats") {
      if (!it->is_array()) return Status::InvalidArgument("expert_stats: expected an array of layers");
      if (it->size() > kMaxLayersPerReport) {
        return Status::InvalidArgument(fmt::format("expert_stats: more than {} layers", kMaxLayersPerReport));
      }
      for (size_t i = 0; i < it->size(); ++i) {
        ExpertLayerSummary layer;
        if (Status s = Layer((*it)[i], IndexPath("expert_stats", i), i, &layer); !s.ok()) return s;
        parsed.expert_stats.push_back(std::move(layer));
      }
    } else {
      return Status::InvalidArgument(
          fmt::format("unknown key \"{}\" (known: step, metrics, expert_stats, final)", key.substr(0, 64)));
    }
  }
  if (parsed.metrics.empty() && parsed.expert_stats.empty()) {
    return Status::InvalidArgument("a report needs \"metrics\" or \"expert_stats\"");
  }
  *out = std::move(parsed);
  return Status::Ok();
}

}  // namespace moesweep::worker
