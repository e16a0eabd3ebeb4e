#include "worker/agent/command_runner.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "common/command_template.h"
#include "common/json.h"
#include "common/sweep_spec.h"
#include "worker/agent/report_line.h"
#include "worker/agent/subprocess.h"

extern char** environ;

namespace moesweep::worker {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Killed by SIGTERM, SIGINT or SIGHUP, or exited with the status a shell or the Python library
// gives for one (128 + the signal): how a program ends when someone asked it to stop.
bool EndedByStopSignal(int status) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    if (WIFSIGNALED(status) && WTERMSIG(status) == sig) return true;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 128 + sig) return true;
  }
  return false;
}

constexpr size_t kStderrTailLines = 20;
constexpr size_t kStderrTailLineBytes = 400;
constexpr size_t kMaxLineBytes = kMaxReportLineBytes + kReportPrefix.size();

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

// Splits a pipe's bytes into lines; a line longer than kMaxLineBytes is cut and flagged.
class LineSplitter {
 public:
  template <typename OnLine>
  void Feed(const char* data, size_t size, OnLine on_line) {
    for (size_t i = 0; i < size; ++i) {
      if (data[i] == '\n') {
        on_line(buffer_, overlong_);
        buffer_.clear();
        overlong_ = false;
      } else if (buffer_.size() < kMaxLineBytes) {
        buffer_ += data[i];
      } else {
        overlong_ = true;
      }
    }
  }
  template <typename OnLine>
  void Finish(OnLine on_line) {
    if (!buffer_.empty()) on_line(buffer_, overlong_);
    buffer_.clear();
  }

 private:
  std::string buffer_;
  bool overlong_ = false;
};

// The last metric values by name, in the order names first appeared.
class LastMetrics {
 public:
  void Merge(const Metrics& metrics) {
    for (const auto& [name, value] : metrics) {
      auto [it, added] = index_.emplace(name, values_.size());
      if (added) {
        values_.emplace_back(name, value);
      } else {
        values_[it->second].second = value;
      }
    }
  }
  const Metrics& values() const { return values_; }

 private:
  Metrics values_;
  std::map<std::string, size_t> index_;
};

std::vector<std::string> TrialEnvironment(const TrainerSpec& trainer, const LeasedTrial& trial, int64_t seed,
                                          const std::string& config_file, const std::string& output_dir) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry = *e;
    size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [name, value] : trainer.env) env[name] = value;
  env["MOESWEEP_CONFIG_FILE"] = config_file;
  env["MOESWEEP_TRIAL_ID"] = std::to_string(trial.trial_id);
  env["MOESWEEP_TRIAL_NAME"] = trial.trial_name;
  env["MOESWEEP_ATTEMPT"] = std::to_string(trial.attempt);
  env["MOESWEEP_SEED"] = std::to_string(seed);
  env["MOESWEEP_OUTPUT_DIR"] = output_dir;
  // A worker that hands out GPUs gives each trial its own; one that does not leaves the variable
  // as it found it.
  if (trial.gpus_managed) env["CUDA_VISIBLE_DEVICES"] = fmt::format("{}", fmt::join(trial.gpus, ","));
  std::vector<std::string> out;
  for (const auto& [name, value] : env) out.push_back(name + "=" + value);
  return out;
}

}  // namespace

CommandRunner::CommandRunner(CommandRunnerOptions options) : options_(std::move(options)) {}

std::string CommandRunner::kind() const { return TrainerSpec::kCommand; }

