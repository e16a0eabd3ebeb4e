#include "dashboard/api.h"

#include <chrono>

#include <fmt/format.h>

#include "client/proto_json.h"

namespace moesweep::dashboard {

ApiReply ErrorReply(const grpc::Status& status, const std::string& coordinator) {
  ApiReply reply;
  bool unreachable = false;
  switch (status.error_code()) {
    case grpc::StatusCode::NOT_FOUND:
      reply.status = 404;
      break;
    case grpc::StatusCode::INVALID_ARGUMENT:
      reply.status = 400;
      break;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      reply.status = 503;
      unreachable = true;
      break;
    default:
      reply.status = 502;
  }
  std::string message = status.error_message();
  if (unreachable) message = fmt::format("cannot reach the coordinator at {}: {}", coordinator, message);
  static const char* kNames[] = {"OK",         "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",   "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                 "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",      "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  int code = static_cast<int>(status.error_code());
  std::string name = code >= 0 && code <= 16 ? kNames[code] : std::to_string(code);
  reply.body = {{"error", {{"code", name}, {"message", message}}}, {"coordinator_unreachable", unreachable}};
  return reply;
}

void SweepApi::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s_ * 1000)));
}

ApiReply SweepApi::ListSweeps(int limit, const std::string& page_token) const {
  v1::ListSweepsRequest request;
  request.set_limit(limit);
  request.set_page_token(page_token);
  v1::ListSweepsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status status = stub_->ListSweeps(&context, request, &response);
  if (!status.ok()) return ErrorReply(status, coordinator_);
  return {200, client::ProtoToJson(response)};
}

ApiReply SweepApi::GetSweep(int64_t sweep_id) const {
  v1::GetSweepRequest request;
  request.set_sweep_id(sweep_id);
  v1::GetSweepResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status status = stub_->GetSweep(&context, request, &response);
  if (!status.ok()) return ErrorReply(status, coordinator_);
  return {200, client::ProtoToJson(response)};
}

ApiReply SweepApi::ListTrials(int64_t sweep_id, std::optional<int> stage, const std::string& state, int limit,
                              const std::string& page_token) const {
  v1::ListTrialsRequest request;
  request.set_sweep_id(sweep_id);
  if (stage) request.set_stage(*stage);
  if (!state.empty()) {
    v1::TrialState value;
    if (!v1::TrialState_Parse(state, &value)) {
      return {400, {{"error", {{"code", "INVALID_ARGUMENT"}, {"message", fmt::format("unknown trial state '{}'", state)}}},
                    {"coordinator_unreachable", false}}};
    }
    request.set_state(value);
  }
  request.set_limit(limit);
  request.set_page_token(page_token);
  v1::ListTrialsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::Status status = stub_->ListTrials(&context, request, &response);
  if (!status.ok()) return ErrorReply(status, coordinator_);
  return {200, client::ProtoToJson(response)};
}

ApiReply SweepApi::GetTrial(int64_t sweep_id, int64_t trial_id) const {
  v1::ListTrialsRequest request;
  request.set_sweep_id(sweep_id);
  request.set_limit(500);
  for (;;) {
    v1::ListTrialsResponse page;
    grpc::ClientContext context;
    SetDeadline(&context);
    grpc::Status status = stub_->ListTrials(&context, request, &page);
    if (!status.ok()) return ErrorReply(status, coordinator_);
    for (const v1::Trial& t : page.trials()) {
      if (t.trial_id() == trial_id) return {200, client::ProtoToJson(t)};
    }
    bool passed = page.trials_size() > 0 && page.trials(page.trials_size() - 1).trial_id() > trial_id;
    if (passed || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  return {404, {{"error", {{"code", "NOT_FOUND"}, {"message", fmt::format("sweep {} has no trial {}", sweep_id, trial_id)}}},
                {"coordinator_unreachable", false}}};
}

}  // namespace moesweep::dashboard
