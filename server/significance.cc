#include "server/significance.h"

#include <cmath>

#include <boost/math/distributions/students_t.hpp>

namespace moesweep {

std::optional<double> WelchTwoSidedP(double mean_a, double std_a, int n_a, double mean_b, double std_b, int n_b) {
  if (n_a < 2 || n_b < 2) return std::nullopt;
  for (double v : {mean_a, std_a, mean_b, std_b}) {
    if (!std::isfinite(v)) return std::nullopt;
  }
  const double va = std_a * std_a / n_a, vb = std_b * std_b / n_b;
  const double se2 = va + vb;
  if (se2 <= 0) return mean_a == mean_b ? 1.0 : 0.0;
  const double t = (mean_a - mean_b) / std::sqrt(se2);
  // Welch-Satterthwaite degrees of freedom.
  const double df = se2 * se2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1));
  if (!std::isfinite(t) || !(df > 0)) return std::nullopt;
  boost::math::students_t dist(df);
  return 2 * boost::math::cdf(boost::math::complement(dist, std::fabs(t)));
}

std::optional<double> WelchTwoSidedP(const v1::PointScore& a, const v1::PointScore& b) {
  if (a.not_finite() || b.not_finite()) return std::nullopt;
  return WelchTwoSidedP(a.mean(), a.std(), a.n(), b.mean(), b.std(), b.n());
}

}  // namespace moesweep
