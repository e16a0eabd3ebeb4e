// The CLI's side of the wire: one channel to the coordinator, deadlines for unary calls, and the
// translation of gRPC failures into a message on stderr plus an exit code.
#ifndef MOESWEEP_CLIENT_RPC_H_
#define MOESWEEP_CLIENT_RPC_H_

#include <memory>
#include <ostream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "moesweep/v1/moesweep.grpc.pb.h"
#include "rpc/channel.h"

namespace moesweep::client {

// Exit codes of every command (documented in `moesweep --help` and docs/cli.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitSweepFailed = 1,   // watch / submit --watch: the sweep ended FAILED or CANCELLED.
  kExitUsage = 2,         // Bad command line, unreadable or invalid spec (INVALID_ARGUMENT).
  kExitUnreachable = 3,   // Coordinator unreachable, unavailable, or no answer before the deadline.
  kExitNotFound = 4,      // No sweep with that id.
  kExitError = 5,         // Anything else: an internal coordinator error, an unwritable output file.
  kExitInterrupted = 130, // Ctrl-C while watching (the sweep goes on).
};

struct Coordinator {
  std::string address;   // HOST:PORT, as given; named in every connection error.
  double timeout_s = 10; // Deadline of each unary call.
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::SweepService::Stub> stub;
};

// Makes the channel, with TLS and the token when `security` has them. Nothing connects until the
// first call. Reconnect backoff is kept short (at most 5 s) so a watch resumes soon after a
// coordinator restart.
Coordinator Connect(const std::string& address, double timeout_s, const rpc::ClientSecurity& security = {});

// Sets the unary-call deadline on `context`.
void SetDeadline(const Coordinator& coordinator, grpc::ClientContext* context);

// True when `status` means the coordinator could not be reached or did not answer (exit code 3).
bool IsUnreachable(const grpc::Status& status);

// Prints "moesweep: ..." lines for a failed call and returns the exit code. `subject` prefixes
// INVALID_ARGUMENT lines (e.g. the spec file name) so every validation line names its source.
int ReportRpcError(const grpc::Status& status, const Coordinator& coordinator, const std::string& subject,
                   std::ostream& err);

// "cannot reach coordinator at ADDR (connection refused)" and friends, without the prefix.
std::string DescribeUnreachable(const grpc::Status& status, const Coordinator& coordinator);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_RPC_H_
