#include "tests/soak/soak.h"

#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "moesweep/v1/moesweep.pb.h"
#include "tests/e2e/process.h"

namespace moesweep::soak {
namespace {

namespace v1 = ::moesweep::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kStageKeys[3] = {"a", "b", "c"};

double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// A read-only connection to the coordinator's database; closes itself.
class Db {
 public:
  explicit Db(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      error_ = db_ ? sqlite3_errmsg(db_) : "cannot open";
      sqlite3_close(db_);
      db_ = nullptr;
      return;
    }
    sqlite3_busy_timeout(db_, 2000);
  }
  ~Db() { sqlite3_close(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  bool ok() const { return db_ != nullptr && error_.empty(); }
  const std::string& error() const { return error_; }

  // Runs `sql` with `?1` bound to `arg`, calling `row` for each row; false (and error()) on failure.
  template <typename Row>
  bool Query(const char* sql, int64_t arg, Row&& row) {
    if (db_ == nullptr) return false;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) {
      error_ = fmt::format("{}: {}", sql, sqlite3_errmsg(db_));
      return false;
    }
    if (sqlite3_bind_parameter_count(stmt) > 0) sqlite3_bind_int64(stmt, 1, arg);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
    if (rc != SQLITE_DONE) error_ = fmt::format("{}: {}", sql, sqlite3_errmsg(db_));
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE;
  }

 private:
  sqlite3* db_ = nullptr;
  std::string error_;
};

std::string Text(sqlite3_stmt* s, int col) {
  const unsigned char* t = sqlite3_column_text(s, col);
  return t ? reinterpret_cast<const char*>(t) : "";
}

// Integers of the trainer's config (the grid holds integers; the baseline's "a" is 1000).
int64_t Int(const Json& config, const char* key) {
  auto it = config.find(key);
  return it != config.end() && it->is_number() ? it->get<int64_t>() : -1;
}

struct TrialRow {
  int64_t id = 0;
  int stage = 0;
  int point = 0;
  int64_t seed = 0;
  Json config;
  int state = 0;
  int attempt = 0;
  std::optional<double> objective;
  Json metrics;
  int64_t reused_from = 0;  // Took an identical earlier trial's results instead of running.
};

// Per trial, what the event log says.
struct TrialEvents {
  int started = 0, finished = 0, requeued = 0, progress = 0;
  int64_t finished_seq = 0, last_seq = 0;
  v1::Trial finished_trial;
};

}  // namespace

SoakPlan SoakPlan::ForTrials(int64_t trials, int seeds) {
  SoakPlan plan;
  plan.seeds = std::max(1, seeds);
  int64_t per_seed = std::max<int64_t>(trials / plan.seeds, 4);
  plan.points = static_cast<int>(std::max<int64_t>(1, (per_seed - 1) / 3));  // Baseline + 3 stages.
  return plan;
}

Json SoakSpec(const SoakPlan& plan, const std::string& python, const std::string& trainer) {
  Json seeds = Json::array();
  for (int s = 1; s <= plan.seeds; ++s) seeds.push_back(s);
  Json stages = Json::array();
  for (const char* key : kStageKeys) {
    Json values = Json::array();
    for (int p = 0; p < plan.points; ++p) values.push_back(p);
    stages.push_back({{"name", std::string("stage-") + key}, {"grid", {{key, values}}}});
  }
  return {
      {"name", "soak"},
      {"objective", {{"metric", "val_accuracy"}, {"goal", "maximize"}}},
      {"seeds", seeds},
      {"base", {{"a", 0}, {"b", 0}, {"c", 0}, {"epochs", plan.epochs}, {"sleep_ms", plan.epoch_ms}}},
      {"baseline", {{"a", 1000}}},
      {"stages", stages},
      {"max_attempts", plan.max_attempts},
      {"lease_seconds", plan.lease_seconds},
      {"trainer", {{"command", {python, "-S", trainer, "{config_file}"}}}},
  };
}

double ExpectedScore(const Json& config) {
  int64_t k = (Int(config, "a") * 7 + Int(config, "b") * 13 + Int(config, "c") * 17 + Int(config, "seed") * 5) % 61;
  return static_cast<double>(300 + k) / 1024.0;
}

DatabaseCheck CheckSoakDatabase(const std::string& db_path, int64_t sweep_id, const SoakPlan& plan) {
  DatabaseCheck out;
  auto fail = [&](std::string what) {
    if (out.failures.size() < 50) out.failures.push_back(std::move(what));
  };
  Db db(db_path);
  if (!db.ok()) {
    fail("cannot open the database: " + db.error());
    return out;
  }

  std::vector<std::string> integrity;
  db.Query("PRAGMA integrity_check", 0, [&](sqlite3_stmt* s) { integrity.push_back(Text(s, 0)); });
  if (integrity != std::vector<std::string>{"ok"}) {
    fail(fmt::format("PRAGMA integrity_check: {}", integrity.empty() ? db.error() : integrity.front()));
  }

  int sweep_state = -1;
  db.Query("SELECT state FROM sweeps WHERE id = ?1", sweep_id, [&](sqlite3_stmt* s) { sweep_state = sqlite3_column_int(s, 0); });
  if (sweep_state != v1::SWEEP_SUCCEEDED) fail(fmt::format("sweep {} is in state {}, not SWEEP_SUCCEEDED", sweep_id, sweep_state));

  // Trials: each (stage, point, seed) once, SUCCEEDED with what its trainer reported.
  std::vector<TrialRow> trials;
  db.Query("SELECT id, stage, point_index, seed, config, state, attempt, objective, metrics, reused_from FROM trials "
           "WHERE sweep_id = ?1 ORDER BY id",
           sweep_id, [&](sqlite3_stmt* s) {
             TrialRow t;
             t.id = sqlite3_column_int64(s, 0);
             t.stage = sqlite3_column_int(s, 1);
             t.point = sqlite3_column_int(s, 2);
             t.seed = sqlite3_column_int64(s, 3);
             t.config = Json::parse(Text(s, 4), nullptr, false);
             t.state = sqlite3_column_int(s, 5);
             t.attempt = sqlite3_column_int(s, 6);
             if (sqlite3_column_type(s, 7) != SQLITE_NULL) t.objective = sqlite3_column_double(s, 7);
             t.metrics = Json::parse(Text(s, 8), nullptr, false);
             t.reused_from = sqlite3_column_int64(s, 9);
             trials.push_back(std::move(t));
           });
  out.trials = static_cast<int64_t>(trials.size());
  if (out.trials != plan.TotalTrials()) fail(fmt::format("{} trials, want {}", out.trials, plan.TotalTrials()));
  std::map<int64_t, const TrialRow*> by_id;
  std::set<std::tuple<int, int, int64_t>> keys;
  std::map<int, int> per_stage;
  for (const TrialRow& t : trials) {
    by_id[t.id] = &t;
    ++per_stage[t.stage];
    out.max_attempt = std::max(out.max_attempt, t.attempt);
    if (!keys.insert({t.stage, t.point, t.seed}).second) {
      fail(fmt::format("trial {}: stage {} point {} seed {} exists twice", t.id, t.stage, t.point, t.seed));
    }
    if (t.state != v1::TRIAL_SUCCEEDED) {
      fail(fmt::format("trial {} is in state {} (attempt {}), not SUCCEEDED", t.id, t.state, t.attempt));
      continue;
    }
    double expected = ExpectedScore(t.config);
    if (!t.objective || *t.objective != expected) {
      fail(fmt::format("trial {}: stored objective {} but its trainer reported {}", t.id,
                       t.objective ? fmt::format("{}", *t.objective) : "NULL", expected));
    }
    if (!t.metrics.is_object() || !t.metrics.contains("val_accuracy") || t.metrics["val_accuracy"] != expected) {
      fail(fmt::format("trial {}: stored metrics {} but its trainer reported val_accuracy {}", t.id,
                       t.metrics.dump(), expected));
    }
  }
  for (int stage = 0; stage <= 3; ++stage) {
    int want = plan.seeds * (stage == 0 ? 1 : plan.points);
    if (per_stage[stage] != want) fail(fmt::format("stage {} has {} trials, want {}", stage, per_stage[stage], want));
  }

  // Progress rows: never the same (trial, attempt, step) twice; count the final attempts' gaps.
  std::map<int64_t, int> progress_rows;
  db.Query("SELECT m.trial_id, m.attempt, m.step, COUNT(*) FROM trial_metrics m JOIN trials t ON t.id = m.trial_id "
           "WHERE t.sweep_id = ?1 GROUP BY m.trial_id, m.attempt, m.step",
           sweep_id, [&](sqlite3_stmt* s) {
             int64_t trial = sqlite3_column_int64(s, 0), n = sqlite3_column_int64(s, 3);
             progress_rows[trial] += static_cast<int>(n);
             out.progress_rows += n;
             if (n != 1) {
               fail(fmt::format("trial {} attempt {}: {} progress rows for step {}", trial, sqlite3_column_int(s, 1), n,
                                sqlite3_column_int64(s, 2)));
             }
             auto it = by_id.find(trial);
             if (it != by_id.end() && sqlite3_column_int(s, 1) == it->second->attempt) --out.final_attempt_missing_reports;
           });
  out.final_attempt_missing_reports += static_cast<int64_t>(trials.size()) * plan.epochs;

  // Events: 1..N without a gap; one TRIAL_FINISHED per trial, its last event; leases and requeues
  // agree with the trials' attempts; one STAGE_STARTED and STAGE_DECIDED per stage, in order.
  std::map<int64_t, TrialEvents> trial_events;
  std::map<int, v1::StageResult> decided;
  std::map<int, int64_t> stage_started_seq, stage_decided_seq;
  int64_t expect_seq = 1, first_type = 0, last_type = 0, sweep_finished = 0;
  v1::SweepState finished_state = v1::SWEEP_STATE_UNSPECIFIED;
  db.Query("SELECT seq, type, payload FROM events WHERE sweep_id = ?1 ORDER BY seq", sweep_id, [&](sqlite3_stmt* s) {
    int64_t seq = sqlite3_column_int64(s, 0);
    int type = sqlite3_column_int(s, 1);
    ++out.events;
    if (seq != expect_seq) fail(fmt::format("events: seq {} follows seq {} (a gap or a repeat)", seq, expect_seq - 1));
    expect_seq = seq + 1;
    v1::SweepEvent e;
    if (!e.ParseFromArray(sqlite3_column_blob(s, 2), sqlite3_column_bytes(s, 2)) || e.type() != type || e.seq() != seq) {
      fail(fmt::format("event {}: payload does not parse or disagrees with its row", seq));
      return;
    }
    if (seq == 1) first_type = type;
    last_type = type;
    switch (e.type()) {
      case v1::TRIAL_STARTED:
      case v1::TRIAL_PROGRESS:
      case v1::TRIAL_REQUEUED:
      case v1::TRIAL_FINISHED: {
        TrialEvents& te = trial_events[e.trial().trial_id()];
        if (te.finished > 0) fail(fmt::format("event {}: {} of trial {} after its TRIAL_FINISHED", seq, v1::EventType_Name(e.type()), e.trial().trial_id()));
        te.last_seq = seq;
        if (e.type() == v1::TRIAL_STARTED) ++te.started, ++out.leases;
        if (e.type() == v1::TRIAL_PROGRESS) ++te.progress;
        if (e.type() == v1::TRIAL_REQUEUED) ++te.requeued, ++out.requeued;
        if (e.type() == v1::TRIAL_FINISHED) {
          ++te.finished;
          te.finished_seq = seq;
          te.finished_trial = e.trial();
        }
        break;
      }
      case v1::STAGE_STARTED:
        if (stage_started_seq.count(e.stage().stage())) fail(fmt::format("event {}: stage {} started twice", seq, e.stage().stage()));
        stage_started_seq[e.stage().stage()] = seq;
        break;
      case v1::STAGE_DECIDED:
        if (decided.count(e.stage().stage())) fail(fmt::format("event {}: stage {} decided twice", seq, e.stage().stage()));
        decided[e.stage().stage()] = e.stage();
        stage_decided_seq[e.stage().stage()] = seq;
        break;
      case v1::SWEEP_FINISHED:
        ++sweep_finished;
        finished_state = e.sweep().state();
        break;
      default:
        break;
    }
  });
  if (!db.error().empty()) fail("database: " + db.error());
  if (first_type != v1::SWEEP_SUBMITTED) fail(fmt::format("the first event is of type {}, not SWEEP_SUBMITTED", first_type));
  if (last_type != v1::SWEEP_FINISHED || sweep_finished != 1 || finished_state != v1::SWEEP_SUCCEEDED) {
    fail(fmt::format("want one SWEEP_FINISHED(SUCCEEDED) as the last event: last type {}, {} SWEEP_FINISHED, state {}",
                     last_type, sweep_finished, static_cast<int>(finished_state)));
  }
  for (const TrialRow& t : trials) {
    const TrialEvents& te = trial_events[t.id];
    if (te.finished != 1) {
      fail(fmt::format("trial {}: {} TRIAL_FINISHED events, want exactly 1", t.id, te.finished));
      continue;
    }
    if (te.finished_trial.state() != v1::TRIAL_SUCCEEDED ||
        te.finished_trial.metrics().count("val_accuracy") == 0 ||
        te.finished_trial.metrics().at("val_accuracy") != ExpectedScore(t.config)) {
      fail(fmt::format("trial {}: its TRIAL_FINISHED says state {} val_accuracy {}", t.id,
                       static_cast<int>(te.finished_trial.state()),
                       te.finished_trial.metrics().count("val_accuracy") ? te.finished_trial.metrics().at("val_accuracy") : -1.0));
    }
    if (t.reused_from > 0) {
      // Reused: never leased, and its original is an earlier SUCCEEDED trial with the same config.
      auto original = by_id.find(t.reused_from);
      if (t.attempt != 0 || te.started != 0 || te.requeued != 0) {
        fail(fmt::format("trial {} reused trial {} but was leased (attempt {}, {} TRIAL_STARTED)", t.id, t.reused_from,
                         t.attempt, te.started));
      } else if (original == by_id.end() || original->first >= t.id || nlohmann::json(original->second->config) != nlohmann::json(t.config) ||
                 original->second->state != v1::TRIAL_SUCCEEDED) {
        fail(fmt::format("trial {} reused trial {}, which is not an earlier SUCCEEDED trial with its config", t.id,
                         t.reused_from));
      }
    } else if (te.started != t.attempt || te.requeued != t.attempt - 1) {
      fail(fmt::format("trial {}: attempt {} but {} TRIAL_STARTED and {} TRIAL_REQUEUED events", t.id, t.attempt,
                       te.started, te.requeued));
    }
    if (te.progress != progress_rows[t.id]) {
      fail(fmt::format("trial {}: {} TRIAL_PROGRESS events but {} stored reports", t.id, te.progress, progress_rows[t.id]));
    }
    auto decided_at = stage_decided_seq.find(t.stage);
    if (decided_at != stage_decided_seq.end() && te.finished_seq > decided_at->second) {
      fail(fmt::format("trial {} finished (event {}) after its stage {} was decided (event {})", t.id, te.finished_seq,
                       t.stage, decided_at->second));
    }
  }
  if (trial_events.size() != trials.size()) {
    fail(fmt::format("events name {} trials, the trials table has {}", trial_events.size(), trials.size()));
  }

  // Stage decisions: recompute each point's mean over its seeds and the winner (ties to the
  // earlier point) from the stored objectives, and compare with the stages table and the events.
  std::map<int, int> winner_point_column;
  std::map<int, int> stage_state;
  db.Query("SELECT stage, state, winner_point FROM stages WHERE sweep_id = ?1", sweep_id, [&](sqlite3_stmt* s) {
    stage_state[sqlite3_column_int(s, 0)] = sqlite3_column_int(s, 1);
    winner_point_column[sqlite3_column_int(s, 0)] = sqlite3_column_int(s, 2);
  });
  std::map<int, int64_t> winner_value;  // Stage -> the winning value of its key.
  double baseline_mean = 0;
  for (int stage = 0; stage <= 3; ++stage) {
    std::map<int, std::vector<double>> values;
    for (const TrialRow& t : trials) {
      if (t.stage == stage && t.state == v1::TRIAL_SUCCEEDED && t.objective) values[t.point].push_back(*t.objective);
    }
    int best = -1;
    double best_mean = 0;
    std::map<int, double> means;
    for (const auto& [point, v] : values) {
      double sum = 0;
      for (double x : v) sum += x;
      double mean = sum / static_cast<double>(v.size());
      means[point] = mean;
      if (best < 0 || mean > best_mean) best = point, best_mean = mean;
    }
    if (stage == 0) baseline_mean = best_mean;
    if (stage_state[stage] != v1::STAGE_SUCCEEDED) fail(fmt::format("stage {} is in state {}", stage, stage_state[stage]));
    if (winner_point_column[stage] != best) {
      fail(fmt::format("stage {}: stored winner point {}, the stored results give point {}", stage,
                       winner_point_column[stage], best));
    }
    auto d = decided.find(stage);
    if (d == decided.end()) {
      fail(fmt::format("stage {}: no STAGE_DECIDED event", stage));
      continue;
    }
    const v1::StageResult& r = d->second;
    if (r.state() != v1::STAGE_SUCCEEDED || r.winner().point_index() != best || r.winner().mean() != best_mean ||
        r.winner().n() != plan.seeds) {
      fail(fmt::format("stage {}: STAGE_DECIDED says point {} mean {} n {}; the stored results give point {} mean {} n {}",
                       stage, r.winner().point_index(), r.winner().mean(), r.winner().n(), best, best_mean, plan.seeds));
    }
    for (const v1::PointScore& p : r.points()) {
      if (!means.count(p.point_index()) || p.mean() != means[p.point_index()]) {
        fail(fmt::format("stage {} point {}: STAGE_DECIDED mean {}, the stored results give {}", stage, p.point_index(),
                         p.mean(), means.count(p.point_index()) ? means[p.point_index()] : -1.0));
      }
    }
    if (static_cast<size_t>(r.points_size()) != means.size()) {
      fail(fmt::format("stage {}: STAGE_DECIDED scores {} points, {} have results", stage, r.points_size(), means.size()));
    }
    if (stage > 0 && r.has_baseline() && r.delta_to_baseline() != r.winner().mean() - baseline_mean) {
      fail(fmt::format("stage {}: delta_to_baseline {} != {} - {}", stage, r.delta_to_baseline(), r.winner().mean(),
                       baseline_mean));
    }
    if (stage > 0) winner_value[stage] = best;  // Grid values are 0..points-1: value = point index.
    // Stage k+1 starts once stage k (k >= 1) is decided; the baseline runs beside stage 1.
    if (stage > 0 && stage_started_seq.count(stage + 1) && stage_started_seq[stage + 1] < stage_decided_seq[stage]) {
      fail(fmt::format("stage {} started (event {}) before stage {} was decided (event {})", stage + 1,
                       stage_started_seq[stage + 1], stage, stage_decided_seq[stage]));
    }
  }
  // Every trial of a later stage carries the earlier stages' winners.
  for (const TrialRow& t : trials) {
    for (int earlier = 1; earlier < t.stage; ++earlier) {
      if (Int(t.config, kStageKeys[earlier - 1]) != winner_value[earlier]) {
        fail(fmt::format("trial {} of stage {} has {}={}, but stage {} chose {}", t.id, t.stage, kStageKeys[earlier - 1],
                         Int(t.config, kStageKeys[earlier - 1]), earlier, winner_value[earlier]));
      }
    }
  }
  return out;
}

namespace {

// The processes of one soak run and the schedule that kills them.
class SoakRun {
 public:
  SoakRun(const SoakOptions& o, std::ostream& log) : o_(o), log_(log), start_(Clock::now()), rng_(o.seed) {
    address_ = fmt::format("127.0.0.1:{}", e2e::FreePort());
    db_path_ = (std::filesystem::path(o.dir) / "sweeps.db").string();
  }

