#include "server/coordinator.h"

#include <future>

#include <fmt/format.h>

namespace moesweep {
namespace {

// Statuses that mean the database, not the request, went wrong: the batch is rolled back and
// the in-memory state rebuilt from what was committed.
bool IsStorageError(const Status& s) {
  return s.code() == Status::Code::kInternal || s.code() == Status::Code::kUnavailable;
}

constexpr auto kLeaseCheckInterval = std::chrono::milliseconds(100);

}  // namespace

Status Coordinator::Open(const std::string& db_path, const CoordinatorOptions& options, const Clock* clock,
                         std::unique_ptr<Coordinator>* out) {
  std::unique_ptr<SweepStore> store;
  Status s = SweepStore::Open(db_path, &store);
  if (!s.ok()) return s;
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(store), options, clock));
  // Recovery may decide stages that finished right before a crash, so it writes in a transaction.
  s = c->store_->Begin();
  if (s.ok()) s = c->engine_.Recover();
  if (s.ok()) s = c->store_->Commit();
  if (!s.ok()) {
    c->store_->Rollback();
    return s;
  }
  c->engine_.TakeEvents();  // Nobody watches yet; they are stored.
  c->thread_ = std::thread([raw = c.get()] { raw->Loop(); });
  *out = std::move(c);
  return Status::Ok();
}

Coordinator::Coordinator(std::unique_ptr<SweepStore> store, const CoordinatorOptions& options, const Clock* clock)
    : store_(std::move(store)), engine_(store_.get(), clock, options.engine), options_(options), clock_(clock) {}

Coordinator::~Coordinator() { Shutdown(); }

void Coordinator::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      if (!thread_.joinable()) return;
    }
    stopping_ = true;
  }
  cv_.notify_all();
  if (EventLoop* loop = event_loop_.load()) loop->Wake();
  if (thread_.joinable()) thread_.join();
}

void Coordinator::Enqueue(Command command) {
  bool wake_loop = false;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) {
      lock.unlock();
      command.done(Status::Unavailable("the coordinator is shutting down"));
      return;
    }
    queue_.push_back(std::move(command));
    if (queue_.size() == 1) {
      cv_.notify_one();
      // The thread itself (an event-loop handler) is about to look at the queue anyway.
      wake_loop = std::this_thread::get_id() != thread_.get_id();
    }
  }
  if (wake_loop) {
    if (EventLoop* loop = event_loop_.load()) loop->Wake();
  }
}

// ---------------------------------------------------------------------------------------------
// Requests

void Coordinator::SubmitSweep(const v1::SubmitSweepRequest& request, v1::SubmitSweepResponse* response, Done done) {
  Enqueue({true, [this, &request, response] { return engine_.Submit(request.spec_json(), response); }, std::move(done)});
}

void Coordinator::GetSweep(const v1::GetSweepRequest& request, v1::GetSweepResponse* response, Done done) {
  Enqueue({false, [this, &request, response] { return engine_.GetSweep(request.sweep_id(), response); }, std::move(done)});
}

void Coordinator::ListSweeps(const v1::ListSweepsRequest& request, v1::ListSweepsResponse* response, Done done) {
  Enqueue({false, [this, &request, response] { return engine_.ListSweeps(request, response); }, std::move(done)});
}

void Coordinator::CancelSweep(const v1::CancelSweepRequest& request, v1::CancelSweepResponse* response, Done done) {
  Enqueue({true, [this, &request, response] { return engine_.Cancel(request.sweep_id(), response); }, std::move(done)});
}

void Coordinator::ListTrials(const v1::ListTrialsRequest& request, v1::ListTrialsResponse* response, Done done) {
  Enqueue({false, [this, &request, response] { return engine_.ListTrials(request, response); }, std::move(done)});
}

void Coordinator::GetBestConfig(const v1::GetBestConfigRequest& request, v1::GetBestConfigResponse* response,
                                Done done) {
  Enqueue({false, [this, &request, response] { return engine_.GetBestConfig(request, response); }, std::move(done)});
}

void Coordinator::AcquireTrial(const v1::AcquireTrialRequest& request, v1::AcquireTrialResponse* response,
                               std::chrono::duration<double> wait, std::function<bool()> cancelled, Done done) {
  wait = std::min(wait, std::chrono::duration<double>(options_.max_wait_seconds));
  SteadyTime deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(wait);
  // `done` moves into the command; the parked waiter takes it from there when it needs it.
  auto shared_done = std::make_shared<Done>(std::move(done));
  Enqueue({true,
           [this, &request, response, deadline, cancelled = std::move(cancelled), shared_done]() -> std::optional<Status> {
             Status s = engine_.Acquire(request, response);
             if (!s.ok() || response->has_trial() || deadline <= std::chrono::steady_clock::now()) return s;
             waiters_.push_back({&request, response, deadline, cancelled, *shared_done});
             return std::nullopt;
           },
           [shared_done](const Status& s) { (*shared_done)(s); }});
}

