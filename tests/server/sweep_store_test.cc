#include "server/sweep_store.h"

#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

#include "server/sqlite.h"

namespace moesweep {
namespace {

std::unique_ptr<SweepStore> OpenMemory() {
  std::unique_ptr<SweepStore> store;
  Status s = SweepStore::Open(":memory:", &store);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return store;
}

int64_t AddSweep(SweepStore* store) {
  SweepRow row;
  row.name = "s";
  row.spec_json = "{}";
  row.created_at = 1;
  int64_t id = 0;
  EXPECT_TRUE(store->InsertSweep(row, &id).ok());
  return id;
}

int64_t AddTrial(SweepStore* store, int64_t sweep, int stage) {
  v1::Trial t;
  t.set_sweep_id(sweep);
  t.set_stage(stage);
  t.set_config_json(R"({"seed":1})");
  t.set_point_json("{}");
  t.set_state(v1::TRIAL_PENDING);
  int64_t id = 0;
  EXPECT_TRUE(store->InsertTrial(t, &id).ok());
  return id;
}

TEST(SweepStore, SweepsRoundTrip) {
  auto store = OpenMemory();
  int64_t id = AddSweep(store.get());
  ASSERT_TRUE(store->UpdateSweep(id, v1::SWEEP_FAILED, 2, "boom", 5).ok());
  SweepRow row;
  ASSERT_TRUE(store->GetSweep(id, &row).ok());
  EXPECT_EQ(row.state, v1::SWEEP_FAILED);
  EXPECT_EQ(row.current_stage, 2);
  EXPECT_EQ(row.error, "boom");
  EXPECT_EQ(store->GetSweep(id + 1, &row).code(), Status::Code::kNotFound);
  std::vector<SweepRow> active;
  ASSERT_TRUE(store->ListActiveSweeps(&active).ok());
  EXPECT_TRUE(active.empty());  // FAILED is final.
}

TEST(SweepStore, TrialShowsLatestProgressUntilFinished) {
  auto store = OpenMemory();
  int64_t sweep = AddSweep(store.get());
  int64_t trial = AddTrial(store.get(), sweep, 1);
  ASSERT_TRUE(store->MarkTrialLeased(trial, 1, "tok", "w1", 10).ok());
  google::protobuf::Map<std::string, double> m;
  m["val_accuracy"] = 0.5;
  ASSERT_TRUE(store->InsertMetrics(trial, 1, 1, 11, m, nullptr).ok());
  m["val_accuracy"] = 0.6;
  ASSERT_TRUE(store->InsertMetrics(trial, 1, 2, 12, m, nullptr).ok());
  std::vector<TrialRow> rows;
  ASSERT_TRUE(store->ListTrials(sweep, {}, &rows).ok());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].trial.state(), v1::TRIAL_RUNNING);
  EXPECT_DOUBLE_EQ(rows[0].trial.metrics().at("val_accuracy"), 0.6);
  EXPECT_EQ(rows[0].lease_token, "tok");

  v1::ExpertStats stats;
  stats.add_layers()->add_usage(1.0);
  ASSERT_TRUE(store->MarkTrialFinished(trial, v1::TRIAL_SUCCEEDED, {{"val_accuracy", 0.9}}, stats, 0.9, "", "tok", 20).ok());
  rows.clear();
  ASSERT_TRUE(store->ListTrials(sweep, {}, &rows).ok());
  EXPECT_DOUBLE_EQ(rows[0].trial.metrics().at("val_accuracy"), 0.9);
  EXPECT_EQ(rows[0].trial.expert_stats().layers(0).usage(0), 1.0);
  EXPECT_DOUBLE_EQ(*rows[0].objective, 0.9);

  std::optional<TrialRow> found;
  ASSERT_TRUE(store->FindTrialByToken("tok", &found).ok());
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->trial.trial_id(), trial);
  found.reset();
  ASSERT_TRUE(store->FindTrialByToken("", &found).ok());
  EXPECT_FALSE(found.has_value());
}

TEST(SweepStore, FiltersTrialsByStageAndState) {
  auto store = OpenMemory();
  int64_t sweep = AddSweep(store.get());
  AddTrial(store.get(), sweep, 1);
  int64_t b = AddTrial(store.get(), sweep, 2);
  AddTrial(store.get(), sweep, 2);
  ASSERT_TRUE(store->MarkTrialLeased(b, 1, "t", "w", 1).ok());
  TrialFilter f;
  f.stage = 2;
  std::vector<TrialRow> rows;
  ASSERT_TRUE(store->ListTrials(sweep, f, &rows).ok());
  EXPECT_EQ(rows.size(), 2u);
  f.state = v1::TRIAL_RUNNING;
  rows.clear();
  ASSERT_TRUE(store->ListTrials(sweep, f, &rows).ok());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].trial.trial_id(), b);
}

TEST(SweepStore, EventsReadBackInOrderAfterASeq) {
  auto store = OpenMemory();
  int64_t sweep = AddSweep(store.get());
  for (int seq = 1; seq <= 5; ++seq) {
    v1::SweepEvent e;
    e.set_sweep_id(sweep);
    e.set_seq(seq);
    e.set_type(v1::TRIAL_PROGRESS);
    ASSERT_TRUE(store->InsertEvent(e).ok());
  }
  v1::SweepEvent dup;
  dup.set_sweep_id(sweep);
  dup.set_seq(3);
  EXPECT_FALSE(store->InsertEvent(dup).ok());  // (sweep, seq) is unique.
  std::vector<v1::SweepEvent> events;
  ASSERT_TRUE(store->ReadEvents(sweep, 2, 2, false, &events).ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].seq(), 3);
  EXPECT_EQ(events[1].seq(), 4);
  int64_t max = 0;
  ASSERT_TRUE(store->MaxEventSeq(sweep, &max).ok());
  EXPECT_EQ(max, 5);
}

TEST(SweepStore, RollbackLeavesNothingBehind) {
  auto store = OpenMemory();
  ASSERT_TRUE(store->Begin().ok());
  AddSweep(store.get());
  store->Rollback();
  std::vector<SweepRow> rows;
  ASSERT_TRUE(store->ListSweeps(10, 0, &rows).ok());
  EXPECT_TRUE(rows.empty());
}

TEST(SweepStore, RefusesADatabaseFromTheFuture) {
  auto path = std::filesystem::temp_directory_path() / ("moesweep_future_" + std::to_string(::getpid()) + ".db");
  std::filesystem::remove(path);
  {
    std::unique_ptr<Database> db;
    ASSERT_TRUE(Database::Open(path.string(), false, &db).ok());
    ASSERT_TRUE(db->Exec("PRAGMA user_version = 99").ok());
  }
  std::unique_ptr<SweepStore> store;
  Status s = SweepStore::Open(path.string(), &store);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("schema version 99"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(SweepStore, MigratesAFreshFileOnceAndReopens) {
  auto path = std::filesystem::temp_directory_path() / ("moesweep_reopen_" + std::to_string(::getpid()) + ".db");
  std::filesystem::remove(path);
  int64_t id = 0;
  {
    std::unique_ptr<SweepStore> store;
    ASSERT_TRUE(SweepStore::Open(path.string(), &store).ok());
    id = AddSweep(store.get());
  }
  std::unique_ptr<SweepStore> store;
  ASSERT_TRUE(SweepStore::Open(path.string(), &store).ok());
  SweepRow row;
  EXPECT_TRUE(store->GetSweep(id, &row).ok());
  std::filesystem::remove(path);
  std::filesystem::remove(path.string() + "-wal");
  std::filesystem::remove(path.string() + "-shm");
}

}  // namespace
}  // namespace moesweep
