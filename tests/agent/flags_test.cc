// moesweep-worker's command line: the exit flags, and errors that name the flag.
#include "worker/agent/flags.h"

#include <gtest/gtest.h>

namespace moesweep::worker {
namespace {

Status Parse(std::vector<std::string> args, WorkerFlags* out) {
  args.insert(args.begin(), {"--coordinator", "127.0.0.1:50051"});
  return ParseWorkerFlags(args, out);
}

TEST(WorkerFlagsTest, ExitFlagsDefaultToNeverAndTakeSeconds) {
  WorkerFlags f;
  ASSERT_TRUE(Parse({}, &f).ok());
  EXPECT_EQ(f.exit_when_idle_seconds, 0);
  EXPECT_EQ(f.give_up_after_seconds, 0);
  ASSERT_TRUE(Parse({"--exit-when-idle", "300", "--give-up-after=1800.5"}, &f).ok());
  EXPECT_EQ(f.exit_when_idle_seconds, 300);
  EXPECT_EQ(f.give_up_after_seconds, 1800.5);
}

TEST(WorkerFlagsTest, BadExitFlagValuesAreErrorsNamingTheFlag) {
  WorkerFlags f;
  for (const char* flag : {"--exit-when-idle", "--give-up-after"}) {
    for (const char* value : {"-1", "soon", "", "1e9", "nan", "10s"}) {
      Status s = Parse({flag, value}, &f);
      ASSERT_FALSE(s.ok()) << flag << " " << value;
      EXPECT_EQ(s.message().rfind(std::string(flag) + ": \"" + value + "\" is not a number of seconds", 0), 0u)
          << s.message();
    }
    Status s = Parse({flag}, &f);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.message(), std::string(flag) + " needs a value");
  }
}

TEST(WorkerFlagsTest, ExitFlagsAreNotForRun) {
  WorkerFlags f;
  Status s = ParseWorkerFlags({"run", "c.json", "--exit-when-idle", "5"}, &f);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--exit-when-idle is only for the worker mode"), std::string::npos) << s.message();
}

TEST(WorkerFlagsTest, KillGraceKeepsItsRangeAndMessage) {
  WorkerFlags f;
  ASSERT_TRUE(Parse({"--kill-grace", "2.5"}, &f).ok());
  EXPECT_EQ(f.kill_grace_seconds, 2.5);
  Status s = Parse({"--kill-grace", "4000"}, &f);
  EXPECT_EQ(s.message(), "--kill-grace: \"4000\" is not a number of seconds in [0, 3600]");
}

TEST(WorkerFlagsTest, UsageListsTheExitFlagsAndCodes) {
  const std::string usage = WorkerUsage(false);
  EXPECT_NE(usage.find("--exit-when-idle SECONDS"), std::string::npos);
  EXPECT_NE(usage.find("--give-up-after SECONDS"), std::string::npos);
  EXPECT_NE(usage.find("3 coordinator unreachable"), std::string::npos);
}

}  // namespace
}  // namespace moesweep::worker
