// The soak test in ctest: a few hundred command trials while the coordinator and the workers are
// SIGKILLed and restarted (tests/soak/soak.h), and proof that its database check is not vacuous.
#include <sqlite3.h>

#include <filesystem>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "moesweep/v1/moesweep.pb.h"
#include "tests/soak/soak.h"

namespace moesweep::soak {
namespace {

namespace v1 = ::moesweep::v1;

class Soak : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("moesweep_soak_{}_{}", ::getpid(), ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  SoakOptions Options() {
    SoakOptions o;
    o.coordinator_bin = MOESWEEP_COORDINATOR_BIN;
    o.worker_bin = MOESWEEP_WORKER_BIN;
    o.cli_bin = MOESWEEP_CLI_BIN;
    o.trainer = MOESWEEP_SOAK_TRAINER;
    o.dir = (dir_ / "run").string();
    return o;
  }

  std::filesystem::path dir_;
};

TEST_F(Soak, FiveCoordinatorAndFiveWorkerKillsLoseNothingAndRepeatNothing) {
  SoakOptions o = Options();
  o.plan = SoakPlan::ForTrials(300, 3);
  o.plan.epoch_ms = 10;
  o.workers = 3;
  o.slots = 2;
  o.coordinator_kills = 5;
  o.worker_kills = 5;
  o.seed = 20261123;
  o.max_seconds = 50;
  std::ostringstream log;
  SoakResult r = RunSoak(o, log);
  std::cout << log.str();
  EXPECT_TRUE(r.ok()) << ::testing::PrintToString(r.failures) << "\n" << log.str();
  EXPECT_EQ(r.db.trials, 300);
  EXPECT_EQ(r.coordinator_kills, 5);
  EXPECT_EQ(r.worker_kills, 5);
  // The kills hit running trials: some leases were lost and their trials ran again.
  EXPECT_GT(r.db.requeued, 0) << log.str();
}

// A database to tamper with: a copy of the clean run's files.
class Tampered {
 public:
  Tampered(const std::filesystem::path& from, const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    for (const char* suffix : {"", "-wal"}) {
      std::filesystem::path f = from.string() + suffix;
      if (std::filesystem::exists(f)) std::filesystem::copy_file(f, dir / ("sweeps.db" + std::string(suffix)));
    }
    path_ = (dir / "sweeps.db").string();
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db_), SQLITE_OK);
  }
  ~Tampered() { sqlite3_close(db_); }

  void Exec(const std::string& sql) {
    char* error = nullptr;
    ASSERT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK) << sql << ": " << (error ? error : "");
  }
  int64_t Int(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
      v = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    return v;
  }
  v1::SweepEvent Event(int64_t seq) {
    sqlite3_stmt* s = nullptr;
    v1::SweepEvent e;
    sqlite3_prepare_v2(db_, "SELECT payload FROM events WHERE sweep_id = 1 AND seq = ?", -1, &s, nullptr);
    sqlite3_bind_int64(s, 1, seq);
    if (sqlite3_step(s) == SQLITE_ROW) e.ParseFromArray(sqlite3_column_blob(s, 0), sqlite3_column_bytes(s, 0));
    sqlite3_finalize(s);
    return e;
  }
  void PutEvent(const v1::SweepEvent& e) {
    std::string payload = e.SerializeAsString();
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db_, "UPDATE events SET type = ?, payload = ? WHERE sweep_id = 1 AND seq = ?", -1, &s, nullptr);
    sqlite3_bind_int(s, 1, e.type());
    sqlite3_bind_blob(s, 2, payload.data(), static_cast<int>(payload.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, e.seq());
    EXPECT_EQ(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
  }
  const std::string& path() const { return path_; }

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

bool Mentions(const DatabaseCheck& check, const std::string& text) {
  for (const std::string& f : check.failures) {
    if (f.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST_F(Soak, TheCheckCatchesAGapASecondCompletionAWrongWinnerAnAlteredAndALostResult) {
  SoakOptions o = Options();
  o.plan.seeds = 2;
  o.plan.points = 3;
  o.plan.epochs = 1;
  o.plan.epoch_ms = 0;
  o.coordinator_kills = 0;
  o.worker_kills = 0;
  o.workers = 1;
  o.max_seconds = 50;
  std::ostringstream log;
  SoakResult clean = RunSoak(o, log);
  ASSERT_TRUE(clean.ok()) << ::testing::PrintToString(clean.failures) << "\n" << log.str();
  ASSERT_EQ(clean.sweep_id, 1);
  const std::filesystem::path db = std::filesystem::path(o.dir) / "sweeps.db";

  {  // An event deleted from the middle.
    Tampered t(db, dir_ / "gap");
    t.Exec("DELETE FROM events WHERE sweep_id = 1 AND seq = 5");
    EXPECT_TRUE(Mentions(CheckSoakDatabase(t.path(), 1, o.plan), "events: seq 6 follows seq 4"));
  }
  {  // A trial's progress event rewritten as a second TRIAL_FINISHED of it.
    Tampered t(db, dir_ / "twice");
    int64_t trial = t.Int(fmt::format("SELECT id FROM trials WHERE sweep_id = 1 AND stage = 2 AND reused_from = 0 LIMIT 1"));
    int64_t finished_seq = -1, progress_seq = -1;
    for (int64_t seq = 1; seq <= clean.db.events; ++seq) {
      v1::SweepEvent e = t.Event(seq);
      if (e.trial().trial_id() != trial) continue;
      if (e.type() == v1::TRIAL_PROGRESS) progress_seq = seq;
      if (e.type() == v1::TRIAL_FINISHED) finished_seq = seq;
    }
    ASSERT_GT(progress_seq, 0);
    ASSERT_GT(finished_seq, progress_seq);
    v1::SweepEvent second = t.Event(finished_seq);
    second.set_seq(progress_seq);
    t.PutEvent(second);
    EXPECT_TRUE(Mentions(CheckSoakDatabase(t.path(), 1, o.plan), fmt::format("trial {}: 2 TRIAL_FINISHED events", trial)));
  }
  {  // Another point stored as stage 2's winner.
    Tampered t(db, dir_ / "winner");
    t.Exec("UPDATE stages SET winner_point = (winner_point + 1) % 3 WHERE sweep_id = 1 AND stage = 2");
    EXPECT_TRUE(Mentions(CheckSoakDatabase(t.path(), 1, o.plan), "stage 2: stored winner point"));
  }
  {  // A result that is not what the trainer reported.
    Tampered t(db, dir_ / "altered");
    int64_t trial = t.Int("SELECT id FROM trials WHERE sweep_id = 1 AND stage = 3 LIMIT 1");
    t.Exec(fmt::format("UPDATE trials SET objective = objective + 0.5 WHERE id = {}", trial));
    EXPECT_TRUE(Mentions(CheckSoakDatabase(t.path(), 1, o.plan), fmt::format("trial {}: stored objective", trial)));
  }
  {  // A trial that never finished.
    Tampered t(db, dir_ / "lost");
    t.Exec(fmt::format("UPDATE trials SET state = {} WHERE sweep_id = 1 AND stage = 1 AND point_index = 1",
                       static_cast<int>(v1::TRIAL_PENDING)));
    EXPECT_TRUE(Mentions(CheckSoakDatabase(t.path(), 1, o.plan), "not SUCCEEDED"));
  }
  // The clean copy passes.
  Tampered untouched(db, dir_ / "untouched");
  EXPECT_TRUE(CheckSoakDatabase(untouched.path(), 1, o.plan).failures.empty());
}

}  // namespace
}  // namespace moesweep::soak
