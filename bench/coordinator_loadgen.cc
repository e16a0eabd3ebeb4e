// moesweep-coordinator-loadgen: plays W concurrent no-op workers against a real
// moesweep-coordinator process over loopback, with one WatchSweep client attached, and checks at
// the end that every acknowledged result is in the database exactly once.
//
//   moesweep-coordinator-loadgen --coordinator build-bench/server/moesweep-coordinator [--workers 32]
//       [--grid 50x50] [--seeds 2] [--reports 10] [--threads 2] [--channels 2] [--json out.json]
//
// What it does:
//   1. starts the coordinator on 127.0.0.1 (port chosen by the kernel, read from its log) with a
//      fresh database file in a temporary directory;
//   2. submits one sweep of one stage: a grid of two axes (expert_hidden_dim x temperature) times
//      the seeds, e.g. 50 x 50 x 2 = 5000 trials;
//   3. attaches a WatchSweep stream and waits until it has caught up (it then receives live events);
//   4. W workers, each a state machine on a gRPC completion queue (a few threads drive them all,
//      over a few shared channels), loop: AcquireTrial -> R x ReportProgress -> CompleteTrial,
//      the reports over one ReportProgressStream per worker as moesweep-worker sends them
//      (--unary-reports: one ReportProgress call each);
//   5. when the sweep has finished: ListTrials, a full replay of the events (WatchSweep from 0),
//      then kills the coordinator with SIGKILL (no clean shutdown) and opens the database file
//      read-only to check that every acknowledged report and completion is there, once.
//
// It prints throughput, per-RPC latency percentiles, the watch latency (CompleteTrial reply on
// the worker -> TRIAL_FINISHED event on the watcher) and CPU use of both processes, and writes the
// same as JSON with --json. Exit status 0 only if every check passed. Every RPC has a deadline and
// the whole run is capped by --max-seconds (default 300); traffic goes to 127.0.0.1 only.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <absl/synchronization/mutex.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "moesweep/v1/moesweep.grpc.pb.h"

namespace {

namespace v1 = moesweep::v1;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string coordinator;      // Path of the moesweep-coordinator binary.
  int workers = 32;
  int axis_a = 50;              // expert_hidden_dim values.
  int axis_b = 50;              // temperature values.
  int seeds = 2;
  int reports = 10;             // ReportProgress calls per trial.
  int threads = 2;              // Completion-queue threads driving the workers.
  int channels = 2;             // TCP connections the workers share.
  double max_seconds = 300;     // Hard cap on the whole run.
  double rpc_timeout = 30;      // Deadline of every unary call (AcquireTrial: wait + this).
  double acquire_wait = 1.0;    // AcquireTrial long-poll.
  std::string kill = "KILL";    // How the coordinator is stopped before the database check: KILL or TERM.
  std::string json_out;
  std::string workdir;          // Default: a fresh directory under $TMPDIR.
  bool keep = false;            // Keep the work directory (database, log).
  bool absl_deadlock = false;   // Leave absl::Mutex deadlock detection as the library has it.
  std::string perf;             // perf record the coordinator during the load into this file.
  bool watch = true;            // Diagnostic: --no-watch runs without the live watcher.
  bool watch_progress = false;  // --watch-progress: the live watcher also takes every progress report.
  bool unary_reports = false;   // --unary-reports: one ReportProgress call per report, not the stream.
  int stalled_watchers = 0;     // --stalled-watchers: WatchSweep streams that never read.
  int drain_stalled = 2;        // ... of which this many are read to the end after the load.
  double junk_rate = -1;        // --junk-rate: oversized requests per second (0: back to back; < 0: none).
};

constexpr const char* kUsage = R"(usage: moesweep-coordinator-loadgen --coordinator PATH [options]

  --coordinator PATH   moesweep-coordinator binary to start (required)
  --workers N          concurrent workers (default 32)
  --grid AxB           grid of the one stage: A expert_hidden_dim values x B temperature values (default 50x50)
  --seeds N            seeds per grid point (default 2); trials = A * B * N
  --reports N          ReportProgress calls per trial (default 10)
  --unary-reports      send each report as a unary ReportProgress call; by default each worker
                       sends them over one ReportProgressStream, as moesweep-worker does
  --threads N          client threads driving the workers (default 2)
  --channels N         gRPC channels (TCP connections) the workers share (default 2)
  --max-seconds S      hard cap on the whole run (default 300)
  --kill KILL|TERM     how to stop the coordinator before reading its database (default KILL)
  --json PATH          also write the results as JSON
  --workdir DIR        put the database and coordinator log here (default: a new temp dir)
  --keep               keep the work directory afterwards
  --watch-progress     the live watcher also receives every TRIAL_PROGRESS event (by default it
                       asks for skip_progress, as `moesweep watch` does without --progress)
  --no-watch           diagnostic: no live WatchSweep client (shows what watching costs; the
                       watch latency and live-watch checks are then skipped)
  --perf FILE          run `perf record -g -p <coordinator>` during the load phase only, into FILE
  --stalled-watchers N beside the load, N WatchSweep streams (all events, each on its own
                       connection) that never read; after the load --drain-stalled K of them
                       (default 2) are read to the end and must hold every event without a gap
  --junk-rate R        beside the load, R requests per second (0: back to back) over the limits,
                       in turn: a 2 MB spec, a report of 100,000 metrics, a spec of 10M '['; each
                       must be refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED
  --absl-deadlock-detection
                       keep absl::Mutex deadlock detection in this process (Debian's abseil is built
                       without NDEBUG, so it is on by default there; the load generator turns it off
                       for itself so that its own CPU cost stays low)
)";

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "loadgen: " << flag << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--coordinator") {
      o->coordinator = next();
    } else if (flag == "--workers") {
      o->workers = std::stoi(next());
    } else if (flag == "--grid") {
      std::string g = next();
      if (std::sscanf(g.c_str(), "%dx%d", &o->axis_a, &o->axis_b) != 2) return false;
    } else if (flag == "--seeds") {
      o->seeds = std::stoi(next());
    } else if (flag == "--reports") {
      o->reports = std::stoi(next());
    } else if (flag == "--threads") {
      o->threads = std::stoi(next());
    } else if (flag == "--channels") {
      o->channels = std::stoi(next());
    } else if (flag == "--max-seconds") {
      o->max_seconds = std::stod(next());
    } else if (flag == "--kill") {
      o->kill = next();
    } else if (flag == "--json") {
      o->json_out = next();
    } else if (flag == "--workdir") {
      o->workdir = next();
    } else if (flag == "--keep") {
      o->keep = true;
    } else if (flag == "--watch-progress") {
      o->watch_progress = true;
    } else if (flag == "--unary-reports") {
      o->unary_reports = true;
    } else if (flag == "--no-watch") {
      o->watch = false;
    } else if (flag == "--stalled-watchers") {
      o->stalled_watchers = std::stoi(next());
    } else if (flag == "--drain-stalled") {
      o->drain_stalled = std::stoi(next());
    } else if (flag == "--junk-rate") {
      o->junk_rate = std::stod(next());
    } else if (flag == "--perf") {
      o->perf = next();
    } else if (flag == "--absl-deadlock-detection") {
      o->absl_deadlock = true;
    } else if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      std::cerr << "loadgen: unknown flag " << flag << "\n";
      return false;
    }
  }
  if (o->coordinator.empty() || o->workers < 1 || o->axis_a < 1 || o->axis_b < 1 || o->seeds < 1 ||
      o->reports < 0 || o->threads < 1 || o->channels < 1 || (o->kill != "KILL" && o->kill != "TERM") ||
      o->stalled_watchers < 0 || o->drain_stalled < 0) {
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The coordinator process

std::atomic<pid_t> g_child{0};

struct CpuTimes {
  double user = 0, sys = 0;
  double total() const { return user + sys; }
};

// utime and stime of a process or thread from /proc/.../stat.
std::optional<CpuTimes> ReadProcCpu(const std::string& stat_path, std::string* comm = nullptr) {
  std::ifstream in(stat_path);
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  size_t open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return std::nullopt;
  if (comm) *comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 2));
  std::vector<std::string> f;
  std::string x;
  while (rest >> x) f.push_back(x);
  // After "pid (comm) ", field 3 (state) is f[0]; utime is field 14 -> f[11], stime field 15 -> f[12].
  if (f.size() < 13) return std::nullopt;
  double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  return CpuTimes{std::stod(f[11]) / tick, std::stod(f[12]) / tick};
}

