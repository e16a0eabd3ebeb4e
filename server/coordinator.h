// Coordinator: runs a SweepEngine on one thread of its own. Every request becomes a command on a
// queue; the thread takes all queued commands at once, runs the writing ones in a single SQLite
// transaction (group commit), and only after COMMIT answers them and publishes their events. So
// an answer a client or worker sees is durable, and many concurrent reports cost one fsync-free
// WAL commit between them. gRPC threads never touch SQLite.
#ifndef MOESWEEP_SERVER_COORDINATOR_H_
#define MOESWEEP_SERVER_COORDINATOR_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "moesweep/v1/moesweep.pb.h"
#include "server/clock.h"
#include "server/coordinator_metrics.h"
#include "server/sweep_engine.h"
#include "server/sweep_store.h"

namespace moesweep {

struct CoordinatorOptions {
  EngineOptions engine;
  double max_wait_seconds = 60;  // Cap on an AcquireTrial long-poll.
  int replay_page = 1000;        // Stored events sent to a watcher per page.
  // Where to record metrics (not owned; outlives the coordinator and its server); null: none.
  CoordinatorMetrics* metrics = nullptr;
};

// Where a watched sweep's events go. The coordinator calls these on its own thread; they must not
// block.
class WatchSink {
 public:
  virtual ~WatchSink() = default;
  // One event, in seq order. Returns false when the sink takes no more (gone, or its backlog is
  // full); the coordinator then forgets it, and the sink calls Watch again with its last seq once
  // it has caught up, which replays the rest from the database.
  virtual bool Push(const v1::SweepEvent& event) = 0;
  // A replay page has been pushed. caught_up: the sink now receives live events; otherwise it
  // calls Watch again with its last seq for the next page.
  virtual void ReplayDone(bool caught_up) = 0;
  // The watch is over without a final event to deliver: OK when the sweep had finished before
  // `after_seq`, an error for an unknown sweep or a shutdown.
  virtual void Close(const Status& status) = 0;
};

// What the coordinator's thread waits on between batches. Without one it sleeps on a condition
// variable. The gRPC edge installs its completion queue here, so that one thread reads a worker's
// request, runs it and sends the answer: no hand-off between threads per request, which is most
// of what a request costs on a small machine (see BENCHMARKS.md).
class EventLoop {
 public:
  virtual ~EventLoop() = default;
  // Handles the I/O events that are ready, waiting for the first one until `deadline`. Handlers
  // may call the coordinator's request methods; their commands run in the next batch.
  virtual void Poll(std::chrono::steady_clock::time_point deadline) = 0;
  // Makes a Poll in progress return soon. Called from other threads.
  virtual void Wake() = 0;
};

class Coordinator {
 public:
  using Done = std::function<void(const Status&)>;

  // Opens (or creates) the database at `db_path`, resumes unfinished sweeps and starts the thread.
  static Status Open(const std::string& db_path, const CoordinatorOptions& options, const Clock* clock,
                     std::unique_ptr<Coordinator>* out);
  ~Coordinator();  // Calls Shutdown().

  // Answers parked long-polls (no trial), closes watchers with UNAVAILABLE, refuses new commands
  // and stops the thread. Idempotent.
  void Shutdown();

  // Each call returns at once; `done` runs later on the coordinator's thread, after the result is
  // committed. The request and response must stay alive until then.
  void SubmitSweep(const v1::SubmitSweepRequest& request, v1::SubmitSweepResponse* response, Done done);
  void GetSweep(const v1::GetSweepRequest& request, v1::GetSweepResponse* response, Done done);
  void ListSweeps(const v1::ListSweepsRequest& request, v1::ListSweepsResponse* response, Done done);
  void CancelSweep(const v1::CancelSweepRequest& request, v1::CancelSweepResponse* response, Done done);
  void ListTrials(const v1::ListTrialsRequest& request, v1::ListTrialsResponse* response, Done done);
  void GetBestConfig(const v1::GetBestConfigRequest& request, v1::GetBestConfigResponse* response, Done done);
  // Long-poll: waits up to `wait` (capped by options) for a trial. `cancelled` tells whether the
  // caller has gone away, so no trial is leased to nobody.
  void AcquireTrial(const v1::AcquireTrialRequest& request, v1::AcquireTrialResponse* response,
                    std::chrono::duration<double> wait, std::function<bool()> cancelled, Done done);
  void ReportProgress(const v1::ReportProgressRequest& request, v1::ReportProgressResponse* response, Done done);
  void CompleteTrial(const v1::CompleteTrialRequest& request, v1::CompleteTrialResponse* response, Done done);
  // Replays events after `after_seq` and then follows live ones (see WatchSink); with
  // `skip_progress`, TRIAL_PROGRESS events are left out of both.
  void Watch(int64_t sweep_id, int64_t after_seq, bool skip_progress, std::shared_ptr<WatchSink> sink);

  // Blocks until every command queued before it has run; leases due by now have expired. For tests.
  void Sync();

  // From the next batch on, the thread waits in `loop->Poll` instead of on its condition
  // variable. `loop` must outlive the thread (Shutdown).
  void SetEventLoop(EventLoop* loop);

  // options.metrics: the gRPC edge records its calls there, on this coordinator's thread.
  CoordinatorMetrics* metrics() const { return options_.metrics; }

 private:
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct Command {
    bool writes = true;
    // Runs on the coordinator's thread. nullopt: the command answers later (a parked long-poll).
    std::function<std::optional<Status>()> run;
    Done done;
  };
  struct Waiter {
    const v1::AcquireTrialRequest* request;
    v1::AcquireTrialResponse* response;
    SteadyTime deadline;
    std::function<bool()> cancelled;
    Done done;
  };

  Coordinator(std::unique_ptr<SweepStore> store, const CoordinatorOptions& options, const Clock* clock);
  void Enqueue(Command command);
  void Loop();
  void RunBatch(std::vector<Command>& batch);
  void ServeWaiters(std::vector<std::pair<Done, Status>>* replies);
  void ExpireWaiters(SteadyTime now);
  void Publish(const std::vector<v1::SweepEvent>& events);
  void ReplayPage(int64_t sweep_id, int64_t after_seq, bool skip_progress, const std::shared_ptr<WatchSink>& sink);
  SteadyTime NextWakeup() const;

  // Touched only by the coordinator's thread.
  std::unique_ptr<SweepStore> store_;
  SweepEngine engine_;
  CoordinatorOptions options_;
  const Clock* clock_;
  std::deque<Waiter> waiters_;
  struct LiveSink {
    std::shared_ptr<WatchSink> sink;
    bool skip_progress;
    int64_t after_seq;  // Only events after this go to the sink (it may be ahead of the sweep).
  };
  std::unordered_map<int64_t, std::vector<LiveSink>> live_sinks_;
  std::atomic<EventLoop*> event_loop_{nullptr};  // Set on the thread; read by Enqueue to wake it.

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Command> queue_;  // Guarded by mu_.
  bool stopping_ = false;       // Guarded by mu_.
  std::thread thread_;
};

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_COORDINATOR_H_
