// moesweep-soak: the soak run of tests/soak/soak.h as a program, for long runs (bench/soak.sh).
//
//   moesweep-soak [--trials 3000] [--kills 40 | --coordinator-kills N --worker-kills N] [--seed S]
//                 [--workers 3] [--slots 2] [--seeds 3] [--epochs 3] [--epoch-ms 20]
//                 [--max-seconds 1800] [--dir DIR] [--json FILE]
//
// The binaries default to the ones built beside it. Exit status 0 only when every check passed.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include <fmt/format.h>

#include "tests/soak/soak.h"

namespace {

constexpr const char* kUsage = R"(usage: moesweep-soak [options]
  --trials N             about N trials: a baseline and 3 stages, --seeds seeds each (default 300)
  --kills N              N kills, half of them (rounded up) the coordinator's
  --coordinator-kills N  SIGKILLs of the coordinator (default 5)
  --worker-kills N       SIGKILLs of a worker (default 5)
  --seed S               seed of the kill schedule (default 1)
  --workers N            workers (default 3), --slots N trials at a time each (default 2)
  --seeds N              seeds per grid point (default 3)
  --epochs N             reports per trial (default 3), --epoch-ms MS the trainer's pause before each (default 20)
  --lease-seconds S      the sweep's lease (default 3)
  --max-seconds S        cut the run off after S seconds (default 1800)
  --dir DIR              work folder, kept (default: a new one under $TMPDIR)
  --json FILE            also write the figures as JSON
)";

}  // namespace

int main(int argc, char** argv) {
  using moesweep::soak::SoakOptions;
  SoakOptions o;
  o.coordinator_bin = MOESWEEP_COORDINATOR_BIN;
  o.worker_bin = MOESWEEP_WORKER_BIN;
  o.cli_bin = MOESWEEP_CLI_BIN;
  o.trainer = MOESWEEP_SOAK_TRAINER;
  o.max_seconds = 1800;
  int64_t trials = 300;
  int seeds = 3, epochs = 3, epoch_ms = 20;
  double lease = 3;
  std::string json_out;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 >= argc) {
      std::cerr << "moesweep-soak: " << flag << " needs a value\n" << kUsage;
      return 2;
    }
    std::string v = argv[++i];
    try {
      if (flag == "--trials") trials = std::stoll(v);
      else if (flag == "--kills") o.coordinator_kills = (std::stoi(v) + 1) / 2, o.worker_kills = std::stoi(v) / 2;
      else if (flag == "--coordinator-kills") o.coordinator_kills = std::stoi(v);
      else if (flag == "--worker-kills") o.worker_kills = std::stoi(v);
      else if (flag == "--seed") o.seed = std::stoull(v);
      else if (flag == "--workers") o.workers = std::stoi(v);
      else if (flag == "--slots") o.slots = std::stoi(v);
      else if (flag == "--seeds") seeds = std::stoi(v);
      else if (flag == "--epochs") epochs = std::stoi(v);
      else if (flag == "--epoch-ms") epoch_ms = std::stoi(v);
      else if (flag == "--lease-seconds") lease = std::stod(v);
      else if (flag == "--max-seconds") o.max_seconds = std::stod(v);
      else if (flag == "--dir") o.dir = v;
      else if (flag == "--json") json_out = v;
      else {
        std::cerr << "moesweep-soak: unknown flag " << flag << "\n" << kUsage;
        return 2;
      }
    } catch (const std::exception&) {
      std::cerr << "moesweep-soak: " << flag << ": not a number: " << v << "\n";
      return 2;
    }
  }
  if (o.workers < 1 || o.slots < 1 || seeds < 1 || epochs < 1 || o.coordinator_kills < 0 || o.worker_kills < 0) {
    std::cerr << kUsage;
    return 2;
  }
  o.plan = moesweep::soak::SoakPlan::ForTrials(trials, seeds);
  o.plan.epochs = epochs;
  o.plan.epoch_ms = epoch_ms;
  o.plan.lease_seconds = lease;
  if (o.dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    o.dir = fmt::format("{}/moesweep-soak-{}", tmp && *tmp ? tmp : "/tmp", ::getpid());
  }
  moesweep::soak::SoakResult r = moesweep::soak::RunSoak(o, std::cout);
  std::cout << fmt::format(
      "\nsoak: {} trials, {} coordinator + {} worker kills (seed {}), sweep {:.1f} s, {:.1f} trials/s; {} leases, "
      "{} requeued, attempts up to {}; {} events; checks {}\n",
      r.db.trials, r.coordinator_kills, r.worker_kills, o.seed, r.sweep_seconds,
      r.sweep_seconds > 0 ? r.db.trials / r.sweep_seconds : 0.0, r.db.leases, r.db.requeued, r.db.max_attempt, r.db.events,
      r.ok() ? "OK" : "FAILED");
  for (const std::string& f : r.failures) std::cout << "  CHECK FAILED: " << f << "\n";
  if (!json_out.empty()) {
    moesweep::Json j = {{"trials", r.db.trials},         {"coordinator_kills", r.coordinator_kills},
                        {"worker_kills", r.worker_kills}, {"seed", o.seed},
                        {"sweep_seconds", r.sweep_seconds}, {"leases", r.db.leases},
                        {"requeued", r.db.requeued},     {"max_attempt", r.db.max_attempt},
                        {"events", r.db.events},         {"progress_rows", r.db.progress_rows},
                        {"final_attempt_missing_reports", r.db.final_attempt_missing_reports},
                        {"checks_ok", r.ok()},           {"failures", r.failures},
                        {"dir", o.dir}};
    std::ofstream(json_out) << j.dump(2) << "\n";
  }
  return r.ok() ? 0 : 1;
}
