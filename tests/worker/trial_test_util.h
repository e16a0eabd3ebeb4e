// Helpers for the tests that run whole built-in trials: a config from JSON, a result's metric.
#ifndef MOESWEEP_TESTS_WORKER_TRIAL_TEST_UTIL_H_
#define MOESWEEP_TESTS_WORKER_TRIAL_TEST_UTIL_H_

#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "common/json.h"
#include "worker/trainer.h"
#include "worker/trial_config.h"

namespace moesweep::worker::testing {

// `base` (JSON text) with `overrides` (JSON text) on top, parsed; a parse error fails the test.
inline TrialConfig ConfigFrom(const char* base, const std::string& overrides) {
  Json config = Json::parse(base);
  config.update(Json::parse(overrides));
  TrialConfig c;
  Status s = ParseTrialConfig(config, &c);
  EXPECT_TRUE(s.ok()) << s.message();
  return c;
}

// The metric `name` of a finished trial; a missing one fails the test (and reads as NaN).
inline double Metric(const TrialResult& r, const std::string& name) {
  double v = NAN;
  EXPECT_TRUE(FindMetric(r.metrics, name, &v)) << name;
  return v;
}

}  // namespace moesweep::worker::testing

#endif  // MOESWEEP_TESTS_WORKER_TRIAL_TEST_UTIL_H_
