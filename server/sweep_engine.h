// SweepEngine: the state machine of staged sweeps. It keeps the live part of every unfinished
// sweep in memory (queues, leases, stage progress) and writes every change through SweepStore, so
// the database alone can rebuild it (Recover). Not thread-safe: the Coordinator calls it from its
// one thread, inside a store transaction for the writing calls, and publishes TakeEvents() only
// after that transaction committed.
#ifndef MOESWEEP_SERVER_SWEEP_ENGINE_H_
#define MOESWEEP_SERVER_SWEEP_ENGINE_H_

#include <array>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/sweep_spec.h"
#include "moesweep/v1/moesweep.pb.h"
#include "server/clock.h"
#include "server/sweep_store.h"

namespace moesweep {

struct EngineOptions {
  SpecLimits spec_limits;
};

// Counts for the coordinator's metrics, kept up to date by every change (no SQL to read them).
struct EngineStats {
  // Every trial and sweep in the database, by state (indexed by the proto enum). Recover()
  // counts them afresh.
  std::array<int64_t, v1::TrialState_ARRAYSIZE> trials_by_state{};
  std::array<int64_t, v1::SweepState_ARRAYSIZE> sweeps_by_state{};
  // Since the process started; never reset. A lease granted in a batch that was then rolled back
  // still counts (rare: only a failing database rolls back).
  int64_t leases_granted = 0;
  int64_t leases_expired = 0;
};

class SweepEngine {
 public:
  SweepEngine(SweepStore* store, const Clock* clock, EngineOptions options);

  // Drops in-memory state and rebuilds it from the store: unfinished sweeps resume, running trials
  // keep their lease tokens with a fresh lease_seconds, stages that finished meanwhile are decided.
  Status Recover();

  // --- Writes (inside a store transaction) ---
  Status Submit(const std::string& spec_json, v1::SubmitSweepResponse* response);
  Status Cancel(int64_t sweep_id, v1::CancelSweepResponse* response);
  // Leases the next trial the worker can run (oldest sweep first, in stage order; see the request's
  // trainer_kinds and free_gpus); has_trial=false when none waits.
  Status Acquire(const v1::AcquireTrialRequest& request, v1::AcquireTrialResponse* response);
  Status Report(const v1::ReportProgressRequest& request, v1::ReportProgressResponse* response);
  Status Complete(const v1::CompleteTrialRequest& request, v1::CompleteTrialResponse* response);
  // Leases not renewed in time go back to the queue, or fail after max_attempts.
  Status ExpireLeases();

  bool HasPendingTrials() const;
  // Whether a worker asking with `request` would be leased a trial now.
  bool CanServe(const v1::AcquireTrialRequest& request) const;
  // Trials a worker could lease now: pending in running sweeps.
  int64_t PendingTrials() const;
  const EngineStats& stats() const { return stats_; }
  // Earliest lease deadline, or +inf.
  double NextLeaseDeadline() const;

  // --- Reads ---
  Status GetSweep(int64_t sweep_id, v1::GetSweepResponse* response);
  // Pages: see ListSweepsRequest / ListTrialsRequest in the proto.
  Status ListSweeps(const v1::ListSweepsRequest& request, v1::ListSweepsResponse* response);
  Status ListTrials(const v1::ListTrialsRequest& request, v1::ListTrialsResponse* response);
  Status GetBestConfig(const v1::GetBestConfigRequest& request, v1::GetBestConfigResponse* response);
  // NotFound for an unknown sweep; `finished` when its final event is stored.
  Status SweepFinished(int64_t sweep_id, bool* finished);

  // Events created since the last call, in creation order; stored already, not yet published.
  std::vector<v1::SweepEvent> TakeEvents();

