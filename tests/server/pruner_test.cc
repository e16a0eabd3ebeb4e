#include "server/pruner.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace moesweep {
namespace {

PrunerSpec Median(int warmup_steps, int min_trials, bool maximize = true) {
  PrunerSpec p;
  p.method = PrunerSpec::Method::kMedian;
  p.metric = maximize ? "val_accuracy" : "val_loss";
  p.maximize = maximize;
  p.warmup_steps = warmup_steps;
  p.min_trials = min_trials;
  return p;
}

PrunerSpec Asha(int min_steps, int reduction_factor, int min_trials) {
  PrunerSpec p;
  p.method = PrunerSpec::Method::kAsha;
  p.metric = "val_accuracy";
  p.min_steps = min_steps;
  p.reduction_factor = reduction_factor;
  p.min_trials = min_trials;
  return p;
}

TEST(PrunerTest, MedianPrunesOnlyBelowTheMedianOfTheOthers) {
  PrunerSpec p = Median(0, 3);
  // Others 0.5, 0.6, 0.7: the median is 0.6.
  EXPECT_TRUE(ShouldPrune(p, 1, 0.59, {0.5, 0.6, 0.7}).has_value());
  EXPECT_FALSE(ShouldPrune(p, 1, 0.6, {0.5, 0.6, 0.7}).has_value());  // Equal is not worse.
  EXPECT_FALSE(ShouldPrune(p, 1, 0.65, {0.7, 0.5, 0.6}).has_value());
  // An even count takes the mean of the two middle values: (0.6 + 0.7) / 2.
  EXPECT_TRUE(ShouldPrune(p, 1, 0.64, {0.5, 0.6, 0.7, 0.8}).has_value());
  EXPECT_FALSE(ShouldPrune(p, 1, 0.66, {0.5, 0.6, 0.7, 0.8}).has_value());
}

TEST(PrunerTest, MedianFollowsTheGoal) {
  PrunerSpec p = Median(0, 3, /*maximize=*/false);
  EXPECT_TRUE(ShouldPrune(p, 1, 0.9, {0.5, 0.6, 0.7}).has_value());  // A higher loss is worse.
  EXPECT_FALSE(ShouldPrune(p, 1, 0.55, {0.5, 0.6, 0.7}).has_value());
  std::optional<std::string> why = ShouldPrune(p, 4, 0.9, {0.5, 0.6, 0.7});
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(*why, "pruned at step 4: val_loss 0.9 is higher than the median 0.6 of 3 other trials at that step "
                  "(median pruner)");
}

TEST(PrunerTest, NothingIsPrunedDuringWarmUpOrWithTooFewOtherTrials) {
  PrunerSpec p = Median(2, 3);
  EXPECT_FALSE(ShouldPrune(p, 1, 0.0, {0.5, 0.6, 0.7}).has_value());
  EXPECT_FALSE(ShouldPrune(p, 2, 0.0, {0.5, 0.6, 0.7}).has_value());  // warmup_steps is inclusive.
  EXPECT_TRUE(ShouldPrune(p, 3, 0.0, {0.5, 0.6, 0.7}).has_value());
  EXPECT_FALSE(ShouldPrune(p, 3, 0.0, {0.5, 0.6}).has_value());  // min_trials others are needed.
}

TEST(PrunerTest, NonFiniteValuesCountAsTheWorst) {
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  PrunerSpec p = Median(0, 3);
  EXPECT_TRUE(ShouldPrune(p, 1, nan, {0.5, 0.6, 0.7}).has_value());
  EXPECT_TRUE(ShouldPrune(p, 1, -inf, {0.5, 0.6, 0.7}).has_value());
  // NaN others sink to the bottom: the median of {NaN, NaN, 0.7} is NaN's rank, so 0.1 survives...
  EXPECT_FALSE(ShouldPrune(p, 1, 0.1, {nan, nan, 0.7}).has_value());
  // ...and of {NaN, 0.6, 0.7} it is 0.6.
  EXPECT_TRUE(ShouldPrune(p, 1, 0.1, {nan, 0.6, 0.7}).has_value());
  PrunerSpec loss = Median(0, 3, /*maximize=*/false);
  EXPECT_TRUE(ShouldPrune(loss, 1, inf, {0.5, 0.6, 0.7}).has_value());
}

TEST(PrunerTest, AshaJudgesOnlyAtRungs) {
  PrunerSpec p = Asha(1, 3, 2);
  EXPECT_TRUE(IsAshaRung(p, 1));
  EXPECT_FALSE(IsAshaRung(p, 2));
  EXPECT_TRUE(IsAshaRung(p, 3));
  EXPECT_TRUE(IsAshaRung(p, 9));
  EXPECT_FALSE(IsAshaRung(p, 10));
  PrunerSpec q = Asha(2, 2, 2);
  EXPECT_FALSE(IsAshaRung(q, 1));
  EXPECT_TRUE(IsAshaRung(q, 2));
  EXPECT_TRUE(IsAshaRung(q, 4));
  EXPECT_TRUE(IsAshaRung(q, 8));
  EXPECT_FALSE(IsAshaRung(q, 6));
  EXPECT_FALSE(ShouldPrune(p, 2, 0.0, {0.5, 0.6, 0.7}).has_value());  // Not a rung.
}

TEST(PrunerTest, AshaKeepsTheBestThirdAtARung) {
  PrunerSpec p = Asha(1, 3, 2);
  // Six trials at the rung with this one: the best 6 / 3 = 2 go on.
  const std::vector<double> others = {0.9, 0.8, 0.5, 0.4, 0.3};
  EXPECT_FALSE(ShouldPrune(p, 3, 0.95, others).has_value());  // Best.
  EXPECT_FALSE(ShouldPrune(p, 3, 0.85, others).has_value());  // Second.
  std::optional<std::string> why = ShouldPrune(p, 3, 0.6, others);  // Third.
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(*why, "pruned at rung step 3: val_accuracy 0.6 is not among the best 2 of it and 5 other trials at "
                  "that step (asha, reduction factor 3)");
  // With few trials at a rung, at least the best one goes on.
  EXPECT_FALSE(ShouldPrune(p, 1, 0.7, {0.5, 0.6}).has_value());
  EXPECT_TRUE(ShouldPrune(p, 1, 0.55, {0.5, 0.6}).has_value());
}

}  // namespace
}  // namespace moesweep
