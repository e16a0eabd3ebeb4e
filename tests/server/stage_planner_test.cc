#include "server/stage_planner.h"

#include <gtest/gtest.h>

namespace moesweep {
namespace {

StageSpec Stage() {
  StageSpec s;
  s.name = "core";
  s.axes = {{"expert_hidden_dim", {512, 1024}}, {"temperature", {0.5, 1.0}}};
  return s;
}

TEST(StagePlanner, TrialsCarryEarlierWinnersAndTheirPointAndSeed) {
  Json carried = {{"epochs", 3}, {"expert_layers", 2}, {"temperature", 0.7}};
  auto trials = PlanStage(Stage(), carried, {42, 7});
  ASSERT_EQ(trials.size(), 8u);
  // Points in grid order, seeds in spec order within a point.
  EXPECT_EQ(trials[0].point_index, 0);
  EXPECT_EQ(trials[0].seed, 42);
  EXPECT_EQ(trials[1].point_index, 0);
  EXPECT_EQ(trials[1].seed, 7);
  EXPECT_EQ(trials[7].point_index, 3);
  EXPECT_EQ(trials[7].config.dump(),
            R"({"epochs":3,"expert_layers":2,"temperature":1.0,"expert_hidden_dim":1024,"seed":7})");
  EXPECT_EQ(trials[7].point.dump(), R"({"expert_hidden_dim":1024,"temperature":1.0})");
}

TEST(StagePlanner, BaselineIsBasePlusOverridesPerSeed) {
  auto trials = PlanBaseline({{"epochs", 3}, {"use_moe", true}}, {{"use_moe", false}}, {1, 2});
  ASSERT_EQ(trials.size(), 2u);
  EXPECT_EQ(trials[1].config.dump(), R"({"epochs":3,"use_moe":false,"seed":2})");
}

TrialOutcome Done(int64_t id, int point, double value) {
  return {id, point, id, v1::TRIAL_SUCCEEDED, value, "", "{}"};
}
TrialOutcome Failed(int64_t id, int point, const std::string& error) {
  return {id, point, id, v1::TRIAL_FAILED, std::nullopt, error, "{}"};
}

TEST(StagePlanner, ScoresAreMeanStdAndNOverSucceededSeeds) {
  auto d = DecideStage({Done(1, 0, 0.5), Done(2, 0, 0.7), Failed(3, 0, "nan"), Done(4, 1, 0.55)}, true, "m", "stage 1");
  ASSERT_EQ(d.points.size(), 2u);
  EXPECT_DOUBLE_EQ(d.points[0].mean(), 0.6);
  EXPECT_NEAR(d.points[0].std(), 0.141421356, 1e-8);
  EXPECT_EQ(d.points[0].n(), 2);
  EXPECT_EQ(d.points[0].failed(), 1);
  EXPECT_EQ(d.points[1].std(), 0.0);  // One seed: no spread.
  EXPECT_EQ(d.winner, 0);
}

TEST(StagePlanner, GoalDecidesDirectionAndTiesGoToTheEarlierPoint) {
  auto max = DecideStage({Done(1, 0, 0.5), Done(2, 1, 0.9), Done(3, 2, 0.9)}, true, "m", "s");
  EXPECT_EQ(max.points[max.winner].point_index(), 1);
  auto min = DecideStage({Done(1, 0, 0.5), Done(2, 1, 0.3), Done(3, 2, 0.3)}, false, "m", "s");
  EXPECT_EQ(min.points[min.winner].point_index(), 1);
}

TrialOutcome Pruned(int64_t id, int point) {
  return {id, point, id, v1::TRIAL_PRUNED, std::nullopt, "pruned at step 2", "{}"};
}

TEST(StagePlanner, APointWithAPrunedSeedCannotWinOrBeRunnerUp) {
  // Point 0 has the best surviving seed, but its other seed was pruned.
  auto d = DecideStage({Done(1, 0, 0.9), Pruned(2, 0), Done(3, 1, 0.6), Done(4, 1, 0.6), Done(5, 2, 0.5),
                        Done(6, 2, 0.5)},
                       true, "m", "s");
  ASSERT_EQ(d.points.size(), 3u);
  EXPECT_EQ(d.points[0].n(), 1);  // The survivor still scores the point...
  EXPECT_EQ(d.points[0].pruned(), 1);
  EXPECT_EQ(d.points[0].failed(), 0);  // ...and a pruned seed is not a failure.
  EXPECT_EQ(d.points[d.winner].point_index(), 1);
  EXPECT_EQ(d.points[d.runner_up].point_index(), 2);
  // When every scored point lost a seed, the stage has no winner and says why.
  auto none = DecideStage({Done(1, 0, 0.9), Pruned(2, 0), Pruned(3, 1), Pruned(4, 1)}, true, "m", "stage 1");
  EXPECT_EQ(none.winner, -1);
  EXPECT_NE(none.failure.find("stage 1: every grid point with a score had a seed pruned"), std::string::npos)
      << none.failure;
}

TEST(StagePlanner, PointsWithoutASuccessAreSkipped) {
  auto d = DecideStage({Failed(1, 0, "x"), Done(2, 1, 0.1)}, true, "m", "s");
  EXPECT_EQ(d.points[d.winner].point_index(), 1);
  EXPECT_TRUE(d.failure.empty());
}

TEST(StagePlanner, AllFailedQuotesTheFirstError) {
  auto d = DecideStage({Failed(5, 1, "later"), Failed(3, 0, "CUDA out of memory")}, true, "m", "stage 2 \"structure\"");
  EXPECT_EQ(d.winner, -1);
  EXPECT_EQ(d.failure, "stage 2 \"structure\": every trial failed; first error (trial 3, seed 3): CUDA out of memory");
}

TEST(StagePlanner, MissingObjectiveMetricIsSaidInThoseWords) {
  TrialOutcome t = Done(1, 0, 0);
  t.objective.reset();
  auto d = DecideStage({t}, true, "val_acc", "stage 1 \"core\"");
  EXPECT_EQ(d.winner, -1);
  EXPECT_EQ(d.failure, "stage 1 \"core\": no trial reported the objective metric \"val_acc\" (1 of 1 trials succeeded)");
}

TEST(StagePlanner, UnfinishedTrialsDoNotCount) {
  TrialOutcome running = Done(1, 0, 0.9);
  running.state = v1::TRIAL_RUNNING;
  auto d = DecideStage({running}, true, "m", "s");
  EXPECT_TRUE(d.points.empty());
  EXPECT_TRUE(d.failure.empty());
}

}  // namespace
}  // namespace moesweep
