#include "server/backup.h"

#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "server/sqlite.h"

namespace moesweep {
namespace {

// How often a busy source (a checkpoint holding a lock at that instant) is tried again.
constexpr int kBusyRetries = 50;
constexpr auto kBusyPause = std::chrono::milliseconds(100);

}  // namespace

Status BackupDatabase(const std::string& db, const std::string& to) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(db, ec)) return Status::NotFound(fmt::format("backup: no database at {}", db));
  if (fs::exists(to, ec)) return Status::FailedPrecondition(fmt::format("backup: {} exists; not overwriting it", to));
  // Read-only: a backup never creates or changes the source.
  std::unique_ptr<Database> source;
  Status s = Database::Open(db, /*read_only=*/true, &source);
  if (!s.ok()) return s;

  const std::string partial = to + ".partial";
  std::remove(partial.c_str());
  sqlite3* dest = nullptr;
  if (sqlite3_open_v2(partial.c_str(), &dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
    s = Status::Unavailable(fmt::format("backup: cannot create {}: {}", partial, sqlite3_errmsg(dest)));
    sqlite3_close(dest);
    return s;
  }
  auto fail = [&](const std::string& what) {
    s = Status::Unavailable(fmt::format("backup: {}: {}", what, sqlite3_errmsg(dest)));
    sqlite3_close(dest);
    std::remove(partial.c_str());
    return s;
  };

  sqlite3_backup* backup = sqlite3_backup_init(dest, "main", source->handle(), "main");
  if (backup == nullptr) return fail("cannot start");
  // All pages in one step: one read transaction, hence one consistent snapshot. Stepping in
  // slices would restart whenever the serving coordinator commits, which it does all the time.
  int rc = SQLITE_OK;
  for (int attempt = 0; attempt <= kBusyRetries; ++attempt) {
    rc = sqlite3_backup_step(backup, -1);
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) break;
    std::this_thread::sleep_for(kBusyPause);
  }
  sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE) return fail(fmt::format("copying {} (sqlite error {})", db, rc));

  // The copy carries the source's WAL flag; a backup is better as one file with nothing beside it.
  char* err = nullptr;
  std::string check;
  auto on_row = [](void* out, int, char** values, char**) {
    *static_cast<std::string*>(out) += values[0] ? values[0] : "";
    return 0;
  };
  if (sqlite3_exec(dest, "PRAGMA journal_mode=DELETE", nullptr, nullptr, &err) != SQLITE_OK ||
      sqlite3_exec(dest, "PRAGMA quick_check", on_row, &check, &err) != SQLITE_OK) {
    std::string what = err ? err : "check";
    sqlite3_free(err);
    return fail(what);
  }
  if (check != "ok") return fail("the copy fails quick_check: " + check);
  if (sqlite3_close(dest) != SQLITE_OK) {
    std::remove(partial.c_str());
    return Status::Unavailable(fmt::format("backup: cannot close {}", partial));
  }
  // link() refuses an existing target, so a backup that appeared meanwhile is not overwritten.
  if (link(partial.c_str(), to.c_str()) != 0) {
    std::remove(partial.c_str());
    return Status::FailedPrecondition(fmt::format("backup: cannot create {} (exists, or not writable)", to));
  }
  std::remove(partial.c_str());
  return Status::Ok();
}

}  // namespace moesweep
