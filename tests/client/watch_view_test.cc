// What `watch` prints for hand-built events.
#include <gtest/gtest.h>

#include "client/format.h"
#include "client/watch.h"
#include "test_util.h"

namespace moesweep::client {
namespace {

using cli_testing::Contains;
using cli_testing::SweepHistory;

// Renders every event and returns the lines, each without its clock prefix.
std::vector<std::string> RenderAll(const std::vector<v1::SweepEvent>& events, bool show_progress) {
  WatchView view(show_progress);
  std::vector<std::string> lines;
  for (const v1::SweepEvent& e : events) {
    std::string clock = FormatClock(e.time()) + " ";
    for (const std::string& line : view.Render(e)) {
      EXPECT_EQ(line.rfind(clock, 0), 0u) << "every line starts with the event's time: " << line;
      lines.push_back(line.substr(clock.size()));
    }
  }
  return lines;
}

TEST(WatchViewTest, ShowsEachTrialStartAndFinishWithStageProgress) {
  std::vector<std::string> lines = RenderAll(SweepHistory(v1::SWEEP_SUCCEEDED), /*show_progress=*/false);
  ASSERT_EQ(lines.size(), 11u) << ::testing::PrintToString(lines);
  EXPECT_EQ(lines[0], "sweep 7 \"moe-core\" submitted: maximize val_accuracy, baseline + 1 stage");
  EXPECT_EQ(lines[1], "baseline started: 2 trials");
  EXPECT_EQ(lines[2], "stage 1/1 \"core\" started: 2 trials");
  EXPECT_EQ(lines[3], "  start    #1 s0 p0 seed=42  use_moe=false");
  // Finish: point, seed, objective, layer-0 statistics, duration, stage progress with the best so far.
  EXPECT_EQ(lines[4],
            "  done     #1 s0 p0 seed=42  use_moe=false  val_accuracy=0.8  load_cv=0.12 act=0.91  (2m13s)  "
            "[1/2 done, 0 failed, best 0.8]");
  EXPECT_EQ(lines[5], "  start    #2 s1 p0 seed=42  temperature=0.5");
  // Only the first line of a multi-line error, and the failure counted in the stage progress.
  EXPECT_EQ(lines[6], "  FAILED   #2 s1 p0 seed=42  temperature=0.5  error: CUDA out of memory  [1/2 done, 1 failed]");
  EXPECT_EQ(lines[7], "baseline decided: winner use_moe=false  val_accuracy 0.8 ± 0.02 (n=2)");
  EXPECT_EQ(lines[8], "stage 1/1 \"core\" decided: winner temperature=0.5  val_accuracy 0.85 ± 0.01 (n=3), +0.05 vs baseline");
  EXPECT_EQ(lines[9], "sweep 7 succeeded: 4 trials, 1 failed");
  EXPECT_EQ(lines[10], "best config: {\"temperature\":0.5,\"top_k\":2}");
}

TEST(WatchViewTest, ProgressEventsOnlyWithShowProgress) {
  auto events = SweepHistory(v1::SWEEP_SUCCEEDED);
  std::vector<std::string> quiet = RenderAll(events, false);
  std::vector<std::string> verbose = RenderAll(events, true);
  ASSERT_EQ(verbose.size(), quiet.size() + 1);
  EXPECT_EQ(verbose[4], "  step 1    #1 s0 p0 seed=42  use_moe=false  val_accuracy=0.5");
}

TEST(WatchViewTest, FailedSweepShowsItsError) {
  std::vector<std::string> lines = RenderAll(SweepHistory(v1::SWEEP_FAILED), false);
  EXPECT_EQ(lines.back(), "sweep 7 FAILED: stage 1 \"core\": no grid point had a usable result");
}

TEST(WatchViewTest, FailedStageAndRequeuedTrial) {
  WatchView view(false);
  v1::SweepEvent requeued = cli_testing::Event(1, v1::TRIAL_REQUEUED);
  *requeued.mutable_trial() = cli_testing::MakeTrial(3, 2, 1, 7, R"({"top_k": 1})", v1::TRIAL_PENDING);
  requeued.mutable_trial()->set_error("lease expired after 60 s");
  auto lines = view.Render(requeued);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(Contains(lines[0], "requeued #3 s2 p1 seed=7  top_k=1: lease expired after 60 s")) << lines[0];

  v1::SweepEvent failed = cli_testing::Event(2, v1::STAGE_DECIDED);
  *failed.mutable_stage() = cli_testing::MakeStage(2, "structure", v1::STAGE_FAILED, 4);
  failed.mutable_stage()->set_error("no grid point had a usable result");
  lines = view.Render(failed);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(Contains(lines[0], "stage 2 \"structure\" FAILED: no grid point had a usable result")) << lines[0];
}

TEST(WatchViewTest, BestSoFarFollowsTheGoal) {
  WatchView view(false);
  v1::SweepEvent submitted = cli_testing::Event(1, v1::SWEEP_SUBMITTED);
  *submitted.mutable_sweep() = cli_testing::MakeSweep(v1::SWEEP_RUNNING);
  submitted.mutable_sweep()->set_objective_metric("val_loss");
  submitted.mutable_sweep()->set_objective_goal("minimize");
  view.Render(submitted);
  std::string last;
  int64_t seq = 1;
  for (double loss : {0.7, 0.4, 0.9}) {
    v1::SweepEvent e = cli_testing::Event(++seq, v1::TRIAL_FINISHED);
    *e.mutable_trial() = cli_testing::MakeTrial(seq, 1, 0, seq, "{}", v1::TRIAL_SUCCEEDED);
    (*e.mutable_trial()->mutable_metrics())["val_loss"] = loss;
    last = view.Render(e).at(0);
  }
  EXPECT_TRUE(Contains(last, "val_loss=0.9")) << last;
  EXPECT_TRUE(Contains(last, "best 0.4]")) << last;
}

TEST(FormatTest, ValuesAndPoints) {
  EXPECT_EQ(FormatValue(0.81234567), "0.8123");
  EXPECT_EQ(FormatValue(12.3456), "12.35");
  EXPECT_EQ(FormatValue(4096), "4096");
  EXPECT_EQ(FormatValue(12345.678), "12345.7");
  EXPECT_EQ(FormatValue(1e-5), "1e-05");
  EXPECT_EQ(FormatDelta(-0.5), "-0.5");
  EXPECT_EQ(FormatDelta(0.0123), "+0.0123");
  EXPECT_EQ(FormatPoint(R"({"expert_hidden_dim": 2048, "attention": "gated", "use_moe": true})"),
            "expert_hidden_dim=2048 attention=gated use_moe=true");
  EXPECT_EQ(FormatPoint("{}"), "{}");
  EXPECT_EQ(FormatDuration(42), "42s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
  EXPECT_EQ(FormatIsoUtc(1714572187.25), "2024-05-01T14:03:07Z");
}


TEST(WatchViewTest, DecidedStageSaysHowSureTheWinnerIs) {
  WatchView view(false);
  v1::SweepEvent decided = cli_testing::Event(2, v1::STAGE_DECIDED);
  v1::StageResult* s = decided.mutable_stage();
  *s = cli_testing::MakeStage(3, "regularisation", v1::STAGE_SUCCEEDED, 6);
  s->mutable_winner()->set_point_json(R"({"expert_dropout": 0.0})");
  s->mutable_winner()->set_mean(0.8242);
  s->mutable_winner()->set_std(0.022);
  s->mutable_winner()->set_n(3);
  s->mutable_runner_up()->set_point_json(R"({"expert_dropout": 0.1})");
  s->mutable_runner_up()->set_mean(0.8213);
  s->mutable_runner_up()->set_std(0.012);
  s->mutable_runner_up()->set_n(3);
  s->set_p_vs_runner_up(0.85);
  s->set_has_baseline(true);
  s->set_baseline_mean(0.7912);
  s->set_delta_to_baseline(0.033);
  s->set_p_vs_baseline(0.012);
  s->set_has_success_criterion(true);
  s->set_min_delta(0.02);
  s->set_meets_success(true);
  std::string line = view.Render(decided).at(0);
  EXPECT_TRUE(Contains(line, "+0.033 vs baseline (p = 0.012) ✓ ≥ +0.02")) << line;
  EXPECT_TRUE(Contains(line, "runner-up expert_dropout=0.1 0.8213 ± 0.012 (n=3), p = 0.85: not significantly better at 0.05"))
      << line;
  s->set_meets_success(false);
  s->set_delta_to_baseline(0.01);
  s->set_p_vs_runner_up(0.0001);
  line = view.Render(decided).at(0);
  EXPECT_TRUE(Contains(line, "+0.01 vs baseline (p = 0.012) ✗ < +0.02")) << line;
  EXPECT_TRUE(Contains(line, "p < 0.001")) << line;
  EXPECT_FALSE(Contains(line, "not significantly")) << line;
}


TEST(WatchViewTest, AnExtendedStageSaysWhatItAdded) {
  WatchView view(false);
  v1::SweepEvent extended = cli_testing::Event(5, v1::STAGE_EXTENDED);
  v1::StageResult* s = extended.mutable_stage();
  s->set_stage(1);
  s->set_name("core");
  s->set_trials_total(18);
  s->add_extended_points_json(R"({"expert_hidden_dim": 4096, "temperature": 0.7})");
  std::string line = view.Render(extended).at(0);
  EXPECT_TRUE(Contains(line, "extended: expert_hidden_dim=4096 temperature=0.7 (the winner sat on the grid's edge); 18 trials now"))
      << line;
}

TEST(WatchViewTest, APruningDecisionAndThePrunedTrialAreShown) {
  std::vector<v1::SweepEvent> events;
  v1::SweepEvent started = cli_testing::Event(1, v1::STAGE_STARTED);
  started.mutable_stage()->set_stage(1);
  started.mutable_stage()->set_name("core");
  started.mutable_stage()->set_trials_total(4);
  events.push_back(started);
  v1::SweepEvent decided = cli_testing::Event(2, v1::PRUNE_DECIDED);
  *decided.mutable_trial() = cli_testing::MakeTrial(3, 1, 1, 42, R"({"temperature": 1.5})", v1::TRIAL_RUNNING);
  decided.mutable_trial()->set_error(
      "pruned at step 2: val_accuracy 0.4 is lower than the median 0.61 of 2 other trials at that step (median pruner)");
  decided.set_step(2);
  events.push_back(decided);
  v1::SweepEvent finished = cli_testing::Event(3, v1::TRIAL_FINISHED);
  *finished.mutable_trial() = cli_testing::MakeTrial(3, 1, 1, 42, R"({"temperature": 1.5})", v1::TRIAL_PRUNED);
  events.push_back(finished);
  std::vector<std::string> lines = RenderAll(events, false);
  ASSERT_EQ(lines.size(), 3u) << ::testing::PrintToString(lines);
  EXPECT_EQ(lines[1], "  prune    #3 s1 p1 seed=42  temperature=1.5: pruned at step 2: val_accuracy 0.4 is lower than "
                      "the median 0.61 of 2 other trials at that step (median pruner)");
  EXPECT_TRUE(Contains(lines[2], "  pruned   #3 s1 p1 seed=42  temperature=1.5")) << lines[2];
  EXPECT_TRUE(Contains(lines[2], "[1/4 done, 0 failed, 1 pruned]")) << lines[2];
  EXPECT_EQ(TrialStateName(v1::TRIAL_PRUNED), "pruned");
  // A waiting seed of the same point ends without running, and says why.
  v1::SweepEvent sibling = cli_testing::Event(4, v1::TRIAL_FINISHED);
  *sibling.mutable_trial() = cli_testing::MakeTrial(4, 1, 1, 123, R"({"temperature": 1.5})", v1::TRIAL_PRUNED);
  sibling.mutable_trial()->set_attempt(0);
  sibling.mutable_trial()->set_error("pruned with its grid point: seed 42 of the point was pruned (trial 3)");
  events.push_back(sibling);
  lines = RenderAll(events, false);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_TRUE(Contains(lines[3], "  pruned   #4 s1 p1 seed=123  temperature=1.5  (not run: pruned with its grid point: "
                                 "seed 42 of the point was pruned (trial 3))"))
      << lines[3];
}

}  // namespace
}  // namespace moesweep::client
