// A fake coordinator for the CLI tests: a SweepService on 127.0.0.1 with canned answers, that
// records what it was asked and can break the watch stream like a restarting coordinator.
#ifndef MOESWEEP_TESTS_CLIENT_FAKE_SWEEP_SERVICE_H_
#define MOESWEEP_TESTS_CLIENT_FAKE_SWEEP_SERVICE_H_

#include <atomic>
#include <chrono>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "moesweep/v1/moesweep.grpc.pb.h"

namespace moesweep::client::cli_testing {

class FakeSweepService final : public v1::SweepService::Service {
 public:
  static constexpr int64_t kSweepId = 7;  // Every other id is NOT_FOUND.

  // Canned answers; set them before the CLI runs.
  grpc::Status submit_status = grpc::Status::OK;
  v1::SubmitSweepResponse submit_response;
  v1::GetSweepResponse sweep;
  v1::ListSweepsResponse sweeps;
  v1::ListTrialsResponse trials;
  v1::GetBestConfigResponse best;
  v1::CancelSweepResponse cancel;
  std::vector<v1::SweepEvent> events;  // What WatchSweep replays (seq > after_seq).
  // Watch call i (0-based) sends events up to drop_after[i], then fails with UNAVAILABLE.
  std::vector<int64_t> drop_after;
  int64_t resend_overlap = 0;          // Misbehave: also resend this many events before after_seq.
  bool hold_open = false;              // After the last event, keep the stream open until cancelled.
  std::chrono::milliseconds unary_delay{0};
  int trials_page = 0;                 // > 0: ListTrials answers pages of this many trials.

  // What the CLI sent.
  std::mutex mutex;
  std::string submitted_spec;
  v1::ListTrialsRequest trials_request;
  v1::GetBestConfigRequest best_request;
  int32_t sweeps_limit = -1;
  std::vector<int64_t> watch_after_seqs;
  std::atomic<int> events_written{0};
  std::atomic<int> cancel_calls{0};

  std::vector<int64_t> AfterSeqs() {
    std::lock_guard<std::mutex> lock(mutex);
    return watch_after_seqs;
  }

  grpc::Status SubmitSweep(grpc::ServerContext*, const v1::SubmitSweepRequest* request,
                           v1::SubmitSweepResponse* response) override {
    Delay();
    std::lock_guard<std::mutex> lock(mutex);
    submitted_spec = request->spec_json();
    *response = submit_response;
    return submit_status;
  }

  grpc::Status GetSweep(grpc::ServerContext*, const v1::GetSweepRequest* request,
                        v1::GetSweepResponse* response) override {
    Delay();
    if (request->sweep_id() != kSweepId) return NotFound(request->sweep_id());
    *response = sweep;
    return grpc::Status::OK;
  }

  grpc::Status ListSweeps(grpc::ServerContext*, const v1::ListSweepsRequest* request,
                          v1::ListSweepsResponse* response) override {
    Delay();
    std::lock_guard<std::mutex> lock(mutex);
    sweeps_limit = request->limit();
    *response = sweeps;
    return grpc::Status::OK;
  }

  grpc::Status CancelSweep(grpc::ServerContext*, const v1::CancelSweepRequest* request,
                           v1::CancelSweepResponse* response) override {
    Delay();
    ++cancel_calls;
    if (request->sweep_id() != kSweepId) return NotFound(request->sweep_id());
    *response = cancel;
    return grpc::Status::OK;
  }

  grpc::Status ListTrials(grpc::ServerContext*, const v1::ListTrialsRequest* request,
                          v1::ListTrialsResponse* response) override {
    Delay();
    if (request->sweep_id() != kSweepId) return NotFound(request->sweep_id());
    std::lock_guard<std::mutex> lock(mutex);
    trials_request = *request;
    if (trials_page <= 0) {
      *response = trials;
      return grpc::Status::OK;
    }
    int from = request->page_token().empty() ? 0 : std::stoi(request->page_token());
    for (int i = from; i < std::min(trials.trials_size(), from + trials_page); ++i) *response->add_trials() = trials.trials(i);
    if (from + trials_page < trials.trials_size()) response->set_next_page_token(std::to_string(from + trials_page));
    return grpc::Status::OK;
  }

  grpc::Status GetBestConfig(grpc::ServerContext*, const v1::GetBestConfigRequest* request,
                             v1::GetBestConfigResponse* response) override {
    Delay();
    if (request->sweep_id() != kSweepId) return NotFound(request->sweep_id());
    std::lock_guard<std::mutex> lock(mutex);
    best_request = *request;
    *response = best;
    return grpc::Status::OK;
  }

  grpc::Status WatchSweep(grpc::ServerContext* context, const v1::WatchSweepRequest* request,
                          grpc::ServerWriter<v1::SweepEvent>* writer) override {
    size_t call;
    {
      std::lock_guard<std::mutex> lock(mutex);
      call = watch_after_seqs.size();
      watch_after_seqs.push_back(request->after_seq());
    }
    if (request->sweep_id() != kSweepId) return NotFound(request->sweep_id());
    int64_t last = call < drop_after.size() ? drop_after[call] : std::numeric_limits<int64_t>::max();
    for (const v1::SweepEvent& e : events) {
      if (e.seq() > request->after_seq() - resend_overlap && e.seq() <= last) {
        if (!writer->Write(e)) return grpc::Status::CANCELLED;
        ++events_written;
      }
    }
    if (call < drop_after.size()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
    while (hold_open && !context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return grpc::Status::OK;
  }

 private:
  static grpc::Status NotFound(int64_t id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no sweep with id " + std::to_string(id));
  }
  void Delay() {
    if (unary_delay.count() > 0) std::this_thread::sleep_for(unary_delay);
  }
};

// The fake served on 127.0.0.1: an ephemeral port, or `port` to come back on the same address.
class FakeCoordinator {
 public:
  explicit FakeCoordinator(FakeSweepService* service, int port = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~FakeCoordinator() { Stop(); }

  // Like a coordinator going down: open streams are cancelled, the port closes.
  void Stop() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
      server_->Wait();
      server_.reset();
    }
  }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace moesweep::client::cli_testing

#endif  // MOESWEEP_TESTS_CLIENT_FAKE_SWEEP_SERVICE_H_
