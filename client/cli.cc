#include "client/cli.h"

#include <algorithm>
#include <cctype>
#include <ostream>

#include <fmt/format.h>

#include "client/args.h"
#include "client/commands.h"
#include "common/trial_schema.h"

namespace moesweep::client {
namespace {

enum class Positional { kNone, kSweepId, kSpec };

struct Command {
  const char* name;
  Positional positional;
  const char* usage;    // After "moesweep ".
  const char* summary;  // One line for the command list.
  const char* details;  // Paragraph for `moesweep COMMAND --help`.
  std::vector<FlagSpec> flags;
  int (*run)(const Invocation&);
};

const FlagSpec kJson{"json", "", "Print machine-readable JSON instead of text (see docs/cli.md)."};
const FlagSpec kStage{"stage", "N", "Only stage N (0 = baseline)."};
const FlagSpec kProgress{"progress", "", "Also show every progress report of running trials."};

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> flags = {
      {"coordinator", "HOST:PORT", "Coordinator address (default: $MOESWEEP_COORDINATOR, else 127.0.0.1:50051)."},
      {"timeout", "SECONDS", "Deadline of each call to the coordinator (default 10, at most 86400)."},
      {"token-file", "PATH", "File holding the token to send (default: $MOESWEEP_TOKEN; none if unset)."},
      {"tls-ca", "PEM", "Use TLS, trusting the CA certificates in PEM."},
      {"tls-cert", "PEM", "Client certificate for a coordinator that requires one (with --tls-key)."},
      {"tls-key", "PEM", "Private key of --tls-cert."},
      {"help", "", "Show help."},
  };
  return flags;
}

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"submit", Positional::kSpec, "submit SPEC.json [--watch] [--progress] [--json]",
       "Submit a sweep; with --watch, follow it until it ends.",
       "Sends the spec (a file, or - for stdin) to the coordinator, which validates it and creates the\n"
       "trials of the first stage (and the baseline). Prints the new sweep id. With --watch it then\n"
       "behaves like `moesweep watch SWEEP_ID` and exits like it (0 succeeded, 1 failed/cancelled).",
       {{"watch", "", "Follow the sweep after submitting it, like `moesweep watch`."}, kProgress, kJson},
       RunSubmit},
      {"watch", Positional::kSweepId, "watch SWEEP_ID [--progress] [--json]",
       "Live view of a sweep: trials starting and finishing, stage decisions.",
       "Shows the sweep's whole history first, then follows it live: a line per trial start and\n"
       "finish (grid point, seed, objective, layer-0 load_cv and activation rate), stage progress\n"
       "(done/total, failed, best so far), and each stage's winner with mean ± std over seeds.\n"
       "Reconnects after a coordinator restart without repeating events. Ctrl-C stops watching,\n"
       "not the sweep (exit 130). Exits 0 when the sweep succeeded, 1 when it failed or was\n"
       "cancelled. --json prints every event (progress included) as one JSON object per line.",
       {kProgress, kJson},
       RunWatch},
      {"sweeps", Positional::kNone, "sweeps [--limit N] [--json]", "List sweeps, newest first.",
       "Lists sweeps, newest first: id, name, state, current stage, trials done/total, failures.",
       {{"limit", "N", "At most N sweeps (default: the coordinator's, 100)."}, kJson},
       RunSweeps},
      {"show", Positional::kSweepId, "show SWEEP_ID [--json]", "A sweep's state and its stages.",
       "Shows a sweep's state, objective, trial counts and a table of its stages with their winners.",
       {kJson},
       RunShow},
      {"trials", Positional::kSweepId, "trials SWEEP_ID [--stage N] [--state S] [--json]",
       "A sweep's trials, optionally of one stage or state.",
       "Lists trials: stage, grid point, seed, state, objective value, layer-0 expert statistics.",
       {kStage, {"state", "S", "Only trials in state S: pending, running, succeeded, failed, cancelled or pruned."}, kJson},
       RunTrials},
      {"best", Positional::kSweepId, "best SWEEP_ID [--stage N] [--json]",
       "Each stage's winner and the best config so far.",
       "Per stage: name, state, winning grid point, its objective mean ± std over seeds (n), and the\n"
       "difference to the baseline; then the best config (base + every decided stage's winner).",
       {kStage, kJson},
       RunBest},
      {"cancel", Positional::kSweepId, "cancel SWEEP_ID [--json]", "Cancel a sweep.",
       "Cancels pending trials at once and asks running ones to stop. Cancelling a finished sweep\n"
       "changes nothing and prints its state.",
       {kJson},
       RunCancel},
      {"export", Positional::kSweepId, "export SWEEP_ID --format csv|json [--output FILE] [--stage N] [--state S]",
       "Trials as CSV, or as JSON experiment records.",
       "json: an array of experiment records {experiment_id, experiment_name, start_time,\n"
       "parameters, results, expert_analysis, status, sweep_id, stage, seed, point, ...}.\n"
       "csv: one row per trial; columns param.<key>, metric.<name>, expert.l<layer>.<stat>.\n"
       "Without --format, a --output name ending in .csv or .json picks the format.",
       {{"format", "csv|json", "Output format."},
        {"output", "FILE", "Write to FILE instead of stdout."},
        kStage,
        {"state", "S", "Only trials in state S."}},
       RunExport},
      {"health", Positional::kNone, "health", "Ask the coordinator's grpc.health.v1 service whether it serves.",
       "Calls grpc.health.v1.Health/Check. Prints SERVING and exits 0 when the coordinator serves;\n"
       "exits 3 when it is unreachable or not serving. Used by container health checks.",
       {},
       RunHealth},
      {"validate", Positional::kSpec, "validate SPEC.json [--max-stage-trials N] [--json]",
       "Check a spec offline, with the coordinator's own validation.",
       "Runs the validation the coordinator runs on submit, without a coordinator, and prints the\n"
       "same messages (each names its JSON path). On success prints the number of stages and the\n"
       "trials of the first stage. Exits 2 when the spec is invalid.",
       {{"max-stage-trials", "N",
         "Limit of grid points x seeds per stage (default 10000, the coordinator's default; match its flag)."},
        kJson},
       RunValidate},
  };
  return commands;
}

