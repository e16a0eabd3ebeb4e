// Helpers for the CLI tests: run RunCli in-process, build events and trials by hand.
#ifndef MOESWEEP_TESTS_CLIENT_TEST_UTIL_H_
#define MOESWEEP_TESTS_CLIENT_TEST_UTIL_H_

#include <sstream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "moesweep/v1/moesweep.pb.h"

namespace moesweep::client::cli_testing {

struct CliResult {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs the CLI with fast reconnects; `configure` may adjust the environment first.
template <typename Configure>
CliResult CliWith(const std::vector<std::string>& args, Configure configure) {
  std::ostringstream out, err;
  CliEnv env;
  env.out = &out;
  env.err = &err;
  env.watch.initial_backoff = std::chrono::milliseconds(20);
  env.watch.max_backoff = std::chrono::milliseconds(100);
  env.watch.give_up_after = std::chrono::seconds(5);
  configure(env);
  CliResult r;
  r.code = RunCli(args, env);
  r.out = out.str();
  r.err = err.str();
  return r;
}

inline CliResult Cli(const std::vector<std::string>& args) {
  return CliWith(args, [](CliEnv&) {});
}

inline bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

inline v1::Trial MakeTrial(int64_t id, int stage, int point, int64_t seed, const std::string& point_json,
                           v1::TrialState state) {
  v1::Trial t;
  t.set_trial_id(id);
  t.set_sweep_id(7);
  t.set_stage(stage);
  t.set_point_index(point);
  t.set_seed(seed);
  t.set_point_json(point_json);
  t.set_config_json(point_json);
  t.set_state(state);
  t.set_attempt(1);
  return t;
}

inline void AddLayer(v1::Trial* t, int layer, double load_cv, double activation_rate) {
  v1::ExpertLayerStats* l = t->mutable_expert_stats()->add_layers();
  l->set_layer(layer);
  l->set_load_cv(load_cv);
  l->set_activation_rate(activation_rate);
  l->add_usage(0.6);
  l->add_usage(0.4);
  l->set_usage_variance(0.01);
  l->set_gate_weight_variance(0.02);
  l->set_router_entropy(0.9);
}

inline v1::SweepEvent Event(int64_t seq, v1::EventType type) {
  v1::SweepEvent e;
  e.set_sweep_id(7);
  e.set_seq(seq);
  e.set_time(1714572187 + seq);
  e.set_type(type);
  return e;
}

inline v1::Sweep MakeSweep(v1::SweepState state) {
  v1::Sweep s;
  s.set_sweep_id(7);
  s.set_name("moe-core");
  s.set_state(state);
  s.set_objective_metric("val_accuracy");
  s.set_objective_goal("maximize");
  s.set_num_stages(1);
  s.set_has_baseline(true);
  s.set_trials_total(4);
  s.set_trials_done(4);
  s.set_trials_failed(1);
  return s;
}

inline v1::StageResult MakeStage(int stage, const std::string& name, v1::StageState state, int total) {
  v1::StageResult s;
  s.set_stage(stage);
  s.set_name(name);
  s.set_state(state);
  s.set_trials_total(total);
  return s;
}

// A whole successful sweep: baseline (stage 0, 2 seeds) and stage 1 "core" (1 point shown, 2 seeds),
// with progress, a failure and both decisions; the last event is SWEEP_FINISHED with `final_state`.
inline std::vector<v1::SweepEvent> SweepHistory(v1::SweepState final_state) {
  std::vector<v1::SweepEvent> events;
  int64_t seq = 0;
  auto add = [&](v1::EventType type) -> v1::SweepEvent& {
    events.push_back(Event(++seq, type));
    return events.back();
  };
  *add(v1::SWEEP_SUBMITTED).mutable_sweep() = MakeSweep(v1::SWEEP_RUNNING);
  *add(v1::STAGE_STARTED).mutable_stage() = MakeStage(0, "baseline", v1::STAGE_RUNNING, 2);
  *add(v1::STAGE_STARTED).mutable_stage() = MakeStage(1, "core", v1::STAGE_RUNNING, 2);
  *add(v1::TRIAL_STARTED).mutable_trial() = MakeTrial(1, 0, 0, 42, R"({"use_moe": false})", v1::TRIAL_RUNNING);
  {
    v1::SweepEvent& e = add(v1::TRIAL_PROGRESS);
    *e.mutable_trial() = MakeTrial(1, 0, 0, 42, R"({"use_moe": false})", v1::TRIAL_RUNNING);
    (*e.mutable_trial()->mutable_metrics())["val_accuracy"] = 0.5;
    e.set_step(1);
  }
  {
    v1::Trial t = MakeTrial(1, 0, 0, 42, R"({"use_moe": false})", v1::TRIAL_SUCCEEDED);
    (*t.mutable_metrics())["val_accuracy"] = 0.8;
    (*t.mutable_metrics())["val_loss"] = 0.61;
    AddLayer(&t, 0, 0.12, 0.91);
    AddLayer(&t, 1, 0.5, 0.5);
    t.set_started_at(1714572100);
    t.set_finished_at(1714572233);
    *add(v1::TRIAL_FINISHED).mutable_trial() = t;
  }
  *add(v1::TRIAL_STARTED).mutable_trial() = MakeTrial(2, 1, 0, 42, R"({"temperature": 0.5})", v1::TRIAL_RUNNING);
  {
    v1::Trial t = MakeTrial(2, 1, 0, 42, R"({"temperature": 0.5})", v1::TRIAL_FAILED);
    t.set_error("CUDA out of memory\nstack trace line");
    *add(v1::TRIAL_FINISHED).mutable_trial() = t;
  }
  {
    v1::StageResult s = MakeStage(0, "baseline", v1::STAGE_SUCCEEDED, 2);
    s.set_trials_done(2);
    s.mutable_winner()->set_point_json(R"({"use_moe": false})");
    s.mutable_winner()->set_mean(0.8);
    s.mutable_winner()->set_std(0.02);
    s.mutable_winner()->set_n(2);
    *add(v1::STAGE_DECIDED).mutable_stage() = s;
  }
  {
    v1::StageResult s = MakeStage(1, "core", v1::STAGE_SUCCEEDED, 2);
    s.set_trials_done(2);
    s.set_trials_failed(1);
    s.mutable_winner()->set_point_json(R"({"temperature": 0.5})");
    s.mutable_winner()->set_mean(0.85);
    s.mutable_winner()->set_std(0.01);
    s.mutable_winner()->set_n(3);
    s.set_has_baseline(true);
    s.set_baseline_mean(0.8);
    s.set_delta_to_baseline(0.05);
    s.set_winner_config_json(R"({"temperature": 0.5, "top_k": 2})");
    *add(v1::STAGE_DECIDED).mutable_stage() = s;
  }
  {
    v1::Sweep s = MakeSweep(final_state);
    if (final_state == v1::SWEEP_FAILED) s.set_error("stage 1 \"core\": no grid point had a usable result");
    *add(v1::SWEEP_FINISHED).mutable_sweep() = s;
  }
  return events;
}

}  // namespace moesweep::client::cli_testing

#endif  // MOESWEEP_TESTS_CLIENT_TEST_UTIL_H_
