#include "client/format.h"

#include <cmath>
#include <ctime>

#include <fmt/format.h>

#include "client/proto_json.h"
#include "common/json.h"

namespace moesweep::client {
namespace {

size_t DisplayWidth(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // Count UTF-8 lead bytes only.
  return n;
}

std::string ScalarText(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// First line of `text`, at most `max` characters, for table cells.
std::string Shorten(const std::string& text, size_t max) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() <= max) return line;
  return line.substr(0, max - 3) + "...";
}

std::string FormatTime(double unix_seconds, const char* pattern, bool utc) {
  std::time_t t = static_cast<std::time_t>(std::floor(unix_seconds));
  std::tm tm{};
  if (utc) {
    gmtime_r(&t, &tm);
  } else {
    localtime_r(&t, &tm);
  }
  char buf[64];
  std::strftime(buf, sizeof buf, pattern, &tm);
  return buf;
}

void PrintStageTable(const google::protobuf::RepeatedPtrField<v1::StageResult>& stages, std::ostream& out) {
  Table table({"STAGE", "NAME", "STATE", "TRIALS", "FAILED", "WINNER", "MEAN ± STD (N)", "VS BASELINE"});
  for (const v1::StageResult& s : stages) {
    bool decided = s.state() == v1::STAGE_SUCCEEDED;
    table.AddRow({std::to_string(s.stage()), s.name(), StageStateName(s.state()),
                  fmt::format("{}/{}", s.trials_done(), s.trials_total()), std::to_string(s.trials_failed()),
                  decided ? FormatPoint(s.winner().point_json()) : "-", decided ? FormatScore(s.winner()) : "-",
                  decided && s.has_baseline() && s.stage() != 0 ? FormatDelta(s.delta_to_baseline()) : "-"});
  }
  table.Print(out);
  for (const v1::StageResult& s : stages) {
    if (!s.error().empty()) out << fmt::format("stage {} {}: {}\n", s.stage(), s.name(), s.error());
    if (s.trials_pruned() > 0) {
      int points = 0;
      for (const v1::PointScore& p : s.points()) points += p.pruned() > 0;
      out << fmt::format("stage {} {}: {} trial{} pruned; {} point{} with a pruned seed cannot win\n", s.stage(),
                         s.name(), s.trials_pruned(), s.trials_pruned() == 1 ? "" : "s", points, points == 1 ? "" : "s");
    }
    if (std::string sure = FormatSignificance(s); !sure.empty()) {
      out << fmt::format("stage {} {}: {}\n", s.stage(), s.name(), sure);
    }
    if (s.extended_points_json_size() > 0) {
      std::vector<std::string> added;
      for (const std::string& point : s.extended_points_json()) added.push_back(FormatPoint(point));
      out << fmt::format("stage {} {}: added beyond the grid's edges: {}\n", s.stage(), s.name(), fmt::join(added, ", "));
    }
  }
}

}  // namespace