  SoakResult Run() {
    SoakResult result;
    auto fail = [&](std::string what) {
      Log("FAILED: {}", what);
      result.failures.push_back(std::move(what));
    };
    std::filesystem::create_directories(o_.dir);
    deadline_ = start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.max_seconds));
    Log("soak: {} trials (baseline + 3 stages x {} points, {} seeds, {} epochs of {} ms), {} workers x {} slots, "
        "{} coordinator + {} worker kills, schedule seed {}, in {}",
        o_.plan.TotalTrials(), o_.plan.points, o_.plan.seeds, o_.plan.epochs, o_.plan.epoch_ms, o_.workers, o_.slots,
        o_.coordinator_kills, o_.worker_kills, o_.seed, o_.dir);
    if (!StartCoordinator()) {
      fail("the coordinator did not become healthy");
      return result;
    }
    std::string spec_path = (std::filesystem::path(o_.dir) / "soak.json").string();
    std::ofstream(spec_path) << SoakSpec(o_.plan, o_.python, o_.trainer).dump(2);
    e2e::CommandResult submit = Cli({"submit", spec_path, "--json"});
    Json submitted = Json::parse(submit.out, nullptr, false);
    if (submit.exit_code != 0 || !submitted.is_object() || !submitted.contains("sweep_id")) {
      fail(fmt::format("submit exited {}: {}{}", submit.exit_code, submit.out, submit.err));
      return result;
    }
    const int64_t sweep_id = result.sweep_id = submitted["sweep_id"].get<int64_t>();
    Clock::time_point submitted_at = Clock::now();
    for (int w = 0; w < o_.workers; ++w) StartWorker(w);

