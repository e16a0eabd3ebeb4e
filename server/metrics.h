// MetricRegistry: counters, gauges and fixed-bucket histograms, rendered as Prometheus text
// exposition (format 0.0.4). Knows nothing of moesweep; server/coordinator_metrics.h names ours.
//
// Threads: a metric is updated by any thread with relaxed atomics (no lock; in the coordinator
// one thread writes each of them) and read by the thread that renders Exposition(). Registering
// takes the registry's mutex, as does Exposition(), so series may be added while being scraped.
// A scrape sees each value as it was at some moment during the scrape, not one instant for all.
#ifndef MOESWEEP_SERVER_METRICS_H_
#define MOESWEEP_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace moesweep {

// Label name -> value, in the order they are written.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A count that only goes up.
class Counter {
 public:
  void Increment(uint64_t by = 1) { value_.fetch_add(by, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into buckets with fixed upper bounds (`le`), plus their sum.
class Histogram {
 public:
  // `bounds`: strictly increasing, finite; +Inf is implied.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound, +Inf last (so back() is the count), and the sum.
  std::vector<uint64_t> CumulativeCounts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // Per bucket, not cumulative; +Inf last.
  std::atomic<double> sum_{0};
};

class MetricRegistry {
 public:
  MetricRegistry();
  ~MetricRegistry();
  MetricRegistry(const MetricRegistry&) = delete;
  MetricRegistry& operator=(const MetricRegistry&) = delete;

  // Each returns the series of family `name` with `labels`, adding it (and the family, with its
  // `help`) if new; asking again returns the same one. The pointer lives as long as the registry.
  // A bad metric or label name, a label named `le` on a histogram, or a name registered with
  // another type is a programming error: it aborts with a message.
  Counter* AddCounter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help, const std::vector<double>& bounds,
                          const MetricLabels& labels = {});

  // Every family in the order registered: `# HELP`, `# TYPE`, then its samples, each line ending
  // in '\n'. Histograms give name_bucket{le=...} (cumulative, +Inf last), name_sum, name_count.
  std::string Exposition() const;

 private:
  struct Family;
  Family* FindOrAddFamily(const std::string& name, const std::string& help, int type, const MetricLabels& labels);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;  // GUARDED_BY(mu_)
};

// Text-format helpers, exposed for tests.
std::string EscapeLabelValue(const std::string& value);  // \ " and newline escaped.
std::string EscapeHelp(const std::string& help);         // \ and newline escaped.
std::string FormatMetricValue(double value);             // Shortest round-trip; +Inf, -Inf, NaN.

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_METRICS_H_
