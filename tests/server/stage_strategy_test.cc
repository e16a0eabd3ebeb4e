// Grid edge extension (seed 001: "if 2048 wins, test 4096 next; if 512 wins, test 256").
#include "server/stage_strategy.h"

#include <gtest/gtest.h>

namespace moesweep {
namespace {

SweepSpec Spec(const std::string& stages) {
  SweepSpec spec;
  Status s = ParseSweepSpec(R"({"name": "e", "objective": {"metric": "val_accuracy"}, "seeds": [1, 2],
      "stages": )" + stages + "}",
                            {}, &spec);
  EXPECT_TRUE(s.ok()) << s.message();
  return spec;
}

std::vector<Json> Tried(const SweepSpec& spec, int stage) {
  std::vector<Json> points;
  for (size_t i = 0; i < spec.stages[stage].NumPoints(); ++i) points.push_back(spec.stages[stage].Point(i));
  return points;
}

TEST(EdgeExtension, ContinuesTheAxisOwnRatioOrStepBeyondTheWinningEdge) {
  SweepSpec spec = Spec(R"([{"name": "core", "grid": {"expert_hidden_dim": [512, 1024, 2048], "temperature": [0.5, 1.0, 1.5]},
                             "extend_edges": {"max_extensions": 2}}])");
  const StageSpec& stage = spec.stages[0];
  std::vector<Json> tried = Tried(spec, 0);
  // 2048 and 1.5 both on their upper edges: one point per axis.
  std::vector<Json> next = EdgeExtensionPoints(spec, stage, Json{{"expert_hidden_dim", 2048}, {"temperature", 1.5}}, tried);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0], (Json{{"expert_hidden_dim", 4096}, {"temperature", 1.5}}));
  EXPECT_TRUE(next[0]["expert_hidden_dim"].is_number_integer());  // Integers stay integers.
  EXPECT_EQ(next[1], (Json{{"expert_hidden_dim", 2048}, {"temperature", 2.0}}));
  // 512 on the lower edge: 256. A winner inside the grid: nothing.
  next = EdgeExtensionPoints(spec, stage, Json{{"expert_hidden_dim", 512}, {"temperature", 1.0}}, tried);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0]["expert_hidden_dim"], 256);
  EXPECT_TRUE(EdgeExtensionPoints(spec, stage, Json{{"expert_hidden_dim", 1024}, {"temperature", 1.0}}, tried).empty());
}

// Seed 001's temperatures: the lower edge continues the lower step (0.3, 0.5 -> 0.1), the upper
// the upper one (1.0, 1.5 -> 2.0), and the result is the decimal one would write.
TEST(EdgeExtension, EachEdgeContinuesItsOwnStep) {
  SweepSpec spec = Spec(R"([{"name": "core", "grid": {"temperature": [0.3, 0.5, 0.7, 1.0, 1.5]},
                             "extend_edges": {"bounds": {"temperature": [0.1, 2.0]}}}])");
  const StageSpec& stage = spec.stages[0];
  auto down = EdgeExtensionPoints(spec, stage, Json{{"temperature", 0.3}}, Tried(spec, 0));
  ASSERT_EQ(down.size(), 1u);
  EXPECT_EQ(down[0]["temperature"].get<double>(), 0.1);
  auto up = EdgeExtensionPoints(spec, stage, Json{{"temperature", 1.5}}, Tried(spec, 0));
  ASSERT_EQ(up.size(), 1u);
  EXPECT_EQ(up[0]["temperature"].get<double>(), 2.0);
}

TEST(EdgeExtension, StopsAtMaxExtensionsAndAtBounds) {
  SweepSpec spec = Spec(R"([{"name": "core", "grid": {"expert_hidden_dim": [512, 1024, 2048], "temperature": [0.5, 1.0, 1.5]},
                             "extend_edges": {"max_extensions": 2, "bounds": {"temperature": [0.2, 1.9]}}}])");
  const StageSpec& stage = spec.stages[0];
  std::vector<Json> tried = Tried(spec, 0);
  tried.push_back({{"expert_hidden_dim", 4096}, {"temperature", 1.0}});
  // 4096 is the new edge and won: 8192 is the second extension.
  auto next = EdgeExtensionPoints(spec, stage, Json{{"expert_hidden_dim", 4096}, {"temperature", 1.0}}, tried);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0]["expert_hidden_dim"], 8192);
  tried.push_back(next[0]);
  EXPECT_TRUE(EdgeExtensionPoints(spec, stage, Json{{"expert_hidden_dim", 8192}, {"temperature", 1.0}}, tried).empty());
  // temperature 1.5 -> 2.0 is past the bound 1.9; 0.5 -> 0.0 is past the bound 0.2.
  EXPECT_TRUE(EdgeExtensionPoints(spec, stage, Json{{"expert_hidden_dim", 1024}, {"temperature", 1.5}}, tried).empty());
  EXPECT_TRUE(EdgeExtensionPoints(spec, stage, Json{{"expert_hidden_dim", 1024}, {"temperature", 0.5}}, tried).empty());
  // Without a spec bound, the schema's range holds: temperature must stay > 0.
  SweepSpec open = Spec(R"([{"name": "t", "grid": {"temperature": [0.5, 1.0, 1.5]}, "extend_edges": {}}])");
  EXPECT_TRUE(EdgeExtensionPoints(open, open.stages[0], Json{{"temperature", 0.5}}, Tried(open, 0)).empty());
}

TEST(EdgeExtension, SpecErrorsNameTheirPath) {
  SweepSpec spec;
  Status s = ParseSweepSpec(R"({"name": "e", "objective": {"metric": "val_accuracy"},
      "stages": [{"name": "a", "grid": {"model": ["moe_mlp"]}, "extend_edges": {"max_extensions": 0,
                  "bounds": {"temperature": [2, 1]}, "maxx": 1}}]})",
                            {}, &spec);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("stages[0].extend_edges.max_extensions: expected an integer in [1, 10]"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("stages[0].extend_edges: needs a grid axis of two or more numbers"), std::string::npos);
  EXPECT_NE(s.message().find("stages[0].extend_edges.bounds.temperature: expected [min, max]"), std::string::npos);
  EXPECT_NE(s.message().find("stages[0].extend_edges.maxx: unknown key"), std::string::npos);
}

}  // namespace
}  // namespace moesweep