    // The schedule: which kill at what share of finished trials.
    struct Kill {
      double at;
      bool coordinator;
    };
    std::vector<Kill> kills;
    std::uniform_real_distribution<double> share(o_.first_kill_at, o_.last_kill_at);
    for (int i = 0; i < o_.coordinator_kills; ++i) kills.push_back({share(rng_), true});
    for (int i = 0; i < o_.worker_kills; ++i) kills.push_back({share(rng_), false});
    std::sort(kills.begin(), kills.end(), [](const Kill& x, const Kill& y) { return x.at < y.at; });
    std::string plan_text;
    for (const Kill& k : kills) plan_text += fmt::format(" {}@{:.0f}%", k.coordinator ? "C" : "W", 100 * k.at);
    Log("kill schedule (C coordinator, W worker, at % of trials finished):{}", plan_text);

    size_t next = 0;
    bool done = false;
    int64_t total = o_.plan.TotalTrials();
    while (Clock::now() < deadline_) {
      int64_t finished = 0;
      int state = 0;
      ReadProgress(sweep_id, &finished, &state);
      if (state == v1::SWEEP_SUCCEEDED || state == v1::SWEEP_FAILED || state == v1::SWEEP_CANCELLED) {
        done = true;
        result.sweep_seconds = std::chrono::duration<double>(Clock::now() - submitted_at).count();
        Log("sweep {} ended {} after {:.1f} s ({} trials finished)", sweep_id, v1::SweepState_Name(static_cast<v1::SweepState>(state)),
            result.sweep_seconds, finished);
        if (state != v1::SWEEP_SUCCEEDED) fail("the sweep ended " + v1::SweepState_Name(static_cast<v1::SweepState>(state)));
        break;
      }
      while (next < kills.size() && static_cast<double>(finished) >= kills[next].at * static_cast<double>(total)) {
        const Kill& k = kills[next++];
        std::string progress = fmt::format("{} of {} trials finished", finished, total);
        if (k.coordinator) {
          ++result.coordinator_kills;
          KillCoordinator(fmt::format("coordinator kill {}/{}, {}", result.coordinator_kills, o_.coordinator_kills, progress));
        } else {
          ++result.worker_kills;
          KillWorker(fmt::format("worker kill {}/{}, {}", result.worker_kills, o_.worker_kills, progress));
        }
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    if (!done) fail(fmt::format("the sweep did not end within {} s", o_.max_seconds));
    if (result.coordinator_kills != o_.coordinator_kills || result.worker_kills != o_.worker_kills) {
      fail(fmt::format("made {} coordinator and {} worker kills of {} and {}", result.coordinator_kills,
                       result.worker_kills, o_.coordinator_kills, o_.worker_kills));
    }

    // Stop: workers cleanly, the coordinator with SIGKILL (what it acknowledged must be on disk).
    for (auto& w : workers_) {
      if (w) w->Signal(SIGTERM);
    }
    for (size_t i = 0; i < workers_.size(); ++i) {
      if (workers_[i] && !workers_[i]->Wait(std::chrono::seconds(15))) fail(fmt::format("worker {} ignored SIGTERM", i));
    }
    workers_.clear();
    if (coordinator_) {
      coordinator_->Signal(SIGKILL);
      coordinator_->Wait(std::chrono::seconds(10));
      coordinator_.reset();
    }
    if (!done) return result;

    result.db = CheckSoakDatabase(db_path_, sweep_id, o_.plan);
    for (const std::string& f : result.db.failures) fail("database: " + f);
    Log("database: {} trials, {} events, {} leases ({} requeued, attempts up to {}), {} progress rows "
        "({} epochs of final attempts without a stored report); checks {}",
        result.db.trials, result.db.events, result.db.leases, result.db.requeued, result.db.max_attempt,
        result.db.progress_rows, result.db.final_attempt_missing_reports, result.db.failures.empty() ? "OK" : "FAILED");
    return result;
  }

 private:
  template <typename... Args>
  void Log(fmt::format_string<Args...> format, Args&&... args) {
    log_ << fmt::format("[{:7.2f}s] ", Since(start_)) << fmt::format(format, std::forward<Args>(args)...) << std::endl;
  }

  e2e::CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), o_.cli_bin);
    args.insert(args.end(), {"--coordinator", address_, "--timeout", "5"});
    return e2e::Run(args, std::chrono::seconds(30));
  }

  bool StartCoordinator() {
    std::string log = (std::filesystem::path(o_.dir) / fmt::format("coordinator.{}.log", coordinator_starts_++)).string();
    coordinator_ = std::make_unique<e2e::Process>(std::vector<std::string>{o_.coordinator_bin, "--listen", address_, "--db", db_path_}, log);
    auto until = std::min(deadline_, Clock::now() + std::chrono::seconds(30));
    while (Clock::now() < until) {
      if (!coordinator_->Running()) break;
      if (e2e::Run({o_.cli_bin, "health", "--timeout", "1", "--coordinator", address_}, std::chrono::seconds(5)).exit_code == 0) {
        Log("coordinator pid {} serving on {}", coordinator_->pid(), address_);
        return true;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    Log("coordinator pid {} did not become healthy; its log: {}", coordinator_->pid(), e2e::ReadFile(log));
    return false;
  }

  void StartWorker(int w) {
    if (workers_.size() <= static_cast<size_t>(w)) workers_.resize(w + 1);
    std::filesystem::path dir(o_.dir);
    std::string name = fmt::format("w{}", w);
    workers_[w] = std::make_unique<e2e::Process>(
        std::vector<std::string>{o_.worker_bin, "--coordinator", address_, "--slots", std::to_string(o_.slots),
                                 "--threads-per-trial", "1", "--name", name, "--log-dir", (dir / "logs").string(),
                                 "--runs-dir", (dir / "runs").string()},
        (dir / fmt::format("{}.{}.log", name, worker_starts_[w]++)).string());
    Log("worker {} pid {} started", name, workers_[w]->pid());
  }

  void RestartDelay() {
    double delay = std::uniform_real_distribution<double>(0, o_.max_restart_delay)(rng_);
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  }

  void KillCoordinator(const std::string& why) {
    pid_t pid = coordinator_->pid();
    coordinator_->Signal(SIGKILL);
    coordinator_->Wait(std::chrono::seconds(10));
    Log("kill -9 coordinator pid {} ({})", pid, why);
    RestartDelay();
    StartCoordinator();
  }

  void KillWorker(const std::string& why) {
    int w = std::uniform_int_distribution<int>(0, o_.workers - 1)(rng_);
    pid_t pid = workers_[w]->pid();
    workers_[w]->Signal(SIGKILL);
    workers_[w]->Wait(std::chrono::seconds(10));
    Log("kill -9 worker w{} pid {} ({})", w, pid, why);
    RestartDelay();
    StartWorker(w);
  }

  // Finished trials and the sweep's state, read from the database (also while the coordinator is
  // down); leaves both as they are when the database cannot be read at the moment.
  void ReadProgress(int64_t sweep_id, int64_t* finished, int* state) {
    Db db(db_path_);
    static const std::string kCountFinished =
        fmt::format("SELECT COUNT(*) FROM trials WHERE sweep_id = ?1 AND state IN ({}, {}, {})", v1::TRIAL_SUCCEEDED,
                    v1::TRIAL_FAILED, v1::TRIAL_CANCELLED);
    db.Query(kCountFinished.c_str(), sweep_id,
             [&](sqlite3_stmt* s) { *finished = sqlite3_column_int64(s, 0); });
    db.Query("SELECT state FROM sweeps WHERE id = ?1", sweep_id, [&](sqlite3_stmt* s) { *state = sqlite3_column_int(s, 0); });
  }

  const SoakOptions& o_;
  std::ostream& log_;
  Clock::time_point start_, deadline_;
  std::mt19937_64 rng_;
  std::string address_, db_path_;
  int coordinator_starts_ = 0;
  std::map<int, int> worker_starts_;
  std::unique_ptr<e2e::Process> coordinator_;
  std::vector<std::unique_ptr<e2e::Process>> workers_;
};

}  // namespace

SoakResult RunSoak(const SoakOptions& options, std::ostream& log) { return SoakRun(options, log).Run(); }

}  // namespace moesweep::soak
