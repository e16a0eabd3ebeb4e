// Who may call what: the coordinator's token file and the check each call passes at the gRPC edge.
//
// A token file has one token per line, "ROLE SHA256HEX [NAME]", `#` starting a comment. Only the
// SHA-256 of each token is stored, so the file is no secret worth stealing (tokens should be long
// and random: unsalted hashes of short ones can be guessed). Roles:
//   worker  WorkerService only (lease, report, complete trials)
//   read    GetSweep, ListSweeps, ListTrials, WatchSweep, GetBestConfig
//   submit  everything: the read calls, SubmitSweep, CancelSweep, and WorkerService too
#ifndef MOESWEEP_SERVER_AUTH_H_
#define MOESWEEP_SERVER_AUTH_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace moesweep {

enum class Role { kWorker, kRead, kSubmit };

// What a method needs. Each gRPC method names one (service.cc).
enum class Permission {
  kWork,    // WorkerService.
  kRead,    // SweepService reads and WatchSweep.
  kSubmit,  // SubmitSweep, CancelSweep.
};

const char* RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);
bool RoleAllows(Role role, Permission permission);

using Sha256Digest = std::array<uint8_t, 32>;
Sha256Digest Sha256(std::string_view data);
std::string ToHex(const Sha256Digest& digest);

// The line of a token file that admits `token` with `role`: "ROLE SHA256HEX[ NAME]".
std::string TokenFileLine(Role role, std::string_view token, const std::string& name);

struct TokenEntry {
  Role role;
  Sha256Digest digest;
  std::string name;  // For messages; "" when the line has none.
};

// The tokens a coordinator accepts. Immutable once loaded, so any thread may read it.
class TokenTable {
 public:
  // Parses a token file's text; errors are "SOURCE:LINE: problem", one per bad line.
  static Status Parse(const std::string& text, const std::string& source, TokenTable* out);
  static Status Load(const std::string& path, TokenTable* out);

  // The entry whose digest is SHA-256(token), or nullptr. The presented token is hashed and the
  // digest compared with every entry by CRYPTO_memcmp, so the time taken does not depend on how
  // much of a stored token a guess got right.
  const TokenEntry* Find(std::string_view token) const;

  // Checks the "authorization" header of a call (nullopt when absent) against `permission`:
  // UNAUTHENTICATED when there is no "Bearer" token or nobody issued it, PERMISSION_DENIED when
  // its role does not allow the call.
  Status Authorize(std::optional<std::string_view> authorization, Permission permission) const;

  size_t size() const { return entries_.size(); }

 private:
  std::vector<TokenEntry> entries_;
};

// How the coordinator meets the network. The default, plaintext without tokens, is for loopback.
struct ServerSecurity {
  std::string tls_cert_pem;  // With tls_key_pem: serve TLS with this certificate chain.
  std::string tls_key_pem;
  std::string tls_client_ca_pem;             // Also require client certificates signed by these roots.
  std::shared_ptr<const TokenTable> tokens;  // Null: every call is admitted.
};

// The coordinator's security flags, as given (paths; empty = not given).
struct ServerSecurityFlags {
  std::string token_file;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
};

// Reads and checks the files `flags` names; errors name the flag or file:line.
Status LoadServerSecurity(const ServerSecurityFlags& flags, ServerSecurity* out);

// Whether HOST:PORT is reachable only from this machine (127.0.0.0/8, ::1, localhost, unix:).
bool IsLoopbackAddress(const std::string& address);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_AUTH_H_