// Per-thread CPU of a process: thread name -> seconds (threads with equal names are summed).
std::map<std::string, double> ThreadCpu(pid_t pid) {
  std::map<std::string, double> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    std::string comm;
    auto cpu = ReadProcCpu(entry.path().string() + "/stat", &comm);
    if (cpu) out[comm] += cpu->total();
  }
  return out;
}

CpuTimes SelfCpu() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return CpuTimes{ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6};
}

pid_t StartCoordinator(const Options& o, const std::string& db, const std::string& log) {
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // Never outlive the load generator.
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execl(o.coordinator.c_str(), o.coordinator.c_str(), "--listen", "127.0.0.1:0", "--db", db.c_str(), "--max-stage-trials",
          "1000000", static_cast<char*>(nullptr));
    perror("exec");
    _exit(127);
  }
  g_child = pid;
  return pid;
}

// `perf record` of the coordinator process; SIGINT ends it (it then writes FILE).
pid_t StartPerf(const std::string& file, pid_t target) {
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGINT);
    std::string p = std::to_string(target);
    execlp("perf", "perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,16384", "-p", p.c_str(), "-o", file.c_str(),
           static_cast<char*>(nullptr));
    perror("exec perf");
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // Let it attach.
  return pid;
}

// Reads "... (port N) ..." from the coordinator's log; 0 if it exited or did not say in time.
int WaitForPort(pid_t pid, const std::string& log, double timeout) {
  auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout));
  while (Clock::now() < until) {
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    std::string s = text.str();
    size_t p = s.find("(port ");
    if (p != std::string::npos) return std::atoi(s.c_str() + p + 6);
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      g_child = 0;
      std::cerr << "loadgen: the coordinator exited at start:\n" << s << "\n";
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Results

struct Percentiles {
  size_t n = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;
};

Percentiles Summarize(std::vector<int64_t> ns) {
  Percentiles p;
  p.n = ns.size();
  if (ns.empty()) return p;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(ns.size() - 1) + 0.5);
    return ns[std::min(i, ns.size() - 1)] / 1e6;
  };
  p.p50_ms = at(0.50);
  p.p99_ms = at(0.99);
  p.max_ms = ns.back() / 1e6;
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  p.mean_ms = sum / static_cast<double>(ns.size()) / 1e6;
  return p;
}

Json ToJson(const Percentiles& p) {
  return {{"n", p.n}, {"p50_ms", p.p50_ms}, {"p99_ms", p.p99_ms}, {"max_ms", p.max_ms}, {"mean_ms", p.mean_ms}};
}

// ---------------------------------------------------------------------------------------------
// Workers: one outstanding call each, driven by completion-queue threads.

class Worker;

struct Shared {
  int64_t total_trials = 0;
  std::vector<Worker*> workers;  // Set before any worker starts.
  std::atomic<int64_t> completed{0};
  std::atomic<bool> all_done{false};
  std::atomic<int> active_workers{0};
  std::atomic<int64_t> errors{0};
  std::mutex mu;
  std::condition_variable cv;  // Signalled when the last worker stops.
  std::string first_error;     // Guarded by mu.

  void Error(const std::string& what) {
    int64_t n = errors.fetch_add(1);
    if (n == 1000) {
      std::cerr << "loadgen: 1000 RPC errors; giving up\n";
      all_done = true;  // Workers stop; the checks at the end fail.
    }
    if (n < 5) {
      std::lock_guard<std::mutex> lock(mu);
      std::cerr << "loadgen: " << what << "\n";
      if (first_error.empty()) first_error = what;
    }
  }
};

// What one worker saw of one trial; merged after the run.
struct TrialRecord {
  int64_t trial_id = 0;
  int reports_acked = 0;
  bool complete_acked = false;
  v1::TrialState complete_state = v1::TRIAL_STATE_UNSPECIFIED;
  Clock::time_point complete_reply{};
};

struct WorkerStats {
  std::vector<int64_t> acquire_ns;        // AcquireTrial calls that returned a trial.
  std::vector<int64_t> acquire_empty_ns;  // ... that returned none (long-poll ran out).
  std::vector<int64_t> report_ns;
  std::vector<int64_t> complete_ns;
  std::vector<TrialRecord> trials;
  Clock::time_point first_send{Clock::time_point::max()};
};

class Worker {
 public:
  Worker(int index, v1::WorkerService::Stub* stub, grpc::CompletionQueue* cq, Shared* shared, const Options& o)
      : stub_(stub), cq_(cq), shared_(shared), o_(o), name_(fmt::format("bench/w{}", index)) {
    acq_req_.set_worker(name_);
    acq_req_.set_wait_seconds(o.acquire_wait);
  }

  void Start() {
    shared_->active_workers.fetch_add(1);
    Acquire();
  }

  // A completion-queue tag: which of this worker's operations finished.
  struct Tag {
    Worker* worker;
    enum Event { kUnary, kStreamStart, kStreamWrite, kStreamRead, kStreamWritesDone, kStreamFinish } event;
  };

  void OnEvent(Tag::Event event, bool ok) {
    switch (event) {
      case Tag::kUnary: return OnUnaryDone();
      case Tag::kStreamStart: return ok ? SendStreamReport() : FinishStream();
      case Tag::kStreamWrite:
      case Tag::kStreamRead: return OnStreamHalfDone(ok);
      case Tag::kStreamWritesDone: return FinishStream();
      case Tag::kStreamFinish: return OnStreamFinished();
    }
  }

  WorkerStats& stats() { return stats_; }

  // The sweep is done: end a parked AcquireTrial long-poll now rather than at its wait.
  void CancelAcquire() {
    std::lock_guard<std::mutex> lock(ctx_mu_);
    if (op_ == Op::kAcquire && ctx_) ctx_->TryCancel();
  }

 private:
  enum class Op { kAcquire, kReport, kComplete };

