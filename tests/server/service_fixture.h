// A coordinator on a temporary database behind its real gRPC server, reached over an in-process
// channel: the fixture of the service-level suites.
#ifndef MOESWEEP_TESTS_SERVER_SERVICE_FIXTURE_H_
#define MOESWEEP_TESTS_SERVER_SERVICE_FIXTURE_H_

#include <chrono>
#include <memory>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "moesweep/v1/moesweep.grpc.pb.h"
#include "server/coordinator.h"
#include "server/service.h"
#include "tests/server/coordinator_test_util.h"

namespace moesweep {

class ServiceFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Coordinator::Open(db_.path(), {}, &clock_, &coordinator_).ok());
    ASSERT_TRUE(CoordinatorServer::Start(coordinator_.get(), "127.0.0.1:0", Security(), &server_).ok());
    channel_ = server_->server()->InProcessChannel(grpc::ChannelArguments());
    sweeps_ = v1::SweepService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }
  void TearDown() override {
    server_.reset();
    coordinator_.reset();
  }

  // The server's tokens and TLS; none by default.
  virtual ServerSecurity Security() { return {}; }

  static void Deadline(grpc::ClientContext* ctx, int seconds = 10) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }

  TempDb db_{"service_fixture"};
  SystemClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SweepService::Stub> sweeps_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

}  // namespace moesweep

#endif  // MOESWEEP_TESTS_SERVER_SERVICE_FIXTURE_H_
