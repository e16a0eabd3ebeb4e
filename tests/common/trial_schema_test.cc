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

TEST(TrialSchema, DeviceIsCpuCudaCudaIndexOrAuto) {
  for (const char* ok : {"cpu", "cuda", "cuda:0", "cuda:12", "auto"}) {
    EXPECT_TRUE(ValidateTrialConfig(Json{{"device", ok}}).ok()) << ok;
  }
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:1.5", "cuda:x", "CUDA", "cuda:0,1", "cuda:1234567890"}) {
    Status s = ValidateTrialConfig(Json{{"device", bad}});
    EXPECT_EQ(s.message(), std::string("config.device: \"") + bad + "\" is not one of: cpu, cuda, cuda:N, auto") << bad;
  }
  EXPECT_EQ(ValidateTrialConfig(Json{{"precision", "fp16"}}).message(),
            "config.precision: \"fp16\" is not one of: fp32, bf16");
  DeviceRequest d;
  ASSERT_TRUE(ParseDevice("cuda:3", &d));
  EXPECT_EQ(d.kind, DeviceRequest::kCuda);
  EXPECT_EQ(d.index, 3);
  ASSERT_TRUE(ParseDevice("cuda", &d));
  EXPECT_EQ(d.index, -1);
  EXPECT_TRUE(TrialNeedsGpu(Json{{"device", "cuda:1"}}));
  EXPECT_FALSE(TrialNeedsGpu(Json{{"device", "auto"}}));
  EXPECT_FALSE(TrialNeedsGpu(Json::object()));
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

// Found by fuzz/trial_config_fuzzer (UBSan): the cross-key rules converted any number to int64,
// and 1e30 does not fit (undefined behaviour). Such values skip the rule, as wrong types do;
// the schema check reports them.
TEST(TrialSchema, CrossKeyRulesSkipNumbersBeyondInt64) {
  for (const char* text : {R"({"num_experts": 1e30})", R"({"top_k": -1e300})", R"({"top_k": 18446744073709551615})",
                           R"({"model": "moe_transformer", "num_heads": 1e30})",
                           R"({"model": "moe_transformer", "d_model": -1e19})"}) {
    std::vector<std::string> errors;
    CheckCrossKeyRules(Json::parse(text), "c", &errors);
    EXPECT_TRUE(errors.empty()) << text << ": " << errors[0];
    EXPECT_FALSE(ValidateTrialConfig(Json::parse(text), "c").ok()) << text;
  }
  std::vector<std::string> errors;
  CheckCrossKeyRules(Json{{"top_k", 4.0}, {"num_experts", 2}}, "c", &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "c.top_k: 4 is more than num_experts (2)");
}

}  // namespace
}  // namespace moesweep
