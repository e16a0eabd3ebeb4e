#include "client/watch.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "client/format.h"
#include "client/proto_json.h"

namespace moesweep::client {
namespace {

using Clock = std::chrono::steady_clock;

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string MetricsText(const google::protobuf::Map<std::string, double>& metrics) {
  std::vector<std::pair<std::string, double>> sorted(metrics.begin(), metrics.end());
  std::sort(sorted.begin(), sorted.end());
  std::string text;
  for (const auto& [name, value] : sorted) {
    if (!text.empty()) text += ' ';
    text += name + "=" + FormatValue(value);
  }
  return text;
}

// Cancels `context` from a helper thread once Ctrl-C is requested: a blocking Read() cannot poll.
class CancelOnInterrupt {
 public:
  CancelOnInterrupt(InterruptFlag* flag, grpc::ClientContext* context) {
    if (flag == nullptr) return;
    thread_ = std::thread([this, flag, context] {
      std::unique_lock<std::mutex> lock(mutex_);
      while (!done_) {
        if (flag->requested.load()) {
          context->TryCancel();
          return;
        }
        cv_.wait_for(lock, std::chrono::milliseconds(50));
      }
    });
  }
  ~CancelOnInterrupt() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;  // Guarded by mutex_.
  std::thread thread_;
};

bool Interrupted(const InterruptFlag* flag) { return flag != nullptr && flag->requested.load(); }

// Sleeps `duration` in short slices so Ctrl-C is not delayed by a long backoff.
void SleepUnlessInterrupted(std::chrono::milliseconds duration, const InterruptFlag* flag) {
  auto until = Clock::now() + duration;
  while (Clock::now() < until && !Interrupted(flag)) {
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::milliseconds(50), until - Clock::now()));
  }
}