void Coordinator::ReportProgress(const v1::ReportProgressRequest& request, v1::ReportProgressResponse* response,
                                 Done done) {
  Enqueue({true, [this, &request, response] { return engine_.Report(request, response); }, std::move(done)});
}

void Coordinator::CompleteTrial(const v1::CompleteTrialRequest& request, v1::CompleteTrialResponse* response,
                                Done done) {
  Enqueue({true, [this, &request, response] { return engine_.Complete(request, response); }, std::move(done)});
}

void Coordinator::Watch(int64_t sweep_id, int64_t after_seq, bool skip_progress, std::shared_ptr<WatchSink> sink) {
  Enqueue({false,
           [this, sweep_id, after_seq, skip_progress, sink] {
             ReplayPage(sweep_id, after_seq, skip_progress, sink);
             return Status::Ok();
           },
           [sink](const Status& s) {
             if (!s.ok()) sink->Close(s);
           }});
}

void Coordinator::SetEventLoop(EventLoop* loop) {
  Enqueue({false,
           [this, loop] {
             event_loop_.store(loop);
             return Status::Ok();
           },
           [](const Status&) {}});
}

void Coordinator::Sync() {
  std::promise<void> done;
  // A read: reads run after the writes of their batch, so this one runs after everything before it.
  Enqueue({false, [] { return Status::Ok(); }, [&done](const Status&) { done.set_value(); }});
  done.get_future().wait();
}

// ---------------------------------------------------------------------------------------------
// The thread

Coordinator::SteadyTime Coordinator::NextWakeup() const {
  SteadyTime next = std::chrono::steady_clock::now() + kLeaseCheckInterval;
  for (const Waiter& w : waiters_) next = std::min(next, w.deadline);
  return next;
}

void Coordinator::Loop() {
  for (;;) {
    std::vector<Command> batch;
    if (EventLoop* loop = event_loop_.load()) {
      bool idle;
      {
        std::lock_guard<std::mutex> lock(mu_);
        idle = queue_.empty() && !stopping_;
      }
      // Busy: take what the network has ready right now and go on with the batch.
      loop->Poll(idle ? NextWakeup() : std::chrono::steady_clock::now());
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(queue_);
      if (stopping_ && batch.empty()) break;
    } else {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, NextWakeup(), [this] { return !queue_.empty() || stopping_; });
      batch.swap(queue_);
      if (stopping_ && batch.empty()) break;
    }
    RunBatch(batch);
  }
  // Shutting down: nobody waits on a coordinator that is going away.
  event_loop_.store(nullptr);
  for (Waiter& w : waiters_) w.done(Status::Ok());
  waiters_.clear();
  for (auto& [sweep, sinks] : live_sinks_) {
    for (auto& live : sinks) live.sink->Close(Status::Unavailable("the coordinator is shutting down; watch again"));
  }
  live_sinks_.clear();
}

void Coordinator::RunBatch(std::vector<Command>& batch) {
  std::vector<std::pair<Done, Status>> replies;
  std::vector<Command*> reads;
  bool any_writes = false;
  for (Command& c : batch) {
    if (c.writes) {
      any_writes = true;
    } else {
      reads.push_back(&c);
    }
  }
  // Without writes, a transaction is still needed when a lease is due or a parked long-poll can
  // be served.
  bool maintenance = engine_.NextLeaseDeadline() <= clock_->Now() ||
                     (engine_.HasPendingTrials() && std::any_of(waiters_.begin(), waiters_.end(), [this](const Waiter& w) {
                        return engine_.CanServe(*w.request);
                      }));
  CoordinatorMetrics* metrics = options_.metrics;
  double commit_seconds = -1;
  if (any_writes || maintenance) {
    auto began = metrics ? std::chrono::steady_clock::now() : SteadyTime();
    Status txn = store_->Begin();
    bool storage_failed = !txn.ok();
    if (!storage_failed) {
      for (Command& c : batch) {
        if (!c.writes) continue;
        std::optional<Status> s = c.run();
        if (!s) continue;  // Parked.
        if (IsStorageError(*s)) storage_failed = true;
        replies.emplace_back(std::move(c.done), *s);
      }
      Status expire = engine_.ExpireLeases();
      if (!expire.ok()) storage_failed = true;
      ServeWaiters(&replies);
    }
    Status commit = storage_failed ? Status::Internal("batch aborted") : store_->Commit();
    if (metrics) commit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    if (storage_failed || !commit.ok()) {
      // Nothing of this batch happened: say so to everyone in it and rebuild from the database.
      store_->Rollback();
      engine_.TakeEvents();
      Status failure = Status::Unavailable(
          fmt::format("the coordinator's database failed ({}); nothing was recorded, retry", txn.ok() ? commit.message() : txn.message()));
      for (auto& [done, status] : replies) done(status.ok() || IsStorageError(status) ? failure : status);
      replies.clear();
      Status recovered = store_->Begin();
      if (recovered.ok()) recovered = engine_.Recover();
      if (recovered.ok()) recovered = store_->Commit();
      if (!recovered.ok()) {
        store_->Rollback();
        fmt::print(stderr, "moesweep-coordinator: cannot rebuild state from the database: {}\n", recovered.ToString());
      }
    }
    for (auto& [done, status] : replies) done(status);
    Publish(engine_.TakeEvents());
  }
  ExpireWaiters(std::chrono::steady_clock::now());
  if (metrics) {
    // Before the reads: a Sync() that returns sees this batch's state. (Answers over gRPC leave
    // only when this thread polls again, after the batch.)
    metrics->PublishState(engine_.stats(), engine_.PendingTrials(), waiters_.size());
    metrics->RecordBatch(batch.size(), commit_seconds);
  }
  for (Command* c : reads) {
    std::optional<Status> s = c->run();
    if (s) c->done(*s);
  }
}

