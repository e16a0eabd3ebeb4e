#include "common/trial_schema.h"

#include <gtest/gtest.h>

namespace moesweep {
namespace {

TEST(TrialSchema, DefaultsAreSeed002Values) {
  Json config = WithDefaults(Json::object());
  EXPECT_EQ(config["expert_hidden_dim"], 1024);
  EXPECT_DOUBLE_EQ(config["temperature"].get<double>(), 0.7);
  EXPECT_EQ(config["expert_layers"], 2);
  EXPECT_EQ(config["gate_layers"], 2);
  EXPECT_DOUBLE_EQ(config["expert_dropout"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(config["balance_loss_weight"].get<double>(), 0.01);
  EXPECT_DOUBLE_EQ(config["sparsity_loss_weight"].get<double>(), 0.001);
  // Every default passes its own validation.
  EXPECT_TRUE(ValidateTrialConfig(config).ok()) << ValidateTrialConfig(config).message();
}

TEST(TrialSchema, UnknownKeySuggestsTheClosest) {
  Status s = ValidateTrialConfig(Json{{"temprature", 0.5}}, "base");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "base.temprature: unknown trial config key (did you mean \"temperature\"?)");
  s = ValidateTrialConfig(Json{{"zzzzzzzzzz", 1}}, "base");
  EXPECT_EQ(s.message(), "base.zzzzzzzzzz: unknown trial config key");
}

TEST(TrialSchema, TypesRangesAndChoices) {
  EXPECT_EQ(ValidateTrialConfig(Json{{"top_k", 1.5}}, "c").message(), "c.top_k: expected an integer, got 1.5");
  EXPECT_TRUE(ValidateTrialConfig(Json{{"top_k", 2.0}}, "c").ok());  // 2.0 is an integer value.
  EXPECT_EQ(ValidateTrialConfig(Json{{"temperature", 0}}, "c").message(), "c.temperature: 0 is out of range (must be > 0)");
  EXPECT_EQ(ValidateTrialConfig(Json{{"use_moe", "yes"}}, "c").message(), "c.use_moe: expected a boolean, got \"yes\"");
  EXPECT_EQ(ValidateTrialConfig(Json{{"attention", "sofmax"}}, "c").message(),
            "c.attention: \"sofmax\" is not one of: softmax, gated, linear, window");
  EXPECT_EQ(ValidateTrialConfig(Json{{"gate_layers", 3}}, "c").message(), "c.gate_layers: 3 is out of range (must be in [1, 2])");
}

TEST(TrialSchema, EveryProblemIsReported) {
  Status s = ValidateTrialConfig(Json{{"top_k", "two"}, {"lr", -1}}, "base");
  EXPECT_NE(s.message().find("base.top_k"), std::string::npos);
  EXPECT_NE(s.message().find("base.lr"), std::string::npos);
}

}  // namespace
}  // namespace moesweep
