// The `moesweep` command line as a library: RunCli parses arguments, runs one command and returns
// its exit code, writing only to the streams it is given, so tests run it in-process.
#ifndef MOESWEEP_CLIENT_CLI_H_
#define MOESWEEP_CLIENT_CLI_H_

#include <iosfwd>
#include <string>
#include <vector>

#include "client/watch.h"

namespace moesweep::client {

inline constexpr char kDefaultCoordinator[] = "127.0.0.1:50051";

struct CliEnv {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  std::istream* in = nullptr;    // For a spec given as "-"; null means none.
  std::string coordinator_env;   // $MOESWEEP_COORDINATOR; empty when unset.
  std::string token_env;         // $MOESWEEP_TOKEN; empty when unset. Never printed.
  std::string dashboard_env;     // $MOESWEEP_DASHBOARD (the dashboard's base URL); empty when unset.
  // Reconnect timing and the Ctrl-C flag for watch; the rest of it is filled per command.
  WatchOptions watch;
};

// `args` excludes the program name. Returns an ExitCode (see rpc.h).
int RunCli(const std::vector<std::string>& args, CliEnv& env);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_CLI_H_
