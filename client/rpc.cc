#include "client/rpc.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <sstream>

#include <fmt/format.h>

namespace moesweep::client {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "error";
  }
}

bool Contains(const std::string& haystack, const std::string& needle) {
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [](char a, char b) { return std::tolower(a) == std::tolower(b); });
  return it != haystack.end();
}

// gRPC's transport messages are long ("failed to connect to all addresses; last error: UNKNOWN:
// ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"); name the cause only.
std::string TransportCause(const std::string& message) {
  if (Contains(message, "connection refused")) return "connection refused";
  if (Contains(message, "dns resolution failed") || Contains(message, "domain name not found") ||
      Contains(message, "name or service not known")) {
    return "unknown host";
  }
  if (Contains(message, "no route to host")) return "no route to host";
  if (Contains(message, "connection reset") || Contains(message, "socket closed") ||
      Contains(message, "connection closed")) {
    return "connection lost";
  }
  if (Contains(message, "failed to connect")) return "failed to connect";
  return "";
}

}  // namespace

Coordinator Connect(const std::string& address, double timeout_s, const rpc::ClientSecurity& security) {
  Coordinator c;
  c.address = address;
  c.timeout_s = timeout_s;
  // Answers are paged to stay under gRPC's default 4 MiB; GetSweep of a sweep with many large
  // stages is not, so the CLI takes more rather than fail on it.
  c.channel = rpc::MakeChannel(address, security, rpc::Backoff{250, 5000}, 64 << 20);
  c.stub = v1::SweepService::NewStub(c.channel);
  return c;
}

void SetDeadline(const Coordinator& coordinator, grpc::ClientContext* context) {
  auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(coordinator.timeout_s));
  context->set_deadline(std::chrono::system_clock::now() + timeout);
}

bool IsUnreachable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

std::string DescribeUnreachable(const grpc::Status& status, const Coordinator& coordinator) {
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return fmt::format("coordinator at {} did not answer within {} s", coordinator.address, coordinator.timeout_s);
  }
  std::string cause = TransportCause(status.error_message());
  if (!cause.empty()) return fmt::format("cannot reach coordinator at {} ({})", coordinator.address, cause);
  // The coordinator itself answered UNAVAILABLE (shutting down, database failure): pass its reason.
  return fmt::format("coordinator at {} is unavailable: {}", coordinator.address, status.error_message());
}

int ReportRpcError(const grpc::Status& status, const Coordinator& coordinator, const std::string& subject,
                   std::ostream& err) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      err << "moesweep: " << DescribeUnreachable(status, coordinator) << "\n";
      return kExitUnreachable;
    case grpc::StatusCode::INVALID_ARGUMENT: {
      // One line per problem, as ParseSweepSpec writes them; each names its JSON path.
      std::istringstream lines(status.error_message());
      std::string prefix = subject.empty() ? "moesweep: " : "moesweep: " + subject + ": ";
      for (std::string line; std::getline(lines, line);) err << prefix << line << "\n";
      return kExitUsage;
    }
    case grpc::StatusCode::UNAUTHENTICATED:
      err << fmt::format("moesweep: coordinator at {} refused the call: {} (give a token with ${} or --token-file)\n",
                         coordinator.address, status.error_message(), rpc::kTokenEnv);
      return kExitError;
    case grpc::StatusCode::PERMISSION_DENIED:
      err << fmt::format("moesweep: coordinator at {} refused the call: {}\n", coordinator.address,
                         status.error_message());
      return kExitError;
    case grpc::StatusCode::NOT_FOUND:
      err << "moesweep: " << (status.error_message().empty() ? subject + ": not found" : status.error_message())
          << "\n";
      return kExitNotFound;
    default:
      err << fmt::format("moesweep: coordinator at {} answered {}: {}\n", coordinator.address,
                         CodeName(status.error_code()), status.error_message());
      return kExitError;
  }
}

}  // namespace moesweep::client
