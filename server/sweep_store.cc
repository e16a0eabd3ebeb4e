#include "server/sweep_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "common/json.h"

namespace moesweep {
namespace {

// Schema history. Each entry moves the database from version i to i + 1; never edit a shipped one,
// append a new one.
const char* const kMigrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE sweeps (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  spec TEXT NOT NULL,
  state INTEGER NOT NULL,
  current_stage INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL,
  finished_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE stages (
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  stage INTEGER NOT NULL,
  name TEXT NOT NULL,
  state INTEGER NOT NULL,
  winner_point INTEGER NOT NULL DEFAULT -1,
  winner_config TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '',
  decided_at REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (sweep_id, stage)
) WITHOUT ROWID;
CREATE TABLE trials (
  id INTEGER PRIMARY KEY,
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  stage INTEGER NOT NULL,
  point_index INTEGER NOT NULL,
  seed INTEGER NOT NULL,
  config TEXT NOT NULL,
  point TEXT NOT NULL,
  state INTEGER NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  worker TEXT NOT NULL DEFAULT '',
  metrics TEXT NOT NULL DEFAULT '{}',
  expert_stats BLOB,
  error TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL,
  started_at REAL NOT NULL DEFAULT 0,
  finished_at REAL NOT NULL DEFAULT 0,
  lease_token TEXT NOT NULL DEFAULT '',
  lost_leases INTEGER NOT NULL DEFAULT 0,
  objective REAL
);
CREATE INDEX trials_by_stage ON trials(sweep_id, stage, id);
CREATE INDEX trials_by_token ON trials(lease_token) WHERE lease_token != '';
CREATE TABLE trial_metrics (
  trial_id INTEGER NOT NULL REFERENCES trials(id),
  attempt INTEGER NOT NULL,
  step INTEGER NOT NULL,
  time REAL NOT NULL,
  metrics TEXT NOT NULL,
  expert_stats BLOB
);
CREATE INDEX trial_metrics_by_trial ON trial_metrics(trial_id);
CREATE TABLE events (
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  seq INTEGER NOT NULL,
  type INTEGER NOT NULL,
  time REAL NOT NULL,
  payload BLOB NOT NULL,
  PRIMARY KEY (sweep_id, seq)
) WITHOUT ROWID;
)sql",
    // 1 -> 2: reuse of identical trials (see SweepEngine::CreateTrials).
    R"sql(
ALTER TABLE trials ADD COLUMN reuse_key TEXT NOT NULL DEFAULT '';
ALTER TABLE trials ADD COLUMN reused_from INTEGER NOT NULL DEFAULT 0;
CREATE INDEX trials_by_reuse_key ON trials(sweep_id, reuse_key) WHERE reuse_key != '';
)sql",
    // 2 -> 3: pruning (see SweepEngine::MaybePrune): why a running trial was told to stop.
    R"sql(
ALTER TABLE trials ADD COLUMN prune_reason TEXT NOT NULL DEFAULT '';
)sql",
};
constexpr int kNumMigrations = sizeof(kMigrations) / sizeof(kMigrations[0]);
static_assert(kNumMigrations == SweepStore::kSchemaVersion, "one migration per schema version");

// Terminal trials show their final metrics; others their latest progress report.
constexpr const char* kTrialColumns =
    "id, sweep_id, stage, point_index, seed, config, point, state, attempt, worker, "
    "CASE WHEN state IN (3, 4, 5, 6) THEN metrics ELSE "
    "  COALESCE((SELECT m.metrics FROM trial_metrics m WHERE m.trial_id = trials.id ORDER BY m.rowid DESC LIMIT 1), metrics) END, "
    "expert_stats, error, created_at, started_at, finished_at, lease_token, lost_leases, objective, reused_from, prune_reason";

// Metrics maps use nlohmann::json (a std::map), not the project's ordered Json: ordered_json
// finds a key by linear search, which made a 100,000-entry report take seconds.
void MetricsFromJson(const std::string& text, google::protobuf::Map<std::string, double>* out) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    double v = std::nan("");  // null: written by an older coordinator for any non-finite value.
    if (it->is_number()) {
      v = it->get<double>();
    } else if (*it == "inf") {
      v = std::numeric_limits<double>::infinity();
    } else if (*it == "-inf") {
      v = -std::numeric_limits<double>::infinity();
    }
    (*out)[it.key()] = v;
  }
}

