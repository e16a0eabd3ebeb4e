// The security flags of the real programs: moesweep-coordinator (token file, hash-token, TLS,
// the warning beyond loopback) and the `moesweep` CLI talking to it, as processes on loopback;
// and `moesweep-coordinator backup` while a coordinator serves.
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "tests/e2e/process.h"
#include "tests/rpc/test_certs.h"

namespace moesweep {
namespace {

using e2e::CommandResult;
using e2e::FreePort;
using e2e::Process;
using e2e::ReadFile;
using moesweep::testing::Certs;
using moesweep::testing::WriteFile;

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Waits until the coordinator says it serves (or has exited).
bool WaitServing(Process& p) {
  for (int i = 0; i < 500; ++i) {
    if (Contains(ReadFile(p.log_path()), "serving on")) return true;
    if (!p.Running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// `moesweep-coordinator hash-token ROLE NAME` with `token` on stdin: its output line.
std::string HashToken(const std::string& role, const std::string& name, const std::string& token) {
  std::string token_file = WriteFile("plain_" + name, token + "\n");
  CommandResult r = e2e::Run({"/bin/sh", "-c", std::string(MOESWEEP_COORDINATOR_BIN) + " hash-token " + role + " " +
                                                   name + " < '" + token_file + "'"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(Contains(r.out + r.err, token)) << "hash-token echoed the token";
  return r.out;
}

class CoordinatorProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    address_ = "127.0.0.1:" + std::to_string(port_);
    db_ = WriteFile("db_" + std::to_string(port_), "");
    std::remove(db_.c_str());
  }
  void TearDown() override {
    if (coordinator_) {
      coordinator_->Signal(SIGTERM);
      coordinator_->Wait(std::chrono::seconds(10));
    }
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((db_ + suffix).c_str());
  }

  void Start(std::vector<std::string> flags, const std::string& listen = "") {
    std::vector<std::string> argv = {MOESWEEP_COORDINATOR_BIN, "--listen", listen.empty() ? address_ : listen,
                                     "--db", db_};
    argv.insert(argv.end(), flags.begin(), flags.end());
    coordinator_ = std::make_unique<Process>(argv, WriteFile("coordinator_" + std::to_string(port_) + ".log", ""));
    ASSERT_TRUE(WaitServing(*coordinator_)) << ReadFile(coordinator_->log_path());
  }

  CommandResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {MOESWEEP_CLI_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--coordinator", address_, "--timeout", "5"});
    return e2e::Run(argv);
  }

  int port_ = 0;
  std::string address_;
  std::string db_;
  std::unique_ptr<Process> coordinator_;
};

TEST_F(CoordinatorProcessTest, AMalformedTokenFileRefusesToStartNamingFileAndLine) {
  std::string tokens = WriteFile("bad_tokens", "# ok so far\n" + HashToken("read", "x", "read-token-0123456789abcd") +
                                                   "admin 0123\n");
  CommandResult r = e2e::Run({MOESWEEP_COORDINATOR_BIN, "--listen", address_, "--db", db_, "--token-file", tokens});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "moesweep-coordinator: " + tokens + ":3: unknown role 'admin'")) << r.err;
}

TEST_F(CoordinatorProcessTest, HashTokenRefusesShortTokensAndUnknownRoles) {
  CommandResult r = e2e::Run({"/bin/sh", "-c", std::string("echo short | ") + MOESWEEP_COORDINATOR_BIN + " hash-token read"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "shorter than 16 characters")) << r.err;
  r = e2e::Run({"/bin/sh", "-c",
                std::string("echo read-token-0123456789abcd | ") + MOESWEEP_COORDINATOR_BIN + " hash-token admin"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "unknown role 'admin'")) << r.err;
}

TEST_F(CoordinatorProcessTest, WarnsLoudlyWhenListeningBeyondLoopbackWithoutTokens) {
  Start({}, "0.0.0.0:" + std::to_string(port_));
  std::string log = ReadFile(coordinator_->log_path());
  EXPECT_TRUE(Contains(log, "WARNING: listening on 0.0.0.0:" + std::to_string(port_) + " WITHOUT TOKENS")) << log;
  EXPECT_TRUE(Contains(log, "plaintext, no tokens")) << log;
}

TEST_F(CoordinatorProcessTest, NoWarningOnLoopback) {
  Start({});
  EXPECT_FALSE(Contains(ReadFile(coordinator_->log_path()), "WARNING")) << ReadFile(coordinator_->log_path());
}

TEST_F(CoordinatorProcessTest, TheCliUsesTokensAndTlsWithTheCoordinator) {
  const std::string submit_token = "submit-token-0123456789abcdef";
  const std::string read_token = "read-token-0123456789abcdef";
  std::string tokens = WriteFile("tokens", HashToken("submit", "admin", submit_token) + "# dashboards\n" +
                                               HashToken("read", "dash", read_token));
  Start({"--token-file", tokens, "--tls-cert", Certs().server_cert, "--tls-key", Certs().server_key});
  std::string log = ReadFile(coordinator_->log_path());
  EXPECT_TRUE(Contains(log, "TLS, 2 token(s)")) << log;
  std::string submit_file = WriteFile("submit_token", submit_token + "\n");
  std::string read_file = WriteFile("read_token", read_token);
  std::string spec = std::string(MOESWEEP_SOURCE_DIR) + "/sweeps/demo.json";

  CommandResult r = Cli({"submit", spec, "--tls-ca", Certs().ca, "--token-file", submit_file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "submitted sweep 1")) << r.out;

  r = Cli({"sweeps", "--tls-ca", Certs().ca, "--token-file", read_file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "demo")) << r.out;

  // The token from the environment.
  r = e2e::Run({"/usr/bin/env", "MOESWEEP_TOKEN=" + read_token, MOESWEEP_CLI_BIN, "show", "1", "--tls-ca", Certs().ca,
                "--coordinator", address_});
  EXPECT_EQ(r.exit_code, 0) << r.err;

  r = Cli({"cancel", "1", "--tls-ca", Certs().ca, "--token-file", read_file});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_TRUE(Contains(r.err, "refused the call: submitting or cancelling sweeps needs a submit token")) << r.err;

  r = Cli({"sweeps", "--tls-ca", Certs().ca});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_TRUE(Contains(r.err, "refused the call")) << r.err;
  EXPECT_TRUE(Contains(r.err, "$MOESWEEP_TOKEN or --token-file")) << r.err;

  r = Cli({"sweeps", "--token-file", read_file});  // Plaintext against TLS.
  EXPECT_EQ(r.exit_code, 3) << r.err;

  r = Cli({"health", "--tls-ca", Certs().ca});  // No token needed.
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");

  EXPECT_FALSE(Contains(ReadFile(coordinator_->log_path()), read_token));
  EXPECT_FALSE(Contains(ReadFile(coordinator_->log_path()), submit_token));
}

TEST_F(CoordinatorProcessTest, TheCliPresentsItsCertificateWhenTheCoordinatorRequiresOne) {
  Start({"--tls-cert", Certs().server_cert, "--tls-key", Certs().server_key, "--tls-client-ca", Certs().client_ca});
  EXPECT_TRUE(Contains(ReadFile(coordinator_->log_path()), "TLS with client certificates, no tokens"));
  CommandResult r = Cli({"sweeps", "--tls-ca", Certs().ca, "--tls-cert", Certs().client_cert, "--tls-key",
                         Certs().client_key});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Cli({"sweeps", "--tls-ca", Certs().ca});
  EXPECT_EQ(r.exit_code, 3) << r.err;
}

TEST_F(CoordinatorProcessTest, TheCliRefusesUnusableSecurityFlagsBeforeConnecting) {
  CommandResult r = Cli({"sweeps", "--tls-cert", Certs().client_cert, "--tls-key", Certs().client_key});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "moesweep: sweeps: --tls-cert needs --tls-ca")) << r.err;
  r = Cli({"sweeps", "--token-file", "/nonexistent/token"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "--token-file: cannot read /nonexistent/token")) << r.err;
  // A global flag before the command takes its value.
  r = e2e::Run({MOESWEEP_CLI_BIN, "--token-file", "/nonexistent/token", "sweeps", "--coordinator", address_});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "--token-file: cannot read")) << r.err;
}