  // The unary call this worker had outstanding has finished (unary calls always report ok=true).
  void OnUnaryDone() {
    int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - sent_).count();
    switch (op_) {
      case Op::kAcquire: return AcquireDone(ns);
      case Op::kReport: return ReportDone(ns);
      case Op::kComplete: return CompleteDone(ns);
    }
  }

  void NewCall(Op op, double timeout) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(DeadlineIn(timeout));
    {
      std::lock_guard<std::mutex> lock(ctx_mu_);
      op_ = op;
      ctx_ = std::move(ctx);
    }
    sent_ = Clock::now();
    if (stats_.first_send == Clock::time_point::max()) stats_.first_send = sent_;
  }

  void Stop() {
    if (stream_) {  // Close the report stream first; OnStreamFinished comes back here.
      closing_stream_ = true;
      stream_->WritesDone(&writes_done_tag_);
      return;
    }
    if (shared_->active_workers.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->cv.notify_all();
    }
  }

  void Acquire() {
    if (shared_->all_done.load()) return Stop();
    NewCall(Op::kAcquire, o_.acquire_wait + o_.rpc_timeout);
    acq_resp_.Clear();
    acq_rpc_ = stub_->PrepareAsyncAcquireTrial(ctx_.get(), acq_req_, cq_);
    acq_rpc_->StartCall();
    acq_rpc_->Finish(&acq_resp_, &status_, &unary_tag_);
  }

  void AcquireDone(int64_t ns) {
    if (!status_.ok() && shared_->all_done.load()) return Stop();  // Cancelled at the end.
    if (!status_.ok()) {
      shared_->Error(fmt::format("AcquireTrial: {} {}", static_cast<int>(status_.error_code()), status_.error_message()));
      return Acquire();
    }
    if (!acq_resp_.has_trial()) {
      stats_.acquire_empty_ns.push_back(ns);
      return Acquire();  // Stops if the sweep is done; otherwise waits again.
    }
    stats_.acquire_ns.push_back(ns);
    TrialRecord& t = stats_.trials.emplace_back();
    t.trial_id = acq_resp_.trial_id();
    token_ = acq_resp_.lease_token();
    step_ = 0;
    complete_tries_ = 0;
    if (o_.reports > 0) return Report();
    Complete();
  }

  void Report() {
    ++step_;
    rep_req_.Clear();
    rep_req_.set_lease_token(token_);
    rep_req_.set_step(step_);
    auto& m = *rep_req_.mutable_metrics();
    double x = static_cast<double>(step_) / o_.reports;
    m["epoch"] = step_;
    m["train_loss"] = 2.3 * (1 - 0.8 * x);
    m["val_loss"] = 2.3 * (1 - 0.7 * x);
    m["val_accuracy"] = 0.1 + 0.8 * x;
    rep_resp_.Clear();
    if (!o_.unary_reports) {
      if (stream_) return SendStreamReport();
      // One stream per worker, opened at its first report and kept across trials.
      stream_ctx_ = std::make_unique<grpc::ClientContext>();
      stream_ctx_->set_deadline(DeadlineIn(o_.max_seconds + o_.rpc_timeout));
      stream_ = stub_->PrepareAsyncReportProgressStream(stream_ctx_.get(), cq_);
      stream_->StartCall(&stream_start_tag_);
      return;
    }
    NewCall(Op::kReport, o_.rpc_timeout);
    rep_rpc_ = stub_->PrepareAsyncReportProgress(ctx_.get(), rep_req_, cq_);
    rep_rpc_->StartCall();
    rep_rpc_->Finish(&rep_resp_, &status_, &unary_tag_);
  }

  // The write and the read of the answer go out together; the report is done when both are.
  void SendStreamReport() {
    {
      std::lock_guard<std::mutex> lock(ctx_mu_);
      op_ = Op::kReport;
    }
    sent_ = Clock::now();
    stream_halves_ = 2;
    stream_ok_ = true;
    stream_->Write(rep_req_, &stream_write_tag_);
    stream_->Read(&rep_resp_, &stream_read_tag_);
  }

  void OnStreamHalfDone(bool ok) {
    stream_ok_ = stream_ok_ && ok;
    if (--stream_halves_ > 0) return;
    if (!stream_ok_) return FinishStream();  // The stream ended; its status says why.
    status_ = grpc::Status::OK;
    ReportDone(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - sent_).count());
  }

  void FinishStream() { stream_->Finish(&status_, &stream_finish_tag_); }

  void OnStreamFinished() {
    stream_.reset();
    stream_ctx_.reset();
    if (closing_stream_) {
      closing_stream_ = false;
      return Stop();
    }
    if (status_.ok()) status_ = grpc::Status(grpc::StatusCode::INTERNAL, "report stream ended early");
    ReportDone(0);  // Counts the error and moves on to the next trial.
  }

  void ReportDone(int64_t ns) {
    if (!status_.ok()) {
      shared_->Error(fmt::format("ReportProgress: {} {}", static_cast<int>(status_.error_code()), status_.error_message()));
      return Acquire();  // Abandon the trial; its lease expires.
    }
    stats_.report_ns.push_back(ns);
    ++stats_.trials.back().reports_acked;
    if (rep_resp_.directive() == v1::STOP) return Complete();
    if (step_ < o_.reports) return Report();
    Complete();
  }

  void Complete() {
    NewCall(Op::kComplete, o_.rpc_timeout);
    ++complete_tries_;
    cmp_req_.Clear();
    cmp_req_.set_lease_token(token_);
    cmp_req_.set_outcome(v1::CompleteTrialRequest::SUCCEEDED);
    int64_t id = stats_.trials.back().trial_id;
    (*cmp_req_.mutable_metrics())["val_accuracy"] = 0.5 + static_cast<double>(id % 97) / 1000.0;
    (*cmp_req_.mutable_metrics())["val_loss"] = 1.0;
    cmp_resp_.Clear();
    cmp_rpc_ = stub_->PrepareAsyncCompleteTrial(ctx_.get(), cmp_req_, cq_);
    cmp_rpc_->StartCall();
    cmp_rpc_->Finish(&cmp_resp_, &status_, &unary_tag_);
  }

  void CompleteDone(int64_t ns) {
    Clock::time_point now = Clock::now();
    if (!status_.ok()) {
      shared_->Error(fmt::format("CompleteTrial: {} {}", static_cast<int>(status_.error_code()), status_.error_message()));
      // CompleteTrial is idempotent for a token: retry a transport failure a few times.
      if (complete_tries_ < 3 && status_.error_code() != grpc::StatusCode::FAILED_PRECONDITION) return Complete();
      return Acquire();
    }
    stats_.complete_ns.push_back(ns);
    TrialRecord& t = stats_.trials.back();
    t.complete_acked = true;
    t.complete_state = cmp_resp_.state();
    t.complete_reply = now;
    if (cmp_resp_.state() != v1::TRIAL_SUCCEEDED) {
      shared_->Error(fmt::format("CompleteTrial of trial {} answered state {}", t.trial_id,
                                 v1::TrialState_Name(cmp_resp_.state())));
    }
    if (shared_->completed.fetch_add(1) + 1 == shared_->total_trials) {
      shared_->all_done = true;
      for (Worker* w : shared_->workers) {
        if (w != this) w->CancelAcquire();
      }
    }
    Acquire();
  }

  v1::WorkerService::Stub* stub_;
  grpc::CompletionQueue* cq_;
  Shared* shared_;
  const Options& o_;
  std::string name_;
  WorkerStats stats_;

  std::mutex ctx_mu_;  // Guards op_ and ctx_ against CancelAcquire from another thread.
  Op op_ = Op::kAcquire;
  Clock::time_point sent_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  grpc::Status status_;
  std::string token_;
  int step_ = 0;
  int complete_tries_ = 0;

  v1::AcquireTrialRequest acq_req_;
  v1::AcquireTrialResponse acq_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::AcquireTrialResponse>> acq_rpc_;
  v1::ReportProgressRequest rep_req_;
  v1::ReportProgressResponse rep_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ReportProgressResponse>> rep_rpc_;
  std::unique_ptr<grpc::ClientContext> stream_ctx_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::ReportProgressRequest, v1::ReportProgressResponse>> stream_;
  int stream_halves_ = 0;  // Of the report in flight on the stream: write and read still outstanding.
  bool stream_ok_ = true;
  bool closing_stream_ = false;
  Tag unary_tag_{this, Tag::kUnary};
  Tag stream_start_tag_{this, Tag::kStreamStart};
  Tag stream_write_tag_{this, Tag::kStreamWrite};
  Tag stream_read_tag_{this, Tag::kStreamRead};
  Tag writes_done_tag_{this, Tag::kStreamWritesDone};
  Tag stream_finish_tag_{this, Tag::kStreamFinish};
  v1::CompleteTrialRequest cmp_req_;
  v1::CompleteTrialResponse cmp_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::CompleteTrialResponse>> cmp_rpc_;
};

