// The soak harness: a staged sweep of many short command trials, run by the real coordinator,
// workers and CLI as processes on loopback, while a seeded schedule SIGKILLs the coordinator and
// the workers at random moments and restarts them (the coordinator on the same database). At the
// end the database is read directly (SQLite C API, read-only, after a last SIGKILL) and checked:
// every trial SUCCEEDED exactly once with what its trainer reported, the events are 1..N without a
// gap, every stage decision is what the stored results give, and PRAGMA integrity_check is ok.
//
// Used by tests/soak/soak_test.cc (the short run in ctest) and by `moesweep-soak` (bench/soak.sh,
// the long run). Needs no LibTorch: the trainer is tests/soak/testdata/soak_trainer.py.
#ifndef MOESWEEP_TESTS_SOAK_SOAK_H_
#define MOESWEEP_TESTS_SOAK_SOAK_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "common/json.h"

namespace moesweep::soak {

// The sweep: a baseline and three stages ("a", then "b", then "c", each a grid of one integer
// axis 0..points-1) of `seeds` seeds; the trainer's score is a known function of a, b, c and
// the seed (ExpectedScore).
struct SoakPlan {
  int seeds = 3;
  int points = 33;       // Grid points per stage.
  int epochs = 3;        // Reports per trial.
  int epoch_ms = 20;     // The trainer sleeps this long before each report.
  double lease_seconds = 3;
  int max_attempts = 100;  // Each kill can cost a trial one lease; the soak must not fail trials.

  int64_t TotalTrials() const { return static_cast<int64_t>(seeds) * (1 + 3 * points); }
  // A plan of about `trials` trials (at least 1 point per stage).
  static SoakPlan ForTrials(int64_t trials, int seeds);
};

// The sweep spec of `plan`, its trainer `python -S trainer CONFIG_FILE`.
Json SoakSpec(const SoakPlan& plan, const std::string& python, const std::string& trainer);

// What soak_trainer.py reports as the final val_accuracy of a trial with `config`: a multiple of
// 1/1024, so that means over seeds are exact whatever the order of the sum.
double ExpectedScore(const Json& config);

struct SoakOptions {
  std::string coordinator_bin, worker_bin, cli_bin;
  std::string trainer;                    // soak_trainer.py
  std::string python = "/usr/bin/python3";
  std::string dir;                        // Work folder: database and logs. Created; kept.
  SoakPlan plan;
  int workers = 3;
  int slots = 2;                          // Trials at a time per worker.
  int coordinator_kills = 5;
  int worker_kills = 5;
  // Kills happen when these fractions of the trials have finished: each drawn uniformly from
  // [first, last], so all of them happen before the sweep ends whatever the machine's speed.
  double first_kill_at = 0.02, last_kill_at = 0.9;
  double max_restart_delay = 0.5;         // A killed process is restarted after U(0, this) seconds.
  uint64_t seed = 1;                      // Of the schedule: which kill when, which worker, delays.
  double max_seconds = 55;                // The whole run is cut off after this long (a failure).
};

// What the database says after the run. `failures` empty: every check passed.
struct DatabaseCheck {
  std::vector<std::string> failures;
  int64_t trials = 0;
  int64_t events = 0;
  int64_t leases = 0;              // TRIAL_STARTED events (= the sum of the trials' attempts).
  int64_t requeued = 0;            // TRIAL_REQUEUED events: leases lost to a kill.
  int max_attempt = 0;
  int64_t progress_rows = 0;       // trial_metrics rows (reports stored, every attempt).
  int64_t final_attempt_missing_reports = 0;  // Epochs of final attempts with no stored report.
};

// Checks the sweep `sweep_id` of `plan` in the database file at `db_path` (the coordinator must be
// stopped). Every failure is one line naming what differs.
DatabaseCheck CheckSoakDatabase(const std::string& db_path, int64_t sweep_id, const SoakPlan& plan);

struct SoakResult {
  std::vector<std::string> failures;  // Of the run and of the database check.
  int64_t sweep_id = 0;
  int coordinator_kills = 0, worker_kills = 0;
  double sweep_seconds = 0;           // From submission to SWEEP_SUCCEEDED in the database.
  DatabaseCheck db;
  bool ok() const { return failures.empty(); }
};

// Runs the soak in options.dir, logging each step (every kill with its time, pid and progress) to
// `log`. Bounded by options.max_seconds plus a few seconds to stop the processes.
SoakResult RunSoak(const SoakOptions& options, std::ostream& log);

}  // namespace moesweep::soak

#endif  // MOESWEEP_TESTS_SOAK_SOAK_H_
