#include "client/export.h"

#include <algorithm>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "client/format.h"
#include "client/proto_json.h"

namespace moesweep::client {
namespace {

// Seed 001 calls a finished experiment "completed"; the other states keep their names.
std::string RecordStatus(v1::TrialState state) {
  return state == v1::TRIAL_SUCCEEDED ? "completed" : TrialStateName(state);
}

// Scalar statistics of a layer, in the column order of the CSV.
const std::vector<std::pair<const char*, double (v1::ExpertLayerStats::*)() const>>& LayerScalars() {
  static const std::vector<std::pair<const char*, double (v1::ExpertLayerStats::*)() const>> scalars = {
      {"usage_variance", &v1::ExpertLayerStats::usage_variance},
      {"activation_rate", &v1::ExpertLayerStats::activation_rate},
      {"gate_weight_variance", &v1::ExpertLayerStats::gate_weight_variance},
      {"router_entropy", &v1::ExpertLayerStats::router_entropy},
      {"load_cv", &v1::ExpertLayerStats::load_cv},
  };
  return scalars;
}

std::string StageName(const ExportContext& context, int stage) {
  auto it = context.stage_names.find(stage);
  return it == context.stage_names.end() ? "" : it->second;
}

std::string ExperimentId(const v1::Trial& t) { return fmt::format("sweep{}_trial{}", t.sweep_id(), t.trial_id()); }

std::string NumberText(double v) { return fmt::format("{}", v); }

// A config value as a CSV cell: strings without JSON quotes, null as empty.
std::string CellText(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

Json ParsedObject(const std::string& text) {
  Json value = EmbeddedJson(text);
  return value.is_object() ? value : Json::object();
}

}  // namespace

Json TrialRecord(const v1::Trial& t, const ExportContext& context) {
  std::string stage_name = StageName(context, t.stage());
  std::string point = FormatPoint(t.point_json());
  Json record = Json::object();
  record["experiment_id"] = ExperimentId(t);
  record["experiment_name"] = fmt::format("{} / {} / {} / seed {}", context.sweep_name,
                                          stage_name.empty() ? fmt::format("stage {}", t.stage()) : stage_name,
                                          point, t.seed());
  std::string start = FormatIsoUtc(t.started_at());
  record["start_time"] = start.empty() ? Json(nullptr) : Json(start);
  record["parameters"] = ParsedObject(t.config_json());

  std::vector<std::pair<std::string, double>> metrics(t.metrics().begin(), t.metrics().end());
  std::sort(metrics.begin(), metrics.end());
  Json results = Json::object();
  for (const auto& [name, value] : metrics) results[name] = value;
  record["results"] = results;

  Json analysis = Json::object();
  for (const v1::ExpertLayerStats& layer : t.expert_stats().layers()) {
    Json l = Json::object();
    l["expert_usage"] = std::vector<double>(layer.usage().begin(), layer.usage().end());
    l["expert_importance"] = std::vector<double>(layer.importance().begin(), layer.importance().end());
    l["expert_activation_rate"] = layer.activation_rate();
    l["gate_weight_variance"] = layer.gate_weight_variance();
    l["router_entropy"] = layer.router_entropy();
    l["load_cv"] = layer.load_cv();
    l["usage_variance"] = layer.usage_variance();
    analysis[fmt::format("layer_{}", layer.layer())] = l;
  }
  record["expert_analysis"] = analysis;
  record["status"] = RecordStatus(t.state());

  record["sweep_id"] = t.sweep_id();
  record["trial_id"] = t.trial_id();
  record["stage"] = t.stage();
  record["stage_name"] = stage_name;
  record["point_index"] = t.point_index();
  record["point"] = ParsedObject(t.point_json());
  record["seed"] = t.seed();
  record["attempt"] = t.attempt();
  record["worker"] = t.worker();
  if (t.reused_trial_id() > 0) record["reused_trial_id"] = t.reused_trial_id();
  std::string end = FormatIsoUtc(t.finished_at());
  record["end_time"] = end.empty() ? Json(nullptr) : Json(end);
  record["error"] = t.error();
  return record;
}

Json TrialRecords(const Trials& trials, const ExportContext& context) {
  Json records = Json::array();
  for (const v1::Trial& t : trials) records.push_back(TrialRecord(t, context));
  return records;
}

std::string CsvField(const std::string& text) {
  bool quote = text.find_first_of(",\"\r\n") != std::string::npos ||
               (!text.empty() && (text.front() == ' ' || text.back() == ' '));
  if (!quote) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

void WriteCsv(const Trials& trials, const ExportContext& context, std::ostream& out) {
  // Column unions over every trial, so a key that only some trials have still gets a column.
  std::vector<std::string> params;
  std::set<std::string> seen_params;
  std::set<std::string> metric_names;
  std::set<int> layers;
  std::vector<Json> configs;
  for (const v1::Trial& t : trials) {
    configs.push_back(ParsedObject(t.config_json()));
    for (auto it = configs.back().begin(); it != configs.back().end(); ++it) {
      if (seen_params.insert(it.key()).second) params.push_back(it.key());
    }
    for (const auto& m : t.metrics()) metric_names.insert(m.first);
    for (const auto& l : t.expert_stats().layers()) layers.insert(l.layer());
  }

  std::vector<std::string> header = {"experiment_id", "sweep_id", "trial_id", "stage", "stage_name", "point_index",
                                     "seed", "status", "attempt", "worker", "start_time", "end_time", "error",
                                     "reused_trial_id"};
  for (const auto& p : params) header.push_back("param." + p);
  for (const auto& m : metric_names) header.push_back("metric." + m);
  for (int l : layers) {
    for (const auto& scalar : LayerScalars()) header.push_back(fmt::format("expert.l{}.{}", l, scalar.first));
  }
  auto write_row = [&out](const std::vector<std::string>& cells) {
    for (size_t i = 0; i < cells.size(); ++i) out << (i ? "," : "") << CsvField(cells[i]);
    out << "\n";
  };
  write_row(header);

  for (int i = 0; i < trials.size(); ++i) {
    const v1::Trial& t = trials[i];
    std::vector<std::string> row = {ExperimentId(t), std::to_string(t.sweep_id()), std::to_string(t.trial_id()),
                                    std::to_string(t.stage()), StageName(context, t.stage()),
                                    std::to_string(t.point_index()), std::to_string(t.seed()),
                                    RecordStatus(t.state()), std::to_string(t.attempt()), t.worker(),
                                    FormatIsoUtc(t.started_at()), FormatIsoUtc(t.finished_at()), t.error(),
                                    t.reused_trial_id() > 0 ? std::to_string(t.reused_trial_id()) : ""};
    for (const auto& p : params) {
      auto it = configs[i].find(p);
      row.push_back(it == configs[i].end() ? "" : CellText(*it));
    }
    for (const auto& m : metric_names) {
      auto it = t.metrics().find(m);
      row.push_back(it == t.metrics().end() ? "" : NumberText(it->second));
    }
    for (int l : layers) {
      const v1::ExpertLayerStats* stats = nullptr;
      for (const auto& candidate : t.expert_stats().layers()) {
        if (candidate.layer() == l) stats = &candidate;
      }
      for (const auto& scalar : LayerScalars()) row.push_back(stats ? NumberText((stats->*scalar.second)()) : "");
    }
    write_row(row);
  }
}

}  // namespace moesweep::client
