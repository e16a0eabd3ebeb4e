// Fuzzes the command-trainer report-line parser (worker/agent/report_line.cc) with the text after
// "@moesweep ".
// Invariants: no exception escapes; an accepted report keeps the coordinator's bounds (metrics,
// name lengths, layers, experts per layer) and has metrics or expert statistics; written back out
// as a report line (non-finite numbers as "NaN"/"Infinity"/"-Infinity") it parses to the same
// report; IsReportLine agrees with the prefix.
#include <cmath>
#include <string>
#include <string_view>

#include "common/json.h"
#include "common/limits.h"
#include "fuzz/fuzz_util.h"
#include "worker/agent/report_line.h"

using namespace moesweep;
using moesweep::worker::ParsedReport;

namespace {

Json NumberJson(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

Json ArrayJson(const std::vector<double>& values) {
  Json a = Json::array();
  for (double v : values) a.push_back(NumberJson(v));
  return a;
}

// The report as a trainer would write it, every statistic explicit.
std::string Write(const ParsedReport& r) {
  Json j = Json::object();
  if (r.step) j["step"] = *r.step;
  if (!r.metrics.empty()) {
    Json m = Json::object();
    for (const auto& [name, v] : r.metrics) m[name] = NumberJson(v);
    j["metrics"] = m;
  }
  if (!r.expert_stats.empty()) {
    Json layers = Json::array();
    for (const auto& l : r.expert_stats) {
      layers.push_back({{"layer", l.layer},
                        {"usage", ArrayJson(l.usage)},
                        {"importance", ArrayJson(l.importance)},
                        {"usage_variance", NumberJson(l.usage_variance)},
                        {"activation_rate", NumberJson(l.activation_rate)},
                        {"gate_weight_variance", NumberJson(l.gate_weight_variance)},
                        {"router_entropy", NumberJson(l.router_entropy)},
                        {"load_cv", NumberJson(l.load_cv)}});
    }
    j["expert_stats"] = layers;
  }
  j["final"] = r.final;
  return j.dump();
}

bool Same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

bool Same(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!Same(a[i], b[i])) return false;
  }
  return true;
}

bool Same(const ParsedReport& a, const ParsedReport& b) {
  if (a.step != b.step || a.final != b.final || a.metrics.size() != b.metrics.size() ||
      a.expert_stats.size() != b.expert_stats.size()) {
    return false;
  }
  for (size_t i = 0; i < a.metrics.size(); ++i) {
    if (a.metrics[i].first != b.metrics[i].first || !Same(a.metrics[i].second, b.metrics[i].second)) return false;
  }
  for (size_t i = 0; i < a.expert_stats.size(); ++i) {
    const auto& x = a.expert_stats[i];
    const auto& y = b.expert_stats[i];
    if (x.layer != y.layer || !Same(x.usage, y.usage) || !Same(x.importance, y.importance) ||
        !Same(x.usage_variance, y.usage_variance) || !Same(x.activation_rate, y.activation_rate) ||
        !Same(x.gate_weight_variance, y.gate_weight_variance) || !Same(x.router_entropy, y.router_entropy) ||
        !Same(x.load_cv, y.load_cv)) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::NoThrow("ParseReport", [&] {
    FUZZ_CHECK(worker::IsReportLine(std::string(worker::kReportPrefix) + std::string(text)), "prefix not seen");
    FUZZ_CHECK(worker::IsReportLine(text) == (text.substr(0, worker::kReportPrefix.size()) == worker::kReportPrefix),
               "IsReportLine disagrees with the prefix");
    ParsedReport report;
    Status s = worker::ParseReport(text, &report);
    if (!s.ok()) {
      FUZZ_CHECK(!s.message().empty(), "a refusal without a reason");
      return;
    }
    FUZZ_CHECK(!report.metrics.empty() || !report.expert_stats.empty(), "an empty report was accepted");
    FUZZ_CHECK(!report.step || *report.step >= 0, "step {}", *report.step);
    FUZZ_CHECK(report.metrics.size() <= kMaxMetricsPerReport, "{} metrics", report.metrics.size());
    for (const auto& [name, v] : report.metrics) {
      FUZZ_CHECK(!name.empty() && name.size() <= kMaxMetricNameBytes, "metric name of {} bytes", name.size());
    }
    FUZZ_CHECK(report.expert_stats.size() <= kMaxLayersPerReport, "{} layers", report.expert_stats.size());
    for (const auto& l : report.expert_stats) {
      FUZZ_CHECK(l.layer >= 0, "layer {}", l.layer);
      FUZZ_CHECK(l.usage.size() <= kMaxExpertsPerLayer && l.importance.size() <= kMaxExpertsPerLayer,
                 "{} / {} experts", l.usage.size(), l.importance.size());
    }
    const std::string written = Write(report);
    ParsedReport again;
    Status s2 = worker::ParseReport(written, &again);
    FUZZ_CHECK(s2.ok(), "the report written back is refused: {}\n{}", s2.message(), Clip(written, 2000));
    FUZZ_CHECK(Same(report, again), "written back, the report reads differently:\n{}", Clip(written, 2000));
  });
  return 0;
}