// One lock per database file, held while the store is open: a second coordinator on the same
// database would serve stale state and wait on SQLite's locks forever.
Status LockDatabase(const std::string& path, int* fd_out) {
  std::string lock_path = path + ".lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::Unavailable(fmt::format("cannot open lock file {}: {}", lock_path, std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char pid[32] = {0};
    ssize_t n = ::pread(fd, pid, sizeof(pid) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) return Status::Unavailable(fmt::format("cannot lock {}: {}", lock_path, std::strerror(err)));
    std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return Status::FailedPrecondition(
        fmt::format("database {} is in use by another coordinator (pid {}, holding {}); stop it or use another --db",
                    path, holder.empty() ? "unknown" : holder, lock_path));
  }
  std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the pid; only the message of a second coordinator is poorer.
  }
  *fd_out = fd;
  return Status::Ok();
}

}  // namespace

SweepStore::~SweepStore() {
  checkpointer_.reset();
  statements_.clear();
  db_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // Releases the flock.
}

Status SweepStore::CheckUsable() {
  // Writable: a real write transaction, since SQLite opens a read-only file without complaint.
  if (sqlite3_db_readonly(db_->handle(), "main") == 1) {
    return Status::FailedPrecondition(fmt::format("database {} is read-only; the coordinator must write it", db_->path()));
  }
  {
    Transaction txn(db_.get());
    Status s = txn.status();
    if (s.ok()) s = db_->Exec(fmt::format("PRAGMA user_version = {}", kSchemaVersion));
    if (s.ok()) s = txn.Commit();
    if (!s.ok()) {
      return Status::FailedPrecondition(fmt::format("database {} cannot be written: {}", db_->path(), s.message()));
    }
  }
  Statement check(db_.get(), "PRAGMA quick_check");
  if (!check.ok()) return Status::FailedPrecondition(fmt::format("database {} is unreadable: {}", db_->path(), check.status().message()));
  std::string result = check.Step() ? check.ColumnText(0) : check.status().message();
  if (result != "ok") {
    return Status::FailedPrecondition(
        fmt::format("database {} is corrupt (PRAGMA quick_check: {}); restore a backup", db_->path(), Clip(result, 200)));
  }
  return Status::Ok();
}

std::string MetricsToJson(const std::map<std::string, double>& metrics) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : metrics) {
    // JSON has no infinities: they are written as strings, so what a worker reported comes back.
    if (std::isfinite(v)) {
      j[k] = v;
    } else if (std::isinf(v)) {
      j[k] = v > 0 ? "inf" : "-inf";
    } else {
      j[k] = "nan";
    }
  }
  return j.dump();
}

Status SweepStore::Open(const std::string& path, std::unique_ptr<SweepStore>* out) {
  int lock_fd = -1;
  if (path != ":memory:") {
    Status locked = LockDatabase(path, &lock_fd);
    if (!locked.ok()) return locked;
  }
  std::unique_ptr<Database> db;
  Status s = Database::Open(path, /*read_only=*/false, &db);
  if (!s.ok()) {
    if (lock_fd >= 0) ::close(lock_fd);
    return s;
  }
  std::unique_ptr<SweepStore> store(new SweepStore(std::move(db)));
  store->lock_fd_ = lock_fd;
  s = store->Migrate();
  if (s.ok()) s = store->CheckUsable();
  if (!s.ok()) return s;
  if (path != ":memory:") store->checkpointer_ = WalCheckpointer::Start(store->db_.get());
  *out = std::move(store);
  return Status::Ok();
}

Status SweepStore::Migrate() {
  Statement version(db_.get(), "PRAGMA user_version");
  if (!version.ok()) return version.status();
  int current = version.Step() ? static_cast<int>(version.ColumnInt(0)) : 0;
  if (current > kSchemaVersion) {
    return Status::FailedPrecondition(fmt::format(
        "database {} has schema version {}, newer than this coordinator understands ({}); use a newer moesweep",
        db_->path(), current, kSchemaVersion));
  }
  for (int v = current; v < kSchemaVersion; ++v) {
    Transaction txn(db_.get());
    if (!txn.status().ok()) return txn.status();
    Status s = db_->Exec(kMigrations[v]);
    if (s.ok()) s = db_->Exec(fmt::format("PRAGMA user_version = {}", v + 1));
    if (s.ok()) s = txn.Commit();
    if (!s.ok()) return Status::Internal(fmt::format("migrating {} to schema {}: {}", db_->path(), v + 1, s.message()));
  }
  return Status::Ok();
}

