// moesweep-coordinator: flags, signals, and nothing else.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "rpc/channel.h"
#include "server/auth.h"
#include "server/backup.h"
#include "server/clock.h"
#include "server/coordinator.h"
#include "server/coordinator_metrics.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/service.h"

namespace {

constexpr const char* kUsage = R"(usage: moesweep-coordinator [--listen HOST:PORT] [--db PATH] [--max-stage-trials N]
                            [--token-file PATH] [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
                            [--metrics-listen HOST:PORT]
       moesweep-coordinator hash-token ROLE [NAME] < TOKEN
       moesweep-coordinator backup --db PATH --to FILE

Serves the moesweep API (SweepService, WorkerService, grpc.health.v1, reflection) and keeps every
sweep, trial, metric and event in a SQLite database. Unfinished sweeps resume on start.

  --listen HOST:PORT      address to serve on (default 127.0.0.1:50051; 0.0.0.0:50051 for other hosts)
  --db PATH               SQLite database file (default ./moesweep.db)
  --max-stage-trials N    refuse sweeps with a stage of more than N trials (default 10000)
  --token-file PATH       accept only calls with a token listed there: lines "ROLE SHA256HEX [NAME]",
                          ROLE worker (WorkerService), read (reads, watch) or submit (everything)
  --tls-cert PEM          serve TLS with this certificate chain ...
  --tls-key PEM           ... and its private key
  --tls-client-ca PEM     also require client certificates signed by this CA
  --metrics-listen HOST:PORT
                          serve Prometheus metrics over plain HTTP at http://HOST:PORT/metrics
                          (default: off). No tokens or TLS there: keep it on loopback or a
                          network only your monitoring reaches

hash-token reads a token on stdin and prints its token-file line, e.g.
  openssl rand -hex 32 > worker.token
  moesweep-coordinator hash-token worker gpu-hosts < worker.token >> tokens.txt

backup copies the database to a new FILE as one consistent snapshot, also while a coordinator
serves it. To restore, stop the coordinator, replace its database file with the copy (removing
PATH-wal and PATH-shm) and start it again.
)";

// Shorter tokens are refused by hash-token: the file holds unsalted hashes, and a short token's
// hash can be searched.
constexpr size_t kMinTokenLength = 16;

int Usage(const std::string& error) {
  std::cerr << "moesweep-coordinator: " << error << "\n\n" << kUsage;
  return 2;
}

// Prints each line of `message` as an error line of ours.
int Fail(const std::string& message, int code) {
  std::istringstream lines(message);
  for (std::string line; std::getline(lines, line);) std::cerr << "moesweep-coordinator: " << line << "\n";
  return code;
}

// `hash-token ROLE [NAME]`: the token from stdin, its file line to stdout. Never echoes the token.
int HashToken(int argc, char** argv) {
  if (argc < 3 || argc > 4) return Usage("hash-token needs ROLE [NAME]");
  std::optional<moesweep::Role> role = moesweep::ParseRole(argv[2]);
  if (!role) return Fail(fmt::format("hash-token: unknown role '{}' (known: worker, read, submit)", argv[2]), 2);
  std::string name = argc == 4 ? argv[3] : "";
  if (name.find_first_of(" \t#") != std::string::npos) return Fail("hash-token: NAME may not hold blanks or '#'", 2);
  std::string token;
  std::getline(std::cin, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
  moesweep::Status s = moesweep::rpc::CheckToken(token);
  if (!s.ok()) return Fail("hash-token: " + s.message() + " (give the token on stdin)", 2);
  if (token.size() < kMinTokenLength) {
    return Fail(fmt::format("hash-token: the token is shorter than {} characters; make one with `openssl rand -hex 32`",
                            kMinTokenLength),
                2);
  }
  std::cout << moesweep::TokenFileLine(*role, token, name) << "\n";
  return 0;
}

// `backup --db PATH --to FILE`.
int Backup(int argc, char** argv) {
  std::string db, to;
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    std::string* out = flag == "--db" ? &db : flag == "--to" ? &to : nullptr;
    if (out == nullptr) return Usage(fmt::format("backup: unknown flag '{}'", flag));
    if (i + 1 >= argc) return Usage(fmt::format("backup: {} needs a path", flag));
    *out = argv[++i];
  }
  if (db.empty() || to.empty()) return Usage("backup needs --db PATH and --to FILE");
  auto started = std::chrono::steady_clock::now();
  moesweep::Status s = moesweep::BackupDatabase(db, to);
  if (!s.ok()) return Fail(s.message(), 1);
  std::cerr << fmt::format("moesweep-coordinator: backed up {} to {} in {:.1f} s\n", db, to,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "hash-token") return HashToken(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "backup") return Backup(argc, argv);
  std::string listen = "127.0.0.1:50051";
  std::string db = "./moesweep.db";
  std::string metrics_listen;
  moesweep::CoordinatorOptions options;
  moesweep::ServerSecurityFlags security_flags;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (flag == "--listen") {
      if (!value(&listen)) return Usage("--listen needs HOST:PORT");
    } else if (flag == "--db") {
      if (!value(&db)) return Usage("--db needs a path");
    } else if (flag == "--token-file") {
      if (!value(&security_flags.token_file)) return Usage("--token-file needs a path");
    } else if (flag == "--tls-cert") {
      if (!value(&security_flags.tls_cert)) return Usage("--tls-cert needs a PEM file");
    } else if (flag == "--tls-key") {
      if (!value(&security_flags.tls_key)) return Usage("--tls-key needs a PEM file");
    } else if (flag == "--tls-client-ca") {
      if (!value(&security_flags.tls_client_ca)) return Usage("--tls-client-ca needs a PEM file");
    } else if (flag == "--metrics-listen") {
      if (!value(&metrics_listen)) return Usage("--metrics-listen needs HOST:PORT");
      std::string host;
      int port = 0;
      if (!moesweep::SplitHostPort(metrics_listen, &host, &port)) {
        return Usage(fmt::format("--metrics-listen: '{}' is not HOST:PORT", metrics_listen));
      }
    } else if (flag == "--max-stage-trials") {
      if (!value(&v)) return Usage("--max-stage-trials needs a number");
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (*end != '\0' || n < 1) return Usage(fmt::format("--max-stage-trials: '{}' is not a positive integer", v));
      options.engine.spec_limits.max_stage_trials = n;
    } else {
      return Usage(fmt::format("unknown flag '{}'", flag));
    }
  }

