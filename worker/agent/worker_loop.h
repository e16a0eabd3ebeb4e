// WorkerLoop: pulls trials from the coordinator's WorkerService and runs them, `slots` at a time,
// each with the TrialRunner of its trainer kind. No LibTorch: the built-in trainer is one runner.
//
// Each slot is a thread: AcquireTrial (long poll, offering the runners' kinds and the free GPUs)
// -> TrialRunner::Run -> CompleteTrial. Progress is reported whenever the runner reports, and a
// heartbeat is sent whenever lease_seconds / 3 passed without a report, so the lease never lapses. A lease's reports go over one
// ReportProgressStream (report_stream.h). A STOP directive ends the trial
// before its next batch (completed as FAILED, "stopped by the coordinator"); FAILED_PRECONDITION
// on a report means the lease is gone and the trial is dropped without CompleteTrial. Errors
// talking to the coordinator (it restarts, the network blips) are retried with exponential
// backoff. Shutdown() makes running trials stop before their next batch and hands them back with
// CompleteTrial(RELEASED). Optionally the loop ends itself the same way: when the coordinator has
// had no work for it for a while (exit_when_idle_seconds), or has been unreachable for too long
// (give_up_after_seconds); Run() says which.
#ifndef MOESWEEP_WORKER_AGENT_WORKER_LOOP_H_
#define MOESWEEP_WORKER_AGENT_WORKER_LOOP_H_

#include <memory>
#include <string>
#include <vector>

#include "rpc/channel.h"

namespace grpc {
class Channel;
}

namespace moesweep::worker {

class TrialRunner;

struct WorkerOptions {
  std::string name = "worker";    // Slot i calls itself "<name>/slot-<i>".
  int slots = 1;
  // One per trainer kind this worker runs; not owned, shared by the slots.
  std::vector<TrialRunner*> runners;
  // GPU ids (the values CUDA_VISIBLE_DEVICES takes) handed out to trials, as many as a trial's
  // trainer asks for. Empty: the worker offers no GPUs.
  std::vector<int> gpus;
  double acquire_wait_seconds = 10;  // Long-poll length; the RPC deadline is this + 5 s.
  double rpc_timeout_seconds = 10;   // Deadline of each progress report and CompleteTrial.
  double backoff_initial_seconds = 0.5;
  double backoff_max_seconds = 30;
  double release_timeout_seconds = 5;  // How long Shutdown waits to hand a trial back.
  // 0 = never. Otherwise Run() returns kIdle once no slot has run a trial for this long while the
  // coordinator kept answering (an unreachable coordinator is not "no work": see give-up).
  double exit_when_idle_seconds = 0;
  // 0 = never. Otherwise Run() returns kGaveUp (running trials stopped, release attempted) once
  // every call to the coordinator has failed for this long: acquires with any error, reports and
  // completions with a transient one. Any successful call resets the clock.
  double give_up_after_seconds = 0;
  bool verbose = true;                 // Log to stderr.
};

// Why WorkerLoop::Run() returned.
enum class WorkerExit {
  kShutdown,  // Shutdown() was called (a signal).
  kIdle,      // exit_when_idle_seconds without a trial.
  kGaveUp,    // The coordinator was unreachable for give_up_after_seconds.
};

// A channel to the coordinator (TLS and token as `security` says) whose reconnect backoff is
// capped at a few seconds (gRPC's default grows to two minutes), so a restarted coordinator is
// found again quickly.
std::shared_ptr<grpc::Channel> MakeCoordinatorChannel(const std::string& target,
                                                      const rpc::ClientSecurity& security = {});

class WorkerLoop {
 public:
  WorkerLoop(std::shared_ptr<grpc::Channel> channel, WorkerOptions options);
  ~WorkerLoop();
  WorkerLoop(const WorkerLoop&) = delete;
  WorkerLoop& operator=(const WorkerLoop&) = delete;

  // Runs the slots until Shutdown(), idleness or giving up (see WorkerOptions); returns when every
  // slot has finished (running trials released), and why. Call once.
  WorkerExit Run();

  // Thread-safe and idempotent; returns at once (Run() does the waiting). Not async-signal-safe:
  // call it from a normal thread (main uses sigwait).
  void Shutdown();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_WORKER_LOOP_H_
