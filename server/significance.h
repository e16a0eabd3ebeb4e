// How sure a stage's winner is: Welch's two-sided t-test between two points' seed scores, from
// their means, sample standard deviations and counts (PointScore), with Boost.Math's Student t.
#ifndef MOESWEEP_SERVER_SIGNIFICANCE_H_
#define MOESWEEP_SERVER_SIGNIFICANCE_H_

#include <optional>

#include "moesweep/v1/moesweep.pb.h"

namespace moesweep {

// The two-sided p-value of Welch's unequal-variances t-test of a vs b; nullopt when either has
// fewer than 2 values or a score is not finite. With no spread on either side the p-value is 0
// when the means differ and 1 when they are equal (the limit of the test).
std::optional<double> WelchTwoSidedP(double mean_a, double std_a, int n_a, double mean_b, double std_b, int n_b);
std::optional<double> WelchTwoSidedP(const v1::PointScore& a, const v1::PointScore& b);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_SIGNIFICANCE_H_