std::string SweepStateName(v1::SweepState state) {
  switch (state) {
    case v1::SWEEP_RUNNING: return "running";
    case v1::SWEEP_SUCCEEDED: return "succeeded";
    case v1::SWEEP_FAILED: return "failed";
    case v1::SWEEP_CANCELLING: return "cancelling";
    case v1::SWEEP_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

std::string TrialStateName(v1::TrialState state) {
  switch (state) {
    case v1::TRIAL_PENDING: return "pending";
    case v1::TRIAL_RUNNING: return "running";
    case v1::TRIAL_SUCCEEDED: return "succeeded";
    case v1::TRIAL_FAILED: return "failed";
    case v1::TRIAL_CANCELLED: return "cancelled";
    case v1::TRIAL_PRUNED: return "pruned";
    default: return "unknown";
  }
}

std::string StageStateName(v1::StageState state) {
  switch (state) {
    case v1::STAGE_WAITING: return "waiting";
    case v1::STAGE_RUNNING: return "running";
    case v1::STAGE_SUCCEEDED: return "decided";
    case v1::STAGE_FAILED: return "failed";
    case v1::STAGE_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

std::string FormatValue(double value) {
  if (!std::isfinite(value)) return fmt::format("{}", value);
  if (value == std::floor(value) && std::fabs(value) < 1e15) return fmt::format("{:.0f}", value);
  if (std::fabs(value) >= 1000) return fmt::format("{:.1f}", value);
  return fmt::format("{:.4g}", value);
}

std::string FormatDelta(double delta) {
  std::string text = FormatValue(std::fabs(delta));
  return (delta < 0 ? "-" : "+") + text;
}

std::string FormatScore(const v1::PointScore& score) {
  if (score.n() == 0) return "-";
  return fmt::format("{} ± {} (n={})", FormatValue(score.mean()), FormatValue(score.std()), score.n());
}

std::string FormatP(double p) {
  if (p < 0.001) return "p < 0.001";
  return fmt::format("p = {:.2g}", p);
}

std::string FormatSignificance(const v1::StageResult& s) {
  if (s.state() != v1::STAGE_SUCCEEDED || s.stage() == 0) return "";
  std::vector<std::string> parts;
  if (s.has_baseline()) {
    std::string part = FormatDelta(s.delta_to_baseline()) + " vs baseline";
    if (s.has_p_vs_baseline()) part += fmt::format(" ({})", FormatP(s.p_vs_baseline()));
    if (s.has_success_criterion()) {
      part += fmt::format(" {} {} {}", s.meets_success() ? "✓" : "✗", s.meets_success() ? "≥" : "<",
                          FormatDelta(s.min_delta()));
    }
    parts.push_back(part);
  }
  if (s.runner_up().n() > 0) {
    std::string part = fmt::format("runner-up {} {}", FormatPoint(s.runner_up().point_json()), FormatScore(s.runner_up()));
    if (s.has_p_vs_runner_up()) {
      part += fmt::format(", {}{}", FormatP(s.p_vs_runner_up()),
                          s.p_vs_runner_up() < 0.05 ? "" : ": not significantly better at 0.05");
    }
    parts.push_back(part);
  }
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

std::string FormatPoint(const std::string& point_json) {
  Json point;
  if (!ParseJson(point_json, &point).ok() || !point.is_object()) return point_json;
  if (point.empty()) return "{}";
  std::string text;
  for (auto it = point.begin(); it != point.end(); ++it) {
    if (!text.empty()) text += ' ';
    text += it.key() + "=" + ScalarText(it.value());
  }
  return text;
}

std::string FormatExpertSummary(const v1::ExpertStats& stats) {
  for (const v1::ExpertLayerStats& layer : stats.layers()) {
    if (layer.layer() != 0) continue;
    return fmt::format("load_cv={} act={}", FormatValue(layer.load_cv()), FormatValue(layer.activation_rate()));
  }
  return "";
}

std::string FormatLocalTime(double unix_seconds) {
  return unix_seconds <= 0 ? "-" : FormatTime(unix_seconds, "%Y-%m-%d %H:%M:%S", false);
}

std::string FormatClock(double unix_seconds) { return FormatTime(unix_seconds, "%H:%M:%S", false); }

std::string FormatIsoUtc(double unix_seconds) {
  return unix_seconds <= 0 ? "" : FormatTime(unix_seconds, "%Y-%m-%dT%H:%M:%SZ", true);
}

std::string FormatDuration(double seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 60) return fmt::format("{:.0f}s", seconds);
  auto total = static_cast<int64_t>(std::llround(seconds));
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m", total / 3600, total % 3600 / 60);
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(widths[c] - DisplayWidth(row[c]) + 2, ' ');
    }
    line.erase(line.find_last_not_of(' ') + 1);  // An empty last cell leaves no trailing blanks.
    out << line << "\n";
  }
}

void PrintSweepList(const v1::ListSweepsResponse& response, std::ostream& out) {
  if (response.sweeps().empty()) {
    out << "no sweeps\n";
    return;
  }
  Table table({"ID", "NAME", "STATE", "STAGE", "TRIALS", "FAILED", "RUNNING", "CREATED"});
  for (const v1::Sweep& s : response.sweeps()) {
    table.AddRow({std::to_string(s.sweep_id()), s.name(), SweepStateName(s.state()),
                  fmt::format("{}/{}", s.current_stage(), s.num_stages()),
                  fmt::format("{}/{}", s.trials_done(), s.trials_total()), std::to_string(s.trials_failed()),
                  std::to_string(s.trials_running()), FormatLocalTime(s.created_at())});
  }
  table.Print(out);
}

void PrintSweep(const v1::GetSweepResponse& response, std::ostream& out) {
  const v1::Sweep& s = response.sweep();
  out << fmt::format("sweep {} \"{}\": {}", s.sweep_id(), s.name(), SweepStateName(s.state()));
  if (s.state() == v1::SWEEP_RUNNING) out << fmt::format(", stage {} of {}", s.current_stage(), s.num_stages());
  out << "\n";
  out << fmt::format("objective: {} ({})\n", s.objective_metric(), s.objective_goal());
  out << fmt::format("trials:    {} created, {} done, {} failed, {} running", s.trials_total(), s.trials_done(),
                     s.trials_failed(), s.trials_running());
  if (s.trials_pruned() > 0) out << fmt::format(", {} pruned", s.trials_pruned());
  out << "\n";
  out << fmt::format("created:   {}\n", FormatLocalTime(s.created_at()));
  if (s.finished_at() > 0) out << fmt::format("finished:  {}\n", FormatLocalTime(s.finished_at()));
  if (!s.error().empty()) out << fmt::format("error:     {}\n", s.error());
  out << "\n";
  PrintStageTable(response.stages(), out);
}

void PrintTrials(const v1::ListTrialsResponse& response, const std::string& objective_metric, std::ostream& out) {
  if (response.trials().empty()) {
    out << "no trials\n";
    return;
  }
  std::vector<std::string> header = {"TRIAL", "STAGE", "POINT", "SEED", "STATE", "ATTEMPT"};
  if (!objective_metric.empty()) header.push_back(objective_metric);
  for (const char* h : {"EXPERTS (LAYER 0)", "WORKER", "GRID POINT", "ERROR"}) header.push_back(h);
  Table table(header);
  for (const v1::Trial& t : response.trials()) {
    std::vector<std::string> row = {std::to_string(t.trial_id()), std::to_string(t.stage()),
                                    std::to_string(t.point_index()), std::to_string(t.seed()),
                                    TrialStateName(t.state()), std::to_string(t.attempt())};
    if (!objective_metric.empty()) {
      auto it = t.metrics().find(objective_metric);
      row.push_back(it == t.metrics().end() ? "-" : FormatValue(it->second));
    }
    std::string experts = FormatExpertSummary(t.expert_stats());
    row.push_back(experts.empty() ? "-" : experts);
    row.push_back(t.reused_trial_id() > 0 ? fmt::format("reused #{}", t.reused_trial_id())
                                          : t.worker().empty() ? "-" : t.worker());
    row.push_back(FormatPoint(t.point_json()));
    row.push_back(Shorten(t.error(), 60));
    table.AddRow(std::move(row));
  }
  table.Print(out);
}

void PrintBest(const v1::GetBestConfigResponse& response, std::ostream& out) {
  PrintStageTable(response.stages(), out);
  out << "\n";
  if (response.best_config_json().empty()) {
    out << "best config: none yet (no stage decided)\n";
    return;
  }
  out << "best config:\n" << EmbeddedJson(response.best_config_json()).dump(2) << "\n";
}

}  // namespace moesweep::client
