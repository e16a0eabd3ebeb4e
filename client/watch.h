// `moesweep watch`: follows a sweep's event stream and prints a live view. WatchView turns events
// into lines (pure, testable); Watch() owns the stream, reconnects after a coordinator restart
// without showing an event twice, and stops on Ctrl-C without touching the sweep.
#ifndef MOESWEEP_CLIENT_WATCH_H_
#define MOESWEEP_CLIENT_WATCH_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "client/rpc.h"
#include "moesweep/v1/moesweep.pb.h"

namespace moesweep::client {

class WatchView {
 public:
  explicit WatchView(bool show_progress) : show_progress_(show_progress) {}

  // The lines (without newlines) to print for `event`, in order; none for a hidden event
  // (TRIAL_PROGRESS unless show_progress). Events must come in seq order.
  std::vector<std::string> Render(const v1::SweepEvent& event);

 private:
  struct StageProgress {
    std::string name;
    int total = 0;
    int done = 0;
    int failed = 0;
    int pruned = 0;
    bool has_best = false;
    double best = 0;
  };

  std::string StageLabel(int stage) const;
  std::string TrialLabel(const v1::Trial& trial) const;
  std::string ObjectiveText(const v1::Trial& trial) const;
  std::string ProgressText(int stage) const;
  void NoteFinished(const v1::Trial& trial);

  bool show_progress_;
  std::string metric_;  // Objective metric, known from SWEEP_SUBMITTED; empty before.
  bool maximize_ = true;
  int num_stages_ = 0;
  bool has_baseline_ = false;
  std::string best_config_json_;  // Winner config of the last decided stage.
  std::map<int, StageProgress> stages_;
};

// Ctrl-C for a watch. main's SIGINT handler sets `requested` while `armed` (a watch is running)
// and otherwise lets the signal end the process as usual. Both are lock-free, so signal-safe.
struct InterruptFlag {
  std::atomic<bool> requested{false};
  std::atomic<bool> armed{false};
};

struct WatchOptions {
  int64_t sweep_id = 0;
  bool json = false;           // One JSON object per event and line, every event included.
  bool show_progress = false;  // Show TRIAL_PROGRESS events.
  std::chrono::milliseconds initial_backoff{500};  // Before the first reconnect; doubles after.
  std::chrono::milliseconds max_backoff{10000};
  // Give up (exit 3) when the stream stays broken this long (no event from any new attempt).
  std::chrono::milliseconds give_up_after{std::chrono::minutes(5)};
  InterruptFlag* interrupt = nullptr;  // May be null: no Ctrl-C handling.
};

// Streams events from after_seq=0 (so a late watch shows the history first) until SWEEP_FINISHED.
// Returns kExitOk when the sweep succeeded, kExitSweepFailed when it failed or was cancelled,
// kExitInterrupted on Ctrl-C, or the exit code of a stream error (reported on `err`).
int Watch(const Coordinator& coordinator, const WatchOptions& options, std::ostream& out, std::ostream& err);

}  // namespace moesweep::client

#endif  // MOESWEEP_CLIENT_WATCH_H_
