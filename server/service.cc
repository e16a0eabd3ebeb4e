#include "server/service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <unordered_set>

#include <fmt/format.h>
#include <grpcpp/alarm.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/support/byte_buffer.h>

#include "common/json.h"
#include "common/limits.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/auth.h"
#include "moesweep/v1/moesweep.grpc.pb.h"

namespace moesweep {

// SubmitSweep is taken raw (bytes): protobuf refuses a string field that is not UTF-8 before any
// handler runs, and the caller would only see INTERNAL "Unable to parse request".
// SubmitSweep is read raw to check its UTF-8 ourselves; WatchSweep is written raw so that an event
// is serialized once for all its watchers (see QueuedEvent).
using SweepAsync =
    v1::SweepService::WithRawMethod_WatchSweep<v1::SweepService::WithRawMethod_SubmitSweep<v1::SweepService::AsyncService>>;

// An event as a watcher's queue holds it: serialized once and shared by every watcher (a
// ByteBuffer copy only takes a reference to the same slices).
struct QueuedEvent {
  grpc::ByteBuffer buffer;
  size_t bytes = 0;    // What it costs a queue: the serialized size plus the queue's own overhead.
  bool final = false;  // SWEEP_FINISHED: the stream ends after it.
};
using WorkerAsync = v1::WorkerService::AsyncService;
using HealthAsync = grpc::health::v1::Health::AsyncService;

namespace {

// Calls waiting for each method, so that a burst of new calls finds one ready (gRPC holds the
// rest until one is armed again).
constexpr int kArmedPerWorkerMethod = 8;
constexpr int kArmedPerSweepMethod = 2;
// Events handled per Poll before the coordinator runs its batch: a bound on how long the answers
// to the events already taken wait.
constexpr int kMaxEventsPerPoll = 1024;
// Events a watcher may have queued before it is dropped to database replay: a slow watcher costs
// memory up to this, never time on the coordinator's thread. Counted in bytes too (an event is
// up to a few MB), per watcher and over all watchers: 200 stalled watchers once held 1.3 GB.
constexpr size_t kWatchBacklog = 10000;
constexpr size_t kWatchBacklogBytes = 4 << 20;
constexpr size_t kAllWatchersBacklogBytes = 256 << 20;

// Requests are checked here, before they reach the coordinator's thread, against common/limits.h.
// Each check names the field and the limit.
Status TooMany(const std::string& field, size_t n, size_t limit, const char* what) {
  return Status::InvalidArgument(fmt::format("{}: {} {} is more than the limit of {}", field, n, what, limit));
}

Status CheckString(const std::string& field, const std::string& value, size_t limit) {
  if (value.size() > limit) return TooMany(field, value.size(), limit, "bytes");
  return Status::Ok();
}

Status CheckMetrics(const google::protobuf::Map<std::string, double>& metrics) {
  if (metrics.size() > kMaxMetricsPerReport) return TooMany("metrics", metrics.size(), kMaxMetricsPerReport, "entries");
  for (const auto& [name, value] : metrics) {
    if (name.size() > kMaxMetricNameBytes) {
      return Status::InvalidArgument(fmt::format("metrics[\"{}\"]: a name of {} bytes is longer than the limit of {}",
                                                 Clip(name, kMaxEchoChars), name.size(), kMaxMetricNameBytes));
    }
  }
  return Status::Ok();
}

Status CheckExpertStats(const v1::ExpertStats& stats) {
  if (static_cast<size_t>(stats.layers_size()) > kMaxLayersPerReport) {
    return TooMany("expert_stats.layers", stats.layers_size(), kMaxLayersPerReport, "layers");
  }
  size_t class_routing = 0;
  for (int i = 0; i < stats.layers_size(); ++i) {
    const v1::ExpertLayerStats& layer = stats.layers(i);
    size_t experts = std::max(layer.usage_size(), layer.importance_size());
    if (experts > kMaxExpertsPerLayer) {
      return TooMany(fmt::format("expert_stats.layers[{}]", i), experts, kMaxExpertsPerLayer, "experts");
    }
    class_routing += layer.class_routing_size();
    if (class_routing > kMaxClassRoutingEntries) {
      return TooMany("expert_stats.layers[].class_routing", class_routing, kMaxClassRoutingEntries, "entries");
    }
    if (layer.class_routing_size() > 0 &&
        (layer.num_classes() <= 0 ||
         static_cast<size_t>(layer.class_routing_size()) != static_cast<size_t>(layer.num_classes()) * layer.usage_size())) {
      return Status::InvalidArgument(fmt::format(
          "expert_stats.layers[{}].class_routing: {} entries, not num_classes ({}) x experts ({})", i,
          layer.class_routing_size(), layer.num_classes(), layer.usage_size()));
    }
  }
  return Status::Ok();
}

// Requests without limits of their own.
template <typename Request>
Status CheckRequest(Request*) {
  return Status::Ok();
}

Status CheckRequest(v1::SubmitSweepRequest* r) {
  if (r->spec_json().size() > kMaxSpecBytes) return TooMany("spec_json", r->spec_json().size(), kMaxSpecBytes, "bytes");
  return Status::Ok();
}

Status CheckRequest(v1::AcquireTrialRequest* r) { return CheckString("worker", r->worker(), kMaxStringBytes); }

Status CheckRequest(v1::ReportProgressRequest* r) {
  if (Status s = CheckString("lease_token", r->lease_token(), kMaxStringBytes); !s.ok()) return s;
  if (Status s = CheckMetrics(r->metrics()); !s.ok()) return s;
  return CheckExpertStats(r->expert_stats());
}

Status CheckRequest(v1::CompleteTrialRequest* r) {
  if (Status s = CheckString("lease_token", r->lease_token(), kMaxStringBytes); !s.ok()) return s;
  if (Status s = CheckMetrics(r->metrics()); !s.ok()) return s;
  if (Status s = CheckExpertStats(r->expert_stats()); !s.ok()) return s;
  // A failing worker must still be able to fail its trial: a long reason is cut, not refused.
  if (r->error().size() > kMaxTrialErrorBytes) r->set_error(Clip(r->error(), kMaxTrialErrorBytes));
  return Status::Ok();
}

Status CheckRequest(v1::ListSweepsRequest* r) {
  if (r->limit() < 0) return Status::InvalidArgument(fmt::format("limit: {} is negative", r->limit()));
  return CheckString("page_token", r->page_token(), 64);
}

Status CheckRequest(v1::ListTrialsRequest* r) {
  if (r->limit() < 0) return Status::InvalidArgument(fmt::format("limit: {} is negative", r->limit()));
  return CheckString("page_token", r->page_token(), 64);
}

// SubmitSweepRequest from its wire bytes, with spec_json's UTF-8 checked by us (see SweepAsync).
Status DecodeSubmit(const grpc::ByteBuffer& raw, v1::SubmitSweepRequest* out) {
  std::vector<grpc::Slice> slices;
  if (!raw.Dump(&slices).ok()) return Status::InvalidArgument("request: unreadable");
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  using Wire = google::protobuf::internal::WireFormatLite;
  std::string spec;
  for (uint32_t tag = in.ReadTag(); tag != 0; tag = in.ReadTag()) {
    if (Wire::GetTagFieldNumber(tag) == 1 && Wire::GetTagWireType(tag) == Wire::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length) || !in.ReadString(&spec, static_cast<int>(length))) {
        return Status::InvalidArgument("request: not a SubmitSweepRequest");
      }
    } else if (!Wire::SkipField(&in, tag)) {
      return Status::InvalidArgument("request: not a SubmitSweepRequest");
    }
  }
  if (!in.ConsumedEntireMessage()) return Status::InvalidArgument("request: not a SubmitSweepRequest");
  if (size_t bad = FindInvalidUtf8(spec); bad != std::string::npos) {
    return Status::InvalidArgument(fmt::format("spec_json: invalid UTF-8 at byte offset {}", bad));
  }
  out->set_spec_json(std::move(spec));
  return Status::Ok();
}

