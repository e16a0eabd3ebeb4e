#include "server/sqlite.h"

#include <sqlite3.h>

#include <fmt/format.h>

namespace moesweep {
namespace {

Status Error(sqlite3* db, std::string_view what) {
  int code = db ? sqlite3_extended_errcode(db) : SQLITE_ERROR;
  std::string msg = fmt::format("sqlite: {}: {}", what, db ? sqlite3_errmsg(db) : "no database");
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED || (code & 0xff) == SQLITE_FULL || (code & 0xff) == SQLITE_IOERR) {
    return Status::Unavailable(msg);
  }
  return Status::Internal(msg);
}

}  // namespace

Status Database::Open(const std::string& path, bool read_only, std::unique_ptr<Database>* out) {
  sqlite3* db = nullptr;
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  flags |= SQLITE_OPEN_NOMUTEX;  // Each Database is used by one thread at a time.
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    Status s = Status::Unavailable(fmt::format("cannot open database {}: {}", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<Database> database(new Database(db, path));
  sqlite3_busy_timeout(db, 5000);
  // WAL lets readers run beside the single writer. synchronous=NORMAL in WAL mode keeps every
  // committed transaction across a process crash (kill -9); only an OS crash can lose the last ones.
  const char* pragmas = read_only ? "PRAGMA foreign_keys=ON;"
                                  : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;";
  Status s = database->Exec(pragmas);
  if (!s.ok()) return s;
  *out = std::move(database);
  return Status::Ok();
}

Database::~Database() { sqlite3_close_v2(db_); }

Status Database::Exec(std::string_view sql) {
  char* err = nullptr;
  std::string text(sql);
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    Status s = Error(db_, err ? err : "exec");
    sqlite3_free(err);
    return s;
  }
  return Status::Ok();
}

int64_t Database::LastInsertId() const { return sqlite3_last_insert_rowid(db_); }

Statement::Statement(Database* db, std::string_view sql) : db_(db) {
  if (sqlite3_prepare_v3(db->handle(), sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt_,
                         nullptr) != SQLITE_OK) {
    status_ = Error(db->handle(), fmt::format("prepare '{}'", sql));
    stmt_ = nullptr;
  }
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::Bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}
Statement& Statement::Bind(int index, double value) {
  sqlite3_bind_double(stmt_, index, value);
  return *this;
}
Statement& Statement::Bind(int index, std::string_view text) {
  sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}
Statement& Statement::BindBlob(int index, std::string_view bytes) {
  sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}
Statement& Statement::BindNull(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

bool Statement::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) status_ = Error(db_->handle(), "step");
  return false;
}

Status Statement::Run() {
  while (Step()) {
  }
  Status s = status_;
  Reset();
  return s;
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  status_ = Status::Ok();
}

int64_t Statement::ColumnInt(int col) const { return sqlite3_column_int64(stmt_, col); }
double Statement::ColumnDouble(int col) const { return sqlite3_column_double(stmt_, col); }
std::string Statement::ColumnText(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(static_cast<const char*>(p), n) : std::string();
}
bool Statement::ColumnIsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

Transaction::Transaction(Database* db) : db_(db) {
  status_ = db_->Exec("BEGIN IMMEDIATE");
  open_ = status_.ok();
}

Transaction::~Transaction() {
  if (open_) db_->Exec("ROLLBACK");
}

Status Transaction::Commit() {
  if (!open_) return status_.ok() ? Status::Internal("transaction already finished") : status_;
  Status s = db_->Exec("COMMIT");
  if (s.ok()) open_ = false;
  return s;
}

}  // namespace moesweep