Status SweepStore::Prepare(const char* sql, Statement** out) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    auto stmt = std::make_unique<Statement>(db_.get(), sql);
    if (!stmt->ok()) return stmt->status();
    it = statements_.emplace(sql, std::move(stmt)).first;
  }
  it->second->Reset();
  *out = it->second.get();
  return Status::Ok();
}

#define PREPARE(var, sql)             \
  Statement* var = nullptr;           \
  if (Status _s = Prepare(sql, &var); !_s.ok()) return _s

Status SweepStore::Begin() {
  Status s = db_->Exec("BEGIN IMMEDIATE");
  in_transaction_ = s.ok();
  return s;
}

Status SweepStore::Commit() {
  Status s = db_->Exec("COMMIT");
  if (s.ok()) in_transaction_ = false;
  return s;
}

void SweepStore::Rollback() {
  if (in_transaction_) db_->Exec("ROLLBACK");
  in_transaction_ = false;
}

Status SweepStore::InsertSweep(const SweepRow& row, int64_t* id) {
  PREPARE(stmt, "INSERT INTO sweeps (name, spec, state, current_stage, created_at) VALUES (?, ?, ?, ?, ?)");
  stmt->Bind(1, row.name).Bind(2, row.spec_json).Bind(3, static_cast<int>(row.state)).Bind(4, row.current_stage);
  stmt->Bind(5, row.created_at);
  Status s = stmt->Run();
  if (s.ok()) *id = db_->LastInsertId();
  return s;
}

Status SweepStore::UpdateSweep(int64_t id, v1::SweepState state, int current_stage, const std::string& error,
                               double finished_at) {
  PREPARE(stmt, "UPDATE sweeps SET state = ?, current_stage = ?, error = ?, finished_at = ? WHERE id = ?");
  stmt->Bind(1, static_cast<int>(state)).Bind(2, current_stage).Bind(3, error).Bind(4, finished_at).Bind(5, id);
  return stmt->Run();
}

Status SweepStore::InsertStage(int64_t sweep_id, const StageRow& row) {
  PREPARE(stmt, "INSERT INTO stages (sweep_id, stage, name, state) VALUES (?, ?, ?, ?)");
  stmt->Bind(1, sweep_id).Bind(2, row.stage).Bind(3, row.name).Bind(4, static_cast<int>(row.state));
  return stmt->Run();
}

Status SweepStore::UpdateStage(int64_t sweep_id, const StageRow& row, double decided_at) {
  PREPARE(stmt,
          "UPDATE stages SET state = ?, winner_point = ?, winner_config = ?, error = ?, decided_at = ? "
          "WHERE sweep_id = ? AND stage = ?");
  stmt->Bind(1, static_cast<int>(row.state)).Bind(2, row.winner_point).Bind(3, row.winner_config).Bind(4, row.error);
  stmt->Bind(5, decided_at).Bind(6, sweep_id).Bind(7, row.stage);
  return stmt->Run();
}

