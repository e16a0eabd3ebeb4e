// The dashboard's JSON API and event stream against a real coordinator and worker.
#include <signal.h>

#include <set>

#include "tests/dashboard/dashboard_fixture.h"

namespace moesweep::dashboard {
namespace {

// The seqs of the "sweep" events, checked to carry their seq as the SSE id.
std::vector<int64_t> Seqs(const std::vector<Sse>& events) {
  std::vector<int64_t> seqs;
  for (const Sse& e : events) {
    if (e.type != "sweep") continue;
    Json j = Json::parse(e.data);
    EXPECT_EQ(e.id, std::to_string(j["seq"].get<int64_t>()));
    seqs.push_back(j["seq"].get<int64_t>());
  }
  return seqs;
}

void ExpectConsecutive(const std::vector<int64_t>& seqs, int64_t first, int64_t last) {
  ASSERT_EQ(seqs.size(), static_cast<size_t>(last - first + 1)) << "first " << first << " last " << last;
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], first + static_cast<int64_t>(i));
}

TEST_F(DashboardTest, ListsSweepsAndShowsStagesTrialsPagesAndOneTrial) {
  StartCoordinator();
  StartDashboard();
  int64_t id = Submit(ExpertsSpec());
  StartWorker("w1");
  StartWorker("w2");
  ASSERT_TRUE(WaitForState(id, "SWEEP_SUCCEEDED", seconds(120)));

  auto [status, list] = GetJson("/api/sweeps");
  ASSERT_EQ(status, 200) << list.dump();
  ASSERT_EQ(list["sweeps"].size(), 1u);
  EXPECT_EQ(list["sweeps"][0]["name"], "dashboard-test");
  EXPECT_EQ(list["sweeps"][0]["trials_total"], 2 + 4 + 4);

  auto [s2, sweep] = GetJson(fmt::format("/api/sweeps/{}", id));
  ASSERT_EQ(s2, 200);
  ASSERT_EQ(sweep["stages"].size(), 3u);  // Baseline + 2.
  EXPECT_EQ(sweep["sweep"]["spec_json"]["name"], "dashboard-test");  // Embedded as JSON, not a string.
  const Json& width = sweep["stages"][1];
  EXPECT_EQ(width["state"], "STAGE_SUCCEEDED");
  EXPECT_EQ(width["winner_config_json"]["width"], 64) << width.dump();  // fake_trainer.py peaks at 64.
  EXPECT_TRUE(width["has_baseline"].get<bool>());
  EXPECT_EQ(width["points"].size(), 2u);

  // Pages of 3 trials follow next_page_token to all 10, in id order, once each.
  std::vector<int64_t> ids;
  std::string token;
  int pages = 0;
  do {
    auto [s, page] = GetJson(fmt::format("/api/sweeps/{}/trials?limit=3{}", id, token.empty() ? "" : "&page_token=" + token));
    ASSERT_EQ(s, 200) << page.dump();
    for (const Json& t : page["trials"]) ids.push_back(t["trial_id"].get<int64_t>());
    token = page["next_page_token"].get<std::string>();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 4);
  ASSERT_EQ(ids.size(), 10u);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), 10u);

  auto [s3, stage2] = GetJson(fmt::format("/api/sweeps/{}/trials?stage=2&state=TRIAL_SUCCEEDED", id));
  ASSERT_EQ(s3, 200);
  ASSERT_EQ(stage2["trials"].size(), 4u);
  for (const Json& t : stage2["trials"]) EXPECT_EQ(t["config_json"]["width"], 64) << t.dump();

  // One trial, with what the trainer reported: final metrics and two layers of expert statistics.
  int64_t last = ids.back();
  auto [s4, trial] = GetJson(fmt::format("/api/sweeps/{}/trials/{}", id, last));
  ASSERT_EQ(s4, 200) << trial.dump();
  EXPECT_EQ(trial["trial_id"], last);
  EXPECT_EQ(trial["state"], "TRIAL_SUCCEEDED");
  EXPECT_NEAR(trial["metrics"]["val_loss"].get<double>(), 1.2 / 3 + 0.05, 1e-9);
  ASSERT_EQ(trial["expert_stats"]["layers"].size(), 2u);
  EXPECT_EQ(trial["expert_stats"]["layers"][1]["usage"].size(), 4u);
  EXPECT_GT(trial["expert_stats"]["layers"][0]["load_cv"].get<double>(), 0);  // Derived from usage by the worker.

  EXPECT_EQ(GetJson(fmt::format("/api/sweeps/{}/trials/{}", id, last + 100)).first, 404);
  EXPECT_EQ(GetJson(fmt::format("/api/sweeps/{}/trials?state=TRIAL_DONE", id)).first, 400);
  EXPECT_EQ(GetJson(fmt::format("/api/sweeps/{}/trials?limit=-1", id)).first, 400);

  // The page itself, for the list and for the sweep.
  auto page = http_->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("/static/app.js"), std::string::npos);
  auto sweep_page = http_->Get(fmt::format("/sweeps/{}/trials/{}", id, last).c_str());
  ASSERT_TRUE(sweep_page);
  EXPECT_EQ(sweep_page->status, 200);
  auto echarts = http_->Get("/static/vendor/echarts.min.js");
  ASSERT_TRUE(echarts);
  EXPECT_EQ(echarts->status, 200);
  EXPECT_GT(echarts->body.size(), 500000u);
}