// ---------------------------------------------------------------------------------------------
// The watcher

struct WatchResult {
  int64_t events = 0;
  int64_t last_seq = 0;
  int64_t gaps = 0;  // Events whose seq was not last_seq + 1.
  std::map<std::string, int64_t> by_type;
  std::unordered_map<int64_t, int> finished_per_trial;
  int64_t finished_not_succeeded = 0;
  std::vector<std::pair<int64_t, Clock::time_point>> finished_arrivals;  // trial id, arrival.
  bool sweep_finished = false;
  v1::SweepState sweep_state = v1::SWEEP_STATE_UNSPECIFIED;
  grpc::Status status;
  double seconds = 0;
};

// Reads the sweep's events from `after_seq` until the stream ends. `live` is set (and notified)
// once the event with seq `live_from` has arrived: from then on the watcher receives live events.
void Watch(v1::SweepService::Stub* stub, int64_t sweep_id, int64_t after_seq, double timeout, WatchResult* out,
           int64_t live_from = 0, std::atomic<bool>* live = nullptr, std::mutex* mu = nullptr,
           std::condition_variable* cv = nullptr, bool skip_progress = false) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout));
  v1::WatchSweepRequest req;
  req.set_sweep_id(sweep_id);
  req.set_after_seq(after_seq);
  req.set_skip_progress(skip_progress);
  auto start = Clock::now();
  auto reader = stub->WatchSweep(&ctx, req);
  v1::SweepEvent e;
  out->last_seq = after_seq;
  while (reader->Read(&e)) {
    Clock::time_point now = Clock::now();
    ++out->events;
    // Without progress events the seqs skip those; order and uniqueness must still hold.
    if (skip_progress ? e.seq() <= out->last_seq : e.seq() != out->last_seq + 1) ++out->gaps;
    out->last_seq = e.seq();
    ++out->by_type[v1::EventType_Name(e.type())];
    if (e.type() == v1::TRIAL_FINISHED) {
      ++out->finished_per_trial[e.trial().trial_id()];
      if (e.trial().state() != v1::TRIAL_SUCCEEDED) ++out->finished_not_succeeded;
      out->finished_arrivals.emplace_back(e.trial().trial_id(), now);
    } else if (e.type() == v1::SWEEP_FINISHED) {
      out->sweep_finished = true;
      out->sweep_state = e.sweep().state();
    }
    if (live && !live->load() && e.seq() >= live_from) {
      std::lock_guard<std::mutex> lock(*mu);
      *live = true;
      cv->notify_all();
    }
  }
  out->status = reader->Finish();
  out->seconds = Seconds(Clock::now() - start);
  if (live && !live->load()) {
    std::lock_guard<std::mutex> lock(*mu);
    *live = true;  // Release the main thread; the failure shows in `status`.
    cv->notify_all();
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile clients beside the load (--stalled-watchers, --junk-rate): watchers that never read,
// and requests over the limits of common/limits.h.

// Peak resident set of a process (VmHWM in /proc/PID/status), in KiB; 0 if unreadable.
int64_t PeakRssKib(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return 0;
}

// WatchSweep streams that are started and then never read, each on its own connection (as if
// each were a `moesweep watch` whose terminal is stuck), so that the coordinator's writes to them
// stop once HTTP/2 flow control is exhausted. At the end a few are read to the end, which checks
// that a watcher dropped from live delivery catches up from the database without a gap.
class StalledWatchers {
 public:
  StalledWatchers(const std::string& address, int n, int64_t sweep_id, double max_seconds) {
    for (int i = 0; i < n; ++i) {
      auto w = std::make_unique<Stalled>();
      grpc::ChannelArguments args;
      args.SetInt("moesweep.bench.channel", 1000 + i);  // A connection of its own.
      // HTTP/2 flow control as a client that never reads keeps it: gRPC's BDP probe would otherwise
      // grow the window from what arrives (to megabytes) although nothing is read.
      args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
      args.SetMaxReceiveMessageSize(256 << 20);
      w->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
      w->stub = v1::SweepService::NewStub(w->channel);
      w->ctx.set_deadline(DeadlineIn(max_seconds));
      v1::WatchSweepRequest req;
      req.set_sweep_id(sweep_id);  // From seq 0, progress included: every event of the sweep.
      w->reader = w->stub->PrepareAsyncWatchSweep(&w->ctx, req, &cq_);
      w->reader->StartCall(&w->start_tag);
      watchers_.push_back(std::move(w));
    }
    thread_ = std::thread([this] { Poll(); });
  }

  ~StalledWatchers() {
    {
      std::unique_lock<std::mutex> lock(mu_);
      for (auto& w : watchers_) Cancel(w.get());
      cv_.wait_for(lock, std::chrono::seconds(30), [&] { return finished_ == watchers_.size(); });
    }
    cq_.Shutdown();
    thread_.join();
  }

  // Streams whose call has started (the coordinator holds a watch for each).
  size_t started() {
    std::lock_guard<std::mutex> lock(mu_);
    return started_;
  }

  struct Drained {
    int64_t events = 0, gaps = 0;
    bool sweep_finished = false;
    bool ok = false;  // Ended with OK status.
  };
  // Reads the first `count` streams to their end (at most `timeout` seconds) and cancels the rest.
  std::vector<Drained> DrainFirst(int count, double timeout) {
    count = std::min<int>(count, static_cast<int>(watchers_.size()));
    std::unique_lock<std::mutex> lock(mu_);
    for (int i = 0; i < count; ++i) {
      Stalled* w = watchers_[i].get();
      w->draining = true;
      if (w->started && !w->finishing) StartRead(w);
    }
    for (size_t i = count; i < watchers_.size(); ++i) Cancel(watchers_[i].get());
    cv_.wait_for(lock, std::chrono::duration<double>(timeout), [&] { return finished_ == watchers_.size(); });
    std::vector<Drained> out;
    for (int i = 0; i < count; ++i) out.push_back(watchers_[i]->drained);
    return out;
  }

 private:
  struct Stalled;
  struct Tag {
    Stalled* w;
    enum Kind { kStart, kRead, kFinish } kind;
  };
  struct Stalled {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::SweepService::Stub> stub;
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientAsyncReader<v1::SweepEvent>> reader;
    v1::SweepEvent event;
    grpc::Status status;
    bool started = false, draining = false, reading = false, cancelled = false, finishing = false;
    Drained drained;
    Tag start_tag{this, Tag::kStart}, read_tag{this, Tag::kRead}, finish_tag{this, Tag::kFinish};
  };

  void Poll() {
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
      auto* t = static_cast<Tag*>(tag);
      Stalled* w = t->w;
      std::lock_guard<std::mutex> lock(mu_);
      switch (t->kind) {
        case Tag::kStart:
          w->started = true;
          ++started_;
          if (!ok || w->cancelled) {
            Finish(w);
          } else if (w->draining) {
            StartRead(w);
          }
          break;
        case Tag::kRead:
          w->reading = false;
          if (!ok) {
            Finish(w);
            break;
          }
          ++w->drained.events;
          if (w->event.seq() != w->drained.events) ++w->drained.gaps;
          if (w->event.type() == v1::SWEEP_FINISHED) w->drained.sweep_finished = true;
          StartRead(w);
          break;
        case Tag::kFinish:
          w->drained.ok = w->status.ok();
          ++finished_;
          cv_.notify_all();
          break;
      }
    }
  }

  // These three with mu_ held.
  void StartRead(Stalled* w) {
    w->reading = true;
    w->reader->Read(&w->event, &w->read_tag);
  }
  // A pending read fails after TryCancel and finishes the call; else the call finishes now.
  void Cancel(Stalled* w) {
    if (w->finishing) return;
    w->cancelled = true;
    w->ctx.TryCancel();
    if (w->started && !w->reading) Finish(w);
  }
  void Finish(Stalled* w) {
    if (w->finishing) return;
    w->finishing = true;
    w->reader->Finish(&w->status, &w->finish_tag);
  }

  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<Stalled>> watchers_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t started_ = 0;   // Guarded by mu_.
  size_t finished_ = 0;  // Guarded by mu_.
  std::thread thread_;
};

