// Tokens at the gRPC edge, in-process: each call is admitted or refused before the coordinator
// sees it, by the role of the token in its "authorization" metadata.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "moesweep/v1/moesweep.grpc.pb.h"
#include "server/auth.h"
#include "server/service.h"
#include "tests/server/coordinator_test_util.h"
#include "tests/server/service_fixture.h"

namespace moesweep {
namespace {

constexpr char kWorker[] = "worker-token-aaaaaaaaaaaaaaaa";
constexpr char kRead[] = "read-token-bbbbbbbbbbbbbbbb";
constexpr char kSubmit[] = "submit-token-cccccccccccccccc";

constexpr const char* kSpec = R"({
  "name": "auth-test",
  "objective": {"metric": "val_loss", "goal": "minimize"},
  "stages": [{"name": "width", "grid": {"expert_hidden_dim": [16, 32]}}]
})";

class ServiceAuthTest : public ServiceFixture {
 protected:
  ServerSecurity Security() override {
    auto tokens = std::make_shared<TokenTable>();
    std::string file = TokenFileLine(Role::kWorker, kWorker, "farm") + "\n" + TokenFileLine(Role::kRead, kRead, "") +
                       "\n" + TokenFileLine(Role::kSubmit, kSubmit, "admin") + "\n";
    EXPECT_TRUE(TokenTable::Parse(file, "tokens", tokens.get()).ok());
    ServerSecurity security;
    security.tokens = tokens;
    return security;
  }

  // A context with a deadline and, unless `token` is null, the bearer token.
  static std::unique_ptr<grpc::ClientContext> Ctx(const char* token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (token != nullptr) ctx->AddMetadata("authorization", std::string("Bearer ") + token);
    return ctx;
  }

  grpc::Status Submit(const char* token, v1::SubmitSweepResponse* out = nullptr) {
    v1::SubmitSweepRequest request;
    request.set_spec_json(kSpec);
    v1::SubmitSweepResponse response;
    return sweeps_->SubmitSweep(Ctx(token).get(), request, out ? out : &response);
  }
  grpc::Status ListSweeps(const char* token, v1::ListSweepsResponse* out = nullptr) {
    v1::ListSweepsResponse response;
    return sweeps_->ListSweeps(Ctx(token).get(), v1::ListSweepsRequest(), out ? out : &response);
  }
  grpc::Status Acquire(const char* token, v1::AcquireTrialResponse* out = nullptr) {
    v1::AcquireTrialRequest request;
    request.set_worker("w");
    request.set_wait_seconds(0);
    v1::AcquireTrialResponse response;
    return workers_->AcquireTrial(Ctx(token).get(), request, out ? out : &response);
  }
  grpc::Status Watch(const char* token, int64_t sweep_id) {
    v1::WatchSweepRequest request;
    request.set_sweep_id(sweep_id);
    auto ctx = Ctx(token);
    auto reader = sweeps_->WatchSweep(ctx.get(), request);
    v1::SweepEvent event;
    while (reader->Read(&event)) {
      if (event.seq() >= 1) ctx->TryCancel();  // One event shows the stream was admitted.
    }
    return reader->Finish();
  }
  grpc::Status ReportStream(const char* token) {
    auto ctx = Ctx(token);
    auto stream = workers_->ReportProgressStream(ctx.get());
    v1::ReportProgressRequest report;
    report.set_lease_token("no-such-lease");
    stream->Write(report);
    stream->WritesDone();
    v1::ReportProgressResponse reply;
    while (stream->Read(&reply)) {
    }
    return stream->Finish();
  }
};

