#include "worker/trial_config.h"

#include <gtest/gtest.h>

#include "tests/worker/test_util.h"

namespace moesweep::worker {
namespace {

TEST(TrialConfigTest, EmptyConfigGetsSchemaDefaults) {
  TrialConfig c;
  ASSERT_TRUE(ParseTrialConfigText("{}", &c).ok());
  EXPECT_EQ(c.model, "moe_mlp");
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.top_k, 2);
  EXPECT_DOUBLE_EQ(c.temperature, 0.7);
  EXPECT_EQ(c.dataset, "synthetic");
  EXPECT_EQ(c.data_seed, 1234u);
}

TEST(TrialConfigTest, ReadsEveryKindOfValue) {
  TrialConfig c;
  Status s = ParseTrialConfigText(
      R"({"model": "moe_transformer", "use_moe": false, "d_model": 48, "num_heads": 6, "lr": 0.01, "seed": 7})", &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.model, "moe_transformer");
  EXPECT_FALSE(c.use_moe);
  EXPECT_EQ(c.d_model, 48);
  EXPECT_EQ(c.num_heads, 6);
  EXPECT_DOUBLE_EQ(c.lr, 0.01);
  EXPECT_EQ(c.seed, 7u);
}

TEST(TrialConfigTest, UnknownKeyIsNamedWithSuggestion) {
  TrialConfig c;
  Status s = ParseTrialConfigText(R"({"temprature": 0.5})", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("config.temprature: unknown trial config key (did you mean \"temperature\"?)"),
            std::string::npos)
      << s.message();
}

TEST(TrialConfigTest, BadValueIsNamed) {
  TrialConfig c;
  Status s = ParseTrialConfigText(R"({"attention": "sparse"})", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("config.attention"), std::string::npos) << s.message();
}

TEST(TrialConfigTest, TopKAboveNumExpertsFails) {
  TrialConfig c;
  Status s = ParseTrialConfigText(R"({"num_experts": 2, "top_k": 4})", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("config.top_k: 4 is more than num_experts (2)"), std::string::npos) << s.message();
  // The dense baseline has no router, so top_k does not matter there.
  EXPECT_TRUE(ParseTrialConfigText(R"({"num_experts": 2, "top_k": 4, "use_moe": false})", &c).ok());
}

TEST(TrialConfigTest, HeadsMustDivideDModelForTransformer) {
  TrialConfig c;
  Status s = ParseTrialConfigText(R"({"model": "moe_transformer", "d_model": 30, "num_heads": 4})", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("config.num_heads: 4 does not divide d_model (30)"), std::string::npos) << s.message();
  EXPECT_TRUE(ParseTrialConfigText(R"({"model": "moe_mlp", "d_model": 30, "num_heads": 4})", &c).ok());
}

TEST(TrialConfigTest, CsvNeedsPath) {
  TrialConfig c;
  Status s = ParseTrialConfigText(R"({"dataset": "csv"})", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("config.path"), std::string::npos) << s.message();
}

TEST(TrialConfigTest, SyntaxErrorNamesLineAndColumn) {
  TrialConfig c;
  Status s = ParseTrialConfigText("{\n  \"lr\": ,\n}", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("line 2"), std::string::npos) << s.message();
}

TEST(TrialConfigTest, FileErrorsNameTheFile) {
  testing::TempDir dir;
  TrialConfig c;
  Status s = LoadTrialConfigFile(dir.File("missing.json"), &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing.json"), std::string::npos);
  testing::WriteText(dir.File("bad.json"), R"({"top_kk": 1})");
  s = LoadTrialConfigFile(dir.File("bad.json"), &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bad.json"), std::string::npos);
  EXPECT_NE(s.message().find("top_kk"), std::string::npos);
}

}  // namespace
}  // namespace moesweep::worker
