// The dashboard's JSON API: SweepService answers as JSON (the CLI's --json shapes), and gRPC
// failures as HTTP statuses. No HTTP here, so tests call it directly.
#ifndef MOESWEEP_DASHBOARD_API_H_
#define MOESWEEP_DASHBOARD_API_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/json.h"
#include "moesweep/v1/moesweep.grpc.pb.h"

namespace moesweep::dashboard {

// An HTTP status and the JSON body to send with it.
struct ApiReply {
  int status = 200;
  Json body;
};

// The body of a failed call: {"error": {"code": "NOT_FOUND", "message": ...}, "coordinator_unreachable": bool}
// with 404 for NOT_FOUND, 400 for INVALID_ARGUMENT, 503 when the coordinator cannot be reached
// or did not answer in time, and 502 for anything else it said.
ApiReply ErrorReply(const grpc::Status& status, const std::string& coordinator);

// One method per endpoint. Thread-safe (the stub is); every call has a deadline of `timeout_s`.
class SweepApi {
 public:
  SweepApi(std::shared_ptr<v1::SweepService::StubInterface> stub, std::string coordinator, double timeout_s)
      : stub_(std::move(stub)), coordinator_(std::move(coordinator)), timeout_s_(timeout_s) {}

  // GET /api/sweeps?limit=N&page_token=T -> {"sweeps": [...], "next_page_token": "..."}
  ApiReply ListSweeps(int limit, const std::string& page_token) const;
  // GET /api/sweeps/{id} -> {"sweep": {... spec_json}, "stages": [...]}
  ApiReply GetSweep(int64_t sweep_id) const;
  // GET /api/sweeps/{id}/trials?stage=S&state=TRIAL_SUCCEEDED&limit=N&page_token=T
  //   -> {"trials": [...], "next_page_token": "..."}; a page ends at `limit` or at about 2 MiB.
  ApiReply ListTrials(int64_t sweep_id, std::optional<int> stage, const std::string& state, int limit,
                      const std::string& page_token) const;
  // GET /api/sweeps/{id}/trials/{trial_id} -> the trial. The API has no GetTrial: this pages
  // ListTrials (id order) until it passes the id.
  ApiReply GetTrial(int64_t sweep_id, int64_t trial_id) const;

 private:
  void SetDeadline(grpc::ClientContext* context) const;

  std::shared_ptr<v1::SweepService::StubInterface> stub_;
  std::string coordinator_;
  double timeout_s_;
};

}  // namespace moesweep::dashboard

#endif  // MOESWEEP_DASHBOARD_API_H_
