#include "dashboard/event_stream.h"

#include <algorithm>

#include <fmt/format.h>

#include "client/proto_json.h"

namespace moesweep::dashboard {

EventStream::EventStream(std::shared_ptr<v1::SweepService::Stub> stub, int64_t sweep_id, int64_t after_seq,
                         EventStreamOptions options)
    : stub_(std::move(stub)), sweep_id_(sweep_id), last_seq_(after_seq), options_(options) {
  reader_ = std::thread([this] { Run(); });
}

EventStream::~EventStream() {
  Close();
  reader_.join();
}

void EventStream::Close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  if (context_ != nullptr) context_->TryCancel();
  changed_.notify_all();
}

std::optional<StreamItem> EventStream::Next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return closed_ || !queue_.empty(); })) return std::nullopt;
  if (queue_.empty()) return StreamItem{StreamItem::kEnd, last_seq_, ""};
  StreamItem item = std::move(queue_.front());
  queue_.pop_front();
  queued_bytes_ -= item.data.size();
  if (item.kind == StreamItem::kEnd || item.kind == StreamItem::kNotFound || item.kind == StreamItem::kError) {
    closed_ = true;
  }
  changed_.notify_all();
  return item;
}

bool EventStream::Push(StreamItem item) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] {
    return closed_ || queue_.empty() ||
           (queue_.size() < options_.max_queued_events && queued_bytes_ + item.data.size() <= options_.max_queued_bytes);
  });
  if (closed_) return false;
  queued_bytes_ += item.data.size();
  queue_.push_back(std::move(item));
  changed_.notify_all();
  return true;
}

bool EventStream::Sleep(std::chrono::milliseconds duration) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, duration, [&] { return closed_; });
  return !closed_;
}

// After a stream that ended OK without SWEEP_FINISHED: is the sweep over (a watch that starts
// after its last event ends at once)? Otherwise the coordinator closed it early; reconnect.
bool EventStream::SweepFinished(grpc::Status* status) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetSweepRequest request;
  request.set_sweep_id(sweep_id_);
  v1::GetSweepResponse response;
  *status = stub_->GetSweep(&context, request, &response);
  if (!status->ok()) return false;
  switch (response.sweep().state()) {
    case v1::SWEEP_SUCCEEDED:
    case v1::SWEEP_FAILED:
    case v1::SWEEP_CANCELLED:
      return true;
    default:
      return false;
  }
}

void EventStream::Run() {
  auto backoff = options_.initial_backoff;
  bool down = false;
  for (;;) {
    grpc::ClientContext context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) return;
      context_ = &context;
    }
    v1::WatchSweepRequest request;
    request.set_sweep_id(sweep_id_);
    request.set_after_seq(last_seq_);
    request.set_skip_progress(options_.skip_progress);
    auto reader = stub_->WatchSweep(&context, request);
    v1::SweepEvent event;
    bool finished = false;
    bool open = true;
    while (open && reader->Read(&event)) {
      if (down) {
        open = Push({StreamItem::kUpstreamUp, last_seq_, "{\"ok\":true}"});
        down = false;
      }
      backoff = options_.initial_backoff;
      if (event.seq() <= last_seq_) continue;  // A replay overlapping what was sent.
      last_seq_ = event.seq();
      open = open && Push({StreamItem::kEvent, event.seq(), client::ProtoToJson(event).dump()});
      if (event.type() == v1::SWEEP_FINISHED) {
        finished = true;
        break;
      }
    }
    // Left early (done, or closed): end the call; a stream that ended by itself keeps its status.
    if (finished || !open) context.TryCancel();
    grpc::Status status = reader->Finish();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      context_ = nullptr;
      if (closed_) return;
    }
    if (finished) {
      Push({StreamItem::kEnd, last_seq_, "{}"});
      return;
    }
    if (status.ok()) {
      if (SweepFinished(&status)) {
        Push({StreamItem::kEnd, last_seq_, "{}"});
        return;
      }
      if (status.ok()) status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream ended early");
    }
    switch (status.error_code()) {
      case grpc::StatusCode::NOT_FOUND:
        Push({StreamItem::kNotFound, last_seq_, Json({{"message", status.error_message()}}).dump()});
        return;
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::CANCELLED:
      case grpc::StatusCode::DEADLINE_EXCEEDED:
      case grpc::StatusCode::UNKNOWN:
      case grpc::StatusCode::INTERNAL:
        break;
      default:
        Push({StreamItem::kError, last_seq_, Json({{"message", status.error_message()}}).dump()});
        return;
    }
    if (!down) {
      Json why = {{"ok", false}, {"message", status.error_message()}, {"after_seq", last_seq_}};
      if (!Push({StreamItem::kUpstreamDown, last_seq_, why.dump()})) return;
      down = true;
    }
    if (!Sleep(backoff)) return;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

}  // namespace moesweep::dashboard
