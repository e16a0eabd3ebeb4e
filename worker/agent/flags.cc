#include "worker/agent/flags.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

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

// A number of seconds in [0, max]; `what` ends the error, e.g. "in [0, 3600]".
Status ParseSeconds(const std::string& flag, const std::string& value, double max, const std::string& what,
                    double* out) {
  char* end = nullptr;
  double v = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || !(v >= 0 && v <= max)) {
    return Status::InvalidArgument(fmt::format("{}: \"{}\" is not a number of seconds {}", flag, value, what));
  }
  *out = v;
  return Status::Ok();
}

// "0,1,3": distinct device ids.
Status ParseGpuList(const std::string& value, std::vector<int>* out) {
  out->clear();
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    long id = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || id < 0 || id > 1023) {
      return Status::InvalidArgument(
          fmt::format("--gpus: \"{}\" is not a comma-separated list of GPU ids, e.g. 0,1,2,3", value));
    }
    if (std::find(out->begin(), out->end(), id) != out->end()) {
      return Status::InvalidArgument(fmt::format("--gpus: GPU {} is listed twice", id));
    }
    out->push_back(static_cast<int>(id));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return Status::Ok();
}

}  // namespace

std::string WorkerUsage(bool with_builtin) {
  std::string usage =
      "usage: moesweep-worker --coordinator HOST:PORT [--slots N] [--threads-per-trial T] [--name NAME]\n"
      "                       [--gpus 0,1,...] [--log-dir DIR] [--runs-dir DIR] [--kill-grace SECONDS]\n"
      "                       [--exit-when-idle SECONDS] [--give-up-after SECONDS]\n"
      "                       [--token-file PATH] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]\n"
      "       (the token comes from --token-file, else $MOESWEEP_TOKEN)\n"
      "       exit codes: 0 idle for --exit-when-idle or stopped by a signal (trials handed back),\n"
      "                   2 bad flag, 3 coordinator unreachable for --give-up-after\n";
  if (with_builtin) usage += "       moesweep-worker run CONFIG.json [--threads T]\n";
  usage += with_builtin ? "trainers: builtin (LibTorch), command\n" : "trainers: command (built without LibTorch)\n";
  return usage;
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
                            arg == "--name" || arg == "--gpus" || arg == "--log-dir" || arg == "--runs-dir" ||
                            arg == "--kill-grace" || arg == "--exit-when-idle" || arg == "--give-up-after" ||
                            arg == "--token-file" || arg == "--tls-ca" ||
                            arg == "--tls-cert" || arg == "--tls-key";
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
    } else if (arg == "--gpus") {
      s = ParseGpuList(value, &f.gpus);
    } else if (arg == "--log-dir" || arg == "--runs-dir") {
      if (value.empty()) s = Status::InvalidArgument(fmt::format("{}: empty", arg));
      (arg == "--log-dir" ? f.log_dir : f.runs_dir) = value;
    } else if (arg == "--kill-grace") {
      s = ParseSeconds(arg, value, 3600, "in [0, 3600]", &f.kill_grace_seconds);
    } else if (arg == "--exit-when-idle" || arg == "--give-up-after") {
      // 30 days: longer than any array task may run; 0 turns the exit off.
      s = ParseSeconds(arg, value, 30 * 86400, "in [0, 2592000] (0 = never)",
                       arg == "--exit-when-idle" ? &f.exit_when_idle_seconds : &f.give_up_after_seconds);
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

}  // namespace moesweep::worker
