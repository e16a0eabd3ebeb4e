#include "rpc/channel.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

namespace moesweep::rpc {
namespace {

// Adds the bearer token to every call. An interceptor rather than call credentials because gRPC
// sends call credentials only over TLS, and a token is still worth having on a plaintext
// loopback port of a machine shared with other users.
class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;  // Owned by the factory, which the channel keeps.
};

class BearerInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(const std::string& token) : header_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(&header_);
  }

 private:
  const std::string header_;
};

bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return false;
  *out = ss.str();
  return true;
}

std::string Trim(const std::string& s) {
  const char* blanks = " \t\r\n";
  size_t begin = s.find_first_not_of(blanks);
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(blanks) - begin + 1);
}

}  // namespace

Status CheckToken(const std::string& token) {
  if (token.empty()) return Status::InvalidArgument("the token is empty");
  for (unsigned char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return Status::InvalidArgument("the token has a blank or a character outside visible ASCII");
    }
  }
  return Status::Ok();
}

Status ReadTokenFile(const std::string& path, std::string* token) {
  std::string text;
  if (!ReadWholeFile(path, &text)) return Status::InvalidArgument(fmt::format("--token-file: cannot read {}", path));
  text = Trim(text);
  Status s = CheckToken(text);
  if (!s.ok()) return Status::InvalidArgument(fmt::format("--token-file: {}: {}", path, s.message()));
  *token = std::move(text);
  return Status::Ok();
}

Status ReadPemFile(const std::string& flag, const std::string& path, std::string* pem) {
  std::string text;
  if (!ReadWholeFile(path, &text)) return Status::InvalidArgument(fmt::format("{}: cannot read {}", flag, path));
  if (text.find("-----BEGIN ") == std::string::npos) {
    return Status::InvalidArgument(fmt::format("{}: {} is not a PEM file", flag, path));
  }
  *pem = std::move(text);
  return Status::Ok();
}

Status LoadClientSecurity(const ClientSecurityFlags& flags, const std::string& token_env, ClientSecurity* out) {
  ClientSecurity security;
  if (!flags.token_file.empty()) {
    Status s = ReadTokenFile(flags.token_file, &security.token);
    if (!s.ok()) return s;
  } else if (!token_env.empty()) {
    security.token = Trim(token_env);
    Status s = CheckToken(security.token);
    if (!s.ok()) return Status::InvalidArgument(fmt::format("${}: {}", kTokenEnv, s.message()));
  }
  if (flags.tls_cert.empty() != flags.tls_key.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key go together");
  }
  if (!flags.tls_cert.empty() && flags.tls_ca.empty()) {
    return Status::InvalidArgument("--tls-cert needs --tls-ca (a client certificate is only sent over TLS)");
  }
  if (!flags.tls_ca.empty()) {
    Status s = ReadPemFile("--tls-ca", flags.tls_ca, &security.tls_ca_pem);
    if (s.ok() && !flags.tls_cert.empty()) s = ReadPemFile("--tls-cert", flags.tls_cert, &security.tls_cert_pem);
    if (s.ok() && !flags.tls_key.empty()) s = ReadPemFile("--tls-key", flags.tls_key, &security.tls_key_pem);
    if (!s.ok()) return s;
  }
  *out = std::move(security);
  return Status::Ok();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ClientSecurity& security,
                                           const Backoff& backoff, int max_receive_bytes) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, backoff.initial_ms);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, backoff.initial_ms);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, backoff.max_ms);
  if (max_receive_bytes > 0) args.SetMaxReceiveMessageSize(max_receive_bytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!security.tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = security.tls_ca_pem;
    tls.pem_cert_chain = security.tls_cert_pem;
    tls.pem_private_key = security.tls_key_pem;
    credentials = grpc::SslCredentials(tls);
  }
  if (security.token.empty()) return grpc::CreateCustomChannel(target, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<BearerInterceptorFactory>(security.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args, std::move(interceptors));
}

}  // namespace moesweep::rpc
