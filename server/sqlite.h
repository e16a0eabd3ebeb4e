// Thin RAII wrappers over the SQLite C API (after SQLiteCpp): a Database owns its handle, a
// Statement finalizes itself, a Transaction rolls back unless committed. Errors are Status values.
// Not thread-safe: one Database belongs to one thread at a time.
#ifndef MOESWEEP_SERVER_SQLITE_H_
#define MOESWEEP_SERVER_SQLITE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace moesweep {

class Database {
 public:
  // Opens (creating if needed) `path`; ":memory:" for tests. Turns on WAL, foreign keys and a
  // busy timeout so readers and the writer do not trip over each other.
  static Status Open(const std::string& path, bool read_only, std::unique_ptr<Database>* out);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  Status Exec(std::string_view sql);
  int64_t LastInsertId() const;
  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

class Statement {
 public:
  Statement(Database* db, std::string_view sql);  // Check ok() before use.
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const { return stmt_ != nullptr; }
  const Status& status() const { return status_; }

  // Parameters are 1-based, as in SQLite.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, int value) { return Bind(index, static_cast<int64_t>(value)); }
  Statement& Bind(int index, double value);
  Statement& Bind(int index, std::string_view text);
  Statement& BindBlob(int index, std::string_view bytes);
  Statement& BindNull(int index);

  // Runs one step: returns true while a row is available; false when done or on error (see status()).
  bool Step();
  // Runs to completion for statements without rows.
  Status Run();
  // Clears bindings and rewinds, so a prepared statement can be reused.
  void Reset();

  int64_t ColumnInt(int col) const;
  double ColumnDouble(int col) const;
  std::string ColumnText(int col) const;
  bool ColumnIsNull(int col) const;

 private:
  Database* db_;
  sqlite3_stmt* stmt_ = nullptr;
  Status status_;
};

class Transaction {
 public:
  explicit Transaction(Database* db);  // BEGIN IMMEDIATE; check status().
  ~Transaction();                      // ROLLBACK unless committed.
  Status Commit();
  const Status& status() const { return status_; }

 private:
  Database* db_;
  bool open_ = false;
  Status status_;
};

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_SQLITE_H_
