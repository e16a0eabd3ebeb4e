// Specs written to hurt: each must come back as an error value, quickly, with a short message
// that names where the problem is.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "common/json.h"
#include "common/limits.h"
#include "common/sweep_spec.h"
#include "common/trial_schema.h"

namespace moesweep {
namespace {

std::string Spec(const std::string& name_value, const std::string& grid = R"({"temperature": [0.5]})",
                 const std::string& extra = "") {
  return R"({"name": )" + name_value + R"(, "objective": {"metric": "val_loss", "goal": "minimize"}, )" + extra +
         R"("stages": [{"name": "s", "grid": )" + grid + "}]}";
}

std::string Error(const std::string& text, SpecLimits limits = {}) {
  SweepSpec spec;
  Status s = ParseSweepSpec(text, limits, &spec);
  EXPECT_TRUE(s.ok() || s.code() == Status::Code::kInvalidArgument) << s.ToString();
  return s.ok() ? "" : s.message();
}

TEST(HostileSpec, NumberBeyondADoubleIsAnErrorWithItsPosition) {
  for (const char* n : {"1e400", "-1e400", "1e309"}) {
    std::string e = Error(Spec(R"("x")", std::string(R"({"temperature": [)") + n + "]}"));
    EXPECT_NE(e.find("invalid JSON at line 1, column "), std::string::npos) << e;
    EXPECT_NE(e.find("out of the range of a double"), std::string::npos) << e;
  }
  Json j;
  EXPECT_FALSE(ParseJson("[1, 2e999]", &j).ok());
  EXPECT_TRUE(ParseJson(R"(["1e999", 1e-400])", &j).ok());  // In a string, or an underflow to 0: fine.
}

TEST(HostileSpec, DeepNestingIsRefusedBeforeParsing) {
  std::string deep = std::string(70000, '[') + std::string(70000, ']');
  std::string e = Error(Spec(deep));
  EXPECT_EQ(e.find("invalid JSON at line 1, column 73: nested deeper than 64 levels"), 0u) << e.substr(0, 200);
  e = Error(Spec(R"("x")", R"({"temperature": [0.5]})", R"("base": )" + deep + ", "));
  EXPECT_NE(e.find("nested deeper than 64 levels"), std::string::npos);
  Json j;
  std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(ParseJson(ok, &j).ok());
  EXPECT_TRUE(ParseJson(R"(["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\""])", &j).ok());
}

TEST(HostileSpec, ObjectWithTooManyKeysIsRefused) {
  std::string obj = "{";
  for (size_t i = 0; i <= kMaxJsonObjectMembers; ++i) obj += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":0";
  obj += "}";
  Json j;
  Status s = ParseJson(obj, &j);
  EXPECT_NE(s.message().find("more than 1000 keys"), std::string::npos) << s.message();
}

TEST(HostileSpec, TrialsOfAHugeGridSaturateInsteadOfWrapping) {
  // 128 x 256^7 points x 2 seeds = 2^64 trials, which wrapped to 0 in size_t.
  std::string grid = "{";
  const char* keys[] = {"expert_hidden_dim", "d_model", "token_dim", "input_dim",
                        "n_regimes", "batch_size", "epochs", "window_size"};
  for (int k = 0; k < 8; ++k) {
    grid += std::string(k ? ", \"" : "\"") + keys[k] + "\": [";
    for (int v = 1; v <= (k == 0 ? 128 : 256); ++v) grid += (v > 1 ? "," : "") + std::to_string(v);
    grid += "]";
  }
  grid += "}";
  std::string e = Error(Spec(R"("x")", grid, R"("seeds": [1, 2], )"));
  EXPECT_NE(e.find("stages[0].grid: 9223372036854775808 points x 2 seeds = more than 2^64 trials exceeds the limit"),
            std::string::npos)
      << e;
}

TEST(HostileSpec, PointsOfAHugeGridSaturateInsteadOfWrapping) {
  // 256^8 = 2^64 points wrapped to 0 trials; the stage then ran forever.
  std::string grid = "{";
  const char* keys[] = {"expert_hidden_dim", "d_model", "token_dim", "input_dim",
                        "n_regimes", "batch_size", "epochs", "window_size"};
  for (int k = 0; k < 8; ++k) {
    grid += std::string(k ? ", \"" : "\"") + keys[k] + "\": [";
    for (int v = 1; v <= 256; ++v) grid += (v > 1 ? "," : "") + std::to_string(v);
    grid += "]";
  }
  grid += "}";
  std::string e = Error(Spec(R"("x")", grid));
  EXPECT_NE(e.find("more than 2^64 points x 1 seeds"), std::string::npos) << e;
}

TEST(HostileSpec, GridAxisOverTheValueLimitIsRefused) {
  std::string values;
  for (size_t v = 1; v <= kMaxGridValues + 1; ++v) values += (v > 1 ? "," : "") + std::to_string(v);
  std::string e = Error(Spec(R"("x")", R"({"expert_hidden_dim": [)" + values + "]}"), {1 << 30});
  EXPECT_EQ(e, "stages[0].grid.expert_hidden_dim: 10001 values is more than the limit of 10000 per axis");
}

TEST(HostileSpec, DuplicatesInALongAxisAreFoundQuickly) {
  std::string values;
  for (size_t v = 1; v < kMaxGridValues; ++v) values += std::to_string(v) + ",";
  values += "1.0";  // Equal to 1: a duplicate, as before.
  auto start = std::chrono::steady_clock::now();
  std::string e = Error(Spec(R"("x")", R"({"expert_hidden_dim": [)" + values + "]}"), {1 << 30});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_NE(e.find("expert_hidden_dim[9999]: duplicate value 1.0"), std::string::npos) << e;
}

TEST(HostileSpec, HugeUnknownKeyGetsAShortMessageAndNoSuggestion) {
  std::string key(500000, 'k');
  std::string e = Error(Spec(R"("x")", R"({"temperature": [0.5]})", R"("base": {")" + key + R"(": 1}, )"));
  EXPECT_LT(e.size(), 300u);
  EXPECT_NE(e.find("base.kkkk"), std::string::npos);
  EXPECT_NE(e.find("…: unknown trial config key"), std::string::npos) << e;
  e = Error(Spec(R"("x")", R"({"temperature": [0.5]})", R"(")" + key + R"(": 1, )"));
  EXPECT_LT(e.size(), 400u);
}

TEST(HostileSpec, OversizedSpecAndStringsAreRefusedNamingTheLimit) {
  std::string e = Error(Spec("\"" + std::string(kMaxSpecBytes, 'n') + "\""));
  EXPECT_NE(e.find("spec: 1048"), std::string::npos);
  EXPECT_NE(e.find("more than the limit of 1048576 bytes"), std::string::npos) << e;
  e = Error(Spec("\"" + std::string(kMaxStringBytes + 1, 'n') + "\""));
  EXPECT_EQ(e, "name: 4097 bytes is longer than the limit of 4096 bytes");
  e = Error(Spec(R"("x")", R"({"path": [")" + std::string(kMaxStringBytes + 1, 'p') + R"("]})"));
  EXPECT_NE(e.find("stages[0].grid.path[0]: a string of 4097 bytes is longer than the limit of 4096 bytes"),
            std::string::npos)
      << e;
  // A long wrong value is quoted, but only its start.
  e = Error(Spec(R"("x")", R"({"temperature": [")" + std::string(10000, 'x') + R"("]})"));
  EXPECT_LT(e.size(), 200u) << e;
}

TEST(HostileSpec, SeedAboveTwoToThe53IsRefused) {
  EXPECT_EQ(Error(Spec(R"("x")", R"({"temperature": [0.5]})", R"("seeds": [9007199254740992], )")),
            "seeds[0]: 9007199254740992 is above the largest seed, 2^53 - 1 = 9007199254740991");
  EXPECT_EQ(Error(Spec(R"("x")", R"({"temperature": [0.5]})", R"("seeds": [9007199254740991], )")), "");
}

TEST(HostileSpec, GridsThatEveryWorkerRefusesAreRefused) {
  // top_k > num_experts, from base and grid.
  EXPECT_EQ(Error(Spec(R"("x")", R"({"top_k": [1, 4]})", R"("base": {"num_experts": 2}, )")),
            "stages[0].grid.top_k: 4 is more than num_experts (2) (num_experts from base)");
  // Dense models have no top_k to check.
  EXPECT_EQ(Error(Spec(R"("x")", R"({"top_k": [1, 4]})", R"("base": {"num_experts": 2, "use_moe": false}, )")), "");
  // num_heads must divide d_model, for the transformer only.
  EXPECT_EQ(Error(Spec(R"("x")", R"({"d_model": [64, 30]})", R"("base": {"model": "moe_transformer"}, )")),
            "stages[0].grid.num_heads: 4 does not divide d_model (30) (model from base)");
  EXPECT_EQ(Error(Spec(R"("x")", R"({"d_model": [64, 30]})")), "");
  // Base + baseline.
  EXPECT_EQ(Error(Spec(R"("x")", R"({"temperature": [0.5]})", R"("baseline": {"top_k": 9}, )")),
            "baseline.top_k: 9 is more than num_experts (8)");
  // A value an earlier stage may pick.
  std::string two_stages = R"({"name": "x", "objective": {"metric": "val_loss"},
    "stages": [{"name": "a", "grid": {"num_experts": [2, 8]}}, {"name": "b", "grid": {"top_k": [1, 4]}}]})";
  EXPECT_EQ(Error(two_stages), "stages[1].grid.top_k: 4 is more than num_experts (2) (num_experts from stages[0].grid)");
  // The base alone, when no stage changes the keys.
  EXPECT_EQ(Error(Spec(R"("x")", R"({"temperature": [0.5]})", R"("base": {"dataset": "csv"}, )")),
            "base.path: dataset \"csv\" needs a path to the CSV file");
}

