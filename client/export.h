// `moesweep export`: trials as experiment records (seed 001's JSON shape) or as one CSV row each.
#ifndef MOESWEEP_CLIENT_EXPORT_H_
#define MOESWEEP_CLIENT_EXPORT_H_

#include <map>
#include <ostream>
#include <string>

#include "common/json.h"
#include "moesweep/v1/moesweep.pb.h"

namespace moesweep::client {

using Trials = google::protobuf::RepeatedPtrField<v1::Trial>;

// What a record needs besides the trial: names for experiment_name and stage_name.
struct ExportContext {
  std::string sweep_name;
  std::map<int, std::string> stage_names;  // By stage number; 0 = baseline.
};

// {experiment_id, experiment_name, start_time, parameters, results, expert_analysis, status, ...}:
// seed 001's experiment record plus the sweep coordinates (sweep_id, trial_id, stage, point, seed...).
Json TrialRecord(const v1::Trial& trial, const ExportContext& context);

// A JSON array of TrialRecord()s.
Json TrialRecords(const Trials& trials, const ExportContext& context);

// Header plus one row per trial. Columns: fixed trial fields, then `param.<key>` for the union
// of config keys (in first-seen order), `metric.<name>` (sorted), and `expert.l<layer>.<stat>`
// for the scalar expert statistics. RFC 4180 quoting; rows end in "\n".
void WriteCsv(const Trials& trials, const ExportContext& context, std::ostream& out);

// One CSV field, quoted when it holds a comma, quote, CR/LF or edge blanks.
std::string CsvField(const std::string& text);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_EXPORT_H_