// The text of an error as sent: gRPC carries it in a header, and past 8 KiB of metadata the call
// fails with RESOURCE_EXHAUSTED and the client sees nothing. Keeps whole lines (one problem
// each), each clipped, then says how many were left out.
std::string CapErrorText(const std::string& message) {
  if (message.size() <= kMaxErrorTextBytes) return message;
  std::string out;
  size_t start = 0, lines = 0, kept = 0;
  while (start <= message.size()) {
    size_t end = message.find('\n', start);
    if (end == std::string::npos) end = message.size();
    ++lines;
    std::string line = Clip(std::string_view(message).substr(start, end - start), 1024);
    if (kept == lines - 1 && out.size() + line.size() + 1 <= kMaxErrorTextBytes - 64) {
      if (!out.empty()) out += '\n';
      out += line;
      ++kept;
    }
    start = end + 1;
  }
  if (kept < lines) out += fmt::format("\n... and {} more", lines - kept);
  return out;
}

// What finished, as each call's tags name it.
enum Op { kRequest, kRead, kWrite, kFinish, kDone, kNumOps };

}  // namespace

// The completion queue of both services and the calls in flight on it. After Start, everything
// here runs on the coordinator's thread (Poll and the coordinator's answers), so nothing is
// locked; after the coordinator has stopped, Drain runs on the caller's thread.
class Endpoint final : public EventLoop {
 public:
  class Call {
   public:
    virtual ~Call() = default;
    virtual void Proceed(int op, bool ok) = 0;
  };
  struct Tag {
    Call* call;  // nullptr: the wake-up alarm.
    int op;
  };

