#include "client/commands.h"

#include "grpc/health/v1/health.grpc.pb.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>

#include "client/export.h"
#include "client/format.h"
#include "client/proto_json.h"
#include "client/watch.h"
#include "common/command_template.h"
#include "common/sweep_spec.h"

namespace moesweep::client {
namespace {

// Reads the spec file ("-" = stdin). On failure prints why and returns false.
bool ReadSpec(const Invocation& inv, std::string* text) {
  std::ostringstream buffer;
  if (inv.spec_path == "-") {
    if (inv.env->in == nullptr) {
      *inv.err << "moesweep: no standard input to read the spec from\n";
      return false;
    }
    buffer << inv.env->in->rdbuf();
  } else {
    std::error_code ec;
    if (std::filesystem::is_directory(inv.spec_path, ec)) {
      *inv.err << fmt::format("moesweep: cannot read {}: is a directory\n", inv.spec_path);
      return false;
    }
    std::ifstream file(inv.spec_path, std::ios::binary);
    if (!file) {
      *inv.err << fmt::format("moesweep: cannot read {}: {}\n", inv.spec_path, std::strerror(errno));
      return false;
    }
    buffer << file.rdbuf();
  }
  *text = buffer.str();
  // The wire carries the spec as a proto string, which must be UTF-8: say where it is not, rather
  // than let the call fail with "Unable to parse request".
  if (size_t bad = FindInvalidUtf8(*text); bad != std::string::npos) {
    *inv.err << fmt::format("moesweep: {}: invalid UTF-8 at byte offset {}\n", inv.spec_path, bad);
    return false;
  }
  return true;
}


// Unary call with the invocation's deadline; on failure reports and stores the exit code.
template <typename Request, typename Response, typename Method>
bool Call(const Invocation& inv, const Coordinator& c, Method method, const Request& request, Response* response,
          const std::string& subject, int* exit_code) {
  grpc::ClientContext context;
  SetDeadline(c, &context);
  grpc::Status status = ((*c.stub).*method)(&context, request, response);
  if (status.ok()) return true;
  *exit_code = ReportRpcError(status, c, subject, *inv.err);
  return false;
}

std::string SweepSubject(const Invocation& inv) { return fmt::format("sweep {}", inv.sweep_id); }

// Every page of ListTrials, as one response (pages follow next_page_token).
bool ListAllTrials(const Invocation& inv, const Coordinator& c, v1::ListTrialsRequest request,
                   v1::ListTrialsResponse* all, int* code) {
  for (;;) {
    v1::ListTrialsResponse page;
    if (!Call(inv, c, &v1::SweepService::Stub::ListTrials, request, &page, SweepSubject(inv), code)) return false;
    for (v1::Trial& t : *page.mutable_trials()) *all->add_trials() = std::move(t);
    if (page.next_page_token().empty()) return true;
    request.set_page_token(page.next_page_token());
  }
}

void PrintJson(const Invocation& inv, const Json& value) { *inv.out << value.dump(2) << "\n"; }

int WatchSweep(const Invocation& inv, const Coordinator& c) {
  WatchOptions options = inv.env->watch;
  options.sweep_id = inv.sweep_id;
  options.json = inv.json;
  options.show_progress = inv.progress;
  return Watch(c, options, *inv.out, *inv.err);
}

}  // namespace

int RunSubmit(const Invocation& inv) {
  std::string text;
  if (!ReadSpec(inv, &text)) return kExitUsage;
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  v1::SubmitSweepRequest request;
  request.set_spec_json(text);
  v1::SubmitSweepResponse response;
  int code = kExitOk;
  if (!Call(inv, c, &v1::SweepService::Stub::SubmitSweep, request, &response, inv.spec_path, &code)) return code;
  if (inv.json) {
    *inv.out << ProtoToJson(response).dump() << "\n";
  } else {
    *inv.out << fmt::format("submitted sweep {}: {} trials in the first stage\n", response.sweep_id(),
                            response.trials_in_first_stage());
    if (!inv.watch) *inv.out << fmt::format("follow it with: moesweep watch {}\n", response.sweep_id());
    if (!inv.env->dashboard_env.empty()) {
      std::string base = inv.env->dashboard_env;
      while (!base.empty() && base.back() == '/') base.pop_back();
      *inv.out << fmt::format("dashboard: {}/sweeps/{}\n", base, response.sweep_id());
    }
  }
  inv.out->flush();
  if (!inv.watch) return kExitOk;
  Invocation watch = inv;
  watch.sweep_id = response.sweep_id();
  return WatchSweep(watch, c);
}

int RunWatch(const Invocation& inv) { return WatchSweep(inv, Connect(inv.address, inv.timeout_s, inv.security)); }

int RunSweeps(const Invocation& inv) {
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  v1::ListSweepsRequest request;
  request.set_limit(inv.limit);
  v1::ListSweepsResponse response;
  int code = kExitOk;
  // Without --limit, the coordinator's first page (100); with it, pages until that many.
  for (;;) {
    v1::ListSweepsResponse page;
    if (!Call(inv, c, &v1::SweepService::Stub::ListSweeps, request, &page, "", &code)) return code;
    for (v1::Sweep& s : *page.mutable_sweeps()) *response.add_sweeps() = std::move(s);
    if (page.next_page_token().empty() || inv.limit <= 0 || response.sweeps_size() >= inv.limit) break;
    request.set_limit(inv.limit - response.sweeps_size());
    request.set_page_token(page.next_page_token());
  }
  if (inv.json) {
    PrintJson(inv, ProtoToJson(response));
  } else {
    PrintSweepList(response, *inv.out);
  }
  return kExitOk;
}

int RunShow(const Invocation& inv) {
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  v1::GetSweepRequest request;
  request.set_sweep_id(inv.sweep_id);
  v1::GetSweepResponse response;
  int code = kExitOk;
  if (!Call(inv, c, &v1::SweepService::Stub::GetSweep, request, &response, SweepSubject(inv), &code)) return code;
  if (inv.json) {
    PrintJson(inv, ProtoToJson(response));
  } else {
    PrintSweep(response, *inv.out);
  }
  return kExitOk;
}

int RunTrials(const Invocation& inv) {
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  int code = kExitOk;
  std::string metric;
  if (!inv.json) {
    // The table shows the objective, which only the sweep knows.
    v1::GetSweepRequest sweep_request;
    sweep_request.set_sweep_id(inv.sweep_id);
    v1::GetSweepResponse sweep;
    if (!Call(inv, c, &v1::SweepService::Stub::GetSweep, sweep_request, &sweep, SweepSubject(inv), &code)) return code;
    metric = sweep.sweep().objective_metric();
  }
  v1::ListTrialsRequest request;
  request.set_sweep_id(inv.sweep_id);
  if (inv.stage) request.set_stage(*inv.stage);
  request.set_state(inv.state);
  v1::ListTrialsResponse response;
  if (!ListAllTrials(inv, c, request, &response, &code)) return code;
  if (inv.json) {
    PrintJson(inv, ProtoToJson(response));
  } else {
    PrintTrials(response, metric, *inv.out);
  }
  return kExitOk;
}

int RunBest(const Invocation& inv) {
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  v1::GetBestConfigRequest request;
  request.set_sweep_id(inv.sweep_id);
  if (inv.stage) request.set_stage(*inv.stage);
  v1::GetBestConfigResponse response;
  int code = kExitOk;
  if (!Call(inv, c, &v1::SweepService::Stub::GetBestConfig, request, &response, SweepSubject(inv), &code)) {
    return code;
  }
  if (inv.json) {
    PrintJson(inv, ProtoToJson(response));
  } else {
    PrintBest(response, *inv.out);
  }
  return kExitOk;
}

int RunCancel(const Invocation& inv) {
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  v1::CancelSweepRequest request;
  request.set_sweep_id(inv.sweep_id);
  v1::CancelSweepResponse response;
  int code = kExitOk;
  if (!Call(inv, c, &v1::SweepService::Stub::CancelSweep, request, &response, SweepSubject(inv), &code)) {
    return code;
  }
  if (inv.json) {
    PrintJson(inv, ProtoToJson(response));
  } else if (response.trials_cancelled() == 0 && response.trials_stopping() == 0 &&
             response.state() != v1::SWEEP_CANCELLING) {
    *inv.out << fmt::format("sweep {} is {}; nothing to cancel\n", inv.sweep_id, SweepStateName(response.state()));
  } else {
    *inv.out << fmt::format("sweep {} is {}: {} pending trials cancelled, {} running trials asked to stop\n",
                            inv.sweep_id, SweepStateName(response.state()), response.trials_cancelled(),
                            response.trials_stopping());
  }
  return kExitOk;
}

int RunHealth(const Invocation& inv) {
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  auto health = grpc::health::v1::Health::NewStub(c.channel);
  grpc::ClientContext context;
  SetDeadline(c, &context);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) return ReportRpcError(status, c, "", *inv.err);
  bool serving = response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  *inv.out << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  if (!serving) *inv.err << fmt::format("moesweep: coordinator at {} is not serving\n", inv.address);
  return serving ? kExitOk : kExitUnreachable;
}

