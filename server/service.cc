#include "server/service.h"

#include <deque>
#include <mutex>

#include <fmt/format.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

namespace moesweep {
namespace {

// Events a watcher may have queued before it is dropped to database replay: a slow watcher costs
// memory up to this, never time on the coordinator's thread.
constexpr size_t kWatchBacklog = 10000;

Coordinator::Done Finisher(grpc::ServerUnaryReactor* reactor) {
  return [reactor](const Status& s) { reactor->Finish(ToGrpcStatus(s)); };
}

// The sink side of one WatchSweep stream. It outlives its reactor if need be: the coordinator may
// still hold it after the client has gone, and then its pushes are refused.
class StreamSink final : public WatchSink, public std::enable_shared_from_this<StreamSink> {
 public:
  StreamSink(Coordinator* coordinator, grpc::ServerWriteReactor<v1::SweepEvent>* reactor,
             const v1::WatchSweepRequest& request)
      : coordinator_(coordinator),
        reactor_(reactor),
        sweep_id_(request.sweep_id()),
        skip_progress_(request.skip_progress()),
        last_seq_(request.after_seq()) {}

  void Begin() { coordinator_->Watch(sweep_id_, last_seq_, skip_progress_, shared_from_this()); }

  bool Push(const v1::SweepEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (reactor_ == nullptr || closing_) return false;
    if (queue_.size() >= kWatchBacklog) {
      resume_ = true;  // Dropped from live delivery; catch up from the database once drained.
      return false;
    }
    queue_.push_back(event);
    last_seq_ = event.seq();
    WriteNextLocked();
    return true;
  }

  void ReplayDone(bool caught_up) override {
    bool ask_now = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (caught_up) return;
      resume_ = true;
      ask_now = !writing_ && queue_.empty() && reactor_ != nullptr;
      if (ask_now) resume_ = false;
    }
    if (ask_now) Begin();
  }

  void Close(const Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (reactor_ == nullptr || closing_) return;
    closing_ = true;
    close_status_ = ToGrpcStatus(status);
    if (!writing_) FinishLocked();
  }

  void OnWriteDone(bool ok) {
    bool resume = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (reactor_ == nullptr) return;
      if (!ok) {  // The client is gone.
        closing_ = true;
        close_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
      } else if (current_.type() == v1::SWEEP_FINISHED) {
        closing_ = true;
        close_status_ = grpc::Status::OK;
      }
      if (closing_) return FinishLocked();
      WriteNextLocked();
      if (!writing_ && resume_) {
        resume_ = false;
        resume = true;
      }
    }
    if (resume) Begin();
  }

  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    reactor_ = nullptr;
  }

 private:
  void WriteNextLocked() {
    if (writing_ || queue_.empty() || closing_) return;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    // With more events queued, let gRPC buffer this one so a run of events goes out in one TCP
    // write; the last of the run (no hint) flushes. Measured +14-19% trials/s in the bench.
    grpc::WriteOptions options;
    if (!queue_.empty()) options.set_buffer_hint();
    reactor_->StartWrite(&current_, options);
  }

  void FinishLocked() {
    if (finished_) return;
    finished_ = true;
    reactor_->Finish(close_status_);
  }

  Coordinator* coordinator_;
  std::mutex mu_;
  grpc::ServerWriteReactor<v1::SweepEvent>* reactor_;  // nullptr once the RPC is done.
  const int64_t sweep_id_;
  const bool skip_progress_;
  int64_t last_seq_;  // Last event queued; where a resumed replay starts.
  std::deque<v1::SweepEvent> queue_;
  v1::SweepEvent current_;  // The event being written; gRPC reads it until OnWriteDone.
  bool writing_ = false;
  bool resume_ = false;
  bool closing_ = false;
  bool finished_ = false;
  grpc::Status close_status_;
};

class WatchReactor final : public grpc::ServerWriteReactor<v1::SweepEvent> {
 public:
  WatchReactor(Coordinator* coordinator, const v1::WatchSweepRequest& request)
      : sink_(std::make_shared<StreamSink>(coordinator, this, request)) {
    sink_->Begin();
  }
  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }
  void OnCancel() override { sink_->Close(Status::Ok()); }
  void OnDone() override {
    sink_->Detach();
    delete this;
  }

 private:
  std::shared_ptr<StreamSink> sink_;
};

}  // namespace

