// moesweep-dashboard: flags, signals, and the Dashboard (dashboard/dashboard.h).
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>

#include "client/args.h"
#include "dashboard/dashboard.h"

namespace {

using moesweep::client::FlagSpec;

const std::vector<FlagSpec>& Flags() {
  static const std::vector<FlagSpec> flags = {
      {"coordinator", "HOST:PORT", "Coordinator address (default: $MOESWEEP_COORDINATOR, else 127.0.0.1:50051)."},
      {"listen", "HOST:PORT", "Where to serve the page (default 127.0.0.1:8080; port 0 picks a free one)."},
      {"static-dir", "DIR", "The page's files (default: found next to the binary or in the install's share/)."},
      {"timeout", "SECONDS", "Deadline of each call to the coordinator (default 10)."},
      {"max-streams", "N", "Concurrent live event streams (browser tabs) served (default 64)."},
      {"token-file", "PATH", "File holding the token to send (default: $MOESWEEP_TOKEN; none if unset)."},
      {"tls-ca", "PEM", "Use TLS, trusting the CA certificates in PEM."},
      {"tls-cert", "PEM", "Client certificate for a coordinator that requires one (with --tls-key)."},
      {"tls-key", "PEM", "Private key of --tls-cert."},
      {"help", "", "Show this help."},
  };
  return flags;
}

void Usage(std::ostream& out) {
  out << "usage: moesweep-dashboard [--coordinator HOST:PORT] [--listen HOST:PORT] [flags]\n\n"
         "Serves a live web page of the coordinator's sweeps: stages, trials, curves and expert usage.\n\n";
  for (const FlagSpec& f : Flags()) {
    out << fmt::format("  --{:<28} {}\n", f.name + (f.value_name.empty() ? "" : " " + f.value_name), f.help);
  }
}

std::string ExeDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : exe.parent_path().string();
}

int Fail(const std::string& message) {
  std::cerr << "moesweep-dashboard: " << message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moesweep;
  client::ParsedArgs args;
  Status s = client::ParseArgs(std::vector<std::string>(argv + 1, argv + argc), Flags(), &args);
  if (!s.ok()) return Fail(s.message() + " (see --help)");
  if (args.Has("help")) {
    Usage(std::cout);
    return 0;
  }
  if (!args.positional.empty()) return Fail(fmt::format("unexpected argument '{}'", args.positional[0]));

  dashboard::DashboardOptions options;
  const char* env = std::getenv("MOESWEEP_COORDINATOR");
  options.coordinator = args.Value("coordinator").value_or(env != nullptr && *env ? env : "127.0.0.1:50051");
  std::string listen = args.Value("listen").value_or("127.0.0.1:8080");
  size_t colon = listen.rfind(':');
  auto port = colon == std::string::npos ? std::nullopt : client::ParseInt(listen.substr(colon + 1));
  if (!port || *port < 0 || *port > 65535 || colon == 0) return Fail("--listen: expected HOST:PORT, got '" + listen + "'");
  options.listen_host = listen.substr(0, colon);
  if (options.listen_host.size() > 2 && options.listen_host.front() == '[') {
    options.listen_host = options.listen_host.substr(1, options.listen_host.size() - 2);
  }
  options.listen_port = static_cast<int>(*port);
  if (auto t = args.Value("timeout")) {
    auto v = client::ParseDouble(*t);
    if (!v || *v <= 0 || *v > 86400) return Fail("--timeout: expected seconds in (0, 86400]");
    options.rpc_timeout_s = *v;
  }
  if (auto m = args.Value("max-streams")) {
    auto v = client::ParseInt(*m);
    if (!v || *v < 1 || *v > 10000) return Fail("--max-streams: expected 1..10000");
    options.max_streams = static_cast<int>(*v);
  }
  rpc::ClientSecurityFlags flags{args.Value("token-file").value_or(""), args.Value("tls-ca").value_or(""),
                                 args.Value("tls-cert").value_or(""), args.Value("tls-key").value_or("")};
  const char* token = std::getenv(rpc::kTokenEnv);
  s = rpc::LoadClientSecurity(flags, token != nullptr ? token : "", &options.security);
  if (!s.ok()) return Fail(s.message());
  options.static_dir = args.Value("static-dir").value_or(dashboard::FindStaticDir(ExeDir()));

  // Block the signals before any thread starts, then wait for one here.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  dashboard::Dashboard dash(options);
  s = dash.Start();
  if (!s.ok()) return Fail(s.message());
  std::string host = options.listen_host.find(':') != std::string::npos ? "[" + options.listen_host + "]" : options.listen_host;
  std::cerr << fmt::format("moesweep-dashboard: serving http://{}:{}/ (coordinator {}, files {})\n", host, dash.port(),
                           options.coordinator, options.static_dir);
  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "moesweep-dashboard: stopping\n";
  dash.Stop();
  return 0;
}