  // Registers both services and the queue with `builder`, before BuildAndStart. `tokens` (null:
  // every call is admitted) outlives the endpoint.
  Endpoint(Coordinator* coordinator, const TokenTable* tokens, grpc::ServerBuilder* builder)
      : coordinator_(coordinator), tokens_(tokens), metrics_(coordinator->metrics()) {
    builder->RegisterService(&sweeps_);
    builder->RegisterService(&workers_);
    builder->RegisterService(&health_);
    cq_ = builder->AddCompletionQueue();
  }
  ~Endpoint() override {
    if (!draining_) Drain();
  }

  // After BuildAndStart: arms calls for every method and hands the queue to the coordinator.
  void Start();
  // After the coordinator has stopped, before the server shuts down: ends open streams, so the
  // server need not wait for workers and watchers that keep theirs open.
  void CancelStreams() {
    for (grpc::ServerContext* ctx : streams_) ctx->TryCancel();
  }
  // After the server has shut down: releases every call.
  void Drain() {
    draining_ = true;
    cq_->Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_->Next(&tag, &ok)) Dispatch(tag, ok);
  }

  void Poll(std::chrono::steady_clock::time_point deadline) override {
    auto until = std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                        deadline - std::chrono::steady_clock::now());
    void* tag = nullptr;
    bool ok = false;
    auto next = cq_->AsyncNext(&tag, &ok, until);
    for (int n = 0; next == grpc::CompletionQueue::GOT_EVENT;) {
      Dispatch(tag, ok);
      if (++n == kMaxEventsPerPoll) break;
      next = cq_->AsyncNext(&tag, &ok, std::chrono::system_clock::time_point());  // Only what is ready.
    }
  }
  void Wake() override {
    if (!wake_pending_.exchange(true)) alarm_.Set(cq_.get(), std::chrono::system_clock::time_point(), &wake_tag_);
  }

  Coordinator* coordinator() { return coordinator_; }
  // Whether the call's token allows `permission`; checked once its request has arrived, before
  // anything reaches the coordinator.
  Status Admit(const grpc::ServerContext& ctx, Permission permission) const {
    if (tokens_ == nullptr) return Status::Ok();
    const auto& metadata = ctx.client_metadata();
    auto it = metadata.find("authorization");
    std::optional<std::string_view> header;
    if (it != metadata.end()) header = std::string_view(it->second.data(), it->second.size());
    return tokens_->Authorize(header, permission);
  }
  grpc::ServerCompletionQueue* cq() { return cq_.get(); }
  SweepAsync* sweeps() { return &sweeps_; }
  WorkerAsync* workers() { return &workers_; }
  HealthAsync* health() { return &health_; }
  bool draining() const { return draining_; }
  void AddStream(grpc::ServerContext* ctx) { streams_.insert(ctx); }
  // Bytes of events queued for all watchers (WatchCall keeps its share up to date).
  size_t watch_bytes() const { return watch_bytes_.load(std::memory_order_relaxed); }
  void AddWatchBytes(int64_t delta) {
    size_t bytes = watch_bytes_.fetch_add(static_cast<size_t>(delta), std::memory_order_relaxed) + delta;
    if (metrics_) metrics_->SetWatchQueueBytes(bytes);
  }
  void AddWatcher(int delta) {
    watchers_ += delta;
    if (metrics_) metrics_->SetWatchers(watchers_);
  }
  CoordinatorMetrics* metrics() const { return metrics_; }
  void RemoveStream(grpc::ServerContext* ctx) { streams_.erase(ctx); }

  // `event` serialized, shared with every other watcher it is pushed to: the coordinator pushes
  // one event to all its sinks in a row, and (sweep, seq) names an event for good.
  QueuedEvent Serialized(const v1::SweepEvent& event) {
    if (!last_serialized_ || last_sweep_ != event.sweep_id() || last_seq_ != event.seq()) {
      QueuedEvent q;
      bool own = false;
      grpc::SerializationTraits<v1::SweepEvent>::Serialize(event, &q.buffer, &own);
      q.bytes = q.buffer.Length() + kQueuedEventOverhead;
      q.final = event.type() == v1::SWEEP_FINISHED;
      last_serialized_ = std::move(q);
      last_sweep_ = event.sweep_id();
      last_seq_ = event.seq();
    }
    return *last_serialized_;
  }

 private:
  void Dispatch(void* tag, bool ok) {
    auto* t = static_cast<Tag*>(tag);
    if (t->call == nullptr) {
      wake_pending_ = false;
    } else {
      t->call->Proceed(t->op, ok);
    }
  }

  Coordinator* coordinator_;
  const TokenTable* tokens_;
  CoordinatorMetrics* metrics_;  // Null: none recorded.
  size_t watchers_ = 0;
  SweepAsync sweeps_;
  WorkerAsync workers_;
  HealthAsync health_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  grpc::Alarm alarm_;
  std::atomic<bool> wake_pending_{false};
  Tag wake_tag_{nullptr, 0};
  bool draining_ = false;
  std::unordered_set<grpc::ServerContext*> streams_;
  std::atomic<size_t> watch_bytes_{0};  // Atomic only so that tests may read it.
  std::optional<QueuedEvent> last_serialized_;  // The last event Serialized() made, and its name.
  int64_t last_sweep_ = 0;
  int64_t last_seq_ = 0;
  // What a queued event costs on top of its shared bytes: its deque slot (32 bytes) and the
  // grpc_byte_buffer a ByteBuffer copy allocates (about 256 bytes, with its inline slices).
  static constexpr size_t kQueuedEventOverhead = 320;
};

