// ReportStream: a slot's ReportProgress calls over one ReportProgressStream, which costs the
// coordinator a fraction of a unary call per report. Each Send still has its own deadline, like a
// unary call: a coordinator that does not answer in time gets the stream cancelled. A coordinator
// without the stream (UNIMPLEMENTED) gets unary ReportProgress calls instead.
#ifndef MOESWEEP_WORKER_AGENT_REPORT_STREAM_H_
#define MOESWEEP_WORKER_AGENT_REPORT_STREAM_H_

#include <memory>

#include <grpcpp/grpcpp.h>

#include "moesweep/v1/moesweep.grpc.pb.h"

namespace moesweep::worker {

class ReportStream {
 public:
  explicit ReportStream(v1::WorkerService::Stub* stub) : stub_(stub) {}
  ~ReportStream();
  ReportStream(const ReportStream&) = delete;
  ReportStream& operator=(const ReportStream&) = delete;

  // Sends one report and waits up to `timeout_seconds` for its answer. Opens the stream when none
  // is open. On failure the stream is gone and the status is what the unary call would have
  // returned (e.g. FAILED_PRECONDITION for a stale lease, DEADLINE_EXCEEDED); the next Send opens
  // a new one.
  grpc::Status Send(const v1::ReportProgressRequest& request, v1::ReportProgressResponse* response,
                    double timeout_seconds);
  // Ends the stream cleanly if one is open, waiting at most `timeout_seconds`.
  void Close(double timeout_seconds);

 private:
  enum class Outcome { kOk, kFailed, kTimedOut };
  // Collects the operations in flight, until `deadline`.
  Outcome Await(std::chrono::system_clock::time_point deadline);
  // Ends the stream (cancelling it first if `cancel`), collects what is still in flight and
  // returns the call's status.
  grpc::Status End(bool cancel);

  v1::WorkerService::Stub* stub_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::ReportProgressRequest, v1::ReportProgressResponse>> stream_;
  int pending_ = 0;  // Operations started and not yet collected (all use `this` as their tag).
  bool unary_ = false;  // The coordinator has no ReportProgressStream.
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_REPORT_STREAM_H_
