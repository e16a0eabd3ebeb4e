// One browser's live feed of a sweep's events: a WatchSweep stream read on a thread of its own into
// a bounded queue, resumed after `after_seq` when the coordinator goes away and comes back, so the
// browser sees every event once, in order. The HTTP side turns items into Server-Sent Events.
//
// One upstream stream per browser (not one shared per sweep): the coordinator already keeps one
// sink per watcher with its own bounds, replays from SQLite and follows live events with no gap,
// so sharing would only save what a watcher costs it, at the price of a replay cache here.
#ifndef MOESWEEP_DASHBOARD_EVENT_STREAM_H_
#define MOESWEEP_DASHBOARD_EVENT_STREAM_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "moesweep/v1/moesweep.grpc.pb.h"

namespace moesweep::dashboard {

struct StreamItem {
  enum Kind {
    kEvent,         // `data` is the event as JSON (the CLI's --json shape); `seq` its seq.
    kUpstreamDown,  // The coordinator went away; `data` says why. Reconnecting.
    kUpstreamUp,    // Back after kUpstreamDown; events resume after the last one sent.
    kEnd,           // The sweep finished (after its SWEEP_FINISHED event) or the feed was closed.
    kNotFound,      // No such sweep.
    kError,         // The coordinator refused the watch for good; `data` says why.
  };
  Kind kind = kEvent;
  int64_t seq = 0;
  std::string data;
};

struct EventStreamOptions {
  bool skip_progress = false;
  size_t max_queued_events = 256;          // The reader waits (and gRPC pushes back) beyond either.
  size_t max_queued_bytes = 2 << 20;
  std::chrono::milliseconds initial_backoff{250};
  std::chrono::milliseconds max_backoff{3000};
};

class EventStream {
 public:
  // Starts reading events of `sweep_id` with seq > `after_seq`.
  EventStream(std::shared_ptr<v1::SweepService::Stub> stub, int64_t sweep_id, int64_t after_seq,
              EventStreamOptions options);
  // Closes the stream and joins its thread.
  ~EventStream();

  // The next item, or nullopt when none came within `timeout`. After kEnd, kNotFound or kError,
  // and after Close(), it returns kEnd at once.
  std::optional<StreamItem> Next(std::chrono::milliseconds timeout);

  // Ends the upstream call; Next() then returns kEnd. Thread-safe, idempotent.
  void Close();

 private:
  void Run();
  // Queues `item`, waiting while the queue is full; false once closed.
  bool Push(StreamItem item);
  // Waits `duration` or until closed; false once closed.
  bool Sleep(std::chrono::milliseconds duration);
  bool SweepFinished(grpc::Status* status);

  std::shared_ptr<v1::SweepService::Stub> stub_;
  const int64_t sweep_id_;
  int64_t last_seq_;  // Only the reader thread touches it.
  const EventStreamOptions options_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<StreamItem> queue_;         // Guarded by mutex_.
  size_t queued_bytes_ = 0;              // Guarded by mutex_.
  bool closed_ = false;                  // Guarded by mutex_.
  bool ended_ = false;                   // Guarded by mutex_: a final item is queued.
  grpc::ClientContext* context_ = nullptr;  // Guarded by mutex_: the call in flight, to cancel.
  std::thread reader_;
};

}  // namespace moesweep::dashboard

#endif  // MOESWEEP_DASHBOARD_EVENT_STREAM_H_
