// SweepStore: everything moesweep keeps in SQLite (sweeps, stages, trials, per-step metrics and
// events), behind typed methods; callers never see SQL. Owns one connection and its prepared
// statements, so it belongs to one thread (the coordinator's). Multi-row changes are grouped by the
// caller with Begin()/Commit().
#ifndef MOESWEEP_SERVER_SWEEP_STORE_H_
#define MOESWEEP_SERVER_SWEEP_STORE_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "moesweep/v1/moesweep.pb.h"
#include "server/sqlite.h"
#include "server/wal_checkpointer.h"

namespace moesweep {

// A sweep row as stored.
struct SweepRow {
  int64_t id = 0;
  std::string name;
  std::string spec_json;
  v1::SweepState state = v1::SWEEP_RUNNING;
  int current_stage = 0;
  std::string error;
  double created_at = 0;
  double finished_at = 0;
};

struct StageRow {
  int stage = 0;
  std::string name;
  v1::StageState state = v1::STAGE_WAITING;
  int winner_point = -1;
  std::string winner_config;
  std::string error;
};

// A trial row; `trial` holds every user-visible field, the rest is lease bookkeeping.
struct TrialRow {
  v1::Trial trial;
  std::string lease_token;
  int lost_leases = 0;  // Leases that expired; at max_attempts the trial fails.
  std::optional<double> objective;
  std::string prune_reason;  // Set when the pruner told the trial to stop: it ends PRUNED.
};

// One reported value of a metric: trial `trial_id` reported `value` at `step`.
struct StepValue {
  int64_t trial_id = 0;
  int64_t step = 0;
  double value = 0;
};

struct TrialFilter {
  std::optional<int> stage;
  v1::TrialState state = v1::TRIAL_STATE_UNSPECIFIED;
  int64_t after_id = 0;  // Only trials with a larger id (a page's start).
  int64_t limit = -1;    // At most this many; -1 means all.
};

class SweepStore {
 public:
  static constexpr int kSchemaVersion = 3;

  // Opens `path` (":memory:" for tests) and migrates it to kSchemaVersion. A database written by
  // a newer moesweep is refused rather than misread. Holds an exclusive lock on `<path>.lock`
  // (with the pid inside) until destroyed, so a second store on the same file is refused
  // (FailedPrecondition, naming the holder); so are a read-only file and one that fails
  // PRAGMA quick_check.
  static Status Open(const std::string& path, std::unique_ptr<SweepStore>* out);
  ~SweepStore();

  Status Begin();
  Status Commit();
  void Rollback();

  // Writes.
  Status InsertSweep(const SweepRow& row, int64_t* id);
  Status UpdateSweep(int64_t id, v1::SweepState state, int current_stage, const std::string& error, double finished_at);
  Status InsertStage(int64_t sweep_id, const StageRow& row);
  Status UpdateStage(int64_t sweep_id, const StageRow& row, double decided_at);
  // `reuse_key` names the trial's config and seed for FindReusableTrial ("" = never reused).
  Status InsertTrial(const v1::Trial& trial, int64_t* id, const std::string& reuse_key = "");
  Status MarkTrialLeased(int64_t id, int attempt, const std::string& token, const std::string& worker, double now);
  Status MarkTrialRequeued(int64_t id, int lost_leases, const std::string& reason);
  // The pruner told the running trial to stop; it ends PRUNED with `reason` as its error.
  Status MarkTrialPruning(int64_t id, const std::string& reason);
  Status MarkTrialFinished(int64_t id, v1::TrialState state, const std::map<std::string, double>& metrics,
                           const v1::ExpertStats& stats, std::optional<double> objective, const std::string& error,
                           const std::string& lease_token, double now);
  Status InsertMetrics(int64_t trial_id, int attempt, int64_t step, double time,
                       const google::protobuf::Map<std::string, double>& metrics, const v1::ExpertStats* stats);
  Status InsertEvent(const v1::SweepEvent& event);

  // Reads.
  Status GetSweep(int64_t id, SweepRow* row);  // NotFound when absent.
  // Newest first; with before_id > 0, only sweeps older than that id.
  Status ListSweeps(int limit, int64_t before_id, std::vector<SweepRow>* rows);
  Status ListActiveSweeps(std::vector<SweepRow>* rows);  // RUNNING or CANCELLING, oldest first.
  Status ListStages(int64_t sweep_id, std::vector<StageRow>* rows);
  Status ListTrials(int64_t sweep_id, const TrialFilter& filter, std::vector<TrialRow>* rows);
  // Every stored report of `metric` by the trials of one stage, in the order reported.
  Status ListStageReports(int64_t sweep_id, int stage, const std::string& metric, std::vector<StepValue>* values);
  // Trial counts by state for one sweep.
  Status CountTrials(int64_t sweep_id, std::map<v1::TrialState, int>* counts);
  // How many trials and sweeps are in each state, over the whole database (a full scan).
  Status CountAllByState(std::map<v1::TrialState, int64_t>* trials, std::map<v1::SweepState, int64_t>* sweeps);
  // The trial whose current or last lease used `token`, if any.
  // The first SUCCEEDED trial of the sweep with this reuse key, if any.
  Status FindReusableTrial(int64_t sweep_id, const std::string& reuse_key, std::optional<TrialRow>* row);
  // Marks `id` as done by reusing trial `from` (its results are copied by the caller).
  Status SetReusedFrom(int64_t id, int64_t from);
  Status FindTrialByToken(const std::string& token, std::optional<TrialRow>* row);
  // Events with seq > after_seq, oldest first, at most `limit`; without TRIAL_PROGRESS if asked.
  Status ReadEvents(int64_t sweep_id, int64_t after_seq, int limit, bool skip_progress,
                    std::vector<v1::SweepEvent>* events);
  Status MaxEventSeq(int64_t sweep_id, int64_t* seq);

 private:
  explicit SweepStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  Status Migrate();
  Status CheckUsable();
  // A cached prepared statement; statements live as long as the store.
  Status Prepare(const char* sql, Statement** out);
  Status ReadTrials(Statement* stmt, std::vector<TrialRow>* rows);

  std::unique_ptr<Database> db_;
  std::map<const char*, std::unique_ptr<Statement>> statements_;
  std::unique_ptr<WalCheckpointer> checkpointer_;  // Declared after db_: destroyed before it.
  bool in_transaction_ = false;
  int lock_fd_ = -1;
};

// The coordinator's JSON form of a metrics map ({"val_accuracy": 0.91}); JSON has no infinities,
// so non-finite values are the strings "inf", "-inf" and "nan".
std::string MetricsToJson(const std::map<std::string, double>& metrics);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_SWEEP_STORE_H_
