// Internal to the CLI: one function per command, called by RunCli with arguments already checked.
#ifndef MOESWEEP_CLIENT_COMMANDS_H_
#define MOESWEEP_CLIENT_COMMANDS_H_

#include <optional>
#include <ostream>
#include <string>

#include "client/cli.h"
#include "client/rpc.h"
#include "moesweep/v1/moesweep.pb.h"
#include "rpc/channel.h"

namespace moesweep::client {

// A parsed, checked command line.
struct Invocation {
  CliEnv* env = nullptr;
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  std::string address;
  double timeout_s = 10;
  rpc::ClientSecurity security;      // Token and TLS, read from --token-file / $MOESWEEP_TOKEN / --tls-*.
  bool json = false;
  int64_t sweep_id = 0;
  std::string spec_path;             // submit, validate; "-" is stdin.
  bool watch = false;                // submit --watch
  bool progress = false;             // --progress
  std::optional<int> stage;          // --stage
  v1::TrialState state = v1::TRIAL_STATE_UNSPECIFIED;  // --state
  int limit = 0;                     // sweeps --limit; 0 = the coordinator's default
  std::string format;                // export: "csv" or "json"
  std::string output;                // export --output; empty = stdout
  std::optional<int64_t> max_stage_trials;  // validate; unset = SpecLimits' default
};

int RunSubmit(const Invocation& inv);
int RunWatch(const Invocation& inv);
int RunSweeps(const Invocation& inv);
int RunShow(const Invocation& inv);
int RunTrials(const Invocation& inv);
int RunBest(const Invocation& inv);
int RunCancel(const Invocation& inv);
int RunExport(const Invocation& inv);
int RunValidate(const Invocation& inv);
int RunHealth(const Invocation& inv);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_COMMANDS_H_