  moesweep::ServerSecurity security;
  if (moesweep::Status s = moesweep::LoadServerSecurity(security_flags, &security); !s.ok()) return Fail(s.message(), 2);
  const bool tls = !security.tls_cert_pem.empty();
  if (!moesweep::IsLoopbackAddress(listen)) {
    if (!security.tokens) {
      std::cerr << fmt::format(
          "moesweep-coordinator: WARNING: listening on {} WITHOUT TOKENS: anyone who can reach this port can\n"
          "moesweep-coordinator: WARNING: submit and cancel sweeps and lease trials. Use --token-file (and TLS);\n"
          "moesweep-coordinator: WARNING: see README \"Security\".\n",
          listen);
    } else if (!tls) {
      std::cerr << fmt::format(
          "moesweep-coordinator: warning: listening on {} with tokens but without TLS: tokens cross the network "
          "in the clear (use --tls-cert/--tls-key)\n",
          listen);
    }
  }

  // Signals are taken by sigwait below, so block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Declared before the coordinator and the servers: they record into it until they are gone.
  moesweep::MetricRegistry registry;
  std::unique_ptr<moesweep::CoordinatorMetrics> metrics;
  if (!metrics_listen.empty()) {
    metrics = std::make_unique<moesweep::CoordinatorMetrics>(&registry, db);
    options.metrics = metrics.get();
  }

  moesweep::SystemClock clock;
  std::unique_ptr<moesweep::Coordinator> coordinator;
  moesweep::Status s = moesweep::Coordinator::Open(db, options, &clock, &coordinator);
  if (!s.ok()) {
    std::cerr << "moesweep-coordinator: " << s.message() << "\n";
    return 1;
  }
  // Metrics first: a port taken there stops the start before any worker is served.
  std::unique_ptr<moesweep::MetricsHttpServer> metrics_server;
  if (metrics) {
    s = moesweep::MetricsHttpServer::Start(metrics_listen, [m = metrics.get()] { return m->Scrape(); },
                                           &metrics_server);
    if (!s.ok()) {
      std::cerr << "moesweep-coordinator: --metrics-listen: " << s.message() << "\n";
      return 1;
    }
    // The port as bound (for :0), and no "(port N)": tools read the gRPC port from the line below.
    std::string host;
    int unused = 0;
    moesweep::SplitHostPort(metrics_listen, &host, &unused);
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    std::cerr << fmt::format("moesweep-coordinator: metrics on http://{}:{}/metrics\n", host, metrics_server->port());
  }
  std::unique_ptr<moesweep::CoordinatorServer> server;
  s = moesweep::CoordinatorServer::Start(coordinator.get(), listen, security, &server);
  if (!s.ok()) {
    std::cerr << "moesweep-coordinator: " << s.message() << "\n";
    return 1;
  }
  std::cerr << fmt::format("moesweep-coordinator: serving on {} (port {}), database {}, {}, {}\n", listen, server->port(),
                           db, tls ? (security.tls_client_ca_pem.empty() ? "TLS" : "TLS with client certificates")
                                   : "plaintext",
                           security.tokens ? fmt::format("{} token(s)", security.tokens->size()) : "no tokens");

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << fmt::format("moesweep-coordinator: {} received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server->Shutdown();
  coordinator.reset();
  if (metrics_server) metrics_server->Stop();
  std::cerr << "moesweep-coordinator: stopped\n";
  return 0;
}
