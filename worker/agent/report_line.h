// The command-trainer reporting protocol (docs/trainers.md): a line of the trainer's stdout that
// starts with "@moesweep " followed by one JSON object is a report; every other line is log.
//
//   @moesweep {"step": 3, "metrics": {"val_accuracy": 0.81}, "expert_stats": [...], "final": false}
//
// Non-finite numbers may be written as the bare tokens NaN, Infinity and -Infinity (what Python's
// json.dumps writes) or as those strings.
#ifndef MOESWEEP_WORKER_AGENT_REPORT_LINE_H_
#define MOESWEEP_WORKER_AGENT_REPORT_LINE_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/limits.h"
#include "common/status.h"
#include "worker/agent/trial_runner.h"

namespace moesweep::worker {

inline constexpr std::string_view kReportPrefix = "@moesweep ";

// A report line over this is refused (and logged), never cut. A report also keeps to the
// coordinator's bounds on what one report may carry (common/limits.h).
inline constexpr size_t kMaxReportLineBytes = 1 << 20;

struct ParsedReport {
  std::optional<int64_t> step;
  Metrics metrics;
  std::vector<ExpertLayerSummary> expert_stats;
  bool final = false;
};

// True when `line` is a report line (starts with the prefix).
bool IsReportLine(std::string_view line);

// One layer's statistics as a report's "expert_stats" entry (the proto's field names).
Json ExpertLayerJson(const ExpertLayerSummary& layer);

// Parses the text after the prefix. An error names what is wrong ("metrics.loss: expected a
// number, got string"); the caller logs it and goes on.
Status ParseReport(std::string_view json_text, ParsedReport* out);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_REPORT_LINE_H_
