#include "worker/agent/report_stream.h"

#include <fmt/format.h>

namespace moesweep::worker {
namespace {

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace

ReportStream::~ReportStream() {
  Close(1.0);
  cq_.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq_.Next(&tag, &ok)) {
  }
}

grpc::Status ReportStream::Send(const v1::ReportProgressRequest& request, v1::ReportProgressResponse* response,
                                double timeout_seconds) {
  if (unary_) {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(timeout_seconds));
    return stub_->ReportProgress(&ctx, request, response);
  }
  const auto deadline = DeadlineIn(timeout_seconds);
  if (!stream_) {
    ctx_ = std::make_unique<grpc::ClientContext>();
    // Corked: the call's metadata leaves with the first report, and StartCall completes nothing
    // (so no tag to wait for; its operation set is the one Write uses).
    ctx_->set_initial_metadata_corked(true);
    stream_ = stub_->PrepareAsyncReportProgressStream(ctx_.get(), &cq_);
    stream_->StartCall(this);
  }
  // The write and the read of its answer go out together.
  stream_->Write(request, this);
  stream_->Read(response, this);
  pending_ += 2;
  Outcome outcome = Await(deadline);
  if (outcome == Outcome::kOk) return grpc::Status::OK;
  bool timed_out = outcome == Outcome::kTimedOut;
  grpc::Status status = End(timed_out);
  if (timed_out) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        fmt::format("no answer to a progress report within {} s", timeout_seconds));
  }
  if (status.ok()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator ended the report stream");
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    unary_ = true;  // A coordinator from before ReportProgressStream: report the unary way.
    return Send(request, response, timeout_seconds);
  }
  return status;
}

void ReportStream::Close(double timeout_seconds) {
  if (!stream_) return;
  stream_->WritesDone(this);
  ++pending_;
  End(Await(DeadlineIn(timeout_seconds)) == Outcome::kTimedOut);
}

ReportStream::Outcome ReportStream::Await(std::chrono::system_clock::time_point deadline) {
  bool all_ok = true;
  while (pending_ > 0) {
    void* tag = nullptr;
    bool ok = false;
    if (cq_.AsyncNext(&tag, &ok, deadline) != grpc::CompletionQueue::GOT_EVENT) return Outcome::kTimedOut;
    --pending_;
    all_ok = all_ok && ok;
  }
  return all_ok ? Outcome::kOk : Outcome::kFailed;
}

grpc::Status ReportStream::End(bool cancel) {
  if (cancel) ctx_->TryCancel();
  void* tag = nullptr;
  bool ok = false;
  for (; pending_ > 0; --pending_) cq_.Next(&tag, &ok);  // Prompt once the call is over or cancelled.
  grpc::Status status;
  stream_->Finish(&status, this);
  cq_.Next(&tag, &ok);
  stream_.reset();
  ctx_.reset();
  return status;
}

}  // namespace moesweep::worker
