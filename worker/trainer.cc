#include "worker/trainer.h"

#include <malloc.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>

#include "worker/compute.h"
#include "worker/datasets.h"
#include "worker/device.h"
#include "worker/metrics.h"
#include "worker/models.h"
#include "worker/optimizer.h"

namespace moesweep::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// Per-step schedule: linear warm-up over warmup steps, then cosine from lr down to 0.
double ScheduledLr(double base, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  return base * 0.5 * (1.0 + std::cos(M_PI * progress));
}

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
  double top5 = 0;
  RetrievalMetrics retrieval;
  std::vector<ExpertLayerSummary> stats;
};

// Adds one batch's kept slots to the (class, expert) counts: each token takes its sample's label
// (a sequence model routes every position of a sample).
void AccumulateClassRouting(const Routing& r, const at::Tensor& labels, ClassRoutingAccumulator* acc) {
  const int64_t tokens = r.experts.size(0), k = r.experts.size(1), samples = labels.size(0);
  if (samples == 0 || tokens % samples != 0) return;
  at::Tensor token_labels = labels.repeat_interleave(tokens / samples).unsqueeze(1).expand({tokens, k});
  at::Tensor cells = (token_labels * acc->num_experts + r.experts).masked_select(r.keep);
  at::Tensor counts =
      at::bincount(cells, {}, acc->num_classes * acc->num_experts).to(at::kCPU, at::kDouble).contiguous();
  const double* c = counts.data_ptr<double>();
  for (size_t i = 0; i < acc->counts.size(); ++i) acc->counts[i] += c[i];
}

// Validation pass in inference mode, with retrieval metrics (mAP, so that a pruner can judge a
// trial by the usual objective every epoch); `full` adds top-5 and which classes
// each expert receives.
EvalResult Evaluate(ModelImpl& model, const Dataset& data, bool full) {
  c10::InferenceMode guard;
  model.eval();
  std::vector<ClassRoutingAccumulator> class_routing(model.moe_layers().size());
  for (size_t i = 0; i < model.moe_layers().size(); ++i) {
    MoELayer layer = model.moe_layers()[i];
    layer->stats().Reset(layer->options().use_moe ? layer->options().num_experts : 0);
    layer->set_collect_stats(layer->options().use_moe);
    if (full && layer->options().use_moe) class_routing[i].Reset(data.num_classes, layer->options().num_experts);
  }
  const int64_t n = data.val_x.size(0), batch = 1024;
  double loss_sum = 0;
  int64_t correct = 0, correct5 = 0;
  std::vector<at::Tensor> features;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t b = std::min(batch, n - start);
    at::Tensor x = data.val_x.narrow(0, start, b), y = data.val_y.narrow(0, start, b);
    ModelOutput out = model.forward(x);
    for (size_t i = 0; i < class_routing.size(); ++i) {
      if (!class_routing[i].counts.empty()) {
        AccumulateClassRouting(model.moe_layers()[i]->last_routing(), y, &class_routing[i]);
      }
    }
    loss_sum += at::cross_entropy_loss(out.logits, y, {}, at::Reduction::Sum).item<double>();
    correct += CountTopK(out.logits, y, 1);
    features.push_back(out.features);
    if (full) correct5 += CountTopK(out.logits, y, 5);
  }
  EvalResult r;
  r.loss = loss_sum / static_cast<double>(n);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  r.retrieval = ComputeRetrieval(at::cat(features), data.val_y);
  if (full) r.top5 = static_cast<double>(correct5) / static_cast<double>(n);
  int index = 0;
  for (MoELayer layer : model.moe_layers()) {
    if (layer->options().use_moe) {
      r.stats.push_back(layer->stats().Summarize(index));
      const ClassRoutingAccumulator& acc = class_routing[index];
      if (!acc.counts.empty()) {
        r.stats.back().num_classes = static_cast<int>(acc.num_classes);
        r.stats.back().class_routing = acc.Rows();
      }
    }
    layer->set_collect_stats(false);
    ++index;
  }
  return r;
}

Status CheckData(const Dataset& d) {
  if (d.train_x.size(0) == 0) return Status::InvalidArgument("bad data: no training samples");
  if (d.val_x.size(0) == 0) return Status::InvalidArgument("bad data: no validation samples");
  if (d.train_x.size(0) != d.train_y.size(0) || d.val_x.size(0) != d.val_y.size(0)) {
    return Status::InvalidArgument("bad data: feature and label counts differ");
  }
  if (!at::isfinite(d.train_x).all().item<bool>() || !at::isfinite(d.val_x).all().item<bool>()) {
    return Status::InvalidArgument("bad data: non-finite feature values");
  }
  for (const at::Tensor* y : {&d.train_y, &d.val_y}) {
    if (y->min().item<int64_t>() < 0 || y->max().item<int64_t>() >= d.num_classes) {
      return Status::InvalidArgument(fmt::format("bad data: a label is outside [0, {})", d.num_classes));
    }
  }
  return Status::Ok();
}

