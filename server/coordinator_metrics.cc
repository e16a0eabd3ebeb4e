#include "server/coordinator_metrics.h"

#include <sys/stat.h>

#include <cctype>
#include <chrono>

namespace moesweep {
namespace {

const char* const kRpcNames[] = {"SubmitSweep",  "GetSweep",       "ListSweeps",           "CancelSweep", "ListTrials",
                                 "GetBestConfig", "WatchSweep",    "AcquireTrial",         "ReportProgress",
                                 "ReportProgressStream", "CompleteTrial", "HealthCheck", "HealthWatch"};
static_assert(sizeof(kRpcNames) / sizeof(kRpcNames[0]) == static_cast<size_t>(Rpc::kCount));

// As grpc::StatusCode numbers them (and as grpc/doc/statuscodes.md spells them).
const char* const kGrpcCodeNames[] = {"OK",
                                      "CANCELLED",
                                      "UNKNOWN",
                                      "INVALID_ARGUMENT",
                                      "DEADLINE_EXCEEDED",
                                      "NOT_FOUND",
                                      "ALREADY_EXISTS",
                                      "PERMISSION_DENIED",
                                      "RESOURCE_EXHAUSTED",
                                      "FAILED_PRECONDITION",
                                      "ABORTED",
                                      "OUT_OF_RANGE",
                                      "UNIMPLEMENTED",
                                      "INTERNAL",
                                      "UNAVAILABLE",
                                      "DATA_LOSS",
                                      "UNAUTHENTICATED"};

// Seconds. Answers take 0.1-1 ms; an AcquireTrial long-poll waits up to 60 s.
const std::vector<double> kRpcBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60};
// Seconds. A batch of a few hundred commands commits in about a millisecond (BENCHMARKS.md).
const std::vector<double> kCommitBuckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1};
const std::vector<double> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

constexpr const char* kRpcRequestsHelp =
    "Calls answered, by method and gRPC status code; ReportProgressStream counts each report on a stream.";

// "TRIAL_PENDING" -> "pending".
std::string StateLabel(const std::string& enum_name, const std::string& prefix) {
  std::string out = enum_name.substr(prefix.size());
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

}  // namespace

const char* RpcName(Rpc rpc) { return kRpcNames[static_cast<size_t>(rpc)]; }