// Requests over the limits, one at a time on a connection of their own, at `rate` per second (0:
// back to back), in turn: a 2 MB spec, a report with 100,000 metrics, a spec of 10M '['. Each
// must be refused (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED from gRPC) in time.
class JunkSender {
 public:
  static constexpr int kKinds = 3;
  static constexpr const char* kNames[kKinds] = {"spec of 2 MB", "report of 100,000 metrics", "spec of 10M '['"};
  struct Counts {
    int64_t sent = 0, invalid_argument = 0, resource_exhausted = 0, accepted = 0, other = 0;
    std::vector<int64_t> ns;  // Time to the refusal.
    std::string other_example;
  };

  JunkSender(const std::string& address, double rate) : rate_(rate) {
    grpc::ChannelArguments args;
    args.SetInt("moesweep.bench.channel", -2);
    channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    sweeps_ = v1::SweepService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
    big_spec_.set_spec_json(R"({"name": ")" + std::string(2 << 20, 'x') + R"("})");
    brackets_.set_spec_json(std::string(10'000'000, '['));
    report_.set_lease_token("junk-lease");
    report_.set_step(1);
    for (int i = 0; i < 100000; ++i) (*report_.mutable_metrics())[fmt::format("m{:06d}", i)] = i;
    thread_ = std::thread([this] { Loop(); });
  }
  ~JunkSender() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const Counts& counts(int kind) const { return counts_[kind]; }

 private:
  void Loop() {
    auto start = Clock::now();
    for (int64_t i = 0; !stop_; ++i) {
      if (rate_ > 0) {
        auto due = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / rate_));
        while (!stop_ && Clock::now() < due) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (stop_) break;
      }
      int kind = static_cast<int>(i % kKinds);
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(30));
      grpc::Status s;
      auto t0 = Clock::now();
      if (kind == 1) {
        v1::ReportProgressResponse resp;
        s = workers_->ReportProgress(&ctx, report_, &resp);
      } else {
        v1::SubmitSweepResponse resp;
        s = sweeps_->SubmitSweep(&ctx, kind == 0 ? big_spec_ : brackets_, &resp);
      }
      Counts& c = counts_[kind];
      ++c.sent;
      c.ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      if (s.ok()) {
        ++c.accepted;
      } else if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        ++c.invalid_argument;
      } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        ++c.resource_exhausted;
      } else {
        ++c.other;
        if (c.other_example.empty()) c.other_example = fmt::format("{} {}", static_cast<int>(s.error_code()), s.error_message());
      }
    }
  }

  double rate_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SweepService::Stub> sweeps_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  v1::SubmitSweepRequest big_spec_, brackets_;
  v1::ReportProgressRequest report_;
  std::atomic<bool> stop_{false};
  Counts counts_[kKinds];  // Written by the thread; read after Stop().
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// Database check, after the coordinator is gone

struct DbCheck {
  bool opened = false;
  std::string error;
  std::map<int, int64_t> trials_by_state;
  std::unordered_map<int64_t, int> trial_state;
  std::unordered_map<int64_t, int64_t> metric_rows;
  std::unordered_map<int64_t, int> finished_events;
  int64_t events = 0;
};

DbCheck ReadDatabase(const std::string& path, int64_t sweep_id) {
  DbCheck out;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    out.error = db ? sqlite3_errmsg(db) : "cannot open";
    sqlite3_close(db);
    return out;
  }
  out.opened = true;
  auto query = [&](const char* sql, auto&& row) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
      if (out.error.empty()) out.error = fmt::format("{}: {}", sql, sqlite3_errmsg(db));
      return;
    }
    sqlite3_bind_int64(stmt, 1, sweep_id);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
    if (rc != SQLITE_DONE && out.error.empty()) out.error = fmt::format("{}: {}", sql, sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
  };
  query("SELECT id, state FROM trials WHERE sweep_id = ?", [&](sqlite3_stmt* s) {
    int state = sqlite3_column_int(s, 1);
    out.trial_state[sqlite3_column_int64(s, 0)] = state;
    ++out.trials_by_state[state];
  });
  query("SELECT m.trial_id, COUNT(*) FROM trial_metrics m JOIN trials t ON t.id = m.trial_id "
        "WHERE t.sweep_id = ? GROUP BY m.trial_id",
        [&](sqlite3_stmt* s) { out.metric_rows[sqlite3_column_int64(s, 0)] = sqlite3_column_int64(s, 1); });
  query("SELECT type, payload FROM events WHERE sweep_id = ? ORDER BY seq", [&](sqlite3_stmt* s) {
    ++out.events;
    if (sqlite3_column_int(s, 0) != v1::TRIAL_FINISHED) return;
    v1::SweepEvent e;
    e.ParseFromArray(sqlite3_column_blob(s, 1), sqlite3_column_bytes(s, 1));
    ++out.finished_events[e.trial().trial_id()];
  });
  sqlite3_close(db);
  return out;
}

// ---------------------------------------------------------------------------------------------

