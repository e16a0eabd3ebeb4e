// The client side of the wire, shared by the `moesweep` CLI and moesweep-worker: reading the token
// and certificates their flags name, and making a channel that carries them. No LibTorch.
//
// A token never comes from the command line (other users see it in `ps`): it comes from the
// environment (MOESWEEP_TOKEN) or from a file, and it is sent as "authorization: Bearer <token>"
// on every call of the channel.
#ifndef MOESWEEP_RPC_CHANNEL_H_
#define MOESWEEP_RPC_CHANNEL_H_

#include <memory>
#include <string>

#include "common/status.h"

namespace grpc {
class Channel;
}

namespace moesweep::rpc {

inline constexpr char kTokenEnv[] = "MOESWEEP_TOKEN";

// The security flags of a client, as given (paths; empty = not given).
struct ClientSecurityFlags {
  std::string token_file;  // --token-file: a file holding the token.
  std::string tls_ca;      // --tls-ca: PEM roots to trust; turns TLS on.
  std::string tls_cert;    // --tls-cert / --tls-key: a client certificate (needs --tls-ca).
  std::string tls_key;
};

// What a channel needs, read and checked.
struct ClientSecurity {
  std::string token;       // Empty: no authorization header.
  std::string tls_ca_pem;  // Empty: plaintext.
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

// Reads the files `flags` names. The token comes from --token-file, else from `token_env` (the
// value of $MOESWEEP_TOKEN; empty when unset). Errors name the flag and the file, never the token.
Status LoadClientSecurity(const ClientSecurityFlags& flags, const std::string& token_env, ClientSecurity* out);

// A token as a header value allows: visible ASCII, no blanks. The message never quotes the token.
Status CheckToken(const std::string& token);

// Reads a token file: its content less surrounding whitespace (a trailing newline is usual).
Status ReadTokenFile(const std::string& path, std::string* token);

// Reads a PEM file for `flag` (named in the error); refuses files without a PEM block.
Status ReadPemFile(const std::string& flag, const std::string& path, std::string* pem);

// Reconnect backoff of the channel. gRPC's default grows to two minutes; a client of the
// coordinator should find a restarted coordinator within seconds.
struct Backoff {
  int initial_ms = 500;
  int max_ms = 5000;
};

// A channel to `target` with TLS when security.tls_ca_pem is set, and the bearer token on every
// call when security.token is set. Nothing connects until the first call.
// `max_receive_bytes` > 0 raises gRPC's 4 MiB limit on an answer.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ClientSecurity& security,
                                           const Backoff& backoff = {}, int max_receive_bytes = 0);

}  // namespace moesweep::rpc

#endif  // MOESWEEP_RPC_CHANNEL_H_