const char kExitCodes[] =
    "Exit codes:\n"
    "  0    success\n"
    "  1    the watched sweep failed or was cancelled (watch, submit --watch)\n"
    "  2    bad usage, or an unreadable or invalid spec\n"
    "  3    coordinator unreachable, unavailable, or no answer within --timeout\n"
    "  4    no sweep with that id\n"
    "  5    any other error (a coordinator internal error, an unwritable --output file)\n"
    "  130  watch stopped by Ctrl-C (the sweep goes on)\n";

void PrintFlags(const std::vector<FlagSpec>& flags, std::ostream& out) {
  for (const FlagSpec& f : flags) {
    std::string left = "--" + f.name + (f.value_name.empty() ? "" : " " + f.value_name);
    if (f.name == "help") left = "-h, --help";
    out << fmt::format("  {:<24} {}\n", left, f.help);
  }
}

void PrintUsage(std::ostream& out) {
  out << "moesweep: run and inspect staged hyperparameter sweeps of Mixture-of-Experts models.\n\n"
         "Usage: moesweep COMMAND [ARGS] [FLAGS]\n\nCommands:\n";
  for (const Command& c : Commands()) out << fmt::format("  {:<10} {}\n", c.name, c.summary);
  out << fmt::format("  {:<10} {}\n", "help", "Help on a command: moesweep help COMMAND.");
  out << "\nFlags of every command:\n";
  PrintFlags(GlobalFlags(), out);
  out << "\n" << kExitCodes;
}

