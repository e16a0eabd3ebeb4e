#include "worker/cli.h"

#include <ostream>

#include <fmt/format.h>

#include "common/json.h"
#include "worker/agent/report_line.h"

namespace moesweep::worker {

std::string ResultToJson(const TrialResult& result) {
  Json metrics = Json::object();
  for (const auto& [k, v] : result.metrics) metrics[k] = v;
  Json layers = Json::array();
  for (const ExpertLayerSummary& s : result.expert_stats) layers.push_back(ExpertLayerJson(s));
  return Json{{"metrics", metrics}, {"expert_stats", layers}}.dump(2);
}

int RunLocalTrial(const std::string& config_file, int threads, std::ostream& out, std::ostream& err) {
  TrialConfig config;
  Status s = LoadTrialConfigFile(config_file, &config);
  if (!s.ok()) {
    err << "moesweep-worker: " << s.message() << "\n";
    return 1;
  }
  TrialHooks hooks;
  hooks.on_epoch = [&](int epoch, const Metrics& m, const std::vector<ExpertLayerSummary>&) {
    std::string line = fmt::format("epoch {}", epoch);
    for (const auto& [k, v] : m) {
      if (k != "epoch") line += fmt::format(" {}={:.6g}", k, v);
    }
    err << line << std::endl;
    return true;
  };
  TrialResult result;
  s = RunTrial(config, TrainOptions{threads, nullptr}, hooks, &result);
  if (!s.ok()) {
    err << "moesweep-worker: trial failed: " << s.message() << "\n";
    return 1;
  }
  out << ResultToJson(result) << std::endl;
  return 0;
}

}  // namespace moesweep::worker