grpc::Status ToGrpcStatus(const Status& status) {
  using C = Status::Code;
  switch (status.code()) {
    case C::kOk: return grpc::Status::OK;
    case C::kInvalidArgument: return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, status.message());
    case C::kNotFound: return grpc::Status(grpc::StatusCode::NOT_FOUND, status.message());
    case C::kFailedPrecondition: return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, status.message());
    case C::kUnavailable: return grpc::Status(grpc::StatusCode::UNAVAILABLE, status.message());
    case C::kInternal: return grpc::Status(grpc::StatusCode::INTERNAL, status.message());
  }
  return grpc::Status(grpc::StatusCode::UNKNOWN, status.message());
}

grpc::ServerUnaryReactor* SweepServiceImpl::SubmitSweep(grpc::CallbackServerContext* ctx,
                                                        const v1::SubmitSweepRequest* request,
                                                        v1::SubmitSweepResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->SubmitSweep(*request, response, Finisher(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* SweepServiceImpl::GetSweep(grpc::CallbackServerContext* ctx, const v1::GetSweepRequest* request,
                                                     v1::GetSweepResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->GetSweep(*request, response, Finisher(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* SweepServiceImpl::ListSweeps(grpc::CallbackServerContext* ctx,
                                                       const v1::ListSweepsRequest* request,
                                                       v1::ListSweepsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->ListSweeps(*request, response, Finisher(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* SweepServiceImpl::CancelSweep(grpc::CallbackServerContext* ctx,
                                                        const v1::CancelSweepRequest* request,
                                                        v1::CancelSweepResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->CancelSweep(*request, response, Finisher(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* SweepServiceImpl::ListTrials(grpc::CallbackServerContext* ctx,
                                                       const v1::ListTrialsRequest* request,
                                                       v1::ListTrialsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->ListTrials(*request, response, Finisher(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* SweepServiceImpl::GetBestConfig(grpc::CallbackServerContext* ctx,
                                                          const v1::GetBestConfigRequest* request,
                                                          v1::GetBestConfigResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->GetBestConfig(*request, response, Finisher(reactor));
  return reactor;
}

grpc::ServerWriteReactor<v1::SweepEvent>* SweepServiceImpl::WatchSweep(grpc::CallbackServerContext* ctx,
                                                                       const v1::WatchSweepRequest* request) {
  return new WatchReactor(coordinator_, *request);
}

grpc::ServerUnaryReactor* WorkerServiceImpl::AcquireTrial(grpc::CallbackServerContext* ctx,
                                                          const v1::AcquireTrialRequest* request,
                                                          v1::AcquireTrialResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  double wait = std::max(0.0, request->wait_seconds());
  // Answer "no trial" a little before the caller's deadline rather than let the call fail.
  auto until_deadline = std::chrono::duration<double>(ctx->deadline() - std::chrono::system_clock::now()).count();
  wait = std::max(0.0, std::min(wait, until_deadline - 0.25));
  coordinator_->AcquireTrial(*request, response, std::chrono::duration<double>(wait),
                             [ctx] { return ctx->IsCancelled(); }, Finisher(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ReportProgress(grpc::CallbackServerContext* ctx,
                                                            const v1::ReportProgressRequest* request,
                                                            v1::ReportProgressResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->ReportProgress(*request, response, Finisher(reactor));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CompleteTrial(grpc::CallbackServerContext* ctx,
                                                           const v1::CompleteTrialRequest* request,
                                                           v1::CompleteTrialResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->CompleteTrial(*request, response, Finisher(reactor));
  return reactor;
}

Status CoordinatorServer::Start(Coordinator* coordinator, const std::string& address,
                                std::unique_ptr<CoordinatorServer>* out) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer(coordinator));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(&server->sweeps_);
  builder.RegisterService(&server->workers_);
  builder.SetMaxReceiveMessageSize(64 << 20);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return Status::Unavailable(fmt::format("cannot listen on {} (address in use or invalid?)", address));
  }
  *out = std::move(server);
  return Status::Ok();
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

void CoordinatorServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  // The coordinator first, so parked long-polls and watch streams end and Shutdown can finish.
  coordinator_->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace moesweep