TEST_F(DashboardTest, UnknownSweepIsA404InTheApiThePageAndTheStream) {
  StartCoordinator();
  StartDashboard();
  auto [status, body] = GetJson("/api/sweeps/42");
  EXPECT_EQ(status, 404);
  EXPECT_EQ(body["error"]["code"], "NOT_FOUND") << body.dump();
  EXPECT_FALSE(body["coordinator_unreachable"].get<bool>());
  EXPECT_EQ(GetJson("/api/sweeps/42/trials").first, 404);
  EXPECT_EQ(GetJson("/api/nothing/here").first, 404);
  auto page = http_->Get("/sweeps/42");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 404);  // The page too, which then says so itself.
  EXPECT_NE(page->body.find("<html"), std::string::npos);
  auto events = ReadEvents(dashboard_->port(), "/api/sweeps/42/events", "", EndsStream, seconds(20));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type, "notfound");
}

TEST_F(DashboardTest, EventStreamReplaysEverySeqOnceAndResumesAfterLastEventId) {
  StartCoordinator();
  StartDashboard();
  int64_t id = Submit(ExpertsSpec());
  StartWorker("w1");
  std::string path = fmt::format("/api/sweeps/{}/events?after_seq=0", id);
  // Followed live from the start to the end of the sweep.
  std::vector<Sse> all = ReadEvents(dashboard_->port(), path, "", EndsStream, seconds(180));
  ASSERT_TRUE(EndsStream(all)) << (all.empty() ? "no events" : all.back().type);
  EXPECT_EQ(all.back().type, "end");
  std::vector<int64_t> seqs = Seqs(all);
  ASSERT_GT(seqs.size(), 20u);
  ExpectConsecutive(seqs, 1, seqs.back());
  Json last = Json::parse(all[all.size() - 2].data);
  EXPECT_EQ(last["type"], "SWEEP_FINISHED");
  int progress = 0;
  for (const Sse& e : all) progress += e.type == "sweep" && Json::parse(e.data)["type"] == "TRIAL_PROGRESS";
  EXPECT_EQ(progress, 10 * 3);  // Every epoch of every trial: the curves' history.

  // A browser that reconnects after seq k (Last-Event-ID beats after_seq) gets k+1.. and nothing twice.
  int64_t k = seqs.back() / 2;
  std::vector<Sse> resumed = ReadEvents(dashboard_->port(), path, std::to_string(k), EndsStream, seconds(30));
  ExpectConsecutive(Seqs(resumed), k + 1, seqs.back());
  EXPECT_EQ(resumed.back().type, "end");
  // After the last event: nothing more, and the stream says it has ended.
  std::vector<Sse> none = ReadEvents(dashboard_->port(), path, std::to_string(seqs.back()), EndsStream, seconds(30));
  EXPECT_TRUE(Seqs(none).empty());
  ASSERT_FALSE(none.empty());
  EXPECT_EQ(none.back().type, "end");
  // Without progress reports.
  std::vector<Sse> lean = ReadEvents(dashboard_->port(), path + "&progress=0", "", EndsStream, seconds(30));
  EXPECT_EQ(Seqs(lean).size(), seqs.size() - 30);
  EXPECT_EQ(GetJson(path.substr(0, path.find('?')) + "?after_seq=x").first, 400);
}

TEST_F(DashboardTest, CoordinatorGoneIs503AndTheStreamResumesWithNoGapWhenItComesBack) {
  StartCoordinator();
  StartDashboard();
  int64_t id = Submit(ExpertsSpec(/*epoch_sleep=*/0.3, /*epochs=*/3));
  StartWorker("w1");
  std::vector<Sse> events;
  std::thread reader([&] {
    events = ReadEvents(dashboard_->port(), fmt::format("/api/sweeps/{}/events", id), "", EndsStream, seconds(240));
  });
  // Let a few events through, then kill the coordinator without warning.
  std::this_thread::sleep_for(seconds(3));
  coordinator_->Signal(SIGKILL);
  coordinator_->Wait(seconds(10));
  auto [status, body] = GetJson(fmt::format("/api/sweeps/{}", id));
  EXPECT_EQ(status, 503) << body.dump();
  EXPECT_TRUE(body["coordinator_unreachable"].get<bool>()) << body.dump();
  std::this_thread::sleep_for(seconds(2));
  StartCoordinator();  // Same port and database.
  reader.join();
  ASSERT_TRUE(EndsStream(events)) << (events.empty() ? "no events" : events.back().type);
  std::vector<std::string> upstream;
  for (const Sse& e : events) {
    if (e.type == "upstream") upstream.push_back(Json::parse(e.data)["ok"].get<bool>() ? "up" : "down");
  }
  ASSERT_GE(upstream.size(), 2u);
  EXPECT_EQ(upstream.front(), "down");
  EXPECT_EQ(upstream.back(), "up");
  std::vector<int64_t> seqs = Seqs(events);
  ExpectConsecutive(seqs, 1, seqs.back());
  EXPECT_EQ(Json::parse(events[events.size() - 2].data)["type"], "SWEEP_FINISHED");
}

}  // namespace
}  // namespace moesweep::dashboard