// Stream endings that a fresh WatchSweep may get past: the coordinator went away or restarted
// (UNAVAILABLE, or CANCELLED by its shutdown), or it closed the stream before the last event.
bool ShouldReconnect(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::OK:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string WatchView::StageLabel(int stage) const {
  auto it = stages_.find(stage);
  std::string name = it == stages_.end() ? "" : it->second.name;
  if (stage == 0 && has_baseline_) return "baseline";
  std::string number = num_stages_ > 0 ? fmt::format("{}/{}", stage, num_stages_) : std::to_string(stage);
  return name.empty() ? fmt::format("stage {}", number) : fmt::format("stage {} \"{}\"", number, name);
}

std::string WatchView::TrialLabel(const v1::Trial& t) const {
  return fmt::format("#{} s{} p{} seed={}  {}", t.trial_id(), t.stage(), t.point_index(), t.seed(),
                     FormatPoint(t.point_json()));
}

std::string WatchView::ObjectiveText(const v1::Trial& t) const {
  if (metric_.empty()) return MetricsText(t.metrics());
  auto it = t.metrics().find(metric_);
  return fmt::format("{}={}", metric_, it == t.metrics().end() ? "-" : FormatValue(it->second));
}

std::string WatchView::ProgressText(int stage) const {
  auto it = stages_.find(stage);
  if (it == stages_.end()) return "";
  const StageProgress& p = it->second;
  std::string text = fmt::format("[{}/{} done, {} failed", p.done, p.total, p.failed);
  if (p.pruned > 0) text += fmt::format(", {} pruned", p.pruned);
  if (p.has_best) text += fmt::format(", best {}", FormatValue(p.best));
  return text + "]";
}

void WatchView::NoteFinished(const v1::Trial& t) {
  StageProgress& p = stages_[t.stage()];
  ++p.done;
  if (t.state() == v1::TRIAL_FAILED) ++p.failed;
  if (t.state() == v1::TRIAL_PRUNED) ++p.pruned;
  auto it = t.metrics().find(metric_);
  if (t.state() == v1::TRIAL_SUCCEEDED && !metric_.empty() && it != t.metrics().end()) {
    bool better = !p.has_best || (maximize_ ? it->second > p.best : it->second < p.best);
    if (better) p.best = it->second;
    p.has_best = true;
  }
}

std::vector<std::string> WatchView::Render(const v1::SweepEvent& event) {
  std::string time = FormatClock(event.time()) + " ";
  const v1::Trial& t = event.trial();
  switch (event.type()) {
    case v1::SWEEP_SUBMITTED: {
      const v1::Sweep& s = event.sweep();
      metric_ = s.objective_metric();
      maximize_ = s.objective_goal() != "minimize";
      num_stages_ = s.num_stages();
      has_baseline_ = s.has_baseline();
      std::string stages = fmt::format("{}{} stage{}", has_baseline_ ? "baseline + " : "", num_stages_,
                                       num_stages_ == 1 ? "" : "s");
      return {time + fmt::format("sweep {} \"{}\" submitted: {} {}, {}", s.sweep_id(), s.name(),
                                 maximize_ ? "maximize" : "minimize", metric_, stages)};
    }
    case v1::STAGE_STARTED: {
      const v1::StageResult& s = event.stage();
      StageProgress& p = stages_[s.stage()];
      p.name = s.name();
      p.total = s.trials_total();
      return {time + fmt::format("{} started: {} trials", StageLabel(s.stage()), s.trials_total())};
    }
    case v1::STAGE_EXTENDED: {
      const v1::StageResult& s = event.stage();
      StageProgress& p = stages_[s.stage()];
      p.total = s.trials_total();
      std::vector<std::string> added;
      for (const std::string& point : s.extended_points_json()) added.push_back(FormatPoint(point));
      return {time + fmt::format("{} extended: {} (the winner sat on the grid's edge); {} trials now",
                                 StageLabel(s.stage()), fmt::join(added, ", "), s.trials_total())};
    }
    case v1::TRIAL_STARTED: {
      std::string line = time + "  start    " + TrialLabel(t);
      if (t.attempt() > 1) line += fmt::format("  (attempt {})", t.attempt());
      if (!t.worker().empty()) line += "  on " + t.worker();
      return {line};
    }
    case v1::TRIAL_PROGRESS:
      if (!show_progress_) return {};
      return {time + fmt::format("  step {:<4} {}  {}", event.step(), TrialLabel(t), MetricsText(t.metrics()))};
    case v1::TRIAL_FINISHED: {
      NoteFinished(t);
      std::string line = time;
      if (t.state() == v1::TRIAL_SUCCEEDED) {
        line += "  done     " + TrialLabel(t) + "  " + ObjectiveText(t);
        std::string experts = FormatExpertSummary(t.expert_stats());
        if (!experts.empty()) line += "  " + experts;
        if (t.reused_trial_id() > 0) {
          line += fmt::format("  (reused #{}: same config and seed)", t.reused_trial_id());
        } else if (t.started_at() > 0 && t.finished_at() > t.started_at()) {
          line += "  (" + FormatDuration(t.finished_at() - t.started_at()) + ")";
        }
      } else if (t.state() == v1::TRIAL_FAILED) {
        line += "  FAILED   " + TrialLabel(t) + "  error: " + FirstLine(t.error());
      } else if (t.state() == v1::TRIAL_PRUNED) {
        line += "  pruned   " + TrialLabel(t);
        if (t.attempt() == 0) {
          line += "  (not run: " + FirstLine(t.error()) + ")";  // A waiting sibling of a pruned seed.
        } else if (t.started_at() > 0 && t.finished_at() > t.started_at()) {
          line += "  (" + FormatDuration(t.finished_at() - t.started_at()) + ")";
        }
      } else {
        line += fmt::format("  {:<8} {}", TrialStateName(t.state()), TrialLabel(t));
      }
      return {line + "  " + ProgressText(t.stage())};
    }
    case v1::PRUNE_DECIDED:
      return {time + "  prune    " + TrialLabel(t) + ": " + FirstLine(t.error())};
    case v1::TRIAL_REQUEUED:
      return {time + "  requeued " + TrialLabel(t) + ": " +
              (t.error().empty() ? "lease expired or given back" : FirstLine(t.error()))};
    case v1::STAGE_DECIDED: {
      const v1::StageResult& s = event.stage();
      StageProgress& p = stages_[s.stage()];
      if (!s.name().empty()) p.name = s.name();
      if (s.trials_total() > 0) p.total = s.trials_total(), p.done = s.trials_done(), p.failed = s.trials_failed();
      std::string label = StageLabel(s.stage());
      if (s.state() == v1::STAGE_FAILED) return {time + fmt::format("{} FAILED: {}", label, s.error())};
      if (s.state() != v1::STAGE_SUCCEEDED) return {time + fmt::format("{} {}", label, StageStateName(s.state()))};
      best_config_json_ = s.winner_config_json();
      std::string line = time + fmt::format("{} decided: winner {}  {} {}", label, FormatPoint(s.winner().point_json()),
                                            metric_.empty() ? "objective" : metric_, FormatScore(s.winner()));
      if (std::string sure = FormatSignificance(s); !sure.empty()) line += ", " + sure;
      return {line};
    }
    case v1::SWEEP_FINISHED: {
      const v1::Sweep& s = event.sweep();
      switch (s.state()) {
        case v1::SWEEP_SUCCEEDED: {
          std::vector<std::string> lines = {time + fmt::format("sweep {} succeeded: {} trials, {} failed", s.sweep_id(),
                                                               s.trials_total(), s.trials_failed())};
          if (!best_config_json_.empty()) {
            lines.push_back(time + "best config: " + EmbeddedJson(best_config_json_).dump());
          }
          return lines;
        }
        case v1::SWEEP_FAILED:
          return {time + fmt::format("sweep {} FAILED: {}", s.sweep_id(), s.error())};
        default:
          return {time + fmt::format("sweep {} {}", s.sweep_id(), SweepStateName(s.state()))};
      }
    }
    default:
      return {};
  }
}

int Watch(const Coordinator& coordinator, const WatchOptions& options, std::ostream& out, std::ostream& err) {
  WatchView view(options.show_progress);
  if (options.interrupt != nullptr) options.interrupt->armed = true;
  struct Disarm {
    InterruptFlag* flag;
    ~Disarm() {
      if (flag != nullptr) flag->armed = false;
    }
  } disarm{options.interrupt};

  int64_t last_seq = 0;  // The resume point: events up to here are on screen.
  auto backoff = options.initial_backoff;
  bool ever_connected = false;
  int failures = 0;  // Stream attempts in a row that ended without an event.
  auto outage_start = Clock::now();
  auto last_notice = Clock::now();
  for (;;) {
    grpc::ClientContext context;
    v1::WatchSweepRequest request;
    request.set_sweep_id(options.sweep_id);
    request.set_after_seq(last_seq);
    // Per-epoch reports are most of a sweep's events; fetch them only when they are shown.
    request.set_skip_progress(!options.json && !options.show_progress);
    std::optional<v1::Sweep> finished;
    grpc::Status status;
    {
      CancelOnInterrupt canceller(options.interrupt, &context);
      auto reader = coordinator.stub->WatchSweep(&context, request);
      v1::SweepEvent event;
      while (reader->Read(&event)) {
        ever_connected = true;
        backoff = options.initial_backoff;
        if (failures > 0) {
          err << fmt::format("moesweep: reconnected to {}\n", coordinator.address);
          failures = 0;
        }
        if (event.seq() <= last_seq) continue;  // Guards against a replay overlapping what we showed.
        last_seq = event.seq();
        if (options.json) {
          out << ProtoToJson(event).dump() << "\n";
        } else {
          for (const std::string& line : view.Render(event)) out << line << "\n";
        }
        out.flush();
        if (event.type() == v1::SWEEP_FINISHED) {
          finished = event.sweep();
          context.TryCancel();  // The server ends the stream anyway; don't wait for it.
          break;
        }
      }
      status = reader->Finish();
    }
    if (finished) {
      if (finished->state() == v1::SWEEP_SUCCEEDED) return kExitOk;
      if (finished->state() == v1::SWEEP_FAILED) {
        err << fmt::format("moesweep: sweep {} failed{}{}\n", finished->sweep_id(), finished->error().empty() ? "" : ": ",
                           finished->error());
      } else {
        err << fmt::format("moesweep: sweep {} was {}\n", finished->sweep_id(), SweepStateName(finished->state()));
      }
      return kExitSweepFailed;
    }
    if (Interrupted(options.interrupt)) {
      err << fmt::format("moesweep: stopped watching sweep {} (the sweep goes on)\n", options.sweep_id);
      return kExitInterrupted;
    }
    if (!ShouldReconnect(status)) {
      return ReportRpcError(status, coordinator, fmt::format("sweep {}", options.sweep_id), err);
    }
    // Never connected at all: the coordinator is down or the address is wrong; say so at once.
    if (!ever_connected && status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return ReportRpcError(status, coordinator, "", err);
    }
    if (failures > 0 && Clock::now() - outage_start > options.give_up_after) {
      err << fmt::format("moesweep: gave up watching sweep {}: {}\n", options.sweep_id,
                         DescribeUnreachable(status, coordinator));
      return kExitUnreachable;
    }
    // Say it once, then only every 30 s while the coordinator stays away.
    std::string why = status.ok() ? "the stream ended early" : DescribeUnreachable(status, coordinator);
    if (failures++ == 0) {
      err << fmt::format("moesweep: lost the event stream ({}); reconnecting, resuming after event {}\n", why,
                         last_seq);
      outage_start = last_notice = Clock::now();
    } else if (Clock::now() - last_notice >= std::chrono::seconds(30)) {
      err << fmt::format("moesweep: still reconnecting ({})\n", why);
      last_notice = Clock::now();
    }
    SleepUnlessInterrupted(backoff, options.interrupt);
    if (Interrupted(options.interrupt)) {
      err << fmt::format("moesweep: stopped watching sweep {} (the sweep goes on)\n", options.sweep_id);
      return kExitInterrupted;
    }
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

}  // namespace moesweep::client