namespace {

// The life of every call: it counts its operations in flight, the coordinator's pending answer
// included, and deletes itself when none is left. While draining, nothing new starts.
class CallBase : public Endpoint::Call {
 public:
  void Proceed(int op, bool ok) final {
    if (answering_ && (op == kFinish || op == kWrite)) Answered();
    if (!endpoint_->draining()) Handle(op, ok);
    Release();
  }

 protected:
  explicit CallBase(Endpoint* endpoint) : endpoint_(endpoint) {
    for (int i = 0; i < kNumOps; ++i) tags_[i] = {this, i};
  }
  virtual void Handle(int op, bool ok) = 0;

  // The tag of an operation about to start.
  void* Begin(int op) {
    ++pending_;
    return &tags_[op];
  }
  // kDone of AsyncNotifyWhenDone: registered before the call is requested, but it comes back
  // only if the call was matched, so it is counted then.
  void* DoneTag() { return &tags_[kDone]; }
  void ExpectDone() { ++pending_; }
  // The coordinator's Done for this call: runs `answer` unless draining, then lets go.
  template <typename Answer>
  Coordinator::Done Held(Answer answer) {
    ++pending_;
    return [this, answer](const Status& s) {
      if (!endpoint_->draining()) answer(s);
      Release();
    };
  }

  // Metrics: Started() once a request has been read; Answering() right before its answer (a
  // Finish, or a stream's Write) starts. The call is counted when that operation completes, with
  // its latency unless `timed` is false.
  void Started() {
    if (endpoint_->metrics()) started_ = std::chrono::steady_clock::now();
  }
  void Answering(Rpc rpc, grpc::StatusCode code, bool timed = true) {
    if (!endpoint_->metrics()) return;
    answering_ = true;
    answer_rpc_ = rpc;
    answer_code_ = code;
    timed_ = timed;
  }

  Endpoint* endpoint_;

 private:
  void Answered() {
    answering_ = false;
    double seconds = timed_ ? std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count() : -1;
    endpoint_->metrics()->RecordRpc(answer_rpc_, answer_code_, seconds);
  }
  void Release() {
    if (--pending_ == 0) delete this;
  }

  std::chrono::steady_clock::time_point started_;
  bool answering_ = false;
  bool timed_ = true;
  Rpc answer_rpc_ = Rpc::kCount;
  grpc::StatusCode answer_code_ = grpc::StatusCode::OK;

  Endpoint::Tag tags_[kNumOps];
  int pending_ = 0;
};

// Any unary call but AcquireTrial: forward to the coordinator, answer once it is committed.
template <typename Service, typename Request, typename Response>
class UnaryCall final : public CallBase {
 public:
  using RequestMethod = void (Service::*)(grpc::ServerContext*, Request*, grpc::ServerAsyncResponseWriter<Response>*,
                                          grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  using ForwardMethod = void (Coordinator::*)(const Request&, Response*, Coordinator::Done);

  UnaryCall(Endpoint* endpoint, Rpc rpc, Permission permission, Service* service, RequestMethod request,
            ForwardMethod forward)
      : CallBase(endpoint),
        rpc_(rpc),
        permission_(permission),
        service_(service),
        request_method_(request),
        forward_(forward),
        responder_(&ctx_) {
    (service_->*request_method_)(&ctx_, &request_, &responder_, endpoint_->cq(), endpoint_->cq(), Begin(kRequest));
  }

 private:
  void Handle(int op, bool ok) override {
    if (op != kRequest || !ok) return;  // Answered; or the server is shutting down.
    Started();
    new UnaryCall(endpoint_, rpc_, permission_, service_, request_method_, forward_);
    Status s = endpoint_->Admit(ctx_, permission_);
    if (s.ok()) s = CheckRequest(&request_);
    if (!s.ok()) {
      grpc::Status status = ToGrpcStatus(s);
      Answering(rpc_, status.error_code());
      return responder_.FinishWithError(status, Begin(kFinish));
    }
    (endpoint_->coordinator()->*forward_)(request_, &response_, Held([this](const Status& s) {
      grpc::Status status = ToGrpcStatus(s);
      Answering(rpc_, status.error_code());
      responder_.Finish(response_, status, Begin(kFinish));
    }));
  }

  Rpc rpc_;
  Permission permission_;
  Service* service_;
  RequestMethod request_method_;
  ForwardMethod forward_;
  grpc::ServerContext ctx_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_;
};

template <typename Service, typename Request, typename Response>
void Arm(Endpoint* endpoint, int count, Rpc rpc, Permission permission, Service* service,
         typename UnaryCall<Service, Request, Response>::RequestMethod request,
         void (Coordinator::*forward)(const Request&, Response*, Coordinator::Done)) {
  for (int i = 0; i < count; ++i) {
    new UnaryCall<Service, Request, Response>(endpoint, rpc, permission, service, request, forward);
  }
}

// AcquireTrial: a long-poll, which must notice a caller that has gone away so that no trial is
// leased to nobody.
class AcquireCall final : public CallBase {
 public:
  explicit AcquireCall(Endpoint* endpoint) : CallBase(endpoint), responder_(&ctx_) {
    ctx_.AsyncNotifyWhenDone(DoneTag());
    endpoint_->workers()->RequestAcquireTrial(&ctx_, &request_, &responder_, endpoint_->cq(), endpoint_->cq(),
                                              Begin(kRequest));
  }

