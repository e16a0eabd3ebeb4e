#include "worker/agent/worker_loop.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "common/json.h"
#include "common/sweep_spec.h"
#include "common/trial_schema.h"
#include "moesweep/v1/moesweep.grpc.pb.h"
#include "worker/agent/report_stream.h"
#include "worker/agent/trial_runner.h"

namespace moesweep::worker {
namespace {

namespace pb = ::moesweep::v1;
using Clock = std::chrono::steady_clock;

Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

void FillStats(const std::vector<ExpertLayerSummary>& stats, pb::ExpertStats* out) {
  for (const ExpertLayerSummary& s : stats) {
    pb::ExpertLayerStats* l = out->add_layers();
    l->set_layer(s.layer);
    for (double u : s.usage) l->add_usage(u);
    for (double i : s.importance) l->add_importance(i);
    l->set_usage_variance(s.usage_variance);
    l->set_activation_rate(s.activation_rate);
    l->set_gate_weight_variance(s.gate_weight_variance);
    l->set_router_entropy(s.router_entropy);
    l->set_load_cv(s.load_cv);
    if (!s.class_routing.empty()) {
      l->set_num_classes(s.num_classes);
      for (double v : s.class_routing) l->add_class_routing(v);
    }
  }
}

void FillMetrics(const Metrics& metrics, google::protobuf::Map<std::string, double>* out) {
  for (const auto& [k, v] : metrics) (*out)[k] = v;
}

// What the loop needs of a trial's trainer: which runner, and how many GPUs. The runner reads the
// rest (and checks it).
struct TrainerNeeds {
  std::string kind = TrainerSpec::kBuiltin;  // Coordinators before command trainers send no trainer.
  int gpus = 0;
};

TrainerNeeds ReadTrainerNeeds(const std::string& trainer_json, const std::string& config_json) {
  TrainerNeeds needs;
  Json trainer;
  if (!trainer_json.empty() && ParseJson(trainer_json, &trainer).ok() && trainer.is_object()) {
    if (auto kind = trainer.find("kind"); kind != trainer.end() && kind->is_string()) needs.kind = kind->get<std::string>();
    if (auto gpus = trainer.find("gpus"); gpus != trainer.end() && gpus->is_number_integer()) needs.gpus = gpus->get<int>();
  }
  if (needs.kind == TrainerSpec::kBuiltin) {
    // A built-in trial on "cuda" or "auto" takes one of the slot's GPUs when there is one free;
    // the trainer maps its device to it (cuda -> cuda:<that GPU>), or "auto" runs on the CPU.
    Json config;
    DeviceRequest device;
    if (ParseJson(config_json, &config).ok() && config.is_object() && config.contains("device") &&
        config["device"].is_string() && ParseDevice(config["device"].get<std::string>(), &device) &&
        device.kind != DeviceRequest::kCpu) {
      needs.gpus = 1;
    }
  }
  return needs;
}

// What one slot knows about the lease it holds.
struct Lease {
  std::string token;
  int64_t trial_id = 0;
  double lease_seconds = 30;
  Clock::time_point next_report;  // When the next heartbeat is due.
  int64_t step = 0;               // Last completed epoch.
  Metrics last_metrics;
  std::vector<ExpertLayerSummary> last_stats;
  bool stop = false;     // The coordinator said STOP.
  bool lost = false;     // The coordinator no longer knows this lease.
  bool failing = false;  // The last report failed; wait for next_report before trying again.
};

}  // namespace

class WorkerLoop::Impl {
 public:
  Impl(std::shared_ptr<grpc::Channel> channel, WorkerOptions options)
      : stub_(pb::WorkerService::NewStub(channel)), options_(std::move(options)), free_gpus_(options_.gpus) {}

