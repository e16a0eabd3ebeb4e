#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace moesweep {
namespace {

enum Type { kCounter, kGauge, kHistogram };
const char* const kTypeNames[] = {"counter", "gauge", "histogram"};

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

[[noreturn]] void Misuse(const std::string& message) {
  std::fprintf(stderr, "MetricRegistry: %s\n", message.c_str());
  std::abort();
}

// `{a="x",b="y"}` (empty without labels), with `extra` (a histogram's le) last.
std::string RenderLabels(const MetricLabels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  for (const auto& [name, value] : labels) {
    if (out.size() > 1) out += ',';
    out += name + "=\"" + EscapeLabelValue(value) + '"';
  }
  if (!extra.empty()) {
    if (out.size() > 1) out += ',';
    out += extra;
  }
  return out + "}";
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);  // Shortest form that reads back the same: 3, 0.25, 1e-05.
}

// ---------------------------------------------------------------------------------------------

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
      Misuse("histogram bounds must be finite and strictly increasing");
    }
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // The first bucket whose bound is >= value (buckets are `le`); NaN counts only in +Inf.
  size_t i = std::isnan(value) ? bounds_.size()
                               : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                                     bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

std::vector<uint64_t> Histogram::CumulativeCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    out[i] = total;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

struct MetricRegistry::Family {
  std::string name;
  std::string help;
  int type;
  struct Series {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  std::vector<std::unique_ptr<Series>> series;

  Series* Find(const MetricLabels& labels) {
    for (auto& s : series) {
      if (s->labels == labels) return s.get();
    }
    return nullptr;
  }
};

MetricRegistry::MetricRegistry() = default;
MetricRegistry::~MetricRegistry() = default;

MetricRegistry::Family* MetricRegistry::FindOrAddFamily(const std::string& name, const std::string& help, int type,
                                                        const MetricLabels& labels) {
  if (!ValidName(name, true)) Misuse(fmt::format("bad metric name '{}'", name));
  for (const auto& [label, value] : labels) {
    if (!ValidName(label, false) || label.rfind("__", 0) == 0) {
      Misuse(fmt::format("{}: bad label name '{}'", name, label));
    }
    if (type == kHistogram && label == "le") Misuse(fmt::format("{}: a histogram may not have a label 'le'", name));
  }
  for (auto& family : families_) {
    if (family->name != name) continue;
    if (family->type != type) {
      Misuse(fmt::format("{} is a {}, not a {}", name, kTypeNames[family->type], kTypeNames[type]));
    }
    return family.get();
  }
  families_.push_back(std::make_unique<Family>());
  Family* family = families_.back().get();
  family->name = name;
  family->help = help;
  family->type = type;
  return family;
}

Counter* MetricRegistry::AddCounter(const std::string& name, const std::string& help, const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family* family = FindOrAddFamily(name, help, kCounter, labels);
  if (Family::Series* s = family->Find(labels)) return s->counter.get();
  family->series.push_back(std::make_unique<Family::Series>());
  family->series.back()->labels = labels;
  family->series.back()->counter = std::make_unique<Counter>();
  return family->series.back()->counter.get();
}

Gauge* MetricRegistry::AddGauge(const std::string& name, const std::string& help, const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family* family = FindOrAddFamily(name, help, kGauge, labels);
  if (Family::Series* s = family->Find(labels)) return s->gauge.get();
  family->series.push_back(std::make_unique<Family::Series>());
  family->series.back()->labels = labels;
  family->series.back()->gauge = std::make_unique<Gauge>();
  return family->series.back()->gauge.get();
}

Histogram* MetricRegistry::AddHistogram(const std::string& name, const std::string& help,
                                        const std::vector<double>& bounds, const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family* family = FindOrAddFamily(name, help, kHistogram, labels);
  if (Family::Series* s = family->Find(labels)) return s->histogram.get();
  family->series.push_back(std::make_unique<Family::Series>());
  family->series.back()->labels = labels;
  family->series.back()->histogram = std::make_unique<Histogram>(bounds);
  return family->series.back()->histogram.get();
}

std::string MetricRegistry::Exposition() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& family : families_) {
    const std::string& name = family->name;
    out += "# HELP " + name + ' ' + EscapeHelp(family->help) + '\n';
    out += "# TYPE " + name + ' ' + kTypeNames[family->type] + '\n';
    for (const auto& s : family->series) {
      switch (family->type) {
        case kCounter:
          out += name + RenderLabels(s->labels) + ' ' + std::to_string(s->counter->value()) + '\n';
          break;
        case kGauge:
          out += name + RenderLabels(s->labels) + ' ' + FormatMetricValue(s->gauge->value()) + '\n';
          break;
        case kHistogram: {
          const Histogram& h = *s->histogram;
          // Counts first, then the sum: a scrape racing an Observe may show a sum a little ahead
          // of _count, never a bucket above _count.
          std::vector<uint64_t> counts = h.CumulativeCounts();
          for (size_t i = 0; i < counts.size(); ++i) {
            std::string le = i < h.bounds().size() ? FormatMetricValue(h.bounds()[i]) : "+Inf";
            out += name + "_bucket" + RenderLabels(s->labels, "le=\"" + le + '"') + ' ' + std::to_string(counts[i]) +
                   '\n';
          }
          out += name + "_sum" + RenderLabels(s->labels) + ' ' + FormatMetricValue(h.sum()) + '\n';
          out += name + "_count" + RenderLabels(s->labels) + ' ' + std::to_string(counts.back()) + '\n';
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace moesweep
