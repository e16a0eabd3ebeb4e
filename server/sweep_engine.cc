#include "server/sweep_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "common/command_template.h"
#include "common/limits.h"
#include "common/trial_schema.h"
#include "server/pruner.h"
#include "server/significance.h"
#include "server/stage_planner.h"
#include "server/stage_strategy.h"

namespace moesweep {
namespace {

#define RETURN_IF_ERROR(expr)               \
  do {                                      \
    if (Status _s = (expr); !_s.ok()) return _s; \
  } while (0)

bool IsTerminal(v1::TrialState s) {
  return s == v1::TRIAL_SUCCEEDED || s == v1::TRIAL_FAILED || s == v1::TRIAL_CANCELLED || s == v1::TRIAL_PRUNED;
}

std::map<std::string, double> ToMap(const google::protobuf::Map<std::string, double>& m) {
  return std::map<std::string, double>(m.begin(), m.end());
}

// Stored configs were written by this coordinator, but a parse must still never throw here: an
// exception on the coordinator's thread ends the process.
// Whether a trial must go to a worker with a free GPU: only built-in trials say so, through their
// config's device (a command trainer asks through its own "gpus").
bool NeedsGpu(const TrainerSpec& trainer, const std::string& config_json) {
  if (trainer.kind != TrainerSpec::kBuiltin) return false;
  Json config;
  return ParseJson(config_json, &config).ok() && TrialNeedsGpu(config);
}

Json WithoutSeed(const std::string& config_json) {
  Json config;
  if (!ParseJson(config_json, &config).ok() || !config.is_object()) return Json::object();
  config.erase("seed");
  return config;
}

// A page token is the last id of the previous page, in decimal.
bool ParsePageToken(const std::string& token, int64_t* id) {
  *id = 0;
  if (token.empty()) return true;
  if (token.size() > 19) return false;
  for (char c : token) {
    if (c < '0' || c > '9') return false;
    *id = *id * 10 + (c - '0');
  }
  return true;
}

}  // namespace

SweepEngine::SweepEngine(SweepStore* store, const Clock* clock, EngineOptions options)
    : store_(store), clock_(clock), options_(options), rng_(std::random_device{}()) {}

std::string SweepEngine::NewToken() {
  return fmt::format("{:016x}{:016x}", rng_(), rng_());
}

std::string SweepEngine::StageLabel(const SweepSpec& spec, int stage) {
  if (stage == 0) return "baseline";
  return fmt::format("stage {} \"{}\"", stage, spec.stages[stage - 1].name);
}

std::vector<v1::SweepEvent> SweepEngine::TakeEvents() {
  std::vector<v1::SweepEvent> out;
  out.swap(events_);
  return out;
}

Status SweepEngine::Emit(ActiveSweep& sweep, v1::EventType type, v1::SweepEvent event) {
  event.set_sweep_id(sweep.id);
  event.set_seq(++sweep.last_seq);
  event.set_time(clock_->Now());
  event.set_type(type);
  RETURN_IF_ERROR(store_->InsertEvent(event));
  events_.push_back(std::move(event));
  return Status::Ok();
}

v1::Trial SweepEngine::EventTrial(const TrialState& t) const {
  v1::Trial trial;
  trial.set_trial_id(t.id);
  trial.set_sweep_id(t.sweep_id);
  trial.set_stage(t.stage);
  trial.set_point_index(t.point_index);
  trial.set_seed(t.seed);
  trial.set_point_json(t.point_json);
  trial.set_state(t.state);
  trial.set_attempt(t.attempt);
  trial.set_worker(t.worker);
  trial.set_error(t.error);
  trial.set_reused_trial_id(t.reused_from);
  return trial;
}

// ---------------------------------------------------------------------------------------------
// Submission and stages

Status SweepEngine::Submit(const std::string& spec_json, v1::SubmitSweepResponse* response) {
  SweepSpec spec;
  RETURN_IF_ERROR(ParseSweepSpec(spec_json, options_.spec_limits, &spec));

  SweepRow row;
  row.name = spec.name;
  row.spec_json = spec.ToJson().dump();
  row.state = v1::SWEEP_RUNNING;
  row.current_stage = 1;
  row.created_at = clock_->Now();
  int64_t id = 0;
  RETURN_IF_ERROR(store_->InsertSweep(row, &id));
  row.id = id;
  ++stats_.sweeps_by_state[v1::SWEEP_RUNNING];

  if (spec.baseline) RETURN_IF_ERROR(store_->InsertStage(id, {0, "baseline", v1::STAGE_WAITING}));
  for (size_t i = 0; i < spec.stages.size(); ++i) {
    RETURN_IF_ERROR(store_->InsertStage(id, {static_cast<int>(i + 1), spec.stages[i].name, v1::STAGE_WAITING}));
  }

  ActiveSweep& sweep = sweeps_[id];
  sweep.id = id;
  sweep.spec = std::move(spec);
  v1::SweepEvent submitted;
  RETURN_IF_ERROR(BuildSweep(row, submitted.mutable_sweep()));
  RETURN_IF_ERROR(Emit(sweep, v1::SWEEP_SUBMITTED, std::move(submitted)));

  // The baseline is queued first and runs beside stage 1: it feeds no later stage.
  if (sweep.spec.baseline) RETURN_IF_ERROR(StartStage(sweep, 0, sweep.spec.base));
  RETURN_IF_ERROR(StartStage(sweep, 1, sweep.spec.base));

  response->set_sweep_id(id);
  int first = 0;
  for (const auto& [stage, progress] : sweep.open_stages) first += progress.total;
  response->set_trials_in_first_stage(first);
  return Status::Ok();
}

Status SweepEngine::StartStage(ActiveSweep& sweep, int stage, const Json& carried) {
  std::vector<PlannedTrial> planned = MakeStageStrategy(sweep.spec, stage)->Plan(carried);
  StageRow row{stage, stage == 0 ? "baseline" : sweep.spec.stages[stage - 1].name, v1::STAGE_RUNNING};
  RETURN_IF_ERROR(store_->UpdateStage(sweep.id, row, 0));
  if (stage > 0) {
    sweep.current_stage = stage;
    RETURN_IF_ERROR(store_->UpdateSweep(sweep.id, v1::SWEEP_RUNNING, stage, "", 0));
  }
  std::vector<std::pair<int64_t, TrialRow>> reusable;
  RETURN_IF_ERROR(CreateTrials(sweep, stage, planned, &reusable));
  v1::SweepEvent event;
  v1::StageResult* result = event.mutable_stage();
  result->set_stage(stage);
  result->set_name(row.name);
  result->set_state(v1::STAGE_RUNNING);
  result->set_trials_total(static_cast<int>(planned.size()));
  RETURN_IF_ERROR(Emit(sweep, v1::STAGE_STARTED, std::move(event)));
  // Last: finishing them may decide this stage and start the next.
  return FinishReusedTrials(sweep, stage, std::move(reusable));
}

// Names a trial's config and seed for reuse: the built-in trainer's config with its defaults filled
// in (so an omitted key equals its default), keys sorted.
static std::string ReuseKey(const SweepSpec& spec, const Json& config) {
  nlohmann::json sorted = spec.trainer.is_command() ? config : WithDefaults(config);
  return sorted.dump();
}

Status SweepEngine::ExtendStage(ActiveSweep& sweep, int stage, const std::vector<PlannedTrial>& planned) {
  std::vector<std::pair<int64_t, TrialRow>> reusable;
  RETURN_IF_ERROR(CreateTrials(sweep, stage, planned, &reusable));
  v1::SweepEvent event;
  v1::StageResult* result = event.mutable_stage();
  result->set_stage(stage);
  result->set_name(sweep.spec.stages[stage - 1].name);
  result->set_state(v1::STAGE_RUNNING);
  result->set_trials_total(sweep.open_stages[stage].total);
  std::set<int> added;
  for (const PlannedTrial& p : planned) {
    if (added.insert(p.point_index).second) result->add_extended_points_json(p.point.dump());
  }
  RETURN_IF_ERROR(Emit(sweep, v1::STAGE_EXTENDED, std::move(event)));
  return FinishReusedTrials(sweep, stage, std::move(reusable));
}

Status SweepEngine::FinishReusedTrials(ActiveSweep& sweep, int stage,
                                       std::vector<std::pair<int64_t, TrialRow>> reusable) {
  for (auto& [id, original] : reusable) {
    // An earlier one may have decided the stage (it was the last) and so forgotten its trials.
    auto it = trials_.find(id);
    if (it == trials_.end() || !sweep.open_stages.count(stage) || sweep.state != v1::SWEEP_RUNNING) break;
    TrialState& t = it->second;
    t.reused_from = original.trial.trial_id();
    RETURN_IF_ERROR(store_->SetReusedFrom(id, t.reused_from));
    std::map<std::string, double> metrics(original.trial.metrics().begin(), original.trial.metrics().end());
    RETURN_IF_ERROR(FinishTrial(sweep, t, v1::TRIAL_SUCCEEDED, metrics, original.trial.expert_stats(), ""));
    if (!sweeps_.count(sweep.id)) break;  // The sweep ended (and was forgotten).
  }
  return Status::Ok();
}

Status SweepEngine::CreateTrials(ActiveSweep& sweep, int stage, const std::vector<PlannedTrial>& planned,
                                 std::vector<std::pair<int64_t, TrialRow>>* reusable) {
  StageProgress& progress = sweep.open_stages[stage];
  double now = clock_->Now();
  for (const PlannedTrial& p : planned) {
    const std::string reuse_key = ReuseKey(sweep.spec, p.config);
    std::optional<TrialRow> original;
    if (sweep.spec.reuse) RETURN_IF_ERROR(store_->FindReusableTrial(sweep.id, reuse_key, &original));
    v1::Trial trial;
    trial.set_sweep_id(sweep.id);
    trial.set_stage(stage);
    trial.set_point_index(p.point_index);
    trial.set_seed(p.seed);
    trial.set_config_json(p.config.dump());
    trial.set_point_json(p.point.dump());
    trial.set_state(v1::TRIAL_PENDING);
    trial.set_created_at(now);
    int64_t id = 0;
    RETURN_IF_ERROR(store_->InsertTrial(trial, &id, reuse_key));
    ++stats_.trials_by_state[v1::TRIAL_PENDING];
    TrialState& t = trials_[id];
    t.id = id;
    t.sweep_id = sweep.id;
    t.stage = stage;
    t.point_index = p.point_index;
    t.seed = p.seed;
    t.point_json = trial.point_json();
    t.config_json = trial.config_json();
    t.needs_gpu = NeedsGpu(sweep.spec.trainer, t.config_json);
    if (original) {
      reusable->emplace_back(id, std::move(*original));
    } else {
      sweep.pending.push_back(id);
    }
    progress.trial_ids.push_back(id);
    ++progress.total;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Leases

// Whether a worker that offers `request` can run the trials of `trainer`.
static bool CanRun(const v1::AcquireTrialRequest& request, const TrainerSpec& trainer) {
  if (trainer.gpus > request.free_gpus()) return false;
  if (request.trainer_kinds().empty()) return trainer.kind == TrainerSpec::kBuiltin;
  return std::find(request.trainer_kinds().begin(), request.trainer_kinds().end(), trainer.kind) !=
         request.trainer_kinds().end();
}

size_t SweepEngine::FirstLeasable(const v1::AcquireTrialRequest& request, const ActiveSweep& sweep) const {
  if (sweep.state != v1::SWEEP_RUNNING || !CanRun(request, sweep.spec.trainer)) return sweep.pending.size();
  // Trials in order, except that one needing a GPU waits for a worker with a free one while those
  // behind it go elsewhere. A scan only when the front must wait: O(pending) at worst.
  if (request.free_gpus() >= 1) return 0;
  size_t i = 0;
  while (i < sweep.pending.size() && trials_.at(sweep.pending[i]).needs_gpu) ++i;
  return i;
}

bool SweepEngine::HasPendingTrials() const {
  for (const auto& [id, sweep] : sweeps_) {
    if (sweep.state == v1::SWEEP_RUNNING && !sweep.pending.empty()) return true;
  }
  return false;
}

bool SweepEngine::CanServe(const v1::AcquireTrialRequest& request) const {
  for (const auto& [id, sweep] : sweeps_) {
    if (FirstLeasable(request, sweep) < sweep.pending.size()) return true;
  }
  return false;
}

int64_t SweepEngine::PendingTrials() const {
  int64_t n = 0;
  for (const auto& [id, sweep] : sweeps_) {
    if (sweep.state == v1::SWEEP_RUNNING) n += static_cast<int64_t>(sweep.pending.size());
  }
  return n;
}

double SweepEngine::NextLeaseDeadline() const {
  double next = std::numeric_limits<double>::infinity();
  for (int64_t id : leased_) next = std::min(next, trials_.at(id).lease_deadline);
  return next;
}

Status SweepEngine::Acquire(const v1::AcquireTrialRequest& request, v1::AcquireTrialResponse* response) {
  const std::string& worker = request.worker();
  response->set_has_trial(false);
  for (auto& [sweep_id, sweep] : sweeps_) {
    const size_t next = FirstLeasable(request, sweep);
    if (next >= sweep.pending.size()) continue;
    TrialState& t = trials_.at(sweep.pending[next]);
    double now = clock_->Now();
    std::string token = NewToken();
    RETURN_IF_ERROR(store_->MarkTrialLeased(t.id, t.attempt + 1, token, worker, now));
    sweep.pending.erase(sweep.pending.begin() + static_cast<std::ptrdiff_t>(next));
    if (!t.token.empty()) tokens_.erase(t.token);
    ++t.attempt;
    t.token = token;
    t.worker = worker;
    SetTrialState(t, v1::TRIAL_RUNNING);
    ++stats_.leases_granted;
    t.lease_deadline = now + sweep.spec.lease_seconds;
    tokens_[token] = t.id;
    leased_.insert(t.id);
    ++sweep.running;

    v1::SweepEvent event;
    *event.mutable_trial() = EventTrial(t);
    RETURN_IF_ERROR(Emit(sweep, v1::TRIAL_STARTED, std::move(event)));

    response->set_has_trial(true);
    response->set_trial_id(t.id);
    response->set_attempt(t.attempt);
    response->set_lease_token(token);
    response->set_lease_seconds(sweep.spec.lease_seconds);
    response->set_config_json(t.config_json);
    response->set_sweep_id(sweep.id);
    response->set_stage(t.stage);
    response->set_trainer_json(sweep.spec.trainer.ToJson().dump());
    response->set_trial_name(TrialName(t.stage, t.point_index, t.seed));
    response->set_objective_metric(sweep.spec.metric);
    return Status::Ok();
  }
  return Status::Ok();
}

Status SweepEngine::Report(const v1::ReportProgressRequest& request, v1::ReportProgressResponse* response) {
  auto it = tokens_.find(request.lease_token());
  if (it == tokens_.end() || trials_.at(it->second).state != v1::TRIAL_RUNNING ||
      trials_.at(it->second).token != request.lease_token()) {
    return Status::FailedPrecondition(
        "lease_token: not the current lease of any running trial (the lease expired, was released, or the trial "
        "finished); stop this trial");
  }
  TrialState& t = trials_.at(it->second);
  ActiveSweep& sweep = sweeps_.at(t.sweep_id);
  double now = clock_->Now();
  t.lease_deadline = now + sweep.spec.lease_seconds;
  response->set_directive(t.stop_requested ? v1::STOP : v1::CONTINUE);
  response->set_lease_seconds(sweep.spec.lease_seconds);
  if (request.metrics().empty() && !request.has_expert_stats()) return Status::Ok();  // A heartbeat.

  RETURN_IF_ERROR(store_->InsertMetrics(t.id, t.attempt, request.step(), now, request.metrics(),
                                        request.has_expert_stats() ? &request.expert_stats() : nullptr));

  v1::SweepEvent event;
  *event.mutable_trial() = EventTrial(t);
  *event.mutable_trial()->mutable_metrics() = request.metrics();
  if (request.has_expert_stats()) *event.mutable_trial()->mutable_expert_stats() = request.expert_stats();
  event.set_step(request.step());
  RETURN_IF_ERROR(Emit(sweep, v1::TRIAL_PROGRESS, std::move(event)));
  RETURN_IF_ERROR(MaybePrune(sweep, t, request));
  response->set_directive(t.stop_requested ? v1::STOP : v1::CONTINUE);
  return Status::Ok();
}

Status SweepEngine::MaybePrune(ActiveSweep& sweep, TrialState& t, const v1::ReportProgressRequest& request) {
  const PrunerSpec* pruner = sweep.spec.PrunerFor(t.stage);
  if (pruner == nullptr || sweep.state != v1::SWEEP_RUNNING || !t.prune_reason.empty()) return Status::Ok();
  auto value = request.metrics().find(pruner->metric);
  auto stage = sweep.open_stages.find(t.stage);
  if (value == request.metrics().end() || stage == sweep.open_stages.end()) return Status::Ok();
  auto& at_step = stage->second.values_by_step[request.step()];
  at_step[t.id] = value->second;
  std::vector<double> others;
  for (const auto& [id, v] : at_step) {
    if (id == t.id) continue;
    if (pruner->same_seed) {
      auto other = trials_.find(id);
      if (other == trials_.end() || other->second.seed != t.seed) continue;
    }
    others.push_back(v);
  }
  std::optional<std::string> reason =
      ShouldPrune(*pruner, request.step(), value->second, others,
                  pruner->same_seed ? fmt::format("other trials with seed {}", t.seed) : "other trials");
  if (!reason) return Status::Ok();
  RETURN_IF_ERROR(store_->MarkTrialPruning(t.id, *reason));
  t.prune_reason = *reason;
  t.error = *reason;
  t.stop_requested = true;
  t.last_metrics = ToMap(request.metrics());
  v1::SweepEvent event;
  *event.mutable_trial() = EventTrial(t);
  *event.mutable_trial()->mutable_metrics() = request.metrics();
  event.set_step(request.step());
  RETURN_IF_ERROR(Emit(sweep, v1::PRUNE_DECIDED, std::move(event)));
  return PruneSiblings(sweep, t);
}

// The pruned trial's point cannot win any more, so its other seeds would train for nothing: those
// still waiting end PRUNED without running, and those running are told to stop.
Status SweepEngine::PruneSiblings(ActiveSweep& sweep, const TrialState& pruned) {
  auto stage = sweep.open_stages.find(pruned.stage);
  if (stage == sweep.open_stages.end()) return Status::Ok();
  std::vector<int64_t> siblings;
  for (int64_t id : stage->second.trial_ids) {
    const TrialState& s = trials_.at(id);
    if (s.id != pruned.id && s.point_index == pruned.point_index && s.prune_reason.empty() &&
        (s.state == v1::TRIAL_PENDING || s.state == v1::TRIAL_RUNNING)) {
      siblings.push_back(id);
    }
  }
  const std::string reason =
      fmt::format("pruned with its grid point: seed {} of the point was pruned (trial {})", pruned.seed, pruned.id);
  for (int64_t id : siblings) {
    TrialState& s = trials_.at(id);  // The running `pruned` keeps the stage open: no sibling is forgotten.
    RETURN_IF_ERROR(store_->MarkTrialPruning(id, reason));
    s.prune_reason = reason;
    s.error = reason;
    if (s.state == v1::TRIAL_PENDING) {
      sweep.pending.erase(std::remove(sweep.pending.begin(), sweep.pending.end(), id), sweep.pending.end());
      RETURN_IF_ERROR(FinishTrial(sweep, s, v1::TRIAL_PRUNED, {}, {}, reason));
    } else {
      s.stop_requested = true;
      v1::SweepEvent event;
      *event.mutable_trial() = EventTrial(s);
      RETURN_IF_ERROR(Emit(sweep, v1::PRUNE_DECIDED, std::move(event)));
    }
  }
  return Status::Ok();
}

Status SweepEngine::Complete(const v1::CompleteTrialRequest& request, v1::CompleteTrialResponse* response) {
  const std::string& token = request.lease_token();
  auto it = tokens_.find(token);
  if (it == tokens_.end() || trials_.at(it->second).token != token) {
    // Not a live lease: a repeat of a completion we already recorded, or a stale token.
    if (released_.count(token)) {
      response->set_state(v1::TRIAL_PENDING);
      return Status::Ok();
    }
    std::optional<TrialRow> row;
    if (!token.empty()) RETURN_IF_ERROR(store_->FindTrialByToken(token, &row));
    if (row && IsTerminal(row->trial.state())) {
      response->set_state(row->trial.state());
      return Status::Ok();
    }
    return Status::FailedPrecondition(
        "lease_token: not the current lease of any running trial (the lease expired or was never issued); "
        "the result was not recorded");
  }
  TrialState& t = trials_.at(it->second);
  if (IsTerminal(t.state)) {  // Completed before with this token: answer as the first time.
    response->set_state(t.state);
    return Status::Ok();
  }
  int64_t sweep_id = t.sweep_id;
  ActiveSweep& sweep = sweeps_.at(sweep_id);
  bool winding_down = sweep.state == v1::SWEEP_CANCELLING;
  // The outcome decides the answer; the trial itself may be forgotten by the time we answer.
  v1::TrialState state;
  if (!t.prune_reason.empty() && request.outcome() != v1::CompleteTrialRequest::OUTCOME_UNSPECIFIED &&
      v1::CompleteTrialRequest::Outcome_IsValid(request.outcome())) {
    // Pruned: whatever the worker says (it may have finished the epoch anyway, or stopped and
    // called that a failure), the decision stands, with the last metrics known.
    state = v1::TRIAL_PRUNED;
    std::map<std::string, double> metrics = request.metrics().empty() ? t.last_metrics : ToMap(request.metrics());
    RETURN_IF_ERROR(FinishTrial(sweep, t, state, metrics, request.expert_stats(), t.prune_reason));
    if (auto s = sweeps_.find(sweep_id); s != sweeps_.end()) RETURN_IF_ERROR(MaybeFinish(s->second));
    response->set_state(state);
    return Status::Ok();
  }
  switch (request.outcome()) {
    case v1::CompleteTrialRequest::RELEASED:
      if (winding_down) {
        state = v1::TRIAL_CANCELLED;
        RETURN_IF_ERROR(FinishTrial(sweep, t, state, ToMap(request.metrics()), request.expert_stats(),
                                    "stopped: sweep cancelled"));
      } else {
        state = v1::TRIAL_PENDING;
        released_[token] = sweep_id;
        RETURN_IF_ERROR(Requeue(sweep, t, fmt::format("released by worker {}", t.worker), /*front=*/true));
      }
      break;
    case v1::CompleteTrialRequest::SUCCEEDED:
      state = v1::TRIAL_SUCCEEDED;
      RETURN_IF_ERROR(FinishTrial(sweep, t, state, ToMap(request.metrics()), request.expert_stats(), ""));
      break;
    case v1::CompleteTrialRequest::FAILED: {
      state = winding_down ? v1::TRIAL_CANCELLED : v1::TRIAL_FAILED;
      std::string error = request.error().empty() ? "the worker reported failure without a reason" : request.error();
      RETURN_IF_ERROR(FinishTrial(sweep, t, state, ToMap(request.metrics()), request.expert_stats(), error));
      break;
    }
    default:
      return Status::InvalidArgument("outcome: must be SUCCEEDED, FAILED or RELEASED");
  }
  // Finishing the trial may have decided its stage or ended its sweep (which forgets it).
  if (auto s = sweeps_.find(sweep_id); s != sweeps_.end()) RETURN_IF_ERROR(MaybeFinish(s->second));
  response->set_state(state);
  return Status::Ok();
}

Status SweepEngine::ExpireLeases() {
  double now = clock_->Now();
  std::vector<int64_t> expired;
  for (int64_t id : leased_) {
    if (trials_.at(id).lease_deadline <= now) expired.push_back(id);
  }
  std::sort(expired.begin(), expired.end());  // Deterministic order of events.
  for (int64_t id : expired) {
    if (!leased_.count(id)) continue;  // Its sweep ended while handling an earlier expiry.
    TrialState& t = trials_.at(id);
    int64_t sweep_id = t.sweep_id;
    ActiveSweep& sweep = sweeps_.at(sweep_id);
    ++t.lost_leases;
    ++stats_.leases_expired;
    std::string reason = fmt::format("lease of worker {} expired (attempt {}, no report for {} s)", t.worker,
                                     t.attempt, sweep.spec.lease_seconds);
    if (!t.prune_reason.empty()) {  // It was told to stop anyway.
      tokens_.erase(t.token);
      t.token.clear();
      RETURN_IF_ERROR(FinishTrial(sweep, t, v1::TRIAL_PRUNED, t.last_metrics, {}, t.prune_reason));
    } else if (sweep.state == v1::SWEEP_CANCELLING) {
      tokens_.erase(t.token);
      t.token.clear();
      RETURN_IF_ERROR(FinishTrial(sweep, t, v1::TRIAL_CANCELLED, {}, {}, reason));
    } else if (t.lost_leases >= sweep.spec.max_attempts) {
      tokens_.erase(t.token);
      t.token.clear();  // A late completion with that token must be refused, not taken as a repeat.
      RETURN_IF_ERROR(FinishTrial(sweep, t, v1::TRIAL_FAILED, {}, {},
                                  fmt::format("{}; gave up after max_attempts={}", reason, sweep.spec.max_attempts)));
    } else {
      RETURN_IF_ERROR(Requeue(sweep, t, reason, /*front=*/false));
    }
    if (auto s = sweeps_.find(sweep_id); s != sweeps_.end()) RETURN_IF_ERROR(MaybeFinish(s->second));
  }
  return Status::Ok();
}

Status SweepEngine::Requeue(ActiveSweep& sweep, TrialState& t, const std::string& reason, bool front) {
  RETURN_IF_ERROR(store_->MarkTrialRequeued(t.id, t.lost_leases, reason));
  tokens_.erase(t.token);
  t.token.clear();
  SetTrialState(t, v1::TRIAL_PENDING);
  t.error = reason;
  t.stop_requested = false;
  leased_.erase(t.id);
  --sweep.running;
  if (front) {
    sweep.pending.push_front(t.id);
  } else {
    sweep.pending.push_back(t.id);
  }
  v1::SweepEvent event;
  *event.mutable_trial() = EventTrial(t);
  return Emit(sweep, v1::TRIAL_REQUEUED, std::move(event));
}

Status SweepEngine::FinishTrial(ActiveSweep& sweep, TrialState& t, v1::TrialState state,
                                const std::map<std::string, double>& metrics, const v1::ExpertStats& stats,
                                const std::string& error) {
  std::optional<double> objective;
  if (state == v1::TRIAL_SUCCEEDED) {
    auto m = metrics.find(sweep.spec.metric);
    if (m != metrics.end() && std::isfinite(m->second)) objective = m->second;
  }
  RETURN_IF_ERROR(store_->MarkTrialFinished(t.id, state, metrics, stats, objective, error, t.token, clock_->Now()));
  if (t.state == v1::TRIAL_RUNNING) {
    leased_.erase(t.id);
    --sweep.running;
  }
  SetTrialState(t, state);
  t.objective = objective;
  t.error = error;

  v1::SweepEvent event;
  v1::Trial* trial = event.mutable_trial();
  *trial = EventTrial(t);
  for (const auto& [k, v] : metrics) (*trial->mutable_metrics())[k] = v;
  *trial->mutable_expert_stats() = stats;
  RETURN_IF_ERROR(Emit(sweep, v1::TRIAL_FINISHED, std::move(event)));
  return OnTrialTerminal(sweep, t);
}

Status SweepEngine::OnTrialTerminal(ActiveSweep& sweep, const TrialState& t) {
  auto stage = sweep.open_stages.find(t.stage);
  if (stage != sweep.open_stages.end()) {
    ++stage->second.done;
    if (stage->second.done == stage->second.total && sweep.state == v1::SWEEP_RUNNING) {
      return DecideOpenStage(sweep, t.stage);
    }
  }
  return Status::Ok();
}

Status SweepEngine::DecideOpenStage(ActiveSweep& sweep, int stage) {
  StageProgress& progress = sweep.open_stages.at(stage);
  std::vector<TrialOutcome> outcomes;
  for (int64_t id : progress.trial_ids) {
    const TrialState& t = trials_.at(id);
    outcomes.push_back({t.id, t.point_index, t.seed, t.state, t.objective, t.error, t.point_json});
  }
  StageDecision decision = DecideStage(outcomes, sweep.spec.maximize, sweep.spec.metric, StageLabel(sweep.spec, stage));

  StageRow row{stage, stage == 0 ? "baseline" : sweep.spec.stages[stage - 1].name};
  Json winner_config;
  if (decision.winner >= 0) {
    int point = decision.points[decision.winner].point_index();
    std::map<int, Json> tried;  // Every point so far, by index.
    for (int64_t id : progress.trial_ids) {
      const TrialState& t = trials_.at(id);
      if (t.point_index == point && winner_config.is_null()) winner_config = WithoutSeed(t.config_json);
      if (!tried.count(t.point_index)) {
        Json p;
        tried[t.point_index] = ParseJson(t.point_json, &p).ok() ? p : Json::object();
      }
    }
    // The strategy may want more trials first (a winner on the edge of the grid).
    std::vector<Json> tried_points;
    for (auto& [index, p] : tried) tried_points.push_back(std::move(p));
    std::vector<PlannedTrial> more = MakeStageStrategy(sweep.spec, stage)->More(decision, winner_config, tried_points);
    if (!more.empty()) return ExtendStage(sweep, stage, more);
    row.state = v1::STAGE_SUCCEEDED;
    row.winner_point = point;
    row.winner_config = winner_config.dump();
  } else {
    row.state = v1::STAGE_FAILED;
    row.error = decision.failure;
  }
  RETURN_IF_ERROR(store_->UpdateStage(sweep.id, row, clock_->Now()));
  ForgetStageTrials(sweep, stage);

  SweepRow sweep_row;
  RETURN_IF_ERROR(store_->GetSweep(sweep.id, &sweep_row));
  std::vector<v1::StageResult> results;
  RETURN_IF_ERROR(BuildStages(sweep_row, stage, &results));
  v1::SweepEvent event;
  if (!results.empty()) *event.mutable_stage() = results.front();
  RETURN_IF_ERROR(Emit(sweep, v1::STAGE_DECIDED, std::move(event)));

  if (row.state == v1::STAGE_FAILED) {
    int cancelled = 0, stopping = 0;
    return WindDown(sweep, v1::SWEEP_FAILED, decision.failure, &cancelled, &stopping);
  }
  if (stage > 0) {
    if (stage < static_cast<int>(sweep.spec.stages.size())) return StartStage(sweep, stage + 1, winner_config);
    sweep.spec_stages_done = true;
  }
  return MaybeFinish(sweep);
}

void SweepEngine::ForgetStageTrials(ActiveSweep& sweep, int stage) {
  auto it = sweep.open_stages.find(stage);
  if (it == sweep.open_stages.end()) return;
  for (int64_t id : it->second.trial_ids) {
    auto t = trials_.find(id);
    if (t == trials_.end()) continue;
    if (!t->second.token.empty()) tokens_.erase(t->second.token);
    leased_.erase(id);
    trials_.erase(t);
  }
  sweep.open_stages.erase(it);
}

// ---------------------------------------------------------------------------------------------
// Cancel, failure, finish

Status SweepEngine::Cancel(int64_t sweep_id, v1::CancelSweepResponse* response) {
  auto it = sweeps_.find(sweep_id);
  if (it == sweeps_.end()) {
    SweepRow row;
    RETURN_IF_ERROR(store_->GetSweep(sweep_id, &row));  // NotFound for unknown ids.
    response->set_state(row.state);
    return Status::Ok();
  }
  ActiveSweep& sweep = it->second;
  int cancelled = 0, stopping = 0;
  if (sweep.state == v1::SWEEP_RUNNING) {
    RETURN_IF_ERROR(WindDown(sweep, v1::SWEEP_CANCELLED, "", &cancelled, &stopping));
  } else {
    stopping = sweep.running;
  }
  response->set_trials_cancelled(cancelled);
  response->set_trials_stopping(stopping);
  auto still = sweeps_.find(sweep_id);
  response->set_state(still == sweeps_.end() ? v1::SWEEP_CANCELLED : still->second.state);
  return Status::Ok();
}

Status SweepEngine::WindDown(ActiveSweep& sweep, v1::SweepState final_state, const std::string& error,
                             int* cancelled, int* stopping) {
  SetSweepState(sweep, v1::SWEEP_CANCELLING);
  sweep.final_state = final_state;
  sweep.final_error = error;
  RETURN_IF_ERROR(store_->UpdateSweep(sweep.id, v1::SWEEP_CANCELLING, sweep.current_stage, error, 0));
  std::deque<int64_t> pending;
  pending.swap(sweep.pending);
  for (int64_t id : pending) {
    TrialState& t = trials_.at(id);
    RETURN_IF_ERROR(FinishTrial(sweep, t, v1::TRIAL_CANCELLED, {}, {},
                                final_state == v1::SWEEP_CANCELLED ? "sweep cancelled" : "sweep failed: " + error));
    ++*cancelled;
  }
  for (int64_t id : leased_) {
    TrialState& t = trials_.at(id);
    if (t.sweep_id == sweep.id) {
      t.stop_requested = true;
      ++*stopping;
    }
  }
  return MaybeFinish(sweep);
}

Status SweepEngine::MaybeFinish(ActiveSweep& sweep) {
  if (sweep.state == v1::SWEEP_CANCELLING && sweep.running == 0) {
    return FinishSweep(sweep, sweep.final_state, sweep.final_error);
  }
  if (sweep.state == v1::SWEEP_RUNNING && sweep.spec_stages_done && sweep.open_stages.empty()) {
    return FinishSweep(sweep, v1::SWEEP_SUCCEEDED, "");
  }
  return Status::Ok();
}

Status SweepEngine::FinishSweep(ActiveSweep& sweep, v1::SweepState state, const std::string& error) {
  double now = clock_->Now();
  // Stages that never got decided end with the sweep.
  std::vector<StageRow> stages;
  RETURN_IF_ERROR(store_->ListStages(sweep.id, &stages));
  for (StageRow& row : stages) {
    if (row.state == v1::STAGE_WAITING || row.state == v1::STAGE_RUNNING) {
      row.state = v1::STAGE_CANCELLED;
      RETURN_IF_ERROR(store_->UpdateStage(sweep.id, row, now));
    }
  }
  RETURN_IF_ERROR(store_->UpdateSweep(sweep.id, state, sweep.current_stage, error, now));
  SetSweepState(sweep, state);
  SweepRow row;
  RETURN_IF_ERROR(store_->GetSweep(sweep.id, &row));
  v1::SweepEvent event;
  RETURN_IF_ERROR(BuildSweep(row, event.mutable_sweep()));
  RETURN_IF_ERROR(Emit(sweep, v1::SWEEP_FINISHED, std::move(event)));
  ForgetSweep(sweep.id);
  return Status::Ok();
}

void SweepEngine::SetTrialState(TrialState& trial, v1::TrialState state) {
  --stats_.trials_by_state[trial.state];
  ++stats_.trials_by_state[state];
  trial.state = state;
}

void SweepEngine::SetSweepState(ActiveSweep& sweep, v1::SweepState state) {
  --stats_.sweeps_by_state[sweep.state];
  ++stats_.sweeps_by_state[state];
  sweep.state = state;
}

void SweepEngine::ForgetSweep(int64_t sweep_id) {
  ActiveSweep& sweep = sweeps_.at(sweep_id);
  std::vector<int> stages;
  for (const auto& [stage, progress] : sweep.open_stages) stages.push_back(stage);
  for (int stage : stages) ForgetStageTrials(sweep, stage);
  for (auto it = released_.begin(); it != released_.end();) {
    it = it->second == sweep_id ? released_.erase(it) : std::next(it);
  }
  sweeps_.erase(sweep_id);
}

// ---------------------------------------------------------------------------------------------
// Recovery

Status SweepEngine::Recover() {
  sweeps_.clear();
  trials_.clear();
  tokens_.clear();
  released_.clear();
  leased_.clear();
  events_.clear();
  std::map<v1::TrialState, int64_t> trial_counts;
  std::map<v1::SweepState, int64_t> sweep_counts;
  RETURN_IF_ERROR(store_->CountAllByState(&trial_counts, &sweep_counts));
  stats_.trials_by_state.fill(0);
  stats_.sweeps_by_state.fill(0);
  for (const auto& [state, n] : trial_counts) {
    if (v1::TrialState_IsValid(state)) stats_.trials_by_state[state] = n;
  }
  for (const auto& [state, n] : sweep_counts) {
    if (v1::SweepState_IsValid(state)) stats_.sweeps_by_state[state] = n;
  }

  std::vector<SweepRow> rows;
  RETURN_IF_ERROR(store_->ListActiveSweeps(&rows));
  double now = clock_->Now();
  SpecLimits unlimited;
  unlimited.max_stage_trials = std::numeric_limits<int64_t>::max();  // Accepted once; never refuse it later.
  for (const SweepRow& row : rows) {
    ActiveSweep& sweep = sweeps_[row.id];
    sweep.id = row.id;
    Status s = ParseSweepSpec(row.spec_json, unlimited, &sweep.spec);
    if (!s.ok()) return Status::Internal(fmt::format("sweep {}: stored spec no longer parses: {}", row.id, s.message()));
    sweep.state = row.state;
    sweep.current_stage = row.current_stage;
    sweep.final_state = row.error.empty() ? v1::SWEEP_CANCELLED : v1::SWEEP_FAILED;
    sweep.final_error = row.error;
    RETURN_IF_ERROR(store_->MaxEventSeq(row.id, &sweep.last_seq));

    std::vector<StageRow> stages;
    RETURN_IF_ERROR(store_->ListStages(row.id, &stages));
    for (const StageRow& stage : stages) {
      if (stage.stage > 0 && stage.stage == static_cast<int>(sweep.spec.stages.size()) &&
          stage.state == v1::STAGE_SUCCEEDED) {
        sweep.spec_stages_done = true;
      }
      if (stage.state != v1::STAGE_RUNNING) continue;
      StageProgress& progress = sweep.open_stages[stage.stage];
      TrialFilter filter;
      filter.stage = stage.stage;
      std::vector<TrialRow> trials;
      RETURN_IF_ERROR(store_->ListTrials(row.id, filter, &trials));
      for (TrialRow& tr : trials) {
        TrialState& t = trials_[tr.trial.trial_id()];
        t.id = tr.trial.trial_id();
        t.sweep_id = row.id;
        t.stage = stage.stage;
        t.point_index = tr.trial.point_index();
        t.seed = tr.trial.seed();
        t.state = tr.trial.state();
        t.attempt = tr.trial.attempt();
        t.lost_leases = tr.lost_leases;
        t.token = tr.lease_token;
        t.worker = tr.trial.worker();
        t.objective = tr.objective;
        t.error = tr.trial.error();
        t.point_json = tr.trial.point_json();
        t.config_json = tr.trial.config_json();
        t.prune_reason = tr.prune_reason;
        if (!t.prune_reason.empty() && t.state == v1::TRIAL_RUNNING) t.last_metrics = ToMap(tr.trial.metrics());
        t.needs_gpu = NeedsGpu(sweep.spec.trainer, t.config_json);
        progress.trial_ids.push_back(t.id);
        ++progress.total;
        if (IsTerminal(t.state)) ++progress.done;
        if (!t.token.empty()) tokens_[t.token] = t.id;
        if (t.state == v1::TRIAL_PENDING) sweep.pending.push_back(t.id);
        if (t.state == v1::TRIAL_RUNNING) {
          // Live workers keep reporting on their leases; dead ones' leases expire as usual.
          t.lease_deadline = now + sweep.spec.lease_seconds;
          t.stop_requested = sweep.state == v1::SWEEP_CANCELLING || !t.prune_reason.empty();
          leased_.insert(t.id);
          ++sweep.running;
        }
      }
      // What the pruner compares against: every report of its metric so far (the latest per step).
      if (const PrunerSpec* pruner = sweep.spec.PrunerFor(stage.stage)) {
        std::vector<StepValue> values;
        RETURN_IF_ERROR(store_->ListStageReports(row.id, stage.stage, pruner->metric, &values));
        for (const StepValue& v : values) progress.values_by_step[v.step][v.trial_id] = v.value;
      }
    }
  }
  // Stages whose last trial finished right before a crash are decided now.
  std::vector<int64_t> ids;
  for (const auto& [id, sweep] : sweeps_) ids.push_back(id);
  for (int64_t id : ids) {
    auto it = sweeps_.find(id);
    if (it == sweeps_.end()) continue;
    std::vector<int> complete;
    for (const auto& [stage, progress] : it->second.open_stages) {
      if (progress.done == progress.total) complete.push_back(stage);
    }
    for (int stage : complete) {
      if (sweeps_.count(id) && sweeps_.at(id).state == v1::SWEEP_RUNNING) RETURN_IF_ERROR(DecideOpenStage(sweeps_.at(id), stage));
    }
    if (sweeps_.count(id)) RETURN_IF_ERROR(MaybeFinish(sweeps_.at(id)));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Reads

Status SweepEngine::BuildSweep(const SweepRow& row, v1::Sweep* sweep) {
  sweep->set_sweep_id(row.id);
  sweep->set_name(row.name);
  sweep->set_state(row.state);
  sweep->set_spec_json(row.spec_json);
  sweep->set_current_stage(row.current_stage);
  sweep->set_error(row.error);
  sweep->set_created_at(row.created_at);
  sweep->set_finished_at(row.finished_at);
  Json spec = Json::parse(row.spec_json, nullptr, false);
  if (spec.is_object()) {
    sweep->set_objective_metric(spec["objective"].value("metric", ""));
    sweep->set_objective_goal(spec["objective"].value("goal", ""));
    sweep->set_num_stages(static_cast<int>(spec["stages"].size()));
    sweep->set_has_baseline(spec.contains("baseline"));
  }
  std::map<v1::TrialState, int> counts;
  RETURN_IF_ERROR(store_->CountTrials(row.id, &counts));
  int total = 0;
  for (const auto& [state, n] : counts) total += n;
  sweep->set_trials_total(total);
  sweep->set_trials_done(counts[v1::TRIAL_SUCCEEDED] + counts[v1::TRIAL_FAILED] + counts[v1::TRIAL_CANCELLED] +
                         counts[v1::TRIAL_PRUNED]);
  sweep->set_trials_pruned(counts[v1::TRIAL_PRUNED]);
  sweep->set_trials_failed(counts[v1::TRIAL_FAILED]);
  sweep->set_trials_running(counts[v1::TRIAL_RUNNING]);
  return Status::Ok();
}

Status SweepEngine::BuildStages(const SweepRow& row, std::optional<int> only, std::vector<v1::StageResult>* out) {
  SweepSpec spec;
  SpecLimits unlimited;
  unlimited.max_stage_trials = std::numeric_limits<int64_t>::max();
  RETURN_IF_ERROR(ParseSweepSpec(row.spec_json, unlimited, &spec));
  std::vector<StageRow> stages;
  RETURN_IF_ERROR(store_->ListStages(row.id, &stages));
  std::optional<v1::PointScore> baseline;
  for (const StageRow& stage : stages) {
    bool wanted = !only || *only == stage.stage;
    bool need_baseline = stage.stage == 0 && stage.state == v1::STAGE_SUCCEEDED;
    if (!wanted && !need_baseline) continue;
    TrialFilter filter;
    filter.stage = stage.stage;
    std::vector<TrialRow> trials;
    RETURN_IF_ERROR(store_->ListTrials(row.id, filter, &trials));
    std::vector<TrialOutcome> outcomes;
    v1::StageResult result;
    for (const TrialRow& t : trials) {
      outcomes.push_back({t.trial.trial_id(), t.trial.point_index(), t.trial.seed(), t.trial.state(), t.objective,
                          t.trial.error(), t.trial.point_json()});
      if (IsTerminal(t.trial.state())) result.set_trials_done(result.trials_done() + 1);
      if (t.trial.state() == v1::TRIAL_FAILED) result.set_trials_failed(result.trials_failed() + 1);
      if (t.trial.state() == v1::TRIAL_PRUNED) result.set_trials_pruned(result.trials_pruned() + 1);
    }
    StageDecision decision = DecideStage(outcomes, spec.maximize, spec.metric, StageLabel(spec, stage.stage));
    if (stage.stage == 0 && stage.state == v1::STAGE_SUCCEEDED && decision.winner >= 0) {
      baseline = decision.points[decision.winner];
    }
    if (!wanted) continue;
    result.set_stage(stage.stage);
    result.set_name(stage.name);
    result.set_state(stage.state);
    result.set_trials_total(static_cast<int>(trials.size()));
    const size_t grid_points = stage.stage > 0 && stage.stage <= static_cast<int>(spec.stages.size())
                                   ? spec.stages[stage.stage - 1].NumPoints()
                                   : 1;
    for (const v1::PointScore& p : decision.points) {
      if (static_cast<size_t>(p.point_index()) >= grid_points) result.add_extended_points_json(p.point_json());
      *result.add_points() = p;
      if (stage.state == v1::STAGE_SUCCEEDED && p.point_index() == stage.winner_point) *result.mutable_winner() = p;
    }
    if (stage.state == v1::STAGE_SUCCEEDED) {
      result.set_winner_config_json(stage.winner_config);
      // The runner-up is the best point other than the stored winner (the same as the decision's
      // unless the points changed since, e.g. more seeds finished).
      const v1::PointScore* runner_up = nullptr;
      for (const v1::PointScore& p : decision.points) {
        if (!CanWin(p) || p.point_index() == stage.winner_point) continue;
        if (runner_up == nullptr || (spec.maximize ? p.mean() > runner_up->mean() : p.mean() < runner_up->mean())) {
          runner_up = &p;
        }
      }
      if (runner_up != nullptr) {
        *result.mutable_runner_up() = *runner_up;
        if (auto p = WelchTwoSidedP(result.winner(), *runner_up)) result.set_p_vs_runner_up(*p);
      }
    }
    result.set_error(stage.error);
    out->push_back(std::move(result));
  }
  if (baseline) {
    for (v1::StageResult& r : *out) {
      r.set_has_baseline(true);
      r.set_baseline_mean(baseline->mean());
      if (r.state() != v1::STAGE_SUCCEEDED || r.stage() == 0) continue;
      const double delta = r.winner().mean() - baseline->mean();
      r.set_delta_to_baseline(delta);
      if (auto p = WelchTwoSidedP(r.winner(), *baseline)) r.set_p_vs_baseline(*p);
      if (spec.success_min_delta) {
        r.set_has_success_criterion(true);
        r.set_min_delta(*spec.success_min_delta);
        r.set_meets_success((spec.maximize ? delta : -delta) >= *spec.success_min_delta);
      }
    }
  }
  return Status::Ok();
}

Status SweepEngine::GetSweep(int64_t sweep_id, v1::GetSweepResponse* response) {
  SweepRow row;
  RETURN_IF_ERROR(store_->GetSweep(sweep_id, &row));
  RETURN_IF_ERROR(BuildSweep(row, response->mutable_sweep()));
  std::vector<v1::StageResult> stages;
  RETURN_IF_ERROR(BuildStages(row, std::nullopt, &stages));
  for (v1::StageResult& s : stages) *response->add_stages() = std::move(s);
  return Status::Ok();
}

Status SweepEngine::ListSweeps(const v1::ListSweepsRequest& request, v1::ListSweepsResponse* response) {
  int64_t before = 0;
  if (!ParsePageToken(request.page_token(), &before)) return Status::InvalidArgument("page_token: not one of ours");
  int limit = request.limit() <= 0 ? kDefaultListPage : std::min(request.limit(), kMaxListPage);
  std::vector<SweepRow> rows;
  RETURN_IF_ERROR(store_->ListSweeps(limit + 1, before, &rows));
  size_t bytes = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (static_cast<int>(i) == limit || (i > 0 && bytes > kMaxListPageBytes)) {
      response->set_next_page_token(std::to_string(rows[i - 1].id));
      break;
    }
    v1::Sweep* sweep = response->add_sweeps();
    RETURN_IF_ERROR(BuildSweep(rows[i], sweep));
    sweep->clear_spec_json();  // Up to 1 MiB each; GetSweep has it.
    bytes += sweep->ByteSizeLong();
  }
  return Status::Ok();
}

Status SweepEngine::ListTrials(const v1::ListTrialsRequest& request, v1::ListTrialsResponse* response) {
  SweepRow row;
  RETURN_IF_ERROR(store_->GetSweep(request.sweep_id(), &row));
  TrialFilter filter;
  if (request.has_stage()) filter.stage = request.stage();
  filter.state = request.state();
  if (!ParsePageToken(request.page_token(), &filter.after_id)) {
    return Status::InvalidArgument("page_token: not one of ours");
  }
  // Without a limit, a page is what fits in kMaxListPageBytes; rows are read a chunk at a time.
  int64_t limit = request.limit() > 0 ? request.limit() : std::numeric_limits<int64_t>::max();
  size_t bytes = 0;
  int64_t last_id = filter.after_id;
  for (;;) {
    std::vector<TrialRow> rows;
    filter.limit = std::min<int64_t>(limit - response->trials_size(), kMaxListPage) + 1;
    RETURN_IF_ERROR(store_->ListTrials(request.sweep_id(), filter, &rows));
    for (size_t i = 0; i < rows.size(); ++i) {
      if (response->trials_size() == limit || (response->trials_size() > 0 && bytes > kMaxListPageBytes)) {
        response->set_next_page_token(std::to_string(last_id));
        return Status::Ok();
      }
      if (static_cast<int64_t>(i) == filter.limit - 1) break;  // The look-ahead row: read again next chunk.
      bytes += rows[i].trial.ByteSizeLong();
      last_id = rows[i].trial.trial_id();
      *response->add_trials() = std::move(rows[i].trial);
    }
    if (static_cast<int64_t>(rows.size()) < filter.limit) return Status::Ok();  // No more.
    filter.after_id = last_id;
  }
}

Status SweepEngine::GetBestConfig(const v1::GetBestConfigRequest& request, v1::GetBestConfigResponse* response) {
  SweepRow row;
  RETURN_IF_ERROR(store_->GetSweep(request.sweep_id(), &row));
  std::vector<v1::StageResult> stages;
  RETURN_IF_ERROR(BuildStages(row, std::nullopt, &stages));
  Json spec;
  if (!ParseJson(row.spec_json, &spec).ok() || !spec.is_object()) {
    return Status::Internal(fmt::format("sweep {}: stored spec does not parse", request.sweep_id()));
  }
  if (request.has_stage()) {
    int max_stage = static_cast<int>(spec["stages"].size());
    int min_stage = spec.contains("baseline") ? 0 : 1;
    if (request.stage() < min_stage || request.stage() > max_stage) {
      return Status::InvalidArgument(fmt::format("stage: {} is not a stage of sweep {} (stages are {}..{})",
                                                 request.stage(), request.sweep_id(), min_stage, max_stage));
    }
  }
  std::string best = spec["base"].dump();
  for (const v1::StageResult& s : stages) {
    if (s.stage() > 0 && s.state() == v1::STAGE_SUCCEEDED) best = s.winner_config_json();
    if (!request.has_stage() || request.stage() == s.stage()) *response->add_stages() = s;
  }
  response->set_best_config_json(best);
  return Status::Ok();
}

Status SweepEngine::SweepFinished(int64_t sweep_id, bool* finished) {
  if (sweeps_.count(sweep_id)) {
    *finished = false;
    return Status::Ok();
  }
  SweepRow row;
  RETURN_IF_ERROR(store_->GetSweep(sweep_id, &row));
  *finished = row.state == v1::SWEEP_SUCCEEDED || row.state == v1::SWEEP_FAILED || row.state == v1::SWEEP_CANCELLED;
  return Status::Ok();
}

}  // namespace moesweep
