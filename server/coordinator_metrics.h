// CoordinatorMetrics: the coordinator's own metrics (names, help, buckets) over a MetricRegistry.
// README "Operations" lists them.
//
// The coordinator's thread does all the recording (it runs the engine and polls gRPC's queue);
// the HTTP server's threads call only Scrape(). Recording is atomic stores and adds, so the
// thread never waits for a scrape.
#ifndef MOESWEEP_SERVER_COORDINATOR_METRICS_H_
#define MOESWEEP_SERVER_COORDINATOR_METRICS_H_

#include <array>
#include <cstdint>
#include <string>

#include "server/metrics.h"
#include "server/sweep_engine.h"

namespace moesweep {

// The RPCs the coordinator serves, as `method` labels.
enum class Rpc {
  kSubmitSweep,
  kGetSweep,
  kListSweeps,
  kCancelSweep,
  kListTrials,
  kGetBestConfig,
  kWatchSweep,
  kAcquireTrial,
  kReportProgress,
  kReportProgressStream,  // One per report on the stream.
  kCompleteTrial,
  kHealthCheck,
  kHealthWatch,
  kCount,
};
const char* RpcName(Rpc rpc);

class CoordinatorMetrics {
 public:
  // Registers every metric with `registry`, which must outlive this. `db_path` is the database
  // file whose size (with its WAL) Scrape reports; ":memory:" reports 0.
  CoordinatorMetrics(MetricRegistry* registry, std::string db_path);

  // --- The coordinator's thread ---
  // An answered call with its gRPC status code (0..16); `seconds` from reading the request to
  // sending the answer, negative for none (a watch, whose length says nothing of latency).
  void RecordRpc(Rpc rpc, int grpc_code, double seconds);
  // One batch of `commands` (0: lease upkeep only, not counted as a batch); `commit_seconds`
  // from BEGIN to COMMIT, negative when it opened no transaction.
  void RecordBatch(size_t commands, double commit_seconds);
  // State after a batch.
  void PublishState(const EngineStats& stats, int64_t queue_depth, size_t parked_acquires);
  void SetWatchers(size_t watchers) { watchers_->Set(static_cast<double>(watchers)); }
  void SetWatchQueueBytes(size_t bytes) { watch_queue_bytes_->Set(static_cast<double>(bytes)); }

  // --- Any thread ---
  // The exposition text, with the database size read from the file system just now.
  std::string Scrape();

 private:
  static constexpr int kGrpcCodes = 17;

  MetricRegistry* registry_;
  std::string db_path_;
  std::array<Gauge*, v1::TrialState_ARRAYSIZE> trials_{};
  std::array<Gauge*, v1::SweepState_ARRAYSIZE> sweeps_{};
  Gauge* queue_depth_;
  Counter* leases_granted_;
  Counter* leases_expired_;
  int64_t leases_granted_seen_ = 0;  // The engine's counts already added to the counters.
  int64_t leases_expired_seen_ = 0;
  Gauge* parked_acquires_;
  // Series added on first use (most method/code pairs never happen); coordinator thread only.
  std::array<std::array<Counter*, kGrpcCodes>, static_cast<size_t>(Rpc::kCount)> rpc_requests_{};
  std::array<Histogram*, static_cast<size_t>(Rpc::kCount)> rpc_seconds_{};
  Histogram* commit_seconds_;
  Histogram* batch_commands_;
  Gauge* watchers_;
  Gauge* watch_queue_bytes_;
  Gauge* database_bytes_;
};

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_COORDINATOR_METRICS_H_