// LibTorch's CPU allocator is plain malloc, and a training step frees and re-allocates the same
// few-MB gradient and activation buffers. With glibc's defaults those come from fresh mmaps or a
// heap that is trimmed after each step, so every step page-faults them in again (~15% of a step).
// Keep freed memory in the heap instead.
void TuneMallocOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_TOP_PAD, 16 << 20);
  });
}

int CudaDeviceCount() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

// The trial's own copy of the data on a GPU; the shared cache keeps the CPU tensors.
Dataset OnDevice(const Dataset& d, at::Device device) {
  Dataset out = d;
  for (at::Tensor* t : {&out.train_x, &out.train_y, &out.val_x, &out.val_y}) *t = t->to(device);
  return out;
}

Status RunTrialImpl(const TrialConfig& c, const TrainOptions& options, const TrialHooks& hooks, TrialResult* result) {
  TuneMallocOnce();
  at::set_num_threads(std::max(1, options.threads));
  DevicePlacement placement;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (Status s = PlaceTrial(c.device, options.gpus, options.gpus_managed, CudaDeviceCount(), visible ? visible : "",
                            &placement);
      !s.ok()) {
    return s;
  }
  if (!placement.note.empty()) std::fprintf(stderr, "moesweep-worker: %s\n", placement.note.c_str());
  const at::Device device = placement.cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(placement.index))
                                           : at::Device(at::kCPU);
  Compute compute;
  compute.bf16 = c.precision == "bf16";
  // The CPU kernels are float32 and CPU-only.
  compute.generic = options.generic || placement.cuda || compute.bf16;
  const double device_cuda = placement.cuda ? 1.0 : 0.0;
  std::shared_ptr<const Dataset> data;
  if (options.cache != nullptr) {
    Status s = options.cache->Get(c, &data);
    if (!s.ok()) return s;
  } else {
    auto owned = std::make_shared<Dataset>();
    Status s = LoadDataset(c, owned.get());
    if (!s.ok()) return s;
    data = owned;
  }
  Status s = CheckData(*data);
  if (!s.ok()) return s;
  if (placement.cuda) data = std::make_shared<const Dataset>(OnDevice(*data, device));

  InputShape shape;
  shape.features = data->train_x.size(1);
  shape.num_classes = data->num_classes;
  shape.channels = data->channels;
  shape.height = data->height;
  shape.width = data->width;
  TrialRng rng(c.seed);
  std::shared_ptr<ModelImpl> model;
  s = BuildModel(c, shape, compute, &rng, &model);
  if (!s.ok()) return s;
  if (placement.cuda) model->to(device);  // Initialised on the CPU: the same weights on every device.

  std::vector<at::Tensor> params = model->parameters();
  int64_t params_total = 0, params_inactive = 0;
  for (const at::Tensor& p : params) params_total += p.numel();
  for (const MoELayer& layer : model->moe_layers()) params_inactive += layer->inactive_params();
  std::unique_ptr<AdamW> optimizer =
      MakeAdamW(params, AdamWOptions{c.lr, 0.9, 0.999, 1e-8, c.weight_decay}, compute.generic);

  const int64_t n_train = data->train_x.size(0);
  const int64_t batch = std::min(c.batch_size, n_train);
  const int64_t steps_per_epoch = (n_train + batch - 1) / batch;
  const int64_t total_steps = c.epochs * steps_per_epoch;
  const int64_t warmup_steps = std::min(total_steps, c.warmup_epochs * steps_per_epoch);
  const bool mixup = c.mixup_alpha > 0 && c.mixup_prob > 0;
  std::gamma_distribution<double> gamma(mixup ? c.mixup_alpha : 1.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);

  struct EpochRecord {
    double train_loss, val_loss, val_accuracy, lr;
  };
  std::vector<EpochRecord> history;
  std::vector<at::Tensor> best_state;
  int best_epoch = 0;
  double best_accuracy = -1;
  int64_t step = 0;
  double lr_now = 0, train_seconds_only = 0;
  int64_t samples_seen = 0;
  const auto start = Clock::now();

  for (int epoch = 1; epoch <= c.epochs; ++epoch) {
    model->train();
    const auto epoch_start = Clock::now();
    at::Tensor order = at::randperm(n_train, rng.generator(), at::kLong).to(device);
    double loss_sum = 0;
    int64_t seen = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      if (hooks.between_batches && !hooks.between_batches()) {
        result->stopped = true;
        break;
      }
      const int64_t offset = b * batch, size = std::min(batch, n_train - offset);
      at::Tensor idx = order.narrow(0, offset, size);
      at::Tensor x = data->train_x.index_select(0, idx);
      at::Tensor y = data->train_y.index_select(0, idx);
      double lam = 1.0;
      at::Tensor y2;
      if (mixup && uniform(rng.engine()) < c.mixup_prob) {
        const double g1 = gamma(rng.engine()), g2 = gamma(rng.engine());
        lam = g1 / (g1 + g2);
        at::Tensor partner = at::randperm(size, rng.generator(), at::kLong).to(device);
        x = x * lam + x.index_select(0, partner) * (1.0 - lam);
        y2 = y.index_select(0, partner);
      }
      ModelOutput out = model->forward(x);
      at::Tensor loss = at::cross_entropy_loss(out.logits, y, {}, at::Reduction::Mean, -100, c.label_smoothing);
      if (y2.defined()) {
        loss = loss * lam +
               at::cross_entropy_loss(out.logits, y2, {}, at::Reduction::Mean, -100, c.label_smoothing) * (1.0 - lam);
      }
      at::Tensor aux = AuxLoss(*model, c);
      if (aux.defined()) loss = loss + aux;
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        return Status::InvalidArgument(fmt::format("training loss is {} at epoch {}, batch {}",
                                                   std::isnan(loss_value) ? "NaN" : "infinite", epoch, b + 1));
      }
      loss.backward();  // Accumulates into gradients that the last Step() zeroed.
      const double scale = c.grad_clip > 0 ? ClipScale(optimizer->GradNorm(), c.grad_clip) : 1.0;
      lr_now = ScheduledLr(c.lr, step, warmup_steps, total_steps);
      optimizer->Step(lr_now, scale);
      ++step;
      loss_sum += loss_value * static_cast<double>(size);
      seen += size;
    }
    if (result->stopped) break;
    const double epoch_seconds = Seconds(epoch_start);
    train_seconds_only += epoch_seconds;
    samples_seen += seen;

    EvalResult eval = Evaluate(*model, *data, /*full=*/false);
    history.push_back({loss_sum / static_cast<double>(seen), eval.loss, eval.accuracy, lr_now});
    result->epochs_completed = epoch;
    Metrics m = {{"epoch", epoch},
                 {"train_loss", history.back().train_loss},
                 {"val_loss", eval.loss},
                 {"val_accuracy", eval.accuracy},
                 {"mAP", eval.retrieval.map},
                 {"rank1", eval.retrieval.rank1},
                 {"rank5", eval.retrieval.rank5},
                 {"lr", lr_now},
                 {"samples_per_sec", static_cast<double>(seen) / std::max(epoch_seconds, 1e-9)},
                 {"device_cuda", device_cuda}};
    result->metrics = m;
    result->expert_stats = eval.stats;
    if (eval.accuracy > best_accuracy) {
      best_accuracy = eval.accuracy;
      best_epoch = epoch;
      if (c.early_stopping_patience > 0) {
        best_state.clear();
        for (const at::Tensor& p : params) best_state.push_back(p.detach().clone());
      }
    }
    if (hooks.on_epoch && !hooks.on_epoch(epoch, m, eval.stats)) {
      result->stopped = true;
      break;
    }
    if (c.early_stopping_patience > 0 && epoch - best_epoch >= c.early_stopping_patience) break;
  }
  const double train_seconds = Seconds(start);
  if (result->stopped) return Status::Ok();

  // Early stopping reports the best epoch's model; otherwise the final one.
  int reported_epoch = result->epochs_completed;
  if (c.early_stopping_patience > 0 && !best_state.empty()) {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(best_state[i]);
    reported_epoch = best_epoch;
  }
  EvalResult final_eval = Evaluate(*model, *data, /*full=*/true);
  const EpochRecord& rec = history.at(reported_epoch - 1);
  result->metrics = {{"epoch", result->epochs_completed},
                     {"train_loss", rec.train_loss},
                     {"val_loss", final_eval.loss},
                     {"val_accuracy", final_eval.accuracy},
                     {"val_top5_accuracy", final_eval.top5},
                     {"mAP", final_eval.retrieval.map},
                     {"rank1", final_eval.retrieval.rank1},
                     {"rank5", final_eval.retrieval.rank5},
                     {"lr", rec.lr},
                     {"samples_per_sec", static_cast<double>(samples_seen) / std::max(train_seconds_only, 1e-9)},
                     {"params_total", static_cast<double>(params_total)},
                     {"params_active", static_cast<double>(params_total - params_inactive)},
                     {"train_seconds", train_seconds},
                     {"best_epoch", best_epoch},
                     {"device_cuda", device_cuda}};
  result->expert_stats = final_eval.stats;
  return Status::Ok();
}

}  // namespace

Status RunTrial(const TrialConfig& config, const TrainOptions& options, const TrialHooks& hooks,
                TrialResult* result) {
  *result = TrialResult{};
  try {
    return RunTrialImpl(config, options, hooks, result);
  } catch (const c10::Error& e) {
    return Status::Internal(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(e.what());
  }
}

}  // namespace moesweep::worker
