// The shared client channel against a real coordinator on 127.0.0.1: the bearer token it adds,
// TLS with certificates made by `openssl`, client certificates, and what fails without them.
#include "rpc/channel.h"

#include <netdb.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "moesweep/v1/moesweep.grpc.pb.h"
#include "server/auth.h"
#include "server/service.h"
#include "tests/rpc/test_certs.h"
#include "tests/server/coordinator_test_util.h"

namespace moesweep::rpc {
namespace {

using moesweep::testing::Certs;
using moesweep::testing::WriteFile;

constexpr char kToken[] = "read-token-0123456789abcdef";

TEST(LoadClientSecurity, TakesTheTokenFromTheFileElseTheEnvironment) {
  ClientSecurity security;
  ASSERT_TRUE(LoadClientSecurity({}, "", &security).ok());
  EXPECT_TRUE(security.token.empty());
  EXPECT_TRUE(security.tls_ca_pem.empty());
  ASSERT_TRUE(LoadClientSecurity({}, "from-env\n", &security).ok());
  EXPECT_EQ(security.token, "from-env");
  std::string file = WriteFile("token", "  from-file\n\n");
  ASSERT_TRUE(LoadClientSecurity({file, "", "", ""}, "from-env", &security).ok());
  EXPECT_EQ(security.token, "from-file");
}

TEST(LoadClientSecurity, RefusesUnusableTokensWithoutQuotingThem) {
  ClientSecurity security;
  Status s = LoadClientSecurity({WriteFile("empty", "\n"), "", "", ""}, "", &security);
  EXPECT_NE(s.message().find("--token-file: "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("the token is empty"), std::string::npos) << s.message();
  s = LoadClientSecurity({WriteFile("blank", "two words\n"), "", "", ""}, "", &security);
  EXPECT_NE(s.message().find("has a blank"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("two words"), std::string::npos) << s.message();
  s = LoadClientSecurity({}, "secret\x01value", &security);
  EXPECT_NE(s.message().find("$MOESWEEP_TOKEN"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("secret"), std::string::npos) << s.message();
  s = LoadClientSecurity({"/nonexistent/token", "", "", ""}, "", &security);
  EXPECT_EQ(s.message(), "--token-file: cannot read /nonexistent/token");
}

TEST(LoadClientSecurity, TlsFlagsAreCheckedTogether) {
  ClientSecurity security;
  EXPECT_EQ(LoadClientSecurity({"", "", "c.pem", ""}, "", &security).message(), "--tls-cert and --tls-key go together");
  EXPECT_NE(LoadClientSecurity({"", "", "c.pem", "k.pem"}, "", &security).message().find("--tls-cert needs --tls-ca"),
            std::string::npos);
  EXPECT_EQ(LoadClientSecurity({"", "/nonexistent/ca.pem", "", ""}, "", &security).message(),
            "--tls-ca: cannot read /nonexistent/ca.pem");
  EXPECT_NE(LoadClientSecurity({"", WriteFile("not_pem", "x"), "", ""}, "", &security).message().find("not a PEM"),
            std::string::npos);
  ASSERT_TRUE(LoadClientSecurity({"", Certs().ca, Certs().client_cert, Certs().client_key}, "", &security).ok());
  EXPECT_NE(security.tls_ca_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE(security.tls_key_pem.find("PRIVATE KEY"), std::string::npos);
}

// A coordinator serving on a free port of 127.0.0.1 with `security`, plus one read token.
class ChannelTest : public ::testing::Test {
 protected:
  Status Serve(ServerSecurityFlags flags) {
    flags.token_file = WriteFile("tokens", TokenFileLine(Role::kRead, kToken, "reader") + "\n");
    ServerSecurity security;
    Status s = LoadServerSecurity(flags, &security);
    if (!s.ok()) return s;
    s = Coordinator::Open(db_.path(), {}, &clock_, &coordinator_);
    if (!s.ok()) return s;
    s = CoordinatorServer::Start(coordinator_.get(), "127.0.0.1:0", security, &server_);
    if (s.ok()) target_ = "127.0.0.1:" + std::to_string(server_->port());
    return s;
  }
  void TearDown() override {
    server_.reset();
    coordinator_.reset();
  }

  ClientSecurity Client(const std::string& ca, const std::string& cert = "", const std::string& key = "",
                        const std::string& token = kToken) {
    ClientSecurity security;
    Status s = LoadClientSecurity({"", ca, cert, key}, token, &security);
    EXPECT_TRUE(s.ok()) << s.message();
    return security;
  }

  grpc::Status ListSweeps(const ClientSecurity& security, const std::string& target = "") {
    auto stub = v1::SweepService::NewStub(MakeChannel(target.empty() ? target_ : target, security));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListSweepsResponse response;
    return stub->ListSweeps(&ctx, v1::ListSweepsRequest(), &response);
  }

  TempDb db_{"channel_test"};
  SystemClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string target_;
};

TEST_F(ChannelTest, ThePlaintextChannelSendsTheToken) {
  ASSERT_TRUE(Serve({}).ok());
  EXPECT_TRUE(ListSweeps(Client("")).ok());
  EXPECT_EQ(ListSweeps(Client("", "", "", "")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListSweeps(Client("", "", "", "wrong-token-0123456789")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ChannelTest, AClientTrustingTheCaConnectsOverTls) {
  ASSERT_TRUE(Serve({"", Certs().server_cert, Certs().server_key, ""}).ok());
  grpc::Status s = ListSweeps(Client(Certs().ca));
  EXPECT_TRUE(s.ok()) << s.error_message();
  // The certificate names localhost too (checked where the name resolves: a bare chroot has no
  // /etc/hosts, and then gRPC's resolver cannot find it).
  addrinfo* found = nullptr;
  if (getaddrinfo("localhost", nullptr, nullptr, &found) == 0) {
    freeaddrinfo(found);
    s = ListSweeps(Client(Certs().ca), "localhost:" + std::to_string(server_->port()));
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  // Over TLS the token is still required.
  EXPECT_EQ(ListSweeps(Client(Certs().ca, "", "", "")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ChannelTest, APlaintextClientCannotTalkToATlsCoordinator) {
  ASSERT_TRUE(Serve({"", Certs().server_cert, Certs().server_key, ""}).ok());
  EXPECT_EQ(ListSweeps(Client("")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ChannelTest, AClientTrustingAnotherCaRefusesTheCoordinator) {
  ASSERT_TRUE(Serve({"", Certs().server_cert, Certs().server_key, ""}).ok());
  EXPECT_EQ(ListSweeps(Client(Certs().other_ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ChannelTest, ATlsClientCannotTalkToAPlaintextCoordinator) {
  ASSERT_TRUE(Serve({}).ok());
  EXPECT_EQ(ListSweeps(Client(Certs().ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ChannelTest, WithAClientCaOnlyClientsWithItsCertificatesGetIn) {
  ASSERT_TRUE(Serve({"", Certs().server_cert, Certs().server_key, Certs().client_ca}).ok());
  grpc::Status s = ListSweeps(Client(Certs().ca, Certs().client_cert, Certs().client_key));
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(ListSweeps(Client(Certs().ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The server's own certificate is not signed by the client CA.
  EXPECT_EQ(ListSweeps(Client(Certs().ca, Certs().server_cert, Certs().server_key)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ChannelTest, HealthNeedsNoTokenOverTls) {
  ASSERT_TRUE(Serve({"", Certs().server_cert, Certs().server_key, ""}).ok());
  auto health = grpc::health::v1::Health::NewStub(MakeChannel(target_, Client(Certs().ca, "", "", "")));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ChannelTest, AKeyThatIsNotTheCertificatesIsRefusedAtStart) {
  Status s = Serve({"", Certs().server_cert, Certs().client_key, ""});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("TLS key or certificate"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace moesweep::rpc