TEST(HostileSpec, CrossKeyRulesAreTheWorkersMessages) {
  std::vector<std::string> errors;
  CheckCrossKeyRules(Json{{"top_k", 3}, {"num_experts", 2}, {"model", "moe_transformer"}, {"d_model", 10}},
                     "config", &errors);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0], "config.top_k: 3 is more than num_experts (2)");
  EXPECT_EQ(errors[1], "config.num_heads: 4 does not divide d_model (10)");
  errors.clear();
  CheckCrossKeyRules(Json{{"top_k", 3.0}, {"num_experts", 2}}, "config", &errors);  // 3.0 is an integer value.
  EXPECT_EQ(errors.size(), 1u);
}

TEST(HostileSpec, Utf8AndClipping) {
  EXPECT_EQ(FindInvalidUtf8("plain ascii"), std::string::npos);
  EXPECT_EQ(FindInvalidUtf8("caf\xc3\xa9 \xe2\x80\xa6"), std::string::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\xff"), 2u);
  EXPECT_EQ(FindInvalidUtf8("ab\xc3"), 2u);          // Cut short.
  EXPECT_EQ(FindInvalidUtf8("a\xc0\xaf"), 1u);       // Overlong '/'.
  EXPECT_EQ(FindInvalidUtf8("a\xed\xa0\x80"), 1u);   // Surrogate.
  EXPECT_EQ(Clip("abcdef", 3), "abc…");
  EXPECT_EQ(Clip("ab\xc3\xa9", 3), "ab…");           // Not inside the é.
  EXPECT_EQ(Clip("abc", 3), "abc");
}

// Found by fuzz/sweep_spec_fuzzer: a command trainer's unused-key check read "stages" with const
// operator[], past the end of the object when it was missing (ASan: heap-buffer-overflow) and
// throwing type_error when it was a string or an object.
TEST(HostileSpec, CommandSpecWithoutAStagesArrayIsAnErrorNotACrash) {
  const std::string head = R"({"name": "x", "objective": {"metric": "m"}, "trainer": {"command": ["p"]},
                               "base": {"a": 1})";
  for (const std::string& stages : {std::string(""), std::string(R"(, "stages": "abc")"),
                                    std::string(R"(, "stages": {"g": 1})"), std::string(R"(, "stages": 5)")}) {
    std::string e = Error(head + stages + "}");
    EXPECT_NE(e.find("stages"), std::string::npos) << stages << ": " << e;
    EXPECT_NE(e.find("base.a: not used by trainer.command"), std::string::npos) << stages << ": " << e;
  }
}

// Found while writing the fuzz targets: "did you mean" compared every unused key with every
// placeholder at |a| x |b| cost; two 200 KB names took minutes on the coordinator's thread.
TEST(HostileSpec, LongUnusedKeyAndPlaceholderAreCheckedQuickly) {
  std::string placeholder(200000, 'p'), key(200000, 'k');
  std::string text = R"({"name": "x", "objective": {"metric": "m"}, "trainer": {"command": ["p", "{)" + placeholder +
                     R"(}"]}, "base": {")" + placeholder + R"(": 1, ")" + key +
                     R"(": 2}, "stages": [{"name": "s", "grid": {")" + placeholder + R"(": [1, 2]}}]})";
  auto start = std::chrono::steady_clock::now();
  std::string e = Error(text);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(e.find("base.kkkk"), std::string::npos) << e.substr(0, 300);
  EXPECT_NE(e.find("not used by trainer.command"), std::string::npos) << e.substr(0, 300);
}

}  // namespace
}  // namespace moesweep