Status CommandRunner::Run(const LeasedTrial& trial, const RunnerHooks& hooks, RunOutcome* outcome) {
  auto warn = [&](const std::string& message) {
    if (options_.warn) {
      options_.warn(message);
    } else {
      std::fprintf(stderr, "moesweep-worker: %s\n", message.c_str());
    }
  };

  // What to run.
  Json trainer_json, config;
  if (Status s = ParseJson(trial.trainer_json, &trainer_json); !s.ok()) return Status::InvalidArgument("trainer: " + s.message());
  TrainerSpec trainer;
  std::vector<std::string> errors;
  CheckTrainerSpec(trainer_json, "trainer", &trainer, &errors);
  if (!errors.empty()) return Status::InvalidArgument(fmt::format("{}", fmt::join(errors, "\n")));
  if (!trainer.is_command()) return Status::InvalidArgument("trainer: not a command trainer");
  if (Status s = ParseJson(trial.config_json, &config); !s.ok()) return Status::InvalidArgument("config: " + s.message());
  if (!config.is_object()) return Status::InvalidArgument("config: expected a JSON object");
  const int64_t seed = config.contains("seed") && config["seed"].is_number_integer() ? config["seed"].get<int64_t>() : 0;

  // Where it writes: a fresh folder per attempt with the config file, and a log per attempt.
  std::error_code ec;
  const std::string label = trial.trial_name.empty() ? "trial" : trial.trial_name;
  const fs::path output_dir =
      fs::absolute(options_.runs_dir) / fmt::format("{}-t{}-a{}", label, trial.trial_id, trial.attempt);
  fs::remove_all(output_dir, ec);
  if (fs::create_directories(output_dir, ec); ec) {
    return Status::Unavailable(fmt::format("cannot create output folder {}: {}", output_dir.string(), ec.message()));
  }
  const fs::path config_file = output_dir / "config.json";
  {
    std::ofstream f(config_file);
    f << config.dump(2) << "\n";
    if (!f) return Status::Unavailable(fmt::format("cannot write {}", config_file.string()));
  }
  fs::create_directories(options_.log_dir, ec);
  const fs::path log_path =
      fs::absolute(options_.log_dir) / fmt::format("trial-{}-attempt-{}.log", trial.trial_id, trial.attempt);
  File log(std::fopen(log_path.c_str(), "w"));
  if (!log) return Status::Unavailable(fmt::format("cannot write the trial's log {}", log_path.string()));

  TrialPlaceholders placeholders{trial.trial_id, seed, trial.trial_name, config_file.string(), output_dir.string()};
  SpawnOptions spawn;
  if (Status s = ExpandCommand(trainer.command, config, placeholders, &spawn.argv); !s.ok()) return s;
  spawn.env = TrialEnvironment(trainer, trial, seed, config_file.string(), output_dir.string());
  spawn.workdir = trainer.workdir;
  std::fprintf(log.get(), "# moesweep: trial %lld attempt %d: %s\n", static_cast<long long>(trial.trial_id),
               trial.attempt, fmt::format("{}", fmt::join(spawn.argv, " ")).c_str());
  std::fflush(log.get());

  std::unique_ptr<Subprocess> process;
  if (Status s = Subprocess::Start(spawn, &process); !s.ok()) return s;

  // Follow it until it has exited and both pipes are closed.
  LastMetrics last;
  std::optional<Metrics> final_metrics;
  int reports = 0;
  std::deque<std::string> stderr_tail;
  bool stopping = false, timed_out = false, killed = false;
  const auto start = Clock::now();
  Clock::time_point kill_at = Clock::time_point::max();
  std::optional<Clock::time_point> exited_at;

  auto begin_stop = [&] {
    if (stopping) return;
    stopping = true;
    process->SignalGroup(SIGTERM);
    kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(options_.kill_grace_seconds));
  };
  auto on_stdout = [&](const std::string& line, bool overlong) {
    std::fprintf(log.get(), "%s\n", line.c_str());
    if (!IsReportLine(line)) return;
    ParsedReport report;
    Status s = overlong ? Status::InvalidArgument(fmt::format("line over {} bytes", kMaxLineBytes))
                        : ParseReport(std::string_view(line).substr(kReportPrefix.size()), &report);
    if (!s.ok()) {
      const std::string message = fmt::format("trial {}: ignored a malformed @moesweep line: {}", trial.trial_id,
                                              s.message().substr(0, 300));
      std::fprintf(log.get(), "# moesweep: %s\n", message.c_str());
      warn(message);
      return;
    }
    ++reports;
    last.Merge(report.metrics);
    if (!report.expert_stats.empty()) outcome->expert_stats = report.expert_stats;
    if (report.final) final_metrics = report.metrics;
    if (!stopping && !hooks.on_progress(report.step.value_or(reports), report.metrics, report.expert_stats)) {
      begin_stop();
    }
  };
  auto on_stderr = [&](const std::string& line, bool) {
    std::fprintf(log.get(), "%s\n", line.c_str());
    stderr_tail.push_back(line.substr(0, kStderrTailLineBytes));
    if (stderr_tail.size() > kStderrTailLines) stderr_tail.pop_front();
  };

  LineSplitter out_lines, err_lines;
  char buffer[65536];
  for (;;) {
    pollfd fds[2];
    nfds_t n = 0;
    if (process->stdout_fd() >= 0) fds[n++] = {process->stdout_fd(), POLLIN, 0};
    if (process->stderr_fd() >= 0) fds[n++] = {process->stderr_fd(), POLLIN, 0};
    if (n == 0 && process->Poll()) break;
    poll(n ? fds : nullptr, n, 100);
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      const bool is_stdout = fds[i].fd == process->stdout_fd();
      ssize_t got = read(fds[i].fd, buffer, sizeof(buffer));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        if (is_stdout) {
          out_lines.Finish(on_stdout);
          process->CloseStdout();
        } else {
          err_lines.Finish(on_stderr);
          process->CloseStderr();
        }
        continue;
      }
      if (is_stdout) {
        out_lines.Feed(buffer, static_cast<size_t>(got), on_stdout);
      } else {
        err_lines.Feed(buffer, static_cast<size_t>(got), on_stderr);
      }
    }
    std::fflush(log.get());
    const auto now = Clock::now();
    if (!exited_at && process->Poll()) exited_at = now;
    // The program is done, but something it started still holds its output open: end that too.
    if (exited_at && now - *exited_at > std::chrono::seconds(1) && !killed) {
      process->SignalGroup(SIGKILL);
      killed = true;
    }
    // Whatever still holds the pipes left the process group (setsid): stop reading.
    if (exited_at && now - *exited_at > std::chrono::seconds(3)) {
      out_lines.Finish(on_stdout);
      err_lines.Finish(on_stderr);
      process->CloseStdout();
      process->CloseStderr();
    }
    if (!stopping && !hooks.keep_going()) begin_stop();
    if (!stopping && trainer.timeout_seconds > 0 &&
        now - start > std::chrono::duration<double>(trainer.timeout_seconds)) {
      timed_out = true;
      begin_stop();
    }
    if (stopping && !killed && now >= kill_at) {
      process->SignalGroup(SIGKILL);
      killed = true;
    }
  }
  process->SignalGroup(SIGKILL);  // Nothing of the trial outlives it.
  const int status = process->wait_status();
  // A stop signal the worker did not send usually went to the whole job: `scancel` signals every
  // process of a Slurm job, trainers included, and the worker may take its own copy a moment later.
  // Give that a second to show, so that the trial is handed back rather than failed.
  if (!stopping && !timed_out && EndedByStopSignal(status)) {
    for (int i = 0; i < 20 && !stopping; ++i) {
      if (!hooks.keep_going()) {
        stopping = true;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  std::fprintf(log.get(), "# moesweep: %s\n", DescribeWaitStatus(status).c_str());

  outcome->metrics = final_metrics ? *final_metrics : last.values();
  auto with_tail = [&](const std::string& what) {
    if (stderr_tail.empty()) return what;
    return fmt::format("{}: {}", what, fmt::join(stderr_tail, "\n"));
  };
  if (timed_out) {
    return Status::Unavailable(with_tail(fmt::format("timed out after {} s (trainer.timeout_seconds); stopped",
                                                     trainer.timeout_seconds)));
  }
  if (stopping) {
    outcome->stopped = true;
    return Status::Ok();
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return Status::Unavailable(with_tail(DescribeWaitStatus(status)));
  if (reports == 0) {
    return Status::Unavailable(
        "exited with status 0 without a single report (print lines `@moesweep {\"metrics\": {...}}` to stdout; see "
        "docs/trainers.md)");
  }
  double objective = 0;
  if (!trial.objective_metric.empty() && FindMetric(outcome->metrics, trial.objective_metric, &objective) &&
      !std::isfinite(objective)) {
    return Status::Unavailable(fmt::format("the objective {} is {}", trial.objective_metric, objective));
  }
  return Status::Ok();
}

}  // namespace moesweep::worker