 private:
  void Handle(int op, bool ok) override {
    if (op == kDone) {
      gone_ = ctx_.IsCancelled();
      return;
    }
    if (op != kRequest || !ok) return;
    Started();
    ExpectDone();
    new AcquireCall(endpoint_);
    Status s = endpoint_->Admit(ctx_, Permission::kWork);
    if (s.ok()) s = CheckRequest(&request_);
    if (!s.ok()) {
      grpc::Status status = ToGrpcStatus(s);
      Answering(Rpc::kAcquireTrial, status.error_code());
      return responder_.FinishWithError(status, Begin(kFinish));
    }
    double wait = std::max(0.0, request_.wait_seconds());
    // Answer "no trial" a little before the caller's deadline rather than let the call fail.
    auto until_deadline = std::chrono::duration<double>(ctx_.deadline() - std::chrono::system_clock::now()).count();
    wait = std::max(0.0, std::min(wait, until_deadline - 0.25));
    endpoint_->coordinator()->AcquireTrial(request_, &response_, std::chrono::duration<double>(wait),
                                           [this] { return gone_; }, Held([this](const Status& s) {
                                             grpc::Status status = ToGrpcStatus(s);
                                             Answering(Rpc::kAcquireTrial, status.error_code());
                                             responder_.Finish(response_, status, Begin(kFinish));
                                           }));
  }

  grpc::ServerContext ctx_;
  v1::AcquireTrialRequest request_;
  v1::AcquireTrialResponse response_;
  grpc::ServerAsyncResponseWriter<v1::AcquireTrialResponse> responder_;
  bool gone_ = false;
};

// ReportProgressStream: read a report, forward it, write its answer after commit, read the next.
class ReportStreamCall final : public CallBase {
 public:
  explicit ReportStreamCall(Endpoint* endpoint) : CallBase(endpoint), stream_(&ctx_) {
    endpoint_->workers()->RequestReportProgressStream(&ctx_, &stream_, endpoint_->cq(), endpoint_->cq(),
                                                      Begin(kRequest));
  }
  ~ReportStreamCall() override { endpoint_->RemoveStream(&ctx_); }

 private:
  void Handle(int op, bool ok) override {
    switch (op) {
      case kRequest:
        if (!ok) return;
        Started();
        new ReportStreamCall(endpoint_);
        if (Status s = endpoint_->Admit(ctx_, Permission::kWork); !s.ok()) {
          return Fail(ToGrpcStatus(s));
        }
        endpoint_->AddStream(&ctx_);
        return stream_.Read(&request_, Begin(kRead));
      case kRead:
        if (!ok) return stream_.Finish(grpc::Status::OK, Begin(kFinish));  // The worker closed its side.
        Started();
        response_.Clear();
        if (Status s = CheckRequest(&request_); !s.ok()) return Fail(ToGrpcStatus(s));
        endpoint_->coordinator()->ReportProgress(request_, &response_, Held([this](const Status& s) {
          if (!s.ok()) return Fail(ToGrpcStatus(s));
          Answering(Rpc::kReportProgressStream, grpc::StatusCode::OK);
          stream_.Write(response_, Begin(kWrite));
        }));
        return;
      case kWrite:
        if (!ok) return stream_.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the worker went away"), Begin(kFinish));
        return stream_.Read(&request_, Begin(kRead));
    }
  }

  // Ends the stream with `status`, the answer to the report just read (or to the stream's start).
  void Fail(const grpc::Status& status) {
    Answering(Rpc::kReportProgressStream, status.error_code());
    stream_.Finish(status, Begin(kFinish));
  }

  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<v1::ReportProgressResponse, v1::ReportProgressRequest> stream_;
  v1::ReportProgressRequest request_;
  v1::ReportProgressResponse response_;
};

// SubmitSweep, read raw so that a spec that is not UTF-8 gets INVALID_ARGUMENT with its offset.
class SubmitCall final : public CallBase {
 public:
  explicit SubmitCall(Endpoint* endpoint) : CallBase(endpoint), responder_(&ctx_) {
    endpoint_->sweeps()->RequestSubmitSweep(&ctx_, &raw_, &responder_, endpoint_->cq(), endpoint_->cq(),
                                            Begin(kRequest));
  }