int RunExport(const Invocation& inv) {
  Coordinator c = Connect(inv.address, inv.timeout_s, inv.security);
  int code = kExitOk;
  v1::GetSweepRequest sweep_request;
  sweep_request.set_sweep_id(inv.sweep_id);
  v1::GetSweepResponse sweep;
  if (!Call(inv, c, &v1::SweepService::Stub::GetSweep, sweep_request, &sweep, SweepSubject(inv), &code)) return code;
  v1::ListTrialsRequest request;
  request.set_sweep_id(inv.sweep_id);
  if (inv.stage) request.set_stage(*inv.stage);
  request.set_state(inv.state);
  v1::ListTrialsResponse trials;
  if (!ListAllTrials(inv, c, request, &trials, &code)) return code;

  ExportContext context;
  context.sweep_name = sweep.sweep().name();
  for (const v1::StageResult& s : sweep.stages()) context.stage_names[s.stage()] = s.name();

  std::ostringstream text;
  if (inv.format == "csv") {
    WriteCsv(trials.trials(), context, text);
  } else {
    text << TrialRecords(trials.trials(), context).dump(2) << "\n";
  }
  if (inv.output.empty()) {
    *inv.out << text.str();
    return kExitOk;
  }
  std::ofstream file(inv.output, std::ios::binary | std::ios::trunc);
  file << text.str();
  file.close();
  if (!file) {
    *inv.err << fmt::format("moesweep: cannot write {}: {}\n", inv.output, std::strerror(errno));
    return kExitError;
  }
  *inv.out << fmt::format("exported {} trials of sweep {} to {}\n", trials.trials_size(), inv.sweep_id, inv.output);
  return kExitOk;
}