Status SweepStore::InsertTrial(const v1::Trial& t, int64_t* id, const std::string& reuse_key) {
  PREPARE(stmt,
          "INSERT INTO trials (sweep_id, stage, point_index, seed, config, point, state, created_at, reuse_key) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  stmt->Bind(1, t.sweep_id()).Bind(2, t.stage()).Bind(3, t.point_index()).Bind(4, t.seed());
  stmt->Bind(5, t.config_json()).Bind(6, t.point_json()).Bind(7, static_cast<int>(t.state())).Bind(8, t.created_at());
  stmt->Bind(9, reuse_key);
  Status s = stmt->Run();
  if (s.ok()) *id = db_->LastInsertId();
  return s;
}

Status SweepStore::FindReusableTrial(int64_t sweep_id, const std::string& reuse_key, std::optional<TrialRow>* row) {
  static const std::string sql = fmt::format(
      "SELECT {} FROM trials WHERE sweep_id = ? AND reuse_key = ? AND reuse_key != '' AND state = {} ORDER BY id LIMIT 1",
      kTrialColumns, static_cast<int>(v1::TRIAL_SUCCEEDED));
  PREPARE(stmt, sql.c_str());
  stmt->Bind(1, sweep_id).Bind(2, reuse_key);
  std::vector<TrialRow> rows;
  Status s = ReadTrials(stmt, &rows);
  if (!s.ok()) return s;
  if (rows.empty()) {
    row->reset();
  } else {
    *row = std::move(rows.front());
  }
  return Status::Ok();
}

Status SweepStore::SetReusedFrom(int64_t id, int64_t from) {
  PREPARE(stmt, "UPDATE trials SET reused_from = ? WHERE id = ?");
  stmt->Bind(1, from).Bind(2, id);
  return stmt->Run();
}

Status SweepStore::MarkTrialLeased(int64_t id, int attempt, const std::string& token, const std::string& worker,
                                   double now) {
  PREPARE(stmt,
          "UPDATE trials SET state = 2, attempt = ?, lease_token = ?, worker = ?, "
          "started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END WHERE id = ?");
  stmt->Bind(1, attempt).Bind(2, token).Bind(3, worker).Bind(4, now).Bind(5, id);
  return stmt->Run();
}

Status SweepStore::MarkTrialPruning(int64_t id, const std::string& reason) {
  PREPARE(stmt, "UPDATE trials SET prune_reason = ? WHERE id = ?");
  stmt->Bind(1, reason).Bind(2, id);
  return stmt->Run();
}

Status SweepStore::ListStageReports(int64_t sweep_id, int stage, const std::string& metric,
                                    std::vector<StepValue>* values) {
  PREPARE(stmt,
          "SELECT m.trial_id, m.step, m.metrics FROM trial_metrics m JOIN trials t ON t.id = m.trial_id "
          "WHERE t.sweep_id = ? AND t.stage = ? ORDER BY m.rowid");
  stmt->Bind(1, sweep_id).Bind(2, stage);
  while (stmt->Step()) {
    google::protobuf::Map<std::string, double> metrics;
    MetricsFromJson(stmt->ColumnText(2), &metrics);
    auto it = metrics.find(metric);
    if (it != metrics.end()) values->push_back({stmt->ColumnInt(0), stmt->ColumnInt(1), it->second});
  }
  return stmt->status();
}

Status SweepStore::MarkTrialRequeued(int64_t id, int lost_leases, const std::string& reason) {
  PREPARE(stmt, "UPDATE trials SET state = 1, lease_token = '', lost_leases = ?, error = ? WHERE id = ?");
  stmt->Bind(1, lost_leases).Bind(2, reason).Bind(3, id);
  return stmt->Run();
}

Status SweepStore::MarkTrialFinished(int64_t id, v1::TrialState state, const std::map<std::string, double>& metrics,
                                     const v1::ExpertStats& stats, std::optional<double> objective,
                                     const std::string& error, const std::string& lease_token, double now) {
  PREPARE(stmt,
          "UPDATE trials SET state = ?, metrics = ?, expert_stats = ?, objective = ?, error = ?, lease_token = ?, "
          "finished_at = ? WHERE id = ?");
  stmt->Bind(1, static_cast<int>(state)).Bind(2, MetricsToJson(metrics));
  if (stats.layers_size() > 0) {
    stmt->BindBlob(3, stats.SerializeAsString());
  } else {
    stmt->BindNull(3);
  }
  if (objective) {
    stmt->Bind(4, *objective);
  } else {
    stmt->BindNull(4);
  }
  stmt->Bind(5, error).Bind(6, lease_token).Bind(7, now).Bind(8, id);
  return stmt->Run();
}

Status SweepStore::InsertMetrics(int64_t trial_id, int attempt, int64_t step, double time,
                                 const google::protobuf::Map<std::string, double>& metrics,
                                 const v1::ExpertStats* stats) {
  PREPARE(stmt, "INSERT INTO trial_metrics (trial_id, attempt, step, time, metrics, expert_stats) VALUES (?, ?, ?, ?, ?, ?)");
  std::map<std::string, double> sorted(metrics.begin(), metrics.end());
  stmt->Bind(1, trial_id).Bind(2, attempt).Bind(3, step).Bind(4, time).Bind(5, MetricsToJson(sorted));
  if (stats != nullptr && stats->layers_size() > 0) {
    stmt->BindBlob(6, stats->SerializeAsString());
  } else {
    stmt->BindNull(6);
  }
  return stmt->Run();
}

Status SweepStore::InsertEvent(const v1::SweepEvent& event) {
  PREPARE(stmt, "INSERT INTO events (sweep_id, seq, type, time, payload) VALUES (?, ?, ?, ?, ?)");
  stmt->Bind(1, event.sweep_id()).Bind(2, event.seq()).Bind(3, static_cast<int>(event.type())).Bind(4, event.time());
  stmt->BindBlob(5, event.SerializeAsString());
  return stmt->Run();
}

namespace {

void ReadSweepRow(const Statement& stmt, SweepRow* row) {
  row->id = stmt.ColumnInt(0);
  row->name = stmt.ColumnText(1);
  row->spec_json = stmt.ColumnText(2);
  row->state = static_cast<v1::SweepState>(stmt.ColumnInt(3));
  row->current_stage = static_cast<int>(stmt.ColumnInt(4));
  row->error = stmt.ColumnText(5);
  row->created_at = stmt.ColumnDouble(6);
  row->finished_at = stmt.ColumnDouble(7);
}

constexpr const char* kSweepColumns = "id, name, spec, state, current_stage, error, created_at, finished_at";

}  // namespace

Status SweepStore::GetSweep(int64_t id, SweepRow* row) {
  static const std::string sql = fmt::format("SELECT {} FROM sweeps WHERE id = ?", kSweepColumns);
  PREPARE(stmt, sql.c_str());
  stmt->Bind(1, id);
  if (!stmt->Step()) {
    return stmt->status().ok() ? Status::NotFound(fmt::format("no sweep with id {}", id)) : stmt->status();
  }
  ReadSweepRow(*stmt, row);
  return Status::Ok();
}

Status SweepStore::ListSweeps(int limit, int64_t before_id, std::vector<SweepRow>* rows) {
  static const std::string sql =
      fmt::format("SELECT {} FROM sweeps WHERE ?2 <= 0 OR id < ?2 ORDER BY id DESC LIMIT ?1", kSweepColumns);
  PREPARE(stmt, sql.c_str());
  stmt->Bind(1, limit).Bind(2, before_id);
  while (stmt->Step()) ReadSweepRow(*stmt, &rows->emplace_back());
  return stmt->status();
}

Status SweepStore::ListActiveSweeps(std::vector<SweepRow>* rows) {
  static const std::string sql = fmt::format("SELECT {} FROM sweeps WHERE state IN (1, 4) ORDER BY id", kSweepColumns);
  PREPARE(stmt, sql.c_str());
  while (stmt->Step()) ReadSweepRow(*stmt, &rows->emplace_back());
  return stmt->status();
}

Status SweepStore::ListStages(int64_t sweep_id, std::vector<StageRow>* rows) {
  PREPARE(stmt,
          "SELECT stage, name, state, winner_point, winner_config, error FROM stages WHERE sweep_id = ? ORDER BY stage");
  stmt->Bind(1, sweep_id);
  while (stmt->Step()) {
    StageRow& r = rows->emplace_back();
    r.stage = static_cast<int>(stmt->ColumnInt(0));
    r.name = stmt->ColumnText(1);
    r.state = static_cast<v1::StageState>(stmt->ColumnInt(2));
    r.winner_point = static_cast<int>(stmt->ColumnInt(3));
    r.winner_config = stmt->ColumnText(4);
    r.error = stmt->ColumnText(5);
  }
  return stmt->status();
}

Status SweepStore::ReadTrials(Statement* stmt, std::vector<TrialRow>* rows) {
  while (stmt->Step()) {
    TrialRow& r = rows->emplace_back();
    v1::Trial& t = r.trial;
    t.set_trial_id(stmt->ColumnInt(0));
    t.set_sweep_id(stmt->ColumnInt(1));
    t.set_stage(static_cast<int>(stmt->ColumnInt(2)));
    t.set_point_index(static_cast<int>(stmt->ColumnInt(3)));
    t.set_seed(stmt->ColumnInt(4));
    t.set_config_json(stmt->ColumnText(5));
    t.set_point_json(stmt->ColumnText(6));
    t.set_state(static_cast<v1::TrialState>(stmt->ColumnInt(7)));
    t.set_attempt(static_cast<int>(stmt->ColumnInt(8)));
    t.set_worker(stmt->ColumnText(9));
    MetricsFromJson(stmt->ColumnText(10), t.mutable_metrics());
    if (!stmt->ColumnIsNull(11)) t.mutable_expert_stats()->ParseFromString(stmt->ColumnText(11));
    t.set_error(stmt->ColumnText(12));
    t.set_created_at(stmt->ColumnDouble(13));
    t.set_started_at(stmt->ColumnDouble(14));
    t.set_finished_at(stmt->ColumnDouble(15));
    r.lease_token = stmt->ColumnText(16);
    r.lost_leases = static_cast<int>(stmt->ColumnInt(17));
    if (!stmt->ColumnIsNull(18)) r.objective = stmt->ColumnDouble(18);
    t.set_reused_trial_id(stmt->ColumnInt(19));
    r.prune_reason = stmt->ColumnText(20);
  }
  return stmt->status();
}

Status SweepStore::ListTrials(int64_t sweep_id, const TrialFilter& filter, std::vector<TrialRow>* rows) {
  static const std::string sql = fmt::format(
      "SELECT {} FROM trials WHERE sweep_id = ?1 AND (?2 < 0 OR stage = ?2) AND (?3 = 0 OR state = ?3) AND id > ?4 "
      "ORDER BY id LIMIT ?5",
      kTrialColumns);
  PREPARE(stmt, sql.c_str());
  stmt->Bind(1, sweep_id).Bind(2, filter.stage.value_or(-1)).Bind(3, static_cast<int>(filter.state));
  stmt->Bind(4, filter.after_id).Bind(5, filter.limit);
  return ReadTrials(stmt, rows);
}

Status SweepStore::CountTrials(int64_t sweep_id, std::map<v1::TrialState, int>* counts) {
  PREPARE(stmt, "SELECT state, COUNT(*) FROM trials WHERE sweep_id = ? GROUP BY state");
  stmt->Bind(1, sweep_id);
  while (stmt->Step()) (*counts)[static_cast<v1::TrialState>(stmt->ColumnInt(0))] = static_cast<int>(stmt->ColumnInt(1));
  return stmt->status();
}

Status SweepStore::CountAllByState(std::map<v1::TrialState, int64_t>* trials,
                                   std::map<v1::SweepState, int64_t>* sweeps) {
  {
    PREPARE(stmt, "SELECT state, COUNT(*) FROM trials GROUP BY state");
    while (stmt->Step()) (*trials)[static_cast<v1::TrialState>(stmt->ColumnInt(0))] = stmt->ColumnInt(1);
    if (!stmt->status().ok()) return stmt->status();
  }
  PREPARE(stmt, "SELECT state, COUNT(*) FROM sweeps GROUP BY state");
  while (stmt->Step()) (*sweeps)[static_cast<v1::SweepState>(stmt->ColumnInt(0))] = stmt->ColumnInt(1);
  return stmt->status();
}

Status SweepStore::FindTrialByToken(const std::string& token, std::optional<TrialRow>* row) {
  static const std::string sql = fmt::format("SELECT {} FROM trials WHERE lease_token = ? AND lease_token != ''", kTrialColumns);
  PREPARE(stmt, sql.c_str());
  stmt->Bind(1, token);
  std::vector<TrialRow> rows;
  Status s = ReadTrials(stmt, &rows);
  if (!s.ok()) return s;
  if (!rows.empty()) *row = std::move(rows.front());
  return Status::Ok();
}

Status SweepStore::ReadEvents(int64_t sweep_id, int64_t after_seq, int limit, bool skip_progress,
                              std::vector<v1::SweepEvent>* events) {
  PREPARE(stmt, "SELECT payload FROM events WHERE sweep_id = ?1 AND seq > ?2 AND (?4 = 0 OR type != 4) ORDER BY seq LIMIT ?3");
  stmt->Bind(1, sweep_id).Bind(2, after_seq).Bind(3, limit).Bind(4, skip_progress ? 1 : 0);
  while (stmt->Step()) {
    if (!events->emplace_back().ParseFromString(stmt->ColumnText(0))) {
      return Status::Internal(fmt::format("sweep {}: stored event after seq {} is corrupt", sweep_id, after_seq));
    }
  }
  return stmt->status();
}

Status SweepStore::MaxEventSeq(int64_t sweep_id, int64_t* seq) {
  PREPARE(stmt, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE sweep_id = ?");
  stmt->Bind(1, sweep_id);
  *seq = stmt->Step() ? stmt->ColumnInt(0) : 0;
  return stmt->status();
}

}  // namespace moesweep