  WorkerExit Run() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      idle_since_ = Clock::now();
    }
    std::vector<std::thread> threads;
    for (int i = 0; i < std::max(1, options_.slots); ++i) {
      threads.emplace_back([this, i] { SlotLoop(i); });
    }
    if (options_.exit_when_idle_seconds > 0 || options_.give_up_after_seconds > 0) {
      threads.emplace_back([this] { WatchIdleAndReachable(); });
    }
    for (std::thread& t : threads) t.join();
    std::lock_guard<std::mutex> lock(mu_);
    return exit_;
  }

  void Shutdown() {
    std::lock_guard<std::mutex> lock(mu_);
    StopLocked(WorkerExit::kShutdown);
  }

 private:
  template <typename... Args>
  void Log(fmt::format_string<Args...> format, Args&&... args) {
    if (!options_.verbose) return;
    std::string line = fmt::format(format, std::forward<Args>(args)...);
    std::lock_guard<std::mutex> lock(log_mu_);
    std::fprintf(stderr, "%s moesweep-worker: %s\n",
                 fmt::format("{:%H:%M:%S}", fmt::localtime(std::time(nullptr))).c_str(), line.c_str());
  }

  // The first reason to stop wins; later calls change nothing.
  void StopLocked(WorkerExit why) {  // EXCLUSIVE_LOCKS_REQUIRED(mu_)
    if (stopping_.exchange(true)) return;
    exit_ = why;
    for (grpc::ClientContext* ctx : acquiring_) ctx->TryCancel();
    cv_.notify_all();
  }

  // Ends the loop when it has been idle, or cut off from the coordinator, for long enough. Polls
  // at a tenth of the shorter limit (at most every second): exits are that late at most.
  void WatchIdleAndReachable() {
    const double idle = options_.exit_when_idle_seconds;
    const double give_up = options_.give_up_after_seconds;
    double period = 1.0;
    if (idle > 0) period = std::min(period, idle / 10);
    if (give_up > 0) period = std::min(period, give_up / 10);
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, FromSeconds(std::max(period, 0.005)), [&] { return stopping_.load(); });
      if (stopping_) break;
      const auto now = Clock::now();
      if (give_up > 0 && unreachable_ && now - unreachable_since_ >= FromSeconds(give_up)) {
        Log("coordinator unreachable for {:g} s (--give-up-after); giving up", give_up);
        StopLocked(WorkerExit::kGaveUp);
      } else if (idle > 0 && busy_ == 0 && !unreachable_ && now - idle_since_ >= FromSeconds(idle)) {
        Log("no trial for {:g} s (--exit-when-idle); exiting", idle);
        StopLocked(WorkerExit::kIdle);
      }
    }
  }

  // Records the outcome of a call to the coordinator that started at `call_start`.
  void NoteCall(bool reached, Clock::time_point call_start) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    if (reached) {
      last_reached_ = now;
      if (unreachable_) idle_since_ = now;  // Idleness is counted only while the coordinator answers.
      unreachable_ = false;
    } else if (!unreachable_) {
      unreachable_ = true;
      // Since the failed call began, unless another call got through after that.
      unreachable_since_ = std::max(call_start, last_reached_);
    }
  }

  // A slot starts (+1) or ends (-1) holding a lease.
  void NoteBusy(int delta) {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ += delta;
    idle_since_ = Clock::now();
  }

  static bool Transient(grpc::StatusCode code) {
    return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
           code == grpc::StatusCode::RESOURCE_EXHAUSTED || code == grpc::StatusCode::ABORTED;
  }

  // Waits up to `seconds`; false when shutting down.
  bool Sleep(double seconds) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, FromSeconds(seconds), [&] { return stopping_.load(); });
    return !stopping_;
  }

  double Jitter(double seconds) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return seconds * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
  }

  void SlotLoop(int slot) {
    const std::string name = fmt::format("{}/slot-{}", options_.name, slot);
    double backoff = options_.backoff_initial_seconds;
    bool failing = false;
    while (!stopping_) {
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(options_.acquire_wait_seconds + 5));
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) break;
        acquiring_.insert(&ctx);
      }
      pb::AcquireTrialRequest req;
      req.set_worker(name);
      req.set_wait_seconds(options_.acquire_wait_seconds);
      for (TrialRunner* runner : options_.runners) req.add_trainer_kinds(runner->kind());
      pb::AcquireTrialResponse resp;
      std::vector<int> gpus;
      TrainerNeeds needs;
      grpc::Status st;
      const auto call_start = Clock::now();
      {
        // With GPUs to hand out, one slot at a time offers what is free, so two slots never lease
        // trials for the same devices.
        std::unique_lock<std::mutex> offer;
        if (!options_.gpus.empty()) offer = std::unique_lock<std::mutex>(offer_mu_);
        req.set_free_gpus(static_cast<int>(FreeGpuCount()));
        st = stub_->AcquireTrial(&ctx, req, &resp);
        if (st.ok() && resp.has_trial()) {
          needs = ReadTrainerNeeds(resp.trainer_json(), resp.config_json());
          gpus = TakeGpus(needs.gpus);
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        acquiring_.erase(&ctx);
        if (st.ok() && resp.has_trial()) ++busy_;  // Under the same lock, so idleness never misses it.
      }
      // A call we cancelled ourselves says nothing about the coordinator.
      if (!(stopping_ && st.error_code() == grpc::StatusCode::CANCELLED)) NoteCall(st.ok(), call_start);
      if (st.ok() && resp.has_trial() && stopping_) {
        // Leased just as we were told to stop: hand it straight back.
        Lease lease;
        lease.token = resp.lease_token();
        lease.trial_id = resp.trial_id();
        Complete(name, lease, pb::CompleteTrialRequest::RELEASED, {}, {}, "worker shutting down");
        ReturnGpus(gpus);
        NoteBusy(-1);
        break;
      }
      if (stopping_) break;
      if (!st.ok()) {
        if (!failing) {
          Log("{}: coordinator unreachable ({}: {}); retrying with backoff", name, static_cast<int>(st.error_code()),
              st.error_message());
        }
        failing = true;
        Sleep(Jitter(backoff));
        backoff = std::min(backoff * 2, options_.backoff_max_seconds);
        continue;
      }
      if (failing) Log("{}: coordinator reachable again", name);
      failing = false;
      backoff = options_.backoff_initial_seconds;
      if (resp.has_trial()) {
        RunLease(name, resp, needs.kind, gpus);
        ReturnGpus(gpus);
        NoteBusy(-1);
      }
    }
  }

  size_t FreeGpuCount() {
    std::lock_guard<std::mutex> lock(mu_);
    return free_gpus_.size();
  }

  // GPUs per trial asked for by a trainer (0 for built-in trials and malformed text).
  std::vector<int> TakeGpus(int count) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int> taken;
    while (count-- > 0 && !free_gpus_.empty()) {
      taken.push_back(free_gpus_.front());
      free_gpus_.erase(free_gpus_.begin());
    }
    return taken;
  }

  void ReturnGpus(std::vector<int>& gpus) {
    std::lock_guard<std::mutex> lock(mu_);
    free_gpus_.insert(free_gpus_.end(), gpus.begin(), gpus.end());
    std::sort(free_gpus_.begin(), free_gpus_.end());
    gpus.clear();
  }

  TrialRunner* RunnerFor(const std::string& kind) {
    for (TrialRunner* runner : options_.runners) {
      if (runner->kind() == kind) return runner;
    }
    return nullptr;
  }

  void RunLease(const std::string& name, const pb::AcquireTrialResponse& resp, const std::string& kind,
                const std::vector<int>& gpus) {
    Lease lease;
    lease.token = resp.lease_token();
    lease.trial_id = resp.trial_id();
    if (resp.lease_seconds() > 0) lease.lease_seconds = resp.lease_seconds();
    lease.next_report = Clock::now() + FromSeconds(lease.lease_seconds / 3);

    LeasedTrial trial;
    trial.trial_id = resp.trial_id();
    trial.attempt = resp.attempt();
    trial.sweep_id = resp.sweep_id();
    trial.stage = resp.stage();
    trial.trial_name = resp.trial_name();
    trial.config_json = resp.config_json();
    trial.trainer_json = resp.trainer_json();
    trial.objective_metric = resp.objective_metric();
    trial.gpus = gpus;
    trial.gpus_managed = !options_.gpus.empty();
    Log("{}: trial {} ({} trainer{}, attempt {}) started", name, resp.trial_id(), kind,
        gpus.empty() ? "" : fmt::format(", GPUs {}", fmt::join(gpus, ",")), resp.attempt());
    TrialRunner* runner = RunnerFor(kind);
    if (runner == nullptr) {
      std::string error = fmt::format("this worker cannot run \"{}\" trials", kind);
      Log("{}: trial {}: {}", name, lease.trial_id, error);
      Complete(name, lease, pb::CompleteTrialRequest::FAILED, {}, {}, error);
      return;
    }

    auto keep_going = [&] { return !lease.stop && !lease.lost && !stopping_; };
    ReportStream reports(stub_.get());  // This lease's reports and heartbeats; closed when it ends.
    RunnerHooks hooks;
    hooks.keep_going = [&] {
      if (keep_going() && Clock::now() >= lease.next_report) Report(name, &lease, &reports, /*heartbeat=*/true);
      return keep_going();
    };
    hooks.on_progress = [&](int64_t step, const Metrics& metrics, const std::vector<ExpertLayerSummary>& stats) {
      lease.step = step;
      lease.last_metrics = metrics;
      lease.last_stats = stats;
      // While the coordinator is unreachable, short epochs do not each try (and log) a report.
      if (!lease.failing || Clock::now() >= lease.next_report) Report(name, &lease, &reports, /*heartbeat=*/false);
      return keep_going();
    };
    RunOutcome result;
    Status st = runner->Run(trial, hooks, &result);
    reports.Close(options_.rpc_timeout_seconds);

    if (lease.lost) {
      Log("{}: trial {}: lease lost; dropping it", name, lease.trial_id);
    } else if (st.ok() && !result.stopped) {
      Log("{}: trial {} succeeded", name, lease.trial_id);
      Complete(name, lease, pb::CompleteTrialRequest::SUCCEEDED, result.metrics, result.expert_stats, "");
    } else if (st.ok() && lease.stop) {
      Log("{}: trial {} stopped by the coordinator", name, lease.trial_id);
      Complete(name, lease, pb::CompleteTrialRequest::FAILED, result.metrics, result.expert_stats,
               "stopped by the coordinator (STOP)");
    } else if (st.ok()) {  // Stopped because we are shutting down.
      Log("{}: releasing trial {}", name, lease.trial_id);
      Complete(name, lease, pb::CompleteTrialRequest::RELEASED, result.metrics, result.expert_stats,
               "worker shutting down");
    } else {
      Log("{}: trial {} failed: {}", name, lease.trial_id, st.message());
      Complete(name, lease, pb::CompleteTrialRequest::FAILED, result.metrics, result.expert_stats, st.message());
    }
  }

  // Progress report after an epoch, or a heartbeat between batches (no metrics: the coordinator
  // records nothing for it); either renews the lease and reads the directive.
  void Report(const std::string& name, Lease* lease, ReportStream* reports, bool heartbeat) {
    pb::ReportProgressRequest req;
    req.set_lease_token(lease->token);
    req.set_step(lease->step);
    if (!heartbeat) FillMetrics(lease->last_metrics, req.mutable_metrics());
    if (!heartbeat && !lease->last_stats.empty()) FillStats(lease->last_stats, req.mutable_expert_stats());
    pb::ReportProgressResponse resp;
    const auto call_start = Clock::now();
    grpc::Status st = reports->Send(req, &resp, options_.rpc_timeout_seconds);
    NoteCall(st.ok() || !Transient(st.error_code()), call_start);
    if (st.ok()) {
      if (lease->failing) Log("{}: trial {}: reporting again", name, lease->trial_id);
      lease->failing = false;
      if (resp.lease_seconds() > 0) lease->lease_seconds = resp.lease_seconds();
      lease->next_report = Clock::now() + FromSeconds(lease->lease_seconds / 3);
      if (resp.directive() == pb::STOP) lease->stop = true;
    } else if (st.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
               st.error_code() == grpc::StatusCode::NOT_FOUND) {
      lease->lost = true;
    } else {
      // Keep training; try again soon (well before the lease runs out).
      if (!lease->failing) {
        Log("{}: trial {}: progress report failed ({}); training on and retrying", name, lease->trial_id,
            st.error_message());
      }
      lease->failing = true;
      lease->next_report = Clock::now() + FromSeconds(std::min(1.0, lease->lease_seconds / 10));
    }
  }

  // Ends the lease; retries transient errors for about a lease (a few seconds when shutting down).
  void Complete(const std::string& name, const Lease& lease, pb::CompleteTrialRequest::Outcome outcome,
                const Metrics& metrics, const std::vector<ExpertLayerSummary>& stats, const std::string& error) {
    pb::CompleteTrialRequest req;
    req.set_lease_token(lease.token);
    req.set_outcome(outcome);
    FillMetrics(metrics, req.mutable_metrics());
    if (!stats.empty()) FillStats(stats, req.mutable_expert_stats());
    req.set_error(error);
    const auto start = Clock::now();
    double backoff = options_.backoff_initial_seconds;
    for (;;) {
      const double budget = stopping_ ? options_.release_timeout_seconds : std::max(lease.lease_seconds, 10.0);
      const double left = budget - std::chrono::duration<double>(Clock::now() - start).count();
      if (left <= 0) {
        Log("{}: could not complete trial {}; the coordinator will requeue it when the lease expires", name,
            lease.trial_id);
        return;
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(std::min(options_.rpc_timeout_seconds, left)));
      pb::CompleteTrialResponse resp;
      const auto call_start = Clock::now();
      grpc::Status st = stub_->CompleteTrial(&ctx, req, &resp);
      NoteCall(st.ok() || !Transient(st.error_code()), call_start);
      if (st.ok()) return;
      if (!Transient(st.error_code())) {
        Log("{}: CompleteTrial for trial {} refused: {}", name, lease.trial_id, st.error_message());
        return;
      }
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, FromSeconds(std::min(Jitter(backoff), std::max(0.0, left))));
      backoff = std::min(backoff * 2, options_.backoff_max_seconds);
    }
  }

  std::unique_ptr<pb::WorkerService::Stub> stub_;
  WorkerOptions options_;
  std::mutex offer_mu_;  // Held by the slot that is offering free GPUs in AcquireTrial.
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<grpc::ClientContext*> acquiring_;  // GUARDED_BY(mu_)
  std::vector<int> free_gpus_;                // GUARDED_BY(mu_)
  WorkerExit exit_ = WorkerExit::kShutdown;   // GUARDED_BY(mu_); set by the first StopLocked.
  int busy_ = 0;                              // GUARDED_BY(mu_); slots holding a lease.
  Clock::time_point idle_since_;              // GUARDED_BY(mu_); last lease start or end, or reconnect.
  bool unreachable_ = false;                  // GUARDED_BY(mu_); the last call to the coordinator failed.
  Clock::time_point unreachable_since_;       // GUARDED_BY(mu_)
  Clock::time_point last_reached_;            // GUARDED_BY(mu_); the last call that got an answer.
  std::mutex log_mu_;
};

std::shared_ptr<grpc::Channel> MakeCoordinatorChannel(const std::string& target, const rpc::ClientSecurity& security) {
  return rpc::MakeChannel(target, security, rpc::Backoff{500, 5000});
}

WorkerLoop::WorkerLoop(std::shared_ptr<grpc::Channel> channel, WorkerOptions options)
    : impl_(std::make_unique<Impl>(std::move(channel), std::move(options))) {}

WorkerLoop::~WorkerLoop() = default;

WorkerExit WorkerLoop::Run() { return impl_->Run(); }

void WorkerLoop::Shutdown() { impl_->Shutdown(); }

}  // namespace moesweep::worker
