// Welch's t-test against published values: the three examples of Wikipedia's "Welch's t-test"
// article (t and p to 2-3 digits), and SciPy 1.10's scipy.stats.ttest_ind(a, b, equal_var=False)
// on the same data for more digits.
#include "server/significance.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace moesweep {
namespace {

v1::PointScore Score(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  double mean = sum / values.size(), ss = 0;
  for (double v : values) ss += (v - mean) * (v - mean);
  v1::PointScore s;
  s.set_mean(mean);
  s.set_std(std::sqrt(ss / (values.size() - 1)));
  s.set_n(static_cast<int>(values.size()));
  return s;
}

struct Example {
  std::vector<double> a, b;
  double published_p, scipy_p;
};

TEST(Welch, MatchesPublishedExamples) {
  const std::vector<Example> examples = {
      {{27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4},
       {27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4},
       0.021, 0.021378001462866985},
      {{17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8},
       {21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6, 21.5, 22.5, 23.5,
        21.5, 21.8},
       0.149, 0.14884169660532834},
      {{19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0},
       {28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6, 18.0, 23.9, 21.6, 24.3, 20.4,
        23.9, 13.3},
       0.036, 0.035484530830010325},
  };
  for (const Example& e : examples) {
    std::optional<double> p = WelchTwoSidedP(Score(e.a), Score(e.b));
    ASSERT_TRUE(p.has_value());
    EXPECT_NEAR(*p, e.published_p, 0.001);  // To the last published digit.
    EXPECT_NEAR(*p, e.scipy_p, 1e-9);
    EXPECT_NEAR(*WelchTwoSidedP(Score(e.b), Score(e.a)), *p, 1e-15);  // Two-sided: symmetric.
  }
}

TEST(Welch, UndefinedBelowTwoValuesAndForNonFiniteScores) {
  v1::PointScore one = Score({0.8, 0.9});
  one.set_n(1);
  EXPECT_FALSE(WelchTwoSidedP(one, Score({0.7, 0.8})).has_value());
  v1::PointScore overflow = Score({0.8, 0.9});
  overflow.set_not_finite(true);
  EXPECT_FALSE(WelchTwoSidedP(overflow, Score({0.7, 0.8})).has_value());
}

TEST(Welch, WithoutSpreadDifferentMeansAreCertainAndEqualMeansAreNot) {
  EXPECT_EQ(*WelchTwoSidedP(0.9, 0, 3, 0.8, 0, 3), 0.0);
  EXPECT_EQ(*WelchTwoSidedP(0.9, 0, 3, 0.9, 0, 3), 1.0);
}

// The case from the issue: demo stage 3 picked 0.8242 ± 0.022 over 0.8213 ± 0.012 with n = 3.
TEST(Welch, TheDemosCloseCallIsNotSignificant) {
  std::optional<double> p = WelchTwoSidedP(0.8242, 0.022, 3, 0.8213, 0.012, 3);
  ASSERT_TRUE(p.has_value());
  EXPECT_GT(*p, 0.5);
}

}  // namespace
}  // namespace moesweep
