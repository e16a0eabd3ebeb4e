// The Python trainer library's ExpertStatsMeter (python/moesweep/torch.py) must report exactly the
// expert statistics the built-in worker does, so that command trainers and the built-in trainer can
// be compared. This routes fixed inputs through a real MoELayer with stats collection on, writes
// each batch's routing and the layer's summary to a JSON fixture, and has
// tests/python/stats_parity.py recompute the summary in Python and compare every field.
#include <cmath>
#include <cstdio>
#include <string>
#include <sys/wait.h>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "common/json.h"
#include "tests/worker/test_util.h"
#include "worker/agent/report_line.h"
#include "worker/moe_layer.h"

namespace moesweep::worker {
namespace {

Json Matrix(const at::Tensor& t) {
  at::Tensor c = t.detach().contiguous();
  Json rows = Json::array();
  for (int64_t i = 0; i < c.size(0); ++i) {
    Json row = Json::array();
    for (int64_t j = 0; j < c.size(1); ++j) {
      at::Tensor v = c[i][j];
      if (c.scalar_type() == at::kBool) {
        row.push_back(v.item<bool>());
      } else if (c.scalar_type() == at::kLong) {
        row.push_back(v.item<int64_t>());
      } else {
        row.push_back(static_cast<double>(v.item<float>()));  // Exact: a float is a double.
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

struct Case {
  const char* name;
  int64_t num_experts, top_k;
  double temperature, threshold;
};

// Runs `c` through a MoELayer: two batches of deterministic tokens, stats collected in eval mode.
Json RunCase(const Case& c, int64_t* dropped, int64_t* forced_below) {
  MoELayerOptions o;
  o.d_model = 8;
  o.num_experts = c.num_experts;
  o.top_k = c.top_k;
  o.expert_hidden_dim = 16;
  o.gate_layers = 1;
  o.temperature = c.temperature;
  o.activation_threshold = c.threshold;
  TrialRng rng(7);
  MoELayer layer(o, &rng);
  layer->eval();
  layer->set_collect_stats(true);
  torch::NoGradGuard no_grad;

  Json batches = Json::array();
  *dropped = *forced_below = 0;
  int batch = 0;
  for (int64_t n : {48, 29}) {
    at::Tensor x = at::empty({n, o.d_model});
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < o.d_model; ++j) {
        x[i][j] = 2.5 * std::sin(0.37 * static_cast<double>(i * (j + 1)) + 0.91 * j + 0.13 * batch);
      }
    }
    layer->forward(x);
    const Routing& r = layer->last_routing();
    *dropped += (~r.keep).sum().item<int64_t>();
    *forced_below += r.first.select(1, 0).lt(c.threshold).sum().item<int64_t>();
    batches.push_back(Json{{"probs", Matrix(r.probs)}, {"log_probs", Matrix(r.log_probs)},
                           {"experts", Matrix(r.experts)}, {"first", Matrix(r.first)}, {"keep", Matrix(r.keep)}});
    ++batch;
  }
  auto s = layer->stats().Summarize(3);
  Json summary = ExpertLayerJson(s);
  return Json{{"name", c.name},
              {"num_experts", c.num_experts},
              {"top_k", c.top_k},
              {"activation_threshold", c.threshold},
              {"layer", 3},
              {"batches", std::move(batches)},
              {"summary", std::move(summary)}};
}

// Runs `command`, returning its exit status and appending its output to *out.
int RunCommand(const std::string& command, std::string* out) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, pipe)) > 0) out->append(buf, got);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ExpertStatsParity, PythonMeterMatchesTheWorker) {
  // A: three of six experts, so slot 2 often falls below 0.3 and is dropped.
  // B: top-2 with threshold 0.55: every second slot is dropped and some top-1s stay below it.
  const std::vector<Case> cases = {{"e6_k3_t0.3", 6, 3, 0.7, 0.3}, {"e4_k2_t0.55", 4, 2, 1.0, 0.55}};
  Json fixture = Json::array();
  for (const Case& c : cases) {
    int64_t dropped = 0, forced_below = 0;
    fixture.push_back(RunCase(c, &dropped, &forced_below));
    EXPECT_GT(dropped, 0) << c.name << ": the threshold should drop slots";
    if (c.top_k == 2) {
      EXPECT_GT(forced_below, 0) << c.name << ": want a forced top-1 below the threshold";
    }
  }

  testing::TempDir dir;
  const std::string path = dir.File("expert_stats_fixture.json");
  testing::WriteText(path, fixture.dump());
  const std::string source = MOESWEEP_SOURCE_DIR;
  std::string out;
  const int rc = RunCommand("PYTHONPATH='" + source + "/python' PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 '" +
                                source + "/tests/python/stats_parity.py' '" + path + "'",
                            &out);
  if (rc == 77) {
    GTEST_SKIP() << out;  // python3-torch is not installed.
  }
  EXPECT_EQ(rc, 0) << out;
  std::printf("%s", out.c_str());
}

}  // namespace
}  // namespace moesweep::worker
