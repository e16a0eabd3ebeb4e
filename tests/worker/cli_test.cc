#include "worker/cli.h"

#include <sstream>

#include <gtest/gtest.h>

#include "tests/worker/test_util.h"

namespace moesweep::worker {
namespace {

Status Parse(std::vector<std::string> args, WorkerFlags* f) { return ParseWorkerFlags(args, f); }

TEST(WorkerFlagsTest, ServeMode) {
  WorkerFlags f;
  ASSERT_TRUE(Parse({"--coordinator", "host:5000", "--slots=3", "--threads-per-trial", "2", "--name", "w1"}, &f).ok());
  EXPECT_FALSE(f.run);
  EXPECT_EQ(f.coordinator, "host:5000");
  EXPECT_EQ(f.slots, 3);
  EXPECT_EQ(f.threads_per_trial, 2);
  EXPECT_EQ(f.name, "w1");
}

TEST(WorkerFlagsTest, SecurityFlagsNameFilesNotSecrets) {
  WorkerFlags f;
  ASSERT_TRUE(Parse({"--coordinator", "h:1", "--token-file", "w.token", "--tls-ca=ca.pem", "--tls-cert", "c.pem",
                     "--tls-key", "c.key"},
                    &f)
                  .ok());
  EXPECT_EQ(f.security.token_file, "w.token");
  EXPECT_EQ(f.security.tls_ca, "ca.pem");
  EXPECT_EQ(f.security.tls_cert, "c.pem");
  EXPECT_EQ(f.security.tls_key, "c.key");
  EXPECT_NE(Parse({"--coordinator", "h:1", "--token", "secret"}, &f).message().find("unknown flag --token"),
            std::string::npos);
  EXPECT_NE(Parse({"run", "c.json", "--tls-ca", "ca.pem"}, &f).message().find("--tls-ca is only for"),
            std::string::npos);
}

TEST(WorkerFlagsTest, RunMode) {
  WorkerFlags f;
  ASSERT_TRUE(Parse({"run", "cfg.json", "--threads", "2"}, &f).ok());
  EXPECT_TRUE(f.run);
  EXPECT_EQ(f.config_file, "cfg.json");
  EXPECT_EQ(f.threads, 2);
}

TEST(WorkerFlagsTest, ErrorsNameTheFlag) {
  WorkerFlags f;
  Status s = Parse({"--coordinator", "h:1", "--slotz", "2"}, &f);
  EXPECT_NE(s.message().find("unknown flag --slotz"), std::string::npos) << s.message();
  s = Parse({"--coordinator", "h:1", "--slots", "zero"}, &f);
  EXPECT_NE(s.message().find("--slots: \"zero\" is not a positive integer"), std::string::npos) << s.message();
  s = Parse({"--coordinator", "h:1", "--slots"}, &f);
  EXPECT_NE(s.message().find("--slots needs a value"), std::string::npos) << s.message();
  s = Parse({"--coordinator", "nocolon"}, &f);
  EXPECT_NE(s.message().find("--coordinator"), std::string::npos) << s.message();
  s = Parse({"--slots", "2"}, &f);
  EXPECT_NE(s.message().find("--coordinator HOST:PORT is required"), std::string::npos) << s.message();
  s = Parse({"run"}, &f);
  EXPECT_NE(s.message().find("missing CONFIG.json"), std::string::npos) << s.message();
  s = Parse({"run", "c.json", "--slots", "2"}, &f);
  EXPECT_NE(s.message().find("--slots"), std::string::npos) << s.message();
  s = Parse({"--coordinator", "h:1", "--threads", "2"}, &f);
  EXPECT_NE(s.message().find("--threads"), std::string::npos) << s.message();
}

TEST(RunLocalTrialTest, PrintsFinalJsonAndEpochLines) {
  testing::TempDir dir;
  testing::WriteText(dir.File("c.json"), R"({"train_size": 128, "val_size": 64, "input_dim": 4, "num_classes": 3,
      "d_model": 8, "expert_hidden_dim": 8, "num_experts": 3, "epochs": 2, "batch_size": 32})");
  std::ostringstream out, err;
  ASSERT_EQ(RunLocalTrial(dir.File("c.json"), 1, out, err), 0) << err.str();
  Json j = Json::parse(out.str());
  EXPECT_TRUE(j["metrics"].contains("mAP"));
  EXPECT_EQ(j["metrics"]["epoch"].get<double>(), 2);
  EXPECT_EQ(j["expert_stats"].size(), 1u);
  EXPECT_EQ(j["expert_stats"][0]["usage"].size(), 3u);
  EXPECT_NE(err.str().find("epoch 1 "), std::string::npos);
  EXPECT_NE(err.str().find("epoch 2 "), std::string::npos);

  testing::WriteText(dir.File("bad.json"), R"({"temprature": 1})");
  std::ostringstream out2, err2;
  EXPECT_EQ(RunLocalTrial(dir.File("bad.json"), 1, out2, err2), 1);
  EXPECT_NE(err2.str().find("did you mean \"temperature\""), std::string::npos) << err2.str();
  EXPECT_TRUE(out2.str().empty());
}

}  // namespace
}  // namespace moesweep::worker
