#include "common/status.h"

namespace moesweep {

std::string Status::ToString() const {
  const char* name = "OK";
  switch (code_) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: name = "invalid argument"; break;
    case Code::kNotFound: name = "not found"; break;
    case Code::kFailedPrecondition: name = "failed precondition"; break;
    case Code::kUnavailable: name = "unavailable"; break;
    case Code::kInternal: name = "internal error"; break;
    case Code::kUnauthenticated: name = "unauthenticated"; break;
    case Code::kPermissionDenied: name = "permission denied"; break;
  }
  return std::string(name) + ": " + message_;
}

}  // namespace moesweep