 private:
  struct TrialState {
    int64_t id = 0;
    int64_t sweep_id = 0;
    int stage = 0;
    int point_index = 0;
    int64_t seed = 0;
    v1::TrialState state = v1::TRIAL_PENDING;
    int attempt = 0;
    int lost_leases = 0;
    std::string token;  // Current lease, or the lease that completed it.
    std::string worker;
    double lease_deadline = 0;
    bool stop_requested = false;
    std::optional<double> objective;
    std::string error;
    std::string point_json;
    std::string config_json;
    bool needs_gpu = false;   // A built-in trial with device "cuda" (TrialNeedsGpu).
    int64_t reused_from = 0;  // The trial whose results this one took, or 0.
    std::string prune_reason;  // The pruner told it to stop (it ends PRUNED), and why.
    std::map<std::string, double> last_metrics;  // Of a pruned trial: its report at the decision.
  };
  struct StageProgress {
    int total = 0;
    int done = 0;
    std::vector<int64_t> trial_ids;
    // The pruner's metric as reported: step -> trial -> value (only when the stage has a pruner).
    std::map<int64_t, std::unordered_map<int64_t, double>> values_by_step;
  };
  struct ActiveSweep {
    int64_t id = 0;
    SweepSpec spec;
    v1::SweepState state = v1::SWEEP_RUNNING;
    v1::SweepState final_state = v1::SWEEP_CANCELLED;  // Where a CANCELLING sweep ends.
    std::string final_error;
    int current_stage = 1;
    bool spec_stages_done = false;
    std::deque<int64_t> pending;
    int running = 0;
    std::map<int, StageProgress> open_stages;  // The baseline and/or the current spec stage.
    int64_t last_seq = 0;
  };

  // Creates the stage's trials; those an earlier SUCCEEDED trial of the sweep already ran (same
  // config and seed) are left out of the queue and returned in `reusable` (trial -> original).
  Status CreateTrials(ActiveSweep& sweep, int stage, const std::vector<struct PlannedTrial>& planned,
                      std::vector<std::pair<int64_t, TrialRow>>* reusable);
  // Adds trials to an open stage (its strategy asked for more before deciding); emits STAGE_EXTENDED.
  Status ExtendStage(ActiveSweep& sweep, int stage, const std::vector<struct PlannedTrial>& planned);
  // Records each reusable trial as done with its original's results.
  Status FinishReusedTrials(ActiveSweep& sweep, int stage, std::vector<std::pair<int64_t, TrialRow>> reusable);
  Status Emit(ActiveSweep& sweep, v1::EventType type, v1::SweepEvent event);
  // Runs the stage's pruner on a progress report; a pruned trial is told to STOP from then on.
  Status MaybePrune(ActiveSweep& sweep, TrialState& trial, const v1::ReportProgressRequest& request);
  Status PruneSiblings(ActiveSweep& sweep, const TrialState& pruned);
  Status FinishTrial(ActiveSweep& sweep, TrialState& trial, v1::TrialState state,
                     const std::map<std::string, double>& metrics, const v1::ExpertStats& stats, const std::string& error);
  Status Requeue(ActiveSweep& sweep, TrialState& trial, const std::string& reason, bool front);
  // Position in sweep.pending of the first trial the worker offering `request` can run, or
  // pending.size() when there is none.
  size_t FirstLeasable(const v1::AcquireTrialRequest& request, const ActiveSweep& sweep) const;
  Status OnTrialTerminal(ActiveSweep& sweep, const TrialState& trial);
  Status DecideOpenStage(ActiveSweep& sweep, int stage);
  Status StartStage(ActiveSweep& sweep, int stage, const Json& carried);
  Status WindDown(ActiveSweep& sweep, v1::SweepState final_state, const std::string& error, int* cancelled,
                  int* stopping);
  Status MaybeFinish(ActiveSweep& sweep);
  Status FinishSweep(ActiveSweep& sweep, v1::SweepState state, const std::string& error);
  void ForgetStageTrials(ActiveSweep& sweep, int stage);
  void ForgetSweep(int64_t sweep_id);
  // Moves a trial (or sweep) from one state to another in stats_, and sets it.
  void SetTrialState(TrialState& trial, v1::TrialState state);
  void SetSweepState(ActiveSweep& sweep, v1::SweepState state);

  Status BuildSweep(const SweepRow& row, v1::Sweep* sweep);
  Status BuildStages(const SweepRow& row, std::optional<int> only, std::vector<v1::StageResult>* stages);
  v1::Trial EventTrial(const TrialState& trial) const;
  std::string NewToken();
  static std::string StageLabel(const SweepSpec& spec, int stage);

  SweepStore* store_;
  const Clock* clock_;
  EngineOptions options_;
  std::map<int64_t, ActiveSweep> sweeps_;  // Ordered by id: the oldest sweep is served first.
  std::unordered_map<int64_t, TrialState> trials_;
  std::unordered_map<std::string, int64_t> tokens_;  // Lease token -> trial, for in-memory trials.
  std::unordered_map<std::string, int64_t> released_;  // Tokens handed back (RELEASED) -> sweep.
  std::unordered_set<int64_t> leased_;  // Trials RUNNING under a lease.
  std::vector<v1::SweepEvent> events_;
  std::mt19937_64 rng_;
  EngineStats stats_;
};

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_SWEEP_ENGINE_H_
