// Human-readable output: numbers, times, grid points, tables, and the views of `sweeps`, `show`,
// `trials` and `best`. Everything here is pure (no I/O beyond the stream it is given).
#ifndef MOESWEEP_CLIENT_FORMAT_H_
#define MOESWEEP_CLIENT_FORMAT_H_

#include <ostream>
#include <string>
#include <vector>

#include "moesweep/v1/moesweep.pb.h"

namespace moesweep::client {

// Lower-case state words without the enum prefix: "running", "succeeded", "decided"...
std::string SweepStateName(v1::SweepState state);
std::string TrialStateName(v1::TrialState state);
std::string StageStateName(v1::StageState state);

// A metric value: integers as integers, otherwise 4 significant digits ("0.8123", "12.35", "1e-05").
std::string FormatValue(double value);
// "+0.0123" / "-0.5": always signed.
std::string FormatDelta(double delta);
// "0.8123 ± 0.0040 (n=3)"; "-" when n == 0.
std::string FormatScore(const v1::PointScore& score);

// "p = 0.012", "p < 0.001".
std::string FormatP(double p);

// How sure a decided stage's winner is, for a person: "+0.033 vs baseline (p = 0.01) ✓ ≥ +0.02;
// runner-up dropout=0.1 0.8213 ± 0.012 (n=3), p = 0.84: not significantly better at 0.05". Empty
// for undecided stages and the baseline.
std::string FormatSignificance(const v1::StageResult& stage);
// A grid point {"temperature": 0.5, "attention": "gated"} as "temperature=0.5 attention=gated";
// "{}" for an empty point. Text that is not a JSON object is shown as it is.
std::string FormatPoint(const std::string& point_json);
// Key router statistics of layer 0: "load_cv=0.12 act=0.91"; "" for a dense model.
std::string FormatExpertSummary(const v1::ExpertStats& stats);

// Local time "2024-05-01 14:03:07"; "-" for 0.
std::string FormatLocalTime(double unix_seconds);
// Local "14:03:07" for watch lines.
std::string FormatClock(double unix_seconds);
// ISO 8601 UTC "2024-05-01T12:03:07Z"; "" for 0.
std::string FormatIsoUtc(double unix_seconds);
// "42s", "3m05s", "1h02m".
std::string FormatDuration(double seconds);

// A plain-text table: columns padded to the widest cell (counting UTF-8 characters, not bytes).
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

void PrintSweepList(const v1::ListSweepsResponse& response, std::ostream& out);
void PrintSweep(const v1::GetSweepResponse& response, std::ostream& out);
// `objective_metric` picks the value column; empty shows none.
void PrintTrials(const v1::ListTrialsResponse& response, const std::string& objective_metric, std::ostream& out);
void PrintBest(const v1::GetBestConfigResponse& response, std::ostream& out);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_FORMAT_H_
