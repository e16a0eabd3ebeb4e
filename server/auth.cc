#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "rpc/channel.h"

namespace moesweep {
namespace {

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool ParseDigest(const std::string& hex, Sha256Digest* out) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

const char* Needs(Permission permission) {
  switch (permission) {
    case Permission::kWork: return "WorkerService needs a worker or submit token";
    case Permission::kRead: return "reading sweeps needs a read or submit token";
    case Permission::kSubmit: return "submitting or cancelling sweeps needs a submit token";
  }
  return "";
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kWorker: return "worker";
    case Role::kRead: return "read";
    case Role::kSubmit: return "submit";
  }
  return "";
}

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "worker") return Role::kWorker;
  if (name == "read") return Role::kRead;
  if (name == "submit") return Role::kSubmit;
  return std::nullopt;
}

bool RoleAllows(Role role, Permission permission) {
  switch (role) {
    case Role::kSubmit: return true;
    case Role::kRead: return permission == Permission::kRead;
    case Role::kWorker: return permission == Permission::kWork;
  }
  return false;
}

Sha256Digest Sha256(std::string_view data) {
  Sha256Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

std::string ToHex(const Sha256Digest& digest) {
  std::string hex;
  for (uint8_t b : digest) hex += fmt::format("{:02x}", b);
  return hex;
}

std::string TokenFileLine(Role role, std::string_view token, const std::string& name) {
  std::string line = fmt::format("{} {}", RoleName(role), ToHex(Sha256(token)));
  if (!name.empty()) line += " " + name;
  return line;
}

Status TokenTable::Parse(const std::string& text, const std::string& source, TokenTable* out) {
  TokenTable table;
  std::vector<std::string> errors;
  std::istringstream lines(text);
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::vector<std::string> words = Words(line);
    if (words.empty()) continue;
    auto error = [&](const std::string& problem) { errors.push_back(fmt::format("{}:{}: {}", source, number, problem)); };
    if (words.size() > 3) {
      error("expected ROLE SHA256HEX [NAME] (a name has no blanks)");
      continue;
    }
    std::optional<Role> role = ParseRole(words[0]);
    if (!role) {
      error(fmt::format("unknown role '{}' (known: worker, read, submit)", words[0]));
      continue;
    }
    TokenEntry entry{*role, {}, words.size() == 3 ? words[2] : ""};
    if (words.size() < 2 || !ParseDigest(words[1], &entry.digest)) {
      error("expected the token's SHA-256 as 64 hex digits after the role (see `moesweep-coordinator hash-token`)");
      continue;
    }
    bool duplicate = false;
    for (const TokenEntry& e : table.entries_) duplicate = duplicate || e.digest == entry.digest;
    if (duplicate) {
      error("the same token is listed twice (one token, one role)");
      continue;
    }
    table.entries_.push_back(std::move(entry));
  }
  if (!errors.empty()) {
    std::string message;
    for (const std::string& e : errors) message += (message.empty() ? "" : "\n") + e;
    return Status::InvalidArgument(message);
  }
  if (table.entries_.empty()) {
    return Status::InvalidArgument(fmt::format("{}: no tokens (every call would be refused)", source));
  }
  *out = std::move(table);
  return Status::Ok();
}

Status TokenTable::Load(const std::string& path, TokenTable* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument(fmt::format("--token-file: cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path, out);
}

const TokenEntry* TokenTable::Find(std::string_view token) const {
  Sha256Digest digest = Sha256(token);
  const TokenEntry* found = nullptr;
  for (const TokenEntry& e : entries_) {
    // No early exit: every entry is compared whatever matched.
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) found = &e;
  }
  return found;
}

Status TokenTable::Authorize(std::optional<std::string_view> authorization, Permission permission) const {
  constexpr std::string_view kScheme = "bearer ";
  if (!authorization) return Status::Unauthenticated("this coordinator needs a token (authorization: Bearer)");
  std::string_view header = *authorization;
  bool bearer = header.size() > kScheme.size();
  for (size_t i = 0; bearer && i < kScheme.size(); ++i) {
    bearer = std::tolower(static_cast<unsigned char>(header[i])) == kScheme[i];  // The scheme is case-insensitive.
  }
  if (!bearer) return Status::Unauthenticated("the authorization header is not 'Bearer <token>'");
  const TokenEntry* entry = Find(header.substr(kScheme.size()));
  if (entry == nullptr) return Status::Unauthenticated("the token is not one this coordinator accepts");
  if (!RoleAllows(entry->role, permission)) {
    return Status::PermissionDenied(
        fmt::format("{}; this is a {} token{}", Needs(permission), RoleName(entry->role),
                    entry->name.empty() ? "" : fmt::format(" ({})", entry->name)));
  }
  return Status::Ok();
}

Status LoadServerSecurity(const ServerSecurityFlags& flags, ServerSecurity* out) {
  ServerSecurity security;
  if (!flags.token_file.empty()) {
    auto tokens = std::make_shared<TokenTable>();
    Status s = TokenTable::Load(flags.token_file, tokens.get());
    if (!s.ok()) return s;
    security.tokens = std::move(tokens);
  }
  if (flags.tls_cert.empty() != flags.tls_key.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key go together");
  }
  if (!flags.tls_client_ca.empty() && flags.tls_cert.empty()) {
    return Status::InvalidArgument("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)");
  }
  if (!flags.tls_cert.empty()) {
    Status s = rpc::ReadPemFile("--tls-cert", flags.tls_cert, &security.tls_cert_pem);
    if (s.ok()) s = rpc::ReadPemFile("--tls-key", flags.tls_key, &security.tls_key_pem);
    if (s.ok() && !flags.tls_client_ca.empty()) {
      s = rpc::ReadPemFile("--tls-client-ca", flags.tls_client_ca, &security.tls_client_ca_pem);
    }
    if (!s.ok()) return s;
  }
  *out = std::move(security);
  return Status::Ok();
}

bool IsLoopbackAddress(const std::string& address) {
  if (address.rfind("unix:", 0) == 0 || address.rfind("unix-abstract:", 0) == 0) return true;
  std::string host = address;
  if (!host.empty() && host[0] == '[') {
    host = host.substr(1, host.find(']') == std::string::npos ? std::string::npos : host.find(']') - 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string::npos) {
    host.resize(colon);
  }
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace moesweep
