#include "worker/cli.h"

#include <cerrno>
#include <cstdlib>
#include <ostream>

#include <fmt/format.h>

#include "common/json.h"

namespace moesweep::worker {
namespace {

Status ParsePositiveInt(const std::string& flag, const std::string& value, int* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < 1 || v > 4096) {
    return Status::InvalidArgument(fmt::format("{}: \"{}\" is not a positive integer", flag, value));
  }
  *out = static_cast<int>(v);
  return Status::Ok();
}

}  // namespace

std::string WorkerUsage() {
  return "usage: moesweep-worker --coordinator HOST:PORT [--slots N] [--threads-per-trial T] [--name NAME]\n"
         "                       [--token-file PATH] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]\n"
         "       (the token comes from --token-file, else $MOESWEEP_TOKEN)\n"
         "       moesweep-worker run CONFIG.json [--threads T]\n";
}

Status ParseWorkerFlags(const std::vector<std::string>& args, WorkerFlags* out) {
  WorkerFlags f;
  size_t i = 0;
  if (!args.empty() && args[0] == "run") {
    f.run = true;
    i = 1;
  }
  while (i < args.size()) {
    std::string arg = args[i++];
    if (arg == "-h" || arg == "--help") {
      f.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      if (f.run && f.config_file.empty()) {
        f.config_file = arg;
        continue;
      }
      return Status::InvalidArgument(fmt::format("unexpected argument \"{}\"", arg));
    }
    std::string value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto take = [&]() -> Status {
      if (has_value) return Status::Ok();
      if (i >= args.size()) return Status::InvalidArgument(fmt::format("{} needs a value", arg));
      value = args[i++];
      return Status::Ok();
    };
    const bool run_flag = arg == "--threads";
    const bool serve_flag = arg == "--coordinator" || arg == "--slots" || arg == "--threads-per-trial" ||
                            arg == "--name" || arg == "--token-file" || arg == "--tls-ca" || arg == "--tls-cert" ||
                            arg == "--tls-key";
    if (!run_flag && !serve_flag) return Status::InvalidArgument(fmt::format("unknown flag {}", arg));
    if (run_flag != f.run) {
      return Status::InvalidArgument(
          fmt::format("{} is only for {}", arg, f.run ? "the worker mode (not `run`)" : "`run`"));
    }
    Status s = take();
    if (!s.ok()) return s;
    if (arg == "--threads") {
      s = ParsePositiveInt(arg, value, &f.threads);
    } else if (arg == "--slots") {
      s = ParsePositiveInt(arg, value, &f.slots);
    } else if (arg == "--threads-per-trial") {
      s = ParsePositiveInt(arg, value, &f.threads_per_trial);
    } else if (arg == "--coordinator") {
      if (value.empty() || value.find(':') == std::string::npos) {
        s = Status::InvalidArgument(fmt::format("--coordinator: \"{}\" is not HOST:PORT", value));
      }
      f.coordinator = value;
    } else if (arg == "--name") {
      if (value.empty()) s = Status::InvalidArgument("--name: empty");
      f.name = value;
    } else {
      std::string* path = arg == "--token-file" ? &f.security.token_file
                          : arg == "--tls-ca"   ? &f.security.tls_ca
                          : arg == "--tls-cert" ? &f.security.tls_cert
                                                : &f.security.tls_key;
      if (value.empty()) s = Status::InvalidArgument(fmt::format("{}: empty", arg));
      *path = value;
    }
    if (!s.ok()) return s;
  }
  if (!f.help) {
    if (f.run && f.config_file.empty()) return Status::InvalidArgument("run: missing CONFIG.json");
    if (!f.run && f.coordinator.empty()) return Status::InvalidArgument("--coordinator HOST:PORT is required");
  }
  *out = f;
  return Status::Ok();
}

std::string ResultToJson(const TrialResult& result) {
  Json metrics = Json::object();
  for (const auto& [k, v] : result.metrics) metrics[k] = v;
  Json layers = Json::array();
  for (const ExpertLayerSummary& s : result.expert_stats) {
    layers.push_back(Json{{"layer", s.layer},
                          {"usage", s.usage},
                          {"importance", s.importance},
                          {"usage_variance", s.usage_variance},
                          {"activation_rate", s.activation_rate},
                          {"gate_weight_variance", s.gate_weight_variance},
                          {"router_entropy", s.router_entropy},
                          {"load_cv", s.load_cv}});
  }
  return Json{{"metrics", metrics}, {"expert_stats", layers}}.dump(2);
}

int RunLocalTrial(const std::string& config_file, int threads, std::ostream& out, std::ostream& err) {
  TrialConfig config;
  Status s = LoadTrialConfigFile(config_file, &config);
  if (!s.ok()) {
    err << "moesweep-worker: " << s.message() << "\n";
    return 1;
  }
  TrialHooks hooks;
  hooks.on_epoch = [&](int epoch, const Metrics& m, const std::vector<ExpertLayerSummary>&) {
    std::string line = fmt::format("epoch {}", epoch);
    for (const auto& [k, v] : m) {
      if (k != "epoch") line += fmt::format(" {}={:.6g}", k, v);
    }
    err << line << std::endl;
    return true;
  };
  TrialResult result;
  s = RunTrial(config, TrainOptions{threads, nullptr}, hooks, &result);
  if (!s.ok()) {
    err << "moesweep-worker: trial failed: " << s.message() << "\n";
    return 1;
  }
  out << ResultToJson(result) << std::endl;
  return 0;
}

}  // namespace moesweep::worker