 private:
  void Handle(int op, bool ok) override {
    if (op != kRequest || !ok) return;
    Started();
    new SubmitCall(endpoint_);
    Status s = endpoint_->Admit(ctx_, Permission::kSubmit);
    if (s.ok()) s = DecodeSubmit(raw_, &request_);
    raw_.Clear();
    if (s.ok()) s = CheckRequest(&request_);
    if (!s.ok()) return Reply(s);
    endpoint_->coordinator()->SubmitSweep(request_, &response_, Held([this](const Status& s) { Reply(s); }));
  }

  void Reply(const Status& s) {
    grpc::ByteBuffer out;
    if (s.ok()) {
      std::string bytes = response_.SerializeAsString();
      grpc::Slice slice(bytes);
      out = grpc::ByteBuffer(&slice, 1);
    }
    grpc::Status status = ToGrpcStatus(s);
    Answering(Rpc::kSubmitSweep, status.error_code());
    responder_.Finish(out, status, Begin(kFinish));
  }

  grpc::ServerContext ctx_;
  grpc::ByteBuffer raw_;
  v1::SubmitSweepRequest request_;
  v1::SubmitSweepResponse response_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> responder_;
};

class WatchCall;

// What the coordinator holds of a watch. It may outlive the call: then it refuses every push.
class WatchCallSink final : public WatchSink {
 public:
  explicit WatchCallSink(WatchCall* call) : call_(call) {}
  bool Push(const v1::SweepEvent& event) override;
  void ReplayDone(bool caught_up) override;
  void Close(const Status& status) override;
  void Detach() { call_ = nullptr; }

 private:
  WatchCall* call_;
};

// WatchSweep: events go out one write at a time, in order; a run of them leaves in one TCP write.
class WatchCall final : public CallBase {
 public:
  explicit WatchCall(Endpoint* endpoint)
      : CallBase(endpoint), sink_(std::make_shared<WatchCallSink>(this)), writer_(&ctx_) {
    ctx_.AsyncNotifyWhenDone(DoneTag());
    endpoint_->sweeps()->RequestWatchSweep(&ctx_, &raw_request_, &writer_, endpoint_->cq(), endpoint_->cq(),
                                           Begin(kRequest));
  }
  ~WatchCall() override {
    sink_->Detach();
    Unqueued(queued_bytes_);
    endpoint_->RemoveStream(&ctx_);
    if (watching_) endpoint_->AddWatcher(-1);
  }

  bool Push(const v1::SweepEvent& event) {
    if (closing_) return false;
    QueuedEvent queued = endpoint_->Serialized(event);
    const size_t bytes = queued.bytes;
    // An empty queue always takes one event, so every watcher makes progress.
    bool full = !queue_.empty() && (queue_.size() >= kWatchBacklog || queued_bytes_ + bytes > kWatchBacklogBytes ||
                                    endpoint_->watch_bytes() + bytes > kAllWatchersBacklogBytes);
    if (full) {
      resume_ = true;  // Dropped from live delivery; catch up from the database once drained.
      return false;
    }
    queue_.push_back(std::move(queued));
    queued_bytes_ += bytes;
    endpoint_->AddWatchBytes(bytes);
    last_seq_ = event.seq();
    WriteNext();
    return true;
  }

  void ReplayDone(bool caught_up) {
    if (caught_up || closing_) return;
    if (writing_ || !queue_.empty()) {
      resume_ = true;  // Ask for the next page once this one is out.
    } else {
      Watch();
    }
  }

  void Close(const Status& status) {
    if (closing_) return;
    closing_ = true;
    close_status_ = ToGrpcStatus(status);
    if (!writing_) FinishNow();
  }

 private:
  void Handle(int op, bool ok) override {
    switch (op) {
      case kRequest:
        if (!ok) return;
        ExpectDone();
        new WatchCall(endpoint_);
        if (Status s = endpoint_->Admit(ctx_, Permission::kRead); !s.ok()) {
          closing_ = true;
          close_status_ = ToGrpcStatus(s);
          return FinishNow();
        }
        if (!grpc::SerializationTraits<v1::WatchSweepRequest>::Deserialize(&raw_request_, &request_).ok()) {
          closing_ = true;
          close_status_ = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request: not a WatchSweepRequest");
          return FinishNow();
        }
        endpoint_->AddStream(&ctx_);
        watching_ = true;
        endpoint_->AddWatcher(1);
        last_seq_ = request_.after_seq();
        return Watch();
      case kDone:  // The call is over: finished, or the watcher went away.
        closing_ = true;
        return;
      case kWrite:
        writing_ = false;
        if (!ok) {
          closing_ = true;
          close_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
        } else if (current_final_) {
          closing_ = true;
          close_status_ = grpc::Status::OK;
        }
        if (closing_) return FinishNow();
        WriteNext();
        if (!writing_ && resume_) {
          resume_ = false;
          Watch();
        }
        return;
    }
  }

