#include "server/wal_checkpointer.h"

#include <sqlite3.h>

#include <fmt/format.h>

namespace moesweep {

std::unique_ptr<WalCheckpointer> WalCheckpointer::Start(Database* writer, int pages) {
  std::unique_ptr<Database> own;
  if (!Database::Open(writer->path(), /*read_only=*/false, &own).ok()) return nullptr;  // Inline checkpoints remain.
  std::unique_ptr<WalCheckpointer> c(new WalCheckpointer(writer, pages));
  sqlite3_wal_hook(writer->handle(), &WalCheckpointer::OnCommit, c.get());
  c->thread_ = std::thread([raw = c.get(), db = std::move(own)]() mutable { raw->Loop(std::move(db)); });
  return c;
}

WalCheckpointer::~WalCheckpointer() {
  sqlite3_wal_hook(writer_->handle(), nullptr, nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

int WalCheckpointer::OnCommit(void* self, sqlite3*, const char*, int wal_pages) {
  auto* c = static_cast<WalCheckpointer*>(self);
  if (wal_pages >= c->pages_) {
    std::lock_guard<std::mutex> lock(c->mu_);
    c->due_ = true;
    c->cv_.notify_one();
  }
  return SQLITE_OK;
}

void WalCheckpointer::Loop(std::unique_ptr<Database> db) {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || due_; });
      if (stop_) return;
      due_ = false;
    }
    // PASSIVE never blocks the writer; a busy checkpoint is simply tried again after the next commit.
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
      fmt::print(stderr, "moesweep-coordinator: WAL checkpoint failed: {}\n", sqlite3_errmsg(db->handle()));
    }
  }
}

}  // namespace moesweep