std::string SweepSpecJson(const Options& o) {
  Json a = Json::array(), b = Json::array(), seeds = Json::array();
  for (int i = 0; i < o.axis_a; ++i) a.push_back(64 + 8 * i);
  for (int i = 0; i < o.axis_b; ++i) b.push_back(0.1 + 0.05 * i);
  for (int i = 0; i < o.seeds; ++i) seeds.push_back(i + 1);
  Json spec = {
      {"name", "bench-noop"},
      {"objective", {{"metric", "val_accuracy"}, {"goal", "maximize"}}},
      {"seeds", seeds},
      {"base", {{"epochs", o.reports > 0 ? o.reports : 1}}},
      {"stages", Json::array({{{"name", "grid"}, {"grid", {{"expert_hidden_dim", a}, {"temperature", b}}}}})},
      {"max_attempts", 3},
      {"lease_seconds", 60},
  };
  return spec.dump();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) {
    std::cerr << kUsage;
    return 2;
  }
  const int64_t total = static_cast<int64_t>(o.axis_a) * o.axis_b * o.seeds;
  Clock::time_point run_start = Clock::now();
  if (!o.absl_deadlock) absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Hard cap: whatever happens, the run ends.
  std::thread([cap = o.max_seconds] {
    std::this_thread::sleep_for(std::chrono::duration<double>(cap));
    std::cerr << fmt::format("loadgen: hard cap of {} s reached; stopping\n", cap);
    if (pid_t p = g_child.load(); p > 0) kill(p, SIGKILL);
    std::_Exit(3);
  }).detach();

  // Work directory, database and coordinator.
  std::string dir = o.workdir;
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/moesweep-bench-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
      perror("mkdtemp");
      return 1;
    }
    dir = buf.data();
  } else {
    std::filesystem::create_directories(dir);
  }
  std::string db_path = dir + "/bench.db", log_path = dir + "/coordinator.log";
  pid_t child = StartCoordinator(o, db_path, log_path);
  int port = WaitForPort(child, log_path, 30);
  if (port == 0) {
    if (g_child) kill(child, SIGKILL);
    return 1;
  }
  std::string address = fmt::format("127.0.0.1:{}", port);
  std::cout << fmt::format("loadgen: coordinator pid {} on {}, database {}\n", child, address, db_path);

  // Channels: a few, each its own TCP connection (a distinct arg keeps gRPC from sharing one).
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < o.channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("moesweep.bench.channel", i);
    args.SetMaxReceiveMessageSize(256 << 20);
    channels.push_back(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  grpc::ChannelArguments watch_args;
  watch_args.SetInt("moesweep.bench.channel", -1);  // The watcher has a connection of its own.
  watch_args.SetMaxReceiveMessageSize(256 << 20);
  auto watch_channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), watch_args);
  auto sweeps = v1::SweepService::NewStub(channels[0]);
  auto watch_stub = v1::SweepService::NewStub(watch_channel);
  std::vector<std::unique_ptr<v1::WorkerService::Stub>> worker_stubs;
  for (auto& ch : channels) worker_stubs.push_back(v1::WorkerService::NewStub(ch));
  for (auto& ch : channels) {
    if (!ch->WaitForConnected(DeadlineIn(10))) {
      std::cerr << "loadgen: cannot connect to " << address << "\n";
      kill(child, SIGKILL);
      return 1;
    }
  }

  // Submit.
  int64_t sweep_id = 0;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(60));
    v1::SubmitSweepRequest req;
    req.set_spec_json(SweepSpecJson(o));
    v1::SubmitSweepResponse resp;
    auto t0 = Clock::now();
    grpc::Status s = sweeps->SubmitSweep(&ctx, req, &resp);
    if (!s.ok()) {
      std::cerr << "loadgen: SubmitSweep: " << s.error_message() << "\n";
      kill(child, SIGKILL);
      return 1;
    }
    sweep_id = resp.sweep_id();
    std::cout << fmt::format("loadgen: sweep {} submitted: {} trials ({}x{} grid x {} seeds) in {:.3f} s\n", sweep_id,
                             resp.trials_in_first_stage(), o.axis_a, o.axis_b, o.seeds, Seconds(Clock::now() - t0));
    if (resp.trials_in_first_stage() != total) {
      std::cerr << "loadgen: expected " << total << " trials\n";
      kill(child, SIGKILL);
      return 1;
    }
  }

  // The live watcher: SWEEP_SUBMITTED (1) and STAGE_STARTED (2) are stored; once seq 2 has
  // arrived the watcher is a live sink and gets every later event as it is published.
  WatchResult live_watch;
  std::atomic<bool> live{false};
  std::mutex live_mu;
  std::condition_variable live_cv;
  std::thread watcher;
  if (o.watch) {
    watcher = std::thread([&] {
      Watch(watch_stub.get(), sweep_id, 0, o.max_seconds, &live_watch, 2, &live, &live_mu, &live_cv, !o.watch_progress);
    });
  } else {
    live = true;
  }
  {
    std::unique_lock<std::mutex> lock(live_mu);
    live_cv.wait(lock, [&] { return live.load(); });
  }
  std::unique_ptr<StalledWatchers> stalled;
  if (o.stalled_watchers > 0) {
    stalled = std::make_unique<StalledWatchers>(address, o.stalled_watchers, sweep_id, o.max_seconds);
    auto until = Clock::now() + std::chrono::seconds(30);
    while (stalled->started() < static_cast<size_t>(o.stalled_watchers) && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::cout << fmt::format("loadgen: {} of {} stalled watchers attached\n", stalled->started(), o.stalled_watchers);
  }
  std::unique_ptr<JunkSender> junk;
  if (o.junk_rate >= 0) junk = std::make_unique<JunkSender>(address, o.junk_rate);

  // Workers.
  Shared shared;
  shared.total_trials = total;
  std::vector<std::unique_ptr<grpc::CompletionQueue>> cqs;
  for (int i = 0; i < o.threads; ++i) cqs.push_back(std::make_unique<grpc::CompletionQueue>());
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < o.workers; ++i) {
    workers.push_back(std::make_unique<Worker>(i, worker_stubs[i % o.channels].get(), cqs[i % o.threads].get(), &shared, o));
  }
  for (auto& w : workers) shared.workers.push_back(w.get());
  std::vector<std::thread> threads;
  for (int i = 0; i < o.threads; ++i) {
    threads.emplace_back([cq = cqs[i].get()] {
      void* tag = nullptr;
      bool ok = false;
      while (cq->Next(&tag, &ok)) {
        auto* t = static_cast<Worker::Tag*>(tag);
        t->worker->OnEvent(t->event, ok);
      }
    });
  }
  CpuTimes self_before = SelfCpu();
  CpuTimes coord_before = ReadProcCpu(fmt::format("/proc/{}/stat", child)).value_or(CpuTimes{});
  std::map<std::string, double> threads_before = ThreadCpu(child);
  pid_t perf = o.perf.empty() ? 0 : StartPerf(o.perf, child);
  Clock::time_point load_start = Clock::now();
  for (auto& w : workers) w->Start();
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    shared.cv.wait(lock, [&] { return shared.active_workers.load() == 0; });
  }
  Clock::time_point workers_stopped = Clock::now();
  if (junk) junk->Stop();
  const int64_t peak_rss_load_kib = PeakRssKib(child);
  if (perf > 0) {
    kill(perf, SIGINT);
    waitpid(perf, nullptr, 0);
    std::cout << "loadgen: perf profile of the coordinator during the load in " << o.perf << "\n";
  }
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& t : threads) t.join();
  CpuTimes self_after = SelfCpu();
  CpuTimes coord_after = ReadProcCpu(fmt::format("/proc/{}/stat", child)).value_or(CpuTimes{});
  std::map<std::string, double> threads_after = ThreadCpu(child);
  if (watcher.joinable()) watcher.join();

  // Merge what the workers saw.
  std::vector<int64_t> acquire_ns, acquire_empty_ns, report_ns, complete_ns;
  std::unordered_map<int64_t, TrialRecord> acked;  // trial id -> its (last) completed record.
  int64_t reports_acked = 0, duplicate_acks = 0;
  Clock::time_point first_send = Clock::time_point::max(), last_complete = load_start;
  for (auto& w : workers) {
    WorkerStats& s = w->stats();
    acquire_ns.insert(acquire_ns.end(), s.acquire_ns.begin(), s.acquire_ns.end());
    acquire_empty_ns.insert(acquire_empty_ns.end(), s.acquire_empty_ns.begin(), s.acquire_empty_ns.end());
    report_ns.insert(report_ns.end(), s.report_ns.begin(), s.report_ns.end());
    complete_ns.insert(complete_ns.end(), s.complete_ns.begin(), s.complete_ns.end());
    first_send = std::min(first_send, s.first_send);
    for (const TrialRecord& t : s.trials) {
      reports_acked += t.reports_acked;
      if (!t.complete_acked) continue;
      if (acked.count(t.trial_id)) ++duplicate_acks;
      acked[t.trial_id] = t;
      last_complete = std::max(last_complete, t.complete_reply);
    }
  }
  double window = Seconds(last_complete - first_send);
  double trials_per_s = static_cast<double>(acked.size()) / window;
  double reports_per_s = static_cast<double>(reports_acked) / window;
  double rpcs_per_s = static_cast<double>(acquire_ns.size() + report_ns.size() + complete_ns.size()) / window;

  // Watch latency: CompleteTrial reply on the worker -> TRIAL_FINISHED at the watcher. An event
  // can arrive before the worker has processed its reply; that counts as 0.
  std::vector<int64_t> watch_ns;
  int64_t watch_before_reply = 0, watch_missing = 0;
  {
    std::unordered_map<int64_t, Clock::time_point> arrivals;
    for (auto& [id, at] : live_watch.finished_arrivals) arrivals.emplace(id, at);
    for (auto& [id, t] : acked) {
      auto it = arrivals.find(id);
      if (it == arrivals.end()) {
        ++watch_missing;
        continue;
      }
      int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(it->second - t.complete_reply).count();
      if (ns < 0) {
        ++watch_before_reply;
        ns = 0;
      }
      watch_ns.push_back(ns);
    }
  }

  // Checks over the API: ListTrials and a full replay of the events.
  std::vector<std::string> failures;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) failures.push_back(what);
  };
  check(shared.errors.load() == 0, fmt::format("{} RPC errors (first: {})", shared.errors.load(), shared.first_error));
  check(static_cast<int64_t>(acked.size()) == total, fmt::format("{} of {} trials acknowledged", acked.size(), total));
  check(duplicate_acks == 0, fmt::format("{} trials acknowledged twice", duplicate_acks));
  if (o.watch) {
    check(live_watch.status.ok(), "live watch ended with " + live_watch.status.error_message());
    check(live_watch.gaps == 0, fmt::format("live watch: {} seq gaps", live_watch.gaps));
    check(live_watch.sweep_finished && live_watch.sweep_state == v1::SWEEP_SUCCEEDED,
          "live watch: no SWEEP_FINISHED(SUCCEEDED)");
    check(watch_missing == 0, fmt::format("live watch: {} acknowledged trials without TRIAL_FINISHED", watch_missing));
  }

  int64_t listed = 0, listed_succeeded = 0;
  double list_seconds = 0;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(60));
    v1::ListTrialsRequest req;
    req.set_sweep_id(sweep_id);
    v1::ListTrialsResponse resp;
    auto t0 = Clock::now();
    grpc::Status s = sweeps->ListTrials(&ctx, req, &resp);
    list_seconds = Seconds(Clock::now() - t0);
    check(s.ok(), "ListTrials: " + s.error_message());
    std::set<int64_t> ids;
    for (const v1::Trial& t : resp.trials()) {
      ++listed;
      ids.insert(t.trial_id());
      if (t.state() == v1::TRIAL_SUCCEEDED) ++listed_succeeded;
    }
    check(listed == total && static_cast<int64_t>(ids.size()) == total && listed_succeeded == total,
          fmt::format("ListTrials: {} trials, {} distinct, {} SUCCEEDED (want {})", listed, ids.size(), listed_succeeded, total));
    for (auto& [id, t] : acked) {
      if (!ids.count(id)) {
        check(false, fmt::format("ListTrials: acknowledged trial {} missing", id));
        break;
      }
    }
  }
  WatchResult replay;
  Watch(watch_stub.get(), sweep_id, 0, 120, &replay);
  {
    int64_t once = 0, bad = 0;
    for (auto& [id, n] : replay.finished_per_trial) (n == 1 ? once : bad)++;
    check(replay.status.ok() && replay.gaps == 0 && replay.sweep_finished && replay.sweep_state == v1::SWEEP_SUCCEEDED,
          fmt::format("replay: status '{}', {} gaps, finished {}", replay.status.error_message(), replay.gaps,
                      replay.sweep_finished));
    check(once == total && bad == 0 && replay.finished_not_succeeded == 0,
          fmt::format("replay: {} trials finished once, {} more than once, {} not SUCCEEDED", once, bad,
                      replay.finished_not_succeeded));
    // The live watcher skipped progress events unless --watch-progress; it must have seen every other one.
    int64_t expected_live = replay.events - (o.watch_progress ? 0 : replay.by_type["TRIAL_PROGRESS"]);
    check(!o.watch || expected_live == live_watch.events,
          fmt::format("replay has {} events the live watch should have seen, it saw {}", expected_live,
                      live_watch.events));
  }

  // The stalled watchers: a few read to the end hold every event in order; the rest go away.
  std::vector<StalledWatchers::Drained> drained;
  if (stalled) {
    drained = stalled->DrainFirst(o.drain_stalled, 120);
    for (size_t i = 0; i < drained.size(); ++i) {
      const auto& d = drained[i];
      check(d.ok && d.gaps == 0 && d.sweep_finished && d.events == replay.events,
            fmt::format("stalled watcher {} read to the end: status ok {}, {} events of {}, {} gaps, finished {}", i,
                        d.ok, d.events, replay.events, d.gaps, d.sweep_finished));
    }
    stalled.reset();
  }
  if (junk) {
    for (int k = 0; k < JunkSender::kKinds; ++k) {
      const JunkSender::Counts& c = junk->counts(k);
      check(c.accepted == 0 && c.other == 0,
            fmt::format("junk {}: {} sent, {} accepted, {} answered otherwise (first: {})", JunkSender::kNames[k], c.sent,
                        c.accepted, c.other, c.other_example));
    }
  }
  const int64_t peak_rss_kib = PeakRssKib(child);

  // Stop the coordinator (SIGKILL by default: what was acknowledged must already be on disk).
  kill(child, o.kill == "KILL" ? SIGKILL : SIGTERM);
  int wstatus = 0;
  waitpid(child, &wstatus, 0);
  g_child = 0;

  DbCheck db = ReadDatabase(db_path, sweep_id);
  check(db.opened && db.error.empty(), "database: " + db.error);
  {
    int64_t not_durable = 0, reports_missing = 0, finished_not_once = 0;
    for (auto& [id, t] : acked) {
      auto st = db.trial_state.find(id);
      if (st == db.trial_state.end() || st->second != v1::TRIAL_SUCCEEDED) ++not_durable;
      if (db.metric_rows[id] < t.reports_acked) ++reports_missing;
      if (db.finished_events[id] != 1) ++finished_not_once;
    }
    int64_t db_succeeded = db.trials_by_state[v1::TRIAL_SUCCEEDED];
    check(not_durable == 0, fmt::format("database: {} acknowledged completions not SUCCEEDED", not_durable));
    check(reports_missing == 0, fmt::format("database: {} trials miss acknowledged reports", reports_missing));
    check(finished_not_once == 0, fmt::format("database: {} trials without exactly one TRIAL_FINISHED", finished_not_once));
    check(db_succeeded == total && static_cast<int64_t>(db.trial_state.size()) == total,
          fmt::format("database: {} trials, {} SUCCEEDED (want {})", db.trial_state.size(), db_succeeded, total));
    check(db.events == replay.events, fmt::format("database has {} events, the replay saw {}", db.events, replay.events));
  }

  // Report.
  Percentiles acq = Summarize(acquire_ns), rep = Summarize(report_ns), cmp = Summarize(complete_ns), wat = Summarize(watch_ns);
  double coord_cpu = coord_after.total() - coord_before.total();
  double self_cpu = self_after.total() - self_before.total();
  double load_seconds = Seconds(workers_stopped - load_start);
  std::cout << fmt::format("\nmoesweep coordinator: {} workers, {} trials x ({} reports + acquire + complete), {} threads / {} channels, reports {}\n",
                           o.workers, total, o.reports, o.threads, o.channels,
                           o.unary_reports ? "as unary calls" : "over ReportProgressStream");
  std::cout << fmt::format("  trials/s            {:10.1f}   ({} trials in {:.2f} s)\n", trials_per_s, acked.size(), window);
  std::cout << fmt::format("  metric reports/s    {:10.1f}   ({} reports)\n", reports_per_s, reports_acked);
  std::cout << fmt::format("  worker RPCs/s       {:10.1f}\n", rpcs_per_s);
  std::cout << fmt::format("  {:<18} {:>9} {:>9} {:>9} {:>9}\n", "latency (ms)", "p50", "p99", "max", "n");
  auto line = [](const char* name, const Percentiles& p) {
    std::cout << fmt::format("  {:<18} {:9.3f} {:9.3f} {:9.3f} {:9}\n", name, p.p50_ms, p.p99_ms, p.max_ms, p.n);
  };
  line("AcquireTrial", acq);
  line(o.unary_reports ? "ReportProgress" : "report (stream)", rep);
  line("CompleteTrial", cmp);
  line("watch", wat);
  std::cout << fmt::format("  watch: {} events live, {} TRIAL_FINISHED arrived before the worker saw its reply\n",
                           live_watch.events, watch_before_reply);
  std::cout << fmt::format("  replay of {} events: {:.2f} s; ListTrials of {} trials: {:.3f} s\n", replay.events,
                           replay.seconds, listed, list_seconds);
  std::cout << fmt::format("  CPU during the load ({:.2f} s wall): coordinator {:.2f} s ({:.0f}%), load generator {:.2f} s ({:.0f}%)\n",
                           load_seconds, coord_cpu, 100 * coord_cpu / load_seconds, self_cpu, 100 * self_cpu / load_seconds);
  std::cout << fmt::format("  CPU per trial: coordinator {:.0f} us, load generator {:.0f} us\n", 1e6 * coord_cpu / total,
                           1e6 * self_cpu / total);
  std::vector<std::pair<double, std::string>> per_thread;
  for (auto& [name, after] : threads_after) per_thread.emplace_back(after - threads_before[name], name);
  std::sort(per_thread.rbegin(), per_thread.rend());
  std::cout << "  coordinator threads (CPU s):";
  for (size_t i = 0; i < per_thread.size() && i < 6; ++i) std::cout << fmt::format(" {}={:.2f}", per_thread[i].second, per_thread[i].first);
  std::cout << "\n";
  std::cout << fmt::format("  coordinator peak RSS (VmHWM): {:.1f} MiB at the end of the load, {:.1f} MiB at the end\n",
                           peak_rss_load_kib / 1024.0, peak_rss_kib / 1024.0);
  if (o.stalled_watchers > 0) {
    std::cout << fmt::format("  stalled watchers: {} (never read during the load); {} read to the end afterwards:",
                             o.stalled_watchers, drained.size());
    for (const auto& d : drained) std::cout << fmt::format(" {} events, {} gaps;", d.events, d.gaps);
    std::cout << "\n";
  }
  Json junk_json = Json::object();
  if (junk) {
    for (int k = 0; k < JunkSender::kKinds; ++k) {
      const JunkSender::Counts& c = junk->counts(k);
      Percentiles p = Summarize(c.ns);
      std::cout << fmt::format("  junk {:<26} {:5} sent: {} INVALID_ARGUMENT, {} RESOURCE_EXHAUSTED, {} accepted, {} other; "
                               "refused in p50 {:.1f} / p99 {:.1f} ms\n",
                               JunkSender::kNames[k], c.sent, c.invalid_argument, c.resource_exhausted, c.accepted, c.other,
                               p.p50_ms, p.p99_ms);
      junk_json[JunkSender::kNames[k]] = {{"sent", c.sent}, {"invalid_argument", c.invalid_argument},
                                          {"resource_exhausted", c.resource_exhausted}, {"accepted", c.accepted},
                                          {"other", c.other}, {"latency", ToJson(p)}};
    }
  }
  std::cout << fmt::format("  durability: coordinator stopped with SIG{}; database has {} trials ({} SUCCEEDED), {} events\n",
                           o.kill, db.trial_state.size(), db.trials_by_state[v1::TRIAL_SUCCEEDED], db.events);
  if (failures.empty()) {
    std::cout << "  checks: OK (every trial SUCCEEDED exactly once: acknowledgements, ListTrials, event replay, database file)\n";
  } else {
    for (const auto& f : failures) std::cout << "  CHECK FAILED: " << f << "\n";
  }

  if (!o.json_out.empty()) {
    Json threads_json = Json::object();
    for (auto& [cpu, name] : per_thread) threads_json[name] = cpu;
    Json j = {
        {"workers", o.workers},
        {"trials", total},
        {"reports_per_trial", o.reports},
        {"report_transport", o.unary_reports ? "unary" : "stream"},
        {"client_threads", o.threads},
        {"channels", o.channels},
        {"window_s", window},
        {"trials_per_s", trials_per_s},
        {"reports_per_s", reports_per_s},
        {"rpcs_per_s", rpcs_per_s},
        {"acquire", ToJson(acq)},
        {"report", ToJson(rep)},
        {"complete", ToJson(cmp)},
        {"watch", ToJson(wat)},
        {"live_watch", o.watch},
        {"watch_events", live_watch.events},
        {"watch_before_reply", watch_before_reply},
        {"replay_events", replay.events},
        {"replay_s", replay.seconds},
        {"list_trials_s", list_seconds},
        {"coordinator_cpu_s", coord_cpu},
        {"loadgen_cpu_s", self_cpu},
        {"load_wall_s", load_seconds},
        {"coordinator_threads_cpu_s", threads_json},
        {"kill", o.kill},
        {"coordinator_peak_rss_load_kib", peak_rss_load_kib},
        {"coordinator_peak_rss_kib", peak_rss_kib},
        {"stalled_watchers", o.stalled_watchers},
        {"stalled_drained", drained.size()},
        {"junk_rate", o.junk_rate},
        {"junk", junk_json},
        {"checks_ok", failures.empty()},
        {"failures", failures},
        {"run_s", Seconds(Clock::now() - run_start)},
    };
    std::ofstream(o.json_out) << j.dump(2) << "\n";
  }
  if (!o.keep && o.workdir.empty()) std::filesystem::remove_all(dir);
  return failures.empty() ? 0 : 1;
}
