// The gRPC edge: SweepService and WorkerService on the callback API, forwarding to a Coordinator
// and converting its Status values to grpc::Status. No logic lives here.
#ifndef MOESWEEP_SERVER_SERVICE_H_
#define MOESWEEP_SERVER_SERVICE_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "moesweep/v1/moesweep.grpc.pb.h"
#include "server/coordinator.h"

namespace moesweep {

grpc::Status ToGrpcStatus(const Status& status);

class SweepServiceImpl final : public v1::SweepService::CallbackService {
 public:
  explicit SweepServiceImpl(Coordinator* coordinator) : coordinator_(coordinator) {}

  grpc::ServerUnaryReactor* SubmitSweep(grpc::CallbackServerContext* ctx, const v1::SubmitSweepRequest* request,
                                        v1::SubmitSweepResponse* response) override;
  grpc::ServerUnaryReactor* GetSweep(grpc::CallbackServerContext* ctx, const v1::GetSweepRequest* request,
                                     v1::GetSweepResponse* response) override;
  grpc::ServerUnaryReactor* ListSweeps(grpc::CallbackServerContext* ctx, const v1::ListSweepsRequest* request,
                                       v1::ListSweepsResponse* response) override;
  grpc::ServerUnaryReactor* CancelSweep(grpc::CallbackServerContext* ctx, const v1::CancelSweepRequest* request,
                                        v1::CancelSweepResponse* response) override;
  grpc::ServerUnaryReactor* ListTrials(grpc::CallbackServerContext* ctx, const v1::ListTrialsRequest* request,
                                       v1::ListTrialsResponse* response) override;
  grpc::ServerUnaryReactor* GetBestConfig(grpc::CallbackServerContext* ctx, const v1::GetBestConfigRequest* request,
                                          v1::GetBestConfigResponse* response) override;
  grpc::ServerWriteReactor<v1::SweepEvent>* WatchSweep(grpc::CallbackServerContext* ctx,
                                                       const v1::WatchSweepRequest* request) override;

 private:
  Coordinator* coordinator_;
};

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  explicit WorkerServiceImpl(Coordinator* coordinator) : coordinator_(coordinator) {}

  grpc::ServerUnaryReactor* AcquireTrial(grpc::CallbackServerContext* ctx, const v1::AcquireTrialRequest* request,
                                         v1::AcquireTrialResponse* response) override;
  grpc::ServerUnaryReactor* ReportProgress(grpc::CallbackServerContext* ctx, const v1::ReportProgressRequest* request,
                                           v1::ReportProgressResponse* response) override;
  grpc::ServerUnaryReactor* CompleteTrial(grpc::CallbackServerContext* ctx, const v1::CompleteTrialRequest* request,
                                          v1::CompleteTrialResponse* response) override;

 private:
  Coordinator* coordinator_;
};

// A coordinator served over gRPC, with the health service and server reflection turned on.
class CoordinatorServer {
 public:
  // Listens on `address` ("127.0.0.1:0" picks a free port; see port()).
  static Status Start(Coordinator* coordinator, const std::string& address, std::unique_ptr<CoordinatorServer>* out);
  ~CoordinatorServer();
  // Stops taking calls, ends long-polls and watches, and waits for calls in flight.
  void Shutdown();
  int port() const { return port_; }
  grpc::Server* server() { return server_.get(); }

 private:
  CoordinatorServer(Coordinator* coordinator) : coordinator_(coordinator), sweeps_(coordinator), workers_(coordinator) {}
  Coordinator* coordinator_;
  SweepServiceImpl sweeps_;
  WorkerServiceImpl workers_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_SERVICE_H_
