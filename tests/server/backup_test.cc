// Online backup: a consistent copy of a database a coordinator is writing to.
#include "server/backup.h"

#include <atomic>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "server/coordinator.h"
#include "tests/server/coordinator_test_util.h"

namespace moesweep {
namespace {

constexpr const char* kSpec = R"({
  "name": "backup-test",
  "objective": {"metric": "val_loss", "goal": "minimize"},
  "stages": [{"name": "width", "grid": {"expert_hidden_dim": [16, 32, 64]}}]
})";

Status Submit(Coordinator* c, int64_t* id = nullptr) {
  v1::SubmitSweepRequest request;
  request.set_spec_json(kSpec);
  v1::SubmitSweepResponse response;
  Status s = CallSync(c, &Coordinator::SubmitSweep, request, &response);
  if (id) *id = response.sweep_id();
  return s;
}

int Sweeps(Coordinator* c) {
  v1::ListSweepsRequest request;
  request.set_limit(100000);
  v1::ListSweepsResponse response;
  EXPECT_TRUE(CallSync(c, &Coordinator::ListSweeps, request, &response).ok());
  return response.sweeps_size();
}

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Coordinator::Open(db_.path(), {}, &clock_, &coordinator_).ok()); }
  void TearDown() override {
    coordinator_.reset();
    for (const char* suffix : {"", ".partial"}) std::filesystem::remove(copy_.path() + suffix);
  }

  TempDb db_{"backup_src"};
  TempDb copy_{"backup_copy"};
  SystemClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(BackupTest, TheCopyOpensAsACoordinatorWithEverySweep) {
  int64_t id = 0;
  ASSERT_TRUE(Submit(coordinator_.get(), &id).ok());
  ASSERT_TRUE(Submit(coordinator_.get()).ok());
  Status s = BackupDatabase(db_.path(), copy_.path());
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_FALSE(std::filesystem::exists(copy_.path() + "-wal"));  // One self-contained file.
  EXPECT_FALSE(std::filesystem::exists(copy_.path() + ".partial"));

  SystemClock clock;
  std::unique_ptr<Coordinator> restored;
  ASSERT_TRUE(Coordinator::Open(copy_.path(), {}, &clock, &restored).ok());
  EXPECT_EQ(Sweeps(restored.get()), 2);
  v1::ListTrialsRequest request;
  request.set_sweep_id(id);
  v1::ListTrialsResponse trials;
  ASSERT_TRUE(CallSync(restored.get(), &Coordinator::ListTrials, request, &trials).ok());
  EXPECT_EQ(trials.trials_size(), 3);
}

TEST_F(BackupTest, ACopyTakenWhileTheCoordinatorWritesIsConsistent) {
  ASSERT_TRUE(Submit(coordinator_.get()).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> submitted{1};
  std::thread writer([&] {
    while (!stop) {
      if (Submit(coordinator_.get()).ok()) ++submitted;
    }
  });
  while (submitted < 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Status s = BackupDatabase(db_.path(), copy_.path());
  int at_end = (stop = true, writer.join(), submitted.load());
  ASSERT_TRUE(s.ok()) << s.message();

  SystemClock clock;
  std::unique_ptr<Coordinator> restored;
  ASSERT_TRUE(Coordinator::Open(copy_.path(), {}, &clock, &restored).ok());
  int copied = Sweeps(restored.get());
  EXPECT_GE(copied, 20);
  EXPECT_LE(copied, at_end);
  // Every sweep in the copy has all its trials: no transaction is cut in half.
  v1::ListSweepsRequest list;
  list.set_limit(100000);
  v1::ListSweepsResponse sweeps;
  ASSERT_TRUE(CallSync(restored.get(), &Coordinator::ListSweeps, list, &sweeps).ok());
  for (const auto& sweep : sweeps.sweeps()) {
    v1::ListTrialsRequest request;
    request.set_sweep_id(sweep.sweep_id());
    v1::ListTrialsResponse trials;
    ASSERT_TRUE(CallSync(restored.get(), &Coordinator::ListTrials, request, &trials).ok());
    EXPECT_EQ(trials.trials_size(), 3) << "sweep " << sweep.sweep_id();
  }
}

TEST_F(BackupTest, NeverOverwritesAFileOrCreatesASource) {
  ASSERT_TRUE(BackupDatabase(db_.path(), copy_.path()).ok());
  Status s = BackupDatabase(db_.path(), copy_.path());
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("exists; not overwriting"), std::string::npos) << s.message();
  EXPECT_EQ(BackupDatabase(db_.path(), db_.path()).code(), Status::Code::kFailedPrecondition);
  std::string missing = db_.path() + ".missing";
  EXPECT_EQ(BackupDatabase(missing, copy_.path() + "2").code(), Status::Code::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(missing));
}

}  // namespace
}  // namespace moesweep
