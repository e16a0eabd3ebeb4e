// Blocking helpers over the Coordinator's callback API, and a sink that records watched events.
#ifndef MOESWEEP_TESTS_SERVER_COORDINATOR_TEST_UTIL_H_
#define MOESWEEP_TESTS_SERVER_COORDINATOR_TEST_UTIL_H_

#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "server/coordinator.h"

namespace moesweep {

template <typename Request, typename Response>
Status CallSync(Coordinator* c, void (Coordinator::*method)(const Request&, Response*, Coordinator::Done),
                const Request& request, Response* response) {
  std::promise<Status> done;
  (c->*method)(request, response, [&done](const Status& s) { done.set_value(s); });
  return done.get_future().get();
}

// Records every event it is given; asks for the next replay page itself, as a stream would.
class RecordingSink final : public WatchSink, public std::enable_shared_from_this<RecordingSink> {
 public:
  RecordingSink(Coordinator* c, int64_t sweep_id, bool skip_progress = false)
      : coordinator_(c), sweep_id_(sweep_id), skip_progress_(skip_progress) {}

  bool Push(const v1::SweepEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
    return true;
  }
  void ReplayDone(bool caught_up) override {
    int64_t last;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++replay_pages_;
      if (caught_up) {
        live_ = true;
        return;
      }
      last = events_.empty() ? 0 : events_.back().seq();
    }
    coordinator_->Watch(sweep_id_, last, skip_progress_, shared_from_this());
  }
  void Close(const Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    close_status_ = status;
  }

  std::vector<v1::SweepEvent> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  bool live() {
    std::lock_guard<std::mutex> lock(mu_);
    return live_;
  }
  bool closed(Status* status = nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    if (status) *status = close_status_;
    return closed_;
  }
  int replay_pages() {
    std::lock_guard<std::mutex> lock(mu_);
    return replay_pages_;
  }

 private:
  Coordinator* coordinator_;
  int64_t sweep_id_;
  bool skip_progress_;
  std::mutex mu_;
  std::vector<v1::SweepEvent> events_;
  bool live_ = false;
  bool closed_ = false;
  int replay_pages_ = 0;
  Status close_status_;
};

// A database file in the temp folder, removed (with its WAL files) on destruction.
class TempDb {
 public:
  explicit TempDb(const std::string& name)
      : path_((std::filesystem::temp_directory_path() /
               (name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++) + ".db"))
                  .string()) {
    Remove();
  }
  ~TempDb() { Remove(); }
  const std::string& path() const { return path_; }

 private:
  void Remove() {
    for (const char* suffix : {"", "-wal", "-shm", ".lock"}) std::filesystem::remove(path_ + suffix);
  }
  static inline int counter_ = 0;
  std::string path_;
};

}  // namespace moesweep

#endif  // MOESWEEP_TESTS_SERVER_COORDINATOR_TEST_UTIL_H_