namespace {

// The argv of stage 1's first trial, quoted where a shell would need it, so a user sees what their
// program will get. Paths and the trial id are the worker's at run time; placeholders for them.
std::string FirstTrialCommand(const SweepSpec& spec) {
  const StageSpec& first = spec.stages.front();
  Json config = spec.base;
  Json point = first.Point(0);
  for (auto it = point.begin(); it != point.end(); ++it) config[it.key()] = it.value();
  config["seed"] = spec.seeds.front();
  TrialPlaceholders trial;
  trial.trial_id = 1;
  trial.seed = spec.seeds.front();
  trial.trial_name = TrialName(1, 0, trial.seed);
  trial.output_dir = fmt::format("moesweep-runs/{}-t1-a1", trial.trial_name);
  trial.config_file = trial.output_dir + "/config.json";
  std::vector<std::string> argv;
  if (Status s = ExpandCommand(spec.trainer.command, config, trial, &argv); !s.ok()) return s.message();
  std::string line;
  for (const std::string& arg : argv) {
    bool plain = !arg.empty();
    for (char c : arg) plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || std::strchr("-_./=:,+@%", c));
    if (!line.empty()) line += ' ';
    if (plain) {
      line += arg;
    } else {
      std::string quoted = "'";
      for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
      line += quoted + "'";
    }
  }
  return line;
}

}  // namespace

int RunValidate(const Invocation& inv) {
  std::string text;
  if (!ReadSpec(inv, &text)) return kExitUsage;
  SpecLimits limits;
  if (inv.max_stage_trials) limits.max_stage_trials = *inv.max_stage_trials;
  SweepSpec spec;
  Status s = ParseSweepSpec(text, limits, &spec);
  if (!s.ok()) {
    std::istringstream lines(s.message());
    Json errors = Json::array();
    for (std::string line; std::getline(lines, line);) {
      *inv.err << fmt::format("moesweep: {}: {}\n", inv.spec_path, line);
      errors.push_back(line);
    }
    if (inv.json) PrintJson(inv, Json{{"valid", false}, {"errors", errors}});
    return kExitUsage;
  }
  const StageSpec& first = spec.stages.front();
  size_t seeds = spec.seeds.size();
  size_t baseline_trials = spec.baseline ? seeds : 0;
  size_t first_trials = first.NumPoints() * seeds;
  if (inv.json) {
    Json stages = Json::array();
    for (const StageSpec& stage : spec.stages) {
      stages.push_back({{"name", stage.name}, {"points", stage.NumPoints()}, {"trials", stage.NumPoints() * seeds}});
    }
    Json out{{"valid", true},
             {"name", spec.name},
             {"num_stages", spec.stages.size()},
             {"has_baseline", spec.baseline.has_value()},
             {"trials_in_first_stage", first_trials + baseline_trials},
             {"stages", stages},
             {"spec", spec.ToJson()}};
    if (spec.trainer.is_command()) out["first_trial_command"] = FirstTrialCommand(spec);
    PrintJson(inv, out);
    return kExitOk;
  }
  *inv.out << fmt::format("{}: valid sweep \"{}\": {}{} stage{}; first stage \"{}\": {} points x {} seeds = {} trials",
                          inv.spec_path, spec.name, spec.baseline ? "baseline + " : "", spec.stages.size(),
                          spec.stages.size() == 1 ? "" : "s", first.name, first.NumPoints(), seeds, first_trials);
  if (baseline_trials > 0) *inv.out << fmt::format(" (+ {} baseline trials)", baseline_trials);
  *inv.out << "\n";
  if (spec.trainer.is_command()) *inv.out << fmt::format("first trial runs: {}\n", FirstTrialCommand(spec));
  return kExitOk;
}

}  // namespace moesweep::client