void Coordinator::ServeWaiters(std::vector<std::pair<Done, Status>>* replies) {
  // Waiters are served in arrival order; one that can run none of the pending trials (another
  // trainer kind, too few GPUs) keeps waiting without holding up those behind it.
  for (auto it = waiters_.begin(); it != waiters_.end() && engine_.HasPendingTrials();) {
    if (it->cancelled && it->cancelled()) {
      replies->emplace_back(std::move(it->done), Status::Unavailable("the caller went away"));
      it = waiters_.erase(it);
      continue;
    }
    Status s = engine_.Acquire(*it->request, it->response);
    if (!s.ok() || it->response->has_trial()) {
      replies->emplace_back(std::move(it->done), s);
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

void Coordinator::ExpireWaiters(SteadyTime now) {
  while (!waiters_.empty()) {
    // Deadlines are not sorted (callers choose their waits), so scan.
    auto it = std::find_if(waiters_.begin(), waiters_.end(), [now](const Waiter& w) { return w.deadline <= now; });
    if (it == waiters_.end()) break;
    Done done = std::move(it->done);
    waiters_.erase(it);
    done(Status::Ok());  // has_trial stays false.
  }
}

void Coordinator::Publish(const std::vector<v1::SweepEvent>& events) {
  for (const v1::SweepEvent& event : events) {
    auto it = live_sinks_.find(event.sweep_id());
    if (it == live_sinks_.end()) continue;
    auto& sinks = it->second;
    bool progress = event.type() == v1::TRIAL_PROGRESS;
    sinks.erase(std::remove_if(sinks.begin(), sinks.end(),
                               [&](const LiveSink& live) {
                                 if (event.seq() <= live.after_seq) {
                                   // Ahead of the whole sweep: nothing to send, but the watch ends with it.
                                   if (event.type() == v1::SWEEP_FINISHED) live.sink->Close(Status::Ok());
                                   return false;
                                 }
                                 if (progress && live.skip_progress) return false;
                                 return !live.sink->Push(event);
                               }),
                sinks.end());
    if (sinks.empty() || event.type() == v1::SWEEP_FINISHED) live_sinks_.erase(it);
  }
}

void Coordinator::ReplayPage(int64_t sweep_id, int64_t after_seq, bool skip_progress,
                             const std::shared_ptr<WatchSink>& sink) {
  bool finished = false;
  Status s = engine_.SweepFinished(sweep_id, &finished);
  std::vector<v1::SweepEvent> events;
  if (s.ok()) s = store_->ReadEvents(sweep_id, after_seq, options_.replay_page, skip_progress, &events);
  if (!s.ok()) return sink->Close(s);
  for (const v1::SweepEvent& e : events) {
    if (!sink->Push(e)) return;  // Gone; or full, and it will ask again.
  }
  if (static_cast<int>(events.size()) == options_.replay_page) return sink->ReplayDone(false);
  // Caught up. Events are published only between batches, on this thread, so nothing can slip in
  // between the read above and joining the live sinks: no gap, no duplicate.
  if (finished) {
    if (events.empty()) sink->Close(Status::Ok());
    return;  // Otherwise the last replayed event is SWEEP_FINISHED and ends the stream.
  }
  live_sinks_[sweep_id].push_back({sink, skip_progress, after_seq});
  sink->ReplayDone(true);
}

}  // namespace moesweep