  void Watch() { endpoint_->coordinator()->Watch(request_.sweep_id(), last_seq_, request_.skip_progress(), sink_); }

  void WriteNext() {
    if (writing_ || queue_.empty() || closing_) return;
    QueuedEvent next = std::move(queue_.front());
    queue_.pop_front();
    Unqueued(next.bytes);
    current_ = std::move(next.buffer);
    current_final_ = next.final;
    writing_ = true;
    // With more events queued, let gRPC buffer this one so a run of events goes out in one TCP
    // write; the last of the run (no hint) flushes. Measured +14-19% trials/s in the bench.
    grpc::WriteOptions options;
    if (!queue_.empty()) options.set_buffer_hint();
    writer_.Write(current_, options, Begin(kWrite));
  }

  void FinishNow() {
    if (finished_) return;
    finished_ = true;
    Answering(Rpc::kWatchSweep, close_status_.error_code(), /*timed=*/false);
    writer_.Finish(close_status_, Begin(kFinish));
  }

  std::shared_ptr<WatchCallSink> sink_;
  grpc::ServerContext ctx_;
  grpc::ByteBuffer raw_request_;
  v1::WatchSweepRequest request_;
  grpc::ServerAsyncWriter<grpc::ByteBuffer> writer_;
  int64_t last_seq_ = 0;  // Last event queued; where a resumed replay starts.
  void Unqueued(size_t bytes) {
    bytes = std::min(bytes, queued_bytes_);
    queued_bytes_ -= bytes;
    endpoint_->AddWatchBytes(-static_cast<int64_t>(bytes));
  }

  std::deque<QueuedEvent> queue_;
  size_t queued_bytes_ = 0;  // QueuedEvent::bytes of the events in queue_.
  grpc::ByteBuffer current_;  // The event being written.
  bool current_final_ = false;  // It is the SWEEP_FINISHED event.
  bool writing_ = false;
  bool resume_ = false;
  bool closing_ = false;
  bool finished_ = false;
  bool watching_ = false;  // Admitted: counted in the endpoint's watchers.
  grpc::Status close_status_;
};

bool WatchCallSink::Push(const v1::SweepEvent& event) { return call_ != nullptr && call_->Push(event); }
void WatchCallSink::ReplayDone(bool caught_up) {
  if (call_ != nullptr) call_->ReplayDone(caught_up);
}
void WatchCallSink::Close(const Status& status) {
  if (call_ != nullptr) call_->Close(status);
}

// grpc.health.v1 Check, answered by the coordinator's thread itself: SERVING means that thread is
// taking calls. (gRPC's built-in health service would bring its own threads.)
class HealthCheckCall final : public CallBase {
 public:
  explicit HealthCheckCall(Endpoint* endpoint) : CallBase(endpoint), responder_(&ctx_) {
    endpoint_->health()->RequestCheck(&ctx_, &request_, &responder_, endpoint_->cq(), endpoint_->cq(), Begin(kRequest));
  }

 private:
  void Handle(int op, bool ok) override {
    if (op != kRequest || !ok) return;
    Started();
    new HealthCheckCall(endpoint_);
    const std::string& service = request_.service();
    if (!service.empty() && service != v1::SweepService::service_full_name() &&
        service != v1::WorkerService::service_full_name()) {
      Answering(Rpc::kHealthCheck, grpc::StatusCode::NOT_FOUND);
      return responder_.Finish(response_, grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service " + service),
                               Begin(kFinish));
    }
    response_.set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    Answering(Rpc::kHealthCheck, grpc::StatusCode::OK);
    responder_.Finish(response_, grpc::Status::OK, Begin(kFinish));
  }

  grpc::ServerContext ctx_;
  grpc::health::v1::HealthCheckRequest request_;
  grpc::health::v1::HealthCheckResponse response_;
  grpc::ServerAsyncResponseWriter<grpc::health::v1::HealthCheckResponse> responder_;
};

// grpc.health.v1 Watch is not offered; Check is what probes use.
class HealthWatchCall final : public CallBase {
 public:
  explicit HealthWatchCall(Endpoint* endpoint) : CallBase(endpoint), writer_(&ctx_) {
    endpoint_->health()->RequestWatch(&ctx_, &request_, &writer_, endpoint_->cq(), endpoint_->cq(), Begin(kRequest));
  }

 private:
  void Handle(int op, bool ok) override {
    if (op != kRequest || !ok) return;
    Started();
    new HealthWatchCall(endpoint_);
    Answering(Rpc::kHealthWatch, grpc::StatusCode::UNIMPLEMENTED);
    writer_.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "use grpc.health.v1.Health/Check"), Begin(kFinish));
  }