TEST_F(ServiceAuthTest, CallsWithoutATokenAreUnauthenticated) {
  EXPECT_EQ(Submit(nullptr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListSweeps(nullptr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Acquire(nullptr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Watch(nullptr, 1).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ReportStream(nullptr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ServiceAuthTest, AWrongTokenIsUnauthenticatedAndChangesNothing) {
  grpc::Status s = Submit("submit-token-ccccccccccccccccX");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(s.error_message().find("cccc"), std::string::npos) << "the token is echoed: " << s.error_message();
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Basic ") + kSubmit);
  v1::SubmitSweepRequest request;
  request.set_spec_json(kSpec);
  v1::SubmitSweepResponse response;
  EXPECT_EQ(sweeps_->SubmitSweep(&ctx, request, &response).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::ListSweepsResponse sweeps;
  ASSERT_TRUE(ListSweeps(kSubmit, &sweeps).ok());
  EXPECT_EQ(sweeps.sweeps_size(), 0);
}

TEST_F(ServiceAuthTest, AReadTokenReadsButCannotSubmitOrCancel) {
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(kSubmit, &submitted).ok());

  grpc::Status s = Submit(kRead);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(), "submitting or cancelling sweeps needs a submit token; this is a read token");
  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(submitted.sweep_id());
  v1::CancelSweepResponse cancelled;
  EXPECT_EQ(sweeps_->CancelSweep(Ctx(kRead).get(), cancel, &cancelled).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Acquire(kRead).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  v1::ListSweepsResponse sweeps;
  ASSERT_TRUE(ListSweeps(kRead, &sweeps).ok());
  ASSERT_EQ(sweeps.sweeps_size(), 1);  // The refused submit made nothing.
  EXPECT_EQ(sweeps.sweeps(0).state(), v1::SWEEP_RUNNING);
  v1::GetSweepRequest get;
  get.set_sweep_id(submitted.sweep_id());
  v1::GetSweepResponse sweep;
  EXPECT_TRUE(sweeps_->GetSweep(Ctx(kRead).get(), get, &sweep).ok());
  v1::ListTrialsRequest list;
  list.set_sweep_id(submitted.sweep_id());
  v1::ListTrialsResponse trials;
  EXPECT_TRUE(sweeps_->ListTrials(Ctx(kRead).get(), list, &trials).ok());
  EXPECT_EQ(trials.trials_size(), 2);
  for (const auto& t : trials.trials()) EXPECT_EQ(t.state(), v1::TRIAL_PENDING);  // The refused acquire leased none.
  v1::GetBestConfigRequest best;
  best.set_sweep_id(submitted.sweep_id());
  v1::GetBestConfigResponse best_response;
  EXPECT_TRUE(sweeps_->GetBestConfig(Ctx(kRead).get(), best, &best_response).ok());
  EXPECT_EQ(Watch(kRead, submitted.sweep_id()).error_code(), grpc::StatusCode::CANCELLED);  // Admitted; we hung up.
}

TEST_F(ServiceAuthTest, AWorkerTokenCallsOnlyWorkerService) {
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(kSubmit, &submitted).ok());
  EXPECT_EQ(Submit(kWorker).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::Status s = ListSweeps(kWorker);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(), "reading sweeps needs a read or submit token; this is a worker token (farm)");
  EXPECT_EQ(Watch(kWorker, submitted.sweep_id()).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  v1::AcquireTrialResponse trial;
  ASSERT_TRUE(Acquire(kWorker, &trial).ok());
  ASSERT_TRUE(trial.has_trial());
  v1::ReportProgressRequest report;
  report.set_lease_token(trial.lease_token());
  report.set_step(1);
  v1::ReportProgressResponse reply;
  EXPECT_TRUE(workers_->ReportProgress(Ctx(kWorker).get(), report, &reply).ok());
  // Past the edge, the stream's report reaches the coordinator, which knows no such lease.
  EXPECT_EQ(ReportStream(kWorker).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  v1::CompleteTrialRequest complete;
  complete.set_lease_token(trial.lease_token());
  complete.set_outcome(v1::CompleteTrialRequest::RELEASED);
  v1::CompleteTrialResponse done;
  EXPECT_TRUE(workers_->CompleteTrial(Ctx(kWorker).get(), complete, &done).ok());
  EXPECT_EQ(workers_->CompleteTrial(Ctx(kRead).get(), complete, &done).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(ServiceAuthTest, ASubmitTokenCallsEverything) {
  v1::SubmitSweepResponse submitted;
  ASSERT_TRUE(Submit(kSubmit, &submitted).ok());
  EXPECT_TRUE(ListSweeps(kSubmit).ok());
  v1::AcquireTrialResponse trial;
  ASSERT_TRUE(Acquire(kSubmit, &trial).ok());
  EXPECT_TRUE(trial.has_trial());
  v1::CancelSweepRequest cancel;
  cancel.set_sweep_id(submitted.sweep_id());
  v1::CancelSweepResponse cancelled;
  EXPECT_TRUE(sweeps_->CancelSweep(Ctx(kSubmit).get(), cancel, &cancelled).ok());
}

TEST_F(ServiceAuthTest, HealthCheckNeedsNoToken) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(Ctx(nullptr).get(), grpc::health::v1::HealthCheckRequest(), &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace moesweep