TEST_F(CoordinatorProcessTest, BackupWhileServingRestoresEverySweep) {
  Start({});
  std::string spec = std::string(MOESWEEP_SOURCE_DIR) + "/sweeps/demo.json";
  ASSERT_EQ(Cli({"submit", spec}).exit_code, 0);
  ASSERT_EQ(Cli({"submit", spec}).exit_code, 0);
  std::string copy = db_ + ".backup";
  std::remove(copy.c_str());
  CommandResult r = e2e::Run({MOESWEEP_COORDINATOR_BIN, "backup", "--db", db_, "--to", copy});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "backed up " + db_ + " to " + copy)) << r.err;
  ASSERT_EQ(Cli({"submit", spec}).exit_code, 0);  // After the backup: not in it.
  r = e2e::Run({MOESWEEP_COORDINATOR_BIN, "backup", "--db", db_, "--to", copy});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "exists; not overwriting")) << r.err;

  // Restore as documented: stop, replace the database file (dropping -wal and -shm), start.
  coordinator_->Signal(SIGTERM);
  ASSERT_EQ(coordinator_->Wait(std::chrono::seconds(10)), 0);
  coordinator_.reset();
  for (const char* suffix : {"-wal", "-shm"}) std::remove((db_ + suffix).c_str());
  ASSERT_EQ(std::rename(copy.c_str(), db_.c_str()), 0);
  Start({});
  r = Cli({"sweeps", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "\"sweep_id\": 2")) << r.out;
  EXPECT_FALSE(Contains(r.out, "\"sweep_id\": 3")) << r.out;
}

}  // namespace
}  // namespace moesweep
