#include "worker/agent/trial_runner.h"

namespace moesweep::worker {

bool FindMetric(const Metrics& metrics, const std::string& name, double* value) {
  for (const auto& [k, v] : metrics) {
    if (k == name) {
      *value = v;
      return true;
    }
  }
  return false;
}

}  // namespace moesweep::worker