void PrintCommandHelp(const Command& c, std::ostream& out) {
  out << "Usage: moesweep " << c.usage << "\n\n" << c.details << "\n\nFlags:\n";
  PrintFlags(c.flags, out);
  PrintFlags(GlobalFlags(), out);
  out << "\n" << kExitCodes;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::string SuggestCommand(const std::string& name) {
  std::string best;
  size_t best_distance = 3;
  for (const Command& c : Commands()) {
    size_t d = EditDistance(name, c.name);
    if (d < best_distance) best_distance = d, best = c.name;
  }
  return best;
}

std::optional<v1::TrialState> ParseTrialState(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  if (text.rfind("trial_", 0) == 0) text = text.substr(6);
  if (text == "pending") return v1::TRIAL_PENDING;
  if (text == "running") return v1::TRIAL_RUNNING;
  if (text == "succeeded") return v1::TRIAL_SUCCEEDED;
  if (text == "failed") return v1::TRIAL_FAILED;
  if (text == "cancelled" || text == "canceled") return v1::TRIAL_CANCELLED;
  if (text == "pruned") return v1::TRIAL_PRUNED;
  return std::nullopt;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Turns the parsed flags of `command` into an Invocation; returns an error message naming the
// offending argument, or "" when everything is usable.
std::string BuildInvocation(const Command& command, const ParsedArgs& args, Invocation* inv) {
  size_t wanted = command.positional == Positional::kNone ? 0 : 1;
  const char* what = command.positional == Positional::kSweepId ? "SWEEP_ID" : "SPEC.json";
  if (args.positional.size() < wanted) return fmt::format("missing {}", what);
  if (args.positional.size() > wanted) return fmt::format("unexpected argument '{}'", args.positional[wanted]);
  if (command.positional == Positional::kSweepId) {
    auto id = ParseInt(args.positional[0]);
    if (!id || *id <= 0) return fmt::format("SWEEP_ID must be a positive integer, got '{}'", args.positional[0]);
    inv->sweep_id = *id;
  } else if (command.positional == Positional::kSpec) {
    inv->spec_path = args.positional[0];
  }
  if (inv->address.empty()) return "--coordinator must be HOST:PORT, got ''";
  if (auto v = args.Value("timeout")) {
    auto t = ParseDouble(*v);
    // Past a day the deadline only overflows (1e308 s made every call fail at once).
    if (!t || *t <= 0 || *t > 86400) {
      return fmt::format("--timeout must be a positive number of seconds, got '{}' (at most 86400, a day)", *v);
    }
    inv->timeout_s = *t;
  }
  if (auto v = args.Value("stage")) {
    auto s = ParseInt(*v);
    if (!s || *s < 0 || *s > 1000000) return fmt::format("--stage must be a stage number >= 0, got '{}'", *v);
    inv->stage = static_cast<int>(*s);
  }
  if (auto v = args.Value("state")) {
    auto s = ParseTrialState(*v);
    if (!s) return fmt::format("--state must be pending, running, succeeded, failed, cancelled or pruned, got '{}'", *v);
    inv->state = *s;
  }
  if (auto v = args.Value("limit")) {
    auto l = ParseInt(*v);
    if (!l || *l <= 0 || *l > 1000000) return fmt::format("--limit must be a positive integer, got '{}'", *v);
    inv->limit = static_cast<int>(*l);
  }
  if (auto v = args.Value("max-stage-trials")) {
    auto n = ParseInt(*v);
    if (!n || *n <= 0) return fmt::format("--max-stage-trials must be a positive integer, got '{}'", *v);
    inv->max_stage_trials = *n;
  }
  inv->output = args.Value("output").value_or("");
  if (std::string(command.name) == "export") {
    inv->format = args.Value("format").value_or("");
    if (inv->format.empty() && EndsWith(inv->output, ".csv")) inv->format = "csv";
    if (inv->format.empty() && EndsWith(inv->output, ".json")) inv->format = "json";
    if (inv->format.empty()) return "--format csv|json is required";
    if (inv->format != "csv" && inv->format != "json") {
      return fmt::format("--format must be csv or json, got '{}'", inv->format);
    }
  }
  if (std::string(command.name) != "validate") {  // The one command that never calls the coordinator.
    rpc::ClientSecurityFlags flags{args.Value("token-file").value_or(""), args.Value("tls-ca").value_or(""),
                                   args.Value("tls-cert").value_or(""), args.Value("tls-key").value_or("")};
    Status s = rpc::LoadClientSecurity(flags, inv->env->token_env, &inv->security);
    if (!s.ok()) return s.message();
  }
  inv->json = args.Has("json");
  inv->watch = args.Has("watch");
  inv->progress = args.Has("progress");
  if (inv->progress && std::string(command.name) == "submit" && !inv->watch) return "--progress needs --watch";
  return "";
}

}  // namespace

int RunCli(const std::vector<std::string>& args, CliEnv& env) {
  std::ostream& out = *env.out;
  std::ostream& err = *env.err;

  // The command is the first word that is neither a flag nor the value of a global flag.
  size_t command_at = args.size();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool takes_value = std::any_of(GlobalFlags().begin(), GlobalFlags().end(),
                                   [&](const FlagSpec& f) { return !f.value_name.empty() && a == "--" + f.name; });
    if (takes_value) {
      ++i;
    } else if (a.empty() || a[0] != '-') {
      command_at = i;
      break;
    }
  }
  if (command_at == args.size()) {
    if (std::find(args.begin(), args.end(), "--version") != args.end()) {
      out << "moesweep " << MOESWEEP_VERSION << "\n";
      return kExitOk;
    }
    bool help = std::find(args.begin(), args.end(), "--help") != args.end() ||
                std::find(args.begin(), args.end(), "-h") != args.end();
    PrintUsage(help ? out : err);
    return help ? kExitOk : kExitUsage;
  }

  std::string name = args[command_at];
  std::vector<std::string> rest(args.begin(), args.begin() + command_at);
  rest.insert(rest.end(), args.begin() + command_at + 1, args.end());

  if (name == "help") {
    if (rest.empty()) {
      PrintUsage(out);
      return kExitOk;
    }
    if (const Command* c = FindCommand(rest[0])) {
      PrintCommandHelp(*c, out);
      return kExitOk;
    }
    err << fmt::format("moesweep: no command '{}'; see 'moesweep --help'\n", rest[0]);
    return kExitUsage;
  }
  const Command* command = FindCommand(name);
  if (command == nullptr) {
    std::string suggestion = SuggestCommand(name);
    err << fmt::format("moesweep: unknown command '{}'{}; see 'moesweep --help'\n", name,
                       suggestion.empty() ? "" : fmt::format(" (did you mean '{}'?)", suggestion));
    return kExitUsage;
  }

  std::vector<FlagSpec> flags = command->flags;
  flags.insert(flags.end(), GlobalFlags().begin(), GlobalFlags().end());
  ParsedArgs parsed;
  Status s = ParseArgs(rest, flags, &parsed);
  if (!s.ok()) {
    err << fmt::format("moesweep: {}: {}; see 'moesweep {} --help'\n", name, s.message(), name);
    return kExitUsage;
  }
  if (parsed.Has("help")) {
    PrintCommandHelp(*command, out);
    return kExitOk;
  }

  Invocation inv;
  inv.env = &env;
  inv.out = &out;
  inv.err = &err;
  inv.address = parsed.Value("coordinator").value_or(env.coordinator_env.empty() ? kDefaultCoordinator
                                                                                  : env.coordinator_env);
  std::string problem = BuildInvocation(*command, parsed, &inv);
  if (!problem.empty()) {
    err << fmt::format("moesweep: {}: {}; see 'moesweep {} --help'\n", name, problem, name);
    return kExitUsage;
  }
  return command->run(inv);
}

}  // namespace moesweep::client
