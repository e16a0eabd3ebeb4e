// Status: an error as a value (after leveldb::Status). Components return it; only the gRPC edge
// converts it to grpc::Status.
#ifndef MOESWEEP_COMMON_STATUS_H_
#define MOESWEEP_COMMON_STATUS_H_

#include <string>
#include <utility>

namespace moesweep {

class Status {
 public:
  enum class Code {
    kOk,
    kInvalidArgument,
    kNotFound,
    kFailedPrecondition,
    kUnavailable,
    kInternal,
    kUnauthenticated,   // No credentials, or ones nobody issued.
    kPermissionDenied,  // Known caller, call outside its role.
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, std::move(msg)); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status FailedPrecondition(std::string msg) {
    return Status(Code::kFailedPrecondition, std::move(msg));
  }
  static Status Unavailable(std::string msg) { return Status(Code::kUnavailable, std::move(msg)); }
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }
  static Status Unauthenticated(std::string msg) { return Status(Code::kUnauthenticated, std::move(msg)); }
  static Status PermissionDenied(std::string msg) { return Status(Code::kPermissionDenied, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace moesweep

#endif  // MOESWEEP_COMMON_STATUS_H_