CoordinatorMetrics::CoordinatorMetrics(MetricRegistry* registry, std::string db_path)
    : registry_(registry), db_path_(std::move(db_path)) {
  MetricRegistry& r = *registry;
  for (int s = v1::TrialState_MIN; s <= v1::TrialState_MAX; ++s) {
    if (s == v1::TRIAL_STATE_UNSPECIFIED || !v1::TrialState_IsValid(s)) continue;
    trials_[s] = r.AddGauge("moesweep_trials", "Trials in the database, by state.",
                            {{"state", StateLabel(v1::TrialState_Name(static_cast<v1::TrialState>(s)), "TRIAL_")}});
  }
  for (int s = v1::SweepState_MIN; s <= v1::SweepState_MAX; ++s) {
    if (s == v1::SWEEP_STATE_UNSPECIFIED || !v1::SweepState_IsValid(s)) continue;
    sweeps_[s] = r.AddGauge("moesweep_sweeps", "Sweeps in the database, by state.",
                            {{"state", StateLabel(v1::SweepState_Name(static_cast<v1::SweepState>(s)), "SWEEP_")}});
  }
  queue_depth_ = r.AddGauge("moesweep_queue_depth", "Pending trials of running sweeps, waiting for a worker.");
  leases_granted_ = r.AddCounter("moesweep_leases_granted_total", "Trial leases given to workers.");
  leases_expired_ = r.AddCounter("moesweep_leases_expired_total",
                                 "Trial leases that expired without a report (the trial was requeued or failed).");
  parked_acquires_ = r.AddGauge("moesweep_parked_acquires", "AcquireTrial long-polls waiting for a trial.");
  for (size_t i = 0; i < static_cast<size_t>(Rpc::kCount); ++i) {
    // The OK series exist from the start, so that rate() sees the first call.
    rpc_requests_[i][0] = r.AddCounter("moesweep_rpc_requests_total", kRpcRequestsHelp,
                                       {{"method", kRpcNames[i]}, {"code", "OK"}});
  }
  for (size_t i = 0; i < static_cast<size_t>(Rpc::kCount); ++i) {
    if (static_cast<Rpc>(i) == Rpc::kWatchSweep) continue;
    rpc_seconds_[i] = r.AddHistogram("moesweep_rpc_duration_seconds",
                                     "From reading a request to sending its answer, by method (AcquireTrial "
                                     "includes its long-poll wait).",
                                     kRpcBuckets, {{"method", kRpcNames[i]}});
  }
  commit_seconds_ = r.AddHistogram("moesweep_commit_duration_seconds",
                                   "One group-commit batch's write transaction, BEGIN to COMMIT.", kCommitBuckets);
  batch_commands_ = r.AddHistogram("moesweep_batch_commands", "Commands (requests) handled per batch.", kBatchBuckets);
  watchers_ = r.AddGauge("moesweep_watchers", "Open WatchSweep streams.");
  watch_queue_bytes_ = r.AddGauge("moesweep_watch_queue_bytes", "Bytes of events queued for watchers, not yet sent.");
  database_bytes_ = r.AddGauge("moesweep_database_bytes", "Size of the database file plus its write-ahead log.");
  Gauge* start = r.AddGauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.");
  start->Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

void CoordinatorMetrics::RecordRpc(Rpc rpc, int grpc_code, double seconds) {
  size_t m = static_cast<size_t>(rpc);
  if (grpc_code < 0 || grpc_code >= kGrpcCodes) grpc_code = 2;  // UNKNOWN
  Counter*& counter = rpc_requests_[m][grpc_code];
  if (counter == nullptr) {
    counter = registry_->AddCounter("moesweep_rpc_requests_total", kRpcRequestsHelp,
                                    {{"method", kRpcNames[m]}, {"code", kGrpcCodeNames[grpc_code]}});
  }
  counter->Increment();
  if (seconds >= 0 && rpc_seconds_[m] != nullptr) rpc_seconds_[m]->Observe(seconds);
}

void CoordinatorMetrics::RecordBatch(size_t commands, double commit_seconds) {
  if (commands > 0) batch_commands_->Observe(static_cast<double>(commands));
  if (commit_seconds >= 0) commit_seconds_->Observe(commit_seconds);
}

void CoordinatorMetrics::PublishState(const EngineStats& stats, int64_t queue_depth, size_t parked_acquires) {
  for (size_t s = 0; s < trials_.size(); ++s) {
    if (trials_[s]) trials_[s]->Set(static_cast<double>(stats.trials_by_state[s]));
  }
  for (size_t s = 0; s < sweeps_.size(); ++s) {
    if (sweeps_[s]) sweeps_[s]->Set(static_cast<double>(stats.sweeps_by_state[s]));
  }
  queue_depth_->Set(static_cast<double>(queue_depth));
  parked_acquires_->Set(static_cast<double>(parked_acquires));
  if (stats.leases_granted > leases_granted_seen_) {
    leases_granted_->Increment(static_cast<uint64_t>(stats.leases_granted - leases_granted_seen_));
    leases_granted_seen_ = stats.leases_granted;
  }
  if (stats.leases_expired > leases_expired_seen_) {
    leases_expired_->Increment(static_cast<uint64_t>(stats.leases_expired - leases_expired_seen_));
    leases_expired_seen_ = stats.leases_expired;
  }
}

std::string CoordinatorMetrics::Scrape() {
  if (db_path_ != ":memory:") database_bytes_->Set(static_cast<double>(FileSize(db_path_) + FileSize(db_path_ + "-wal")));
  return registry_->Exposition();
}

}  // namespace moesweep
