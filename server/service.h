// The gRPC edge: SweepService and WorkerService, forwarding each call to a Coordinator and
// converting its Status values to grpc::Status. No logic lives here.
//
// Both services use gRPC's completion-queue API, and the coordinator's own thread polls the queue
// (it is the coordinator's EventLoop). One thread reads a request, runs it in the next batch and
// sends the answer: no hand-off between threads per request. On the 2-core machine of
// BENCHMARKS.md that took the coordinator from about 1,350 to 1,850 trials/s.
#ifndef MOESWEEP_SERVER_SERVICE_H_
#define MOESWEEP_SERVER_SERVICE_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "server/auth.h"
#include "server/coordinator.h"

namespace moesweep {

grpc::Status ToGrpcStatus(const Status& status);

class Endpoint;  // The calls in flight and their completion queue (service.cc).

// A coordinator served over gRPC, with the health service and server reflection turned on.
class CoordinatorServer {
 public:
  // Listens on `address` ("127.0.0.1:0" picks a free port; see port()), plaintext, no tokens.
  static Status Start(Coordinator* coordinator, const std::string& address, std::unique_ptr<CoordinatorServer>* out);
  // The same with TLS and tokens as `security` says. Tokens are checked when each call's request
  // has arrived, before the coordinator sees it; grpc.health.v1 Check needs none (probes have
  // none), nor does server reflection (it tells only what the public .proto says).
  static Status Start(Coordinator* coordinator, const std::string& address, const ServerSecurity& security,
                      std::unique_ptr<CoordinatorServer>* out);
  ~CoordinatorServer();
  // Stops taking calls, ends long-polls, watches and report streams, and waits for calls in
  // flight. Shuts the coordinator down too: its thread is what serves the calls.
  void Shutdown();
  int port() const { return port_; }
  // Bytes of events queued for watchers that have not taken them yet (bounded; for tests).
  size_t queued_watch_bytes() const;
  grpc::Server* server() { return server_.get(); }

 private:
  explicit CoordinatorServer(Coordinator* coordinator);
  Coordinator* coordinator_;
  std::shared_ptr<const TokenTable> tokens_;  // Read by endpoint_.
  std::unique_ptr<Endpoint> endpoint_;
  std::unique_ptr<grpc::Server> server_;  // Declared after endpoint_: destroyed before it.
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_SERVICE_H_