  grpc::ServerContext ctx_;
  grpc::health::v1::HealthCheckRequest request_;
  grpc::ServerAsyncWriter<grpc::health::v1::HealthCheckResponse> writer_;
};

}  // namespace

void Endpoint::Start() {
  using C = Coordinator;
  for (int i = 0; i < kArmedPerWorkerMethod; ++i) {
    new AcquireCall(this);
    new ReportStreamCall(this);
  }
  using P = Permission;
  Arm(this, kArmedPerWorkerMethod, Rpc::kReportProgress,
      P::kWork, &workers_, &WorkerAsync::RequestReportProgress, &C::ReportProgress);
  Arm(this, kArmedPerWorkerMethod, Rpc::kCompleteTrial,
      P::kWork, &workers_, &WorkerAsync::RequestCompleteTrial, &C::CompleteTrial);
  Arm(this, kArmedPerSweepMethod, Rpc::kGetSweep, P::kRead, &sweeps_, &SweepAsync::RequestGetSweep, &C::GetSweep);
  Arm(this, kArmedPerSweepMethod, Rpc::kListSweeps, P::kRead, &sweeps_, &SweepAsync::RequestListSweeps, &C::ListSweeps);
  Arm(this, kArmedPerSweepMethod, Rpc::kCancelSweep,
      P::kSubmit, &sweeps_, &SweepAsync::RequestCancelSweep, &C::CancelSweep);
  Arm(this, kArmedPerSweepMethod, Rpc::kListTrials, P::kRead, &sweeps_, &SweepAsync::RequestListTrials, &C::ListTrials);
  Arm(this, kArmedPerSweepMethod, Rpc::kGetBestConfig,
      P::kRead, &sweeps_, &SweepAsync::RequestGetBestConfig, &C::GetBestConfig);
  for (int i = 0; i < kArmedPerSweepMethod; ++i) {
    new SubmitCall(this);
    new WatchCall(this);
    new HealthCheckCall(this);
    new HealthWatchCall(this);
  }
  coordinator_->SetEventLoop(this);
}

grpc::Status ToGrpcStatus(const Status& status) {
  using C = Status::Code;
  std::string message = CapErrorText(status.message());
  switch (status.code()) {
    case C::kOk: return grpc::Status::OK;
    case C::kInvalidArgument: return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
    case C::kNotFound: return grpc::Status(grpc::StatusCode::NOT_FOUND, message);
    case C::kFailedPrecondition: return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, message);
    case C::kUnavailable: return grpc::Status(grpc::StatusCode::UNAVAILABLE, message);
    case C::kInternal: return grpc::Status(grpc::StatusCode::INTERNAL, message);
    case C::kUnauthenticated: return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, message);
    case C::kPermissionDenied: return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, message);
  }
  return grpc::Status(grpc::StatusCode::UNKNOWN, message);
}

CoordinatorServer::CoordinatorServer(Coordinator* coordinator) : coordinator_(coordinator) {}

Status CoordinatorServer::Start(Coordinator* coordinator, const std::string& address,
                                std::unique_ptr<CoordinatorServer>* out) {
  return Start(coordinator, address, ServerSecurity{}, out);
}

Status CoordinatorServer::Start(Coordinator* coordinator, const std::string& address, const ServerSecurity& security,
                                std::unique_ptr<CoordinatorServer>* out) {
  grpc::EnableDefaultHealthCheckService(false);  // Ours runs on the coordinator's thread.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer(coordinator));
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!security.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions tls(security.tls_client_ca_pem.empty()
                                              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    tls.pem_root_certs = security.tls_client_ca_pem;
    tls.pem_key_cert_pairs.push_back({security.tls_key_pem, security.tls_cert_pem});
    credentials = grpc::SslServerCredentials(tls);
  }
  server->tokens_ = security.tokens;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, credentials, &server->port_);
  server->endpoint_ = std::make_unique<Endpoint>(coordinator, server->tokens_.get(), &builder);
  // Over our own limits, but not by much: a too-large spec still reaches CheckRequest and gets a
  // message naming the limit; past this gRPC refuses it (RESOURCE_EXHAUSTED) without reading it.
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    server->shut_down_ = true;  // Nothing was armed; the destructors clean up.
    return Status::Unavailable(fmt::format("cannot listen on {} (address in use or invalid{}?)", address,
                                           security.tls_cert_pem.empty() ? "" : ", or a bad TLS key or certificate"));
  }
  server->endpoint_->Start();
  *out = std::move(server);
  return Status::Ok();
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

size_t CoordinatorServer::queued_watch_bytes() const { return endpoint_->watch_bytes(); }

void CoordinatorServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // The coordinator first: it answers parked long-polls and closes live watches, and its thread
  // stops polling the queue. Then the streams that stay open between messages, then the server.
  coordinator_->Shutdown();
  endpoint_->CancelStreams();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  endpoint_->Drain();
}

}  // namespace moesweep
