// moesweep-worker-steptime: the worker's training step, timed phase by phase.
//
//   moesweep-worker-steptime CONFIG.json [--threads T] [--epochs N]
//
// Runs the training loop of worker/trainer.cc (RunTrialImpl) with the worker's own model, losses
// and optimizer (it links moesweep_worker_lib), and times each phase of every step:
//   gather        the batch's index_select
//   forward       model forward, cross-entropy, the auxiliary losses (AuxLoss of trainer.cc),
//                 loss.item()
//   backward      loss.backward()
//   grad_norm     FusedAdamW::GradNorm (only with grad_clip > 0)
//   adamw         FusedAdamW::Step (also parks the gradients for the next backward)
// The arithmetic is the worker's: the losses match `moesweep-worker run` to every printed digit.
// The parameter-diversity loss is fused into the expert FFN's forward and backward
// (moe_layer.cc), so its cost shows up in forward and backward; run a copy of the config with
// "diversity_loss_weight": 0 to see it by difference (bench/run_worker_bench.sh does). Evaluation
// is skipped: this measures the training phase only. Prints one JSON object per epoch on stdout.
// Mixup and early stopping are not supported (the benchmark does not use them).
//
//   moesweep-worker-steptime CONFIG.json --gemm-probe [--threads T]
//
// instead times only the expert GEMMs of one step (expert_layers 1: forward x W1, h W2; backward
// dW2, dh, dW1, dx), with the step's batch_size * top_k rows split evenly over num_experts, using
// the worker's Gemm on stacked [E, in, out] weights like GroupedFfn (the weight gradients with
// beta 0: GroupedFfn overwrites the reclaimed gradient buffers, or, with the diversity loss, a
// scratch it then adds to the gradient with the loss's term), plus the two weight-gradient
// products with beta 1, as they ran before that, for comparison (not part of the total). Prints
// one JSON object.
#include <malloc.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "worker/datasets.h"
#include "worker/gemm.h"
#include "worker/models.h"
#include "worker/optimizer.h"
#include "worker/rng.h"
#include "worker/trial_config.h"

namespace mw = moesweep::worker;
using Clock = std::chrono::steady_clock;

namespace {

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double ScheduledLr(double base, int64_t step, int64_t warmup, int64_t total) {  // as trainer.cc
  if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  return base * 0.5 * (1.0 + std::cos(M_PI * progress));
}

// The expert GEMMs of GroupedFfn for one step with rows split evenly over the experts.
void GemmProbe(const mw::TrialConfig& c) {
  const int64_t e = c.num_experts, d = c.d_model, h = c.expert_hidden_dim;
  const int64_t slots = c.batch_size * c.top_k;
  std::vector<int64_t> counts(e, slots / e);
  for (int64_t i = 0; i < slots % e; ++i) ++counts[i];
  at::Tensor w1 = at::randn({e, d, h}) * 0.05, w2 = at::randn({e, h, d}) * 0.05;
  at::Tensor g1 = at::zeros_like(w1), g2 = at::zeros_like(w2);
  at::Tensor x = at::randn({slots, d}), hid = at::zeros({slots, h}), y = at::zeros({slots, d});
  at::Tensor dy = at::randn({slots, d}), dh = at::empty({slots, h}), dx = at::empty({slots, d});
  double t[8] = {};
  const int reps = 200;
  for (int r = 0; r < reps + 20; ++r) {
    double* acc = r < 20 ? nullptr : t;  // 20 warm-up steps
    auto time = [&](int i, auto&& fn) {
      auto t0 = Clock::now();
      int64_t off = 0;
      for (int64_t j = 0; j < e; ++j) {
        if (counts[j] > 0) fn(j, off, counts[j]);
        off += counts[j];
      }
      if (acc) acc[i] += Since(t0);
    };
    time(0, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(x.narrow(0, o, n), false, w1[j], false, 1.0f, hid.narrow(0, o, n)); });
    time(1, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(hid.narrow(0, o, n), false, w2[j], false, 1.0f, y.narrow(0, o, n)); });
    time(2, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(hid.narrow(0, o, n), true, dy.narrow(0, o, n), false, 0.0f, g2[j]); });
    time(3, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(dy.narrow(0, o, n), false, w2[j], true, 0.0f, dh.narrow(0, o, n)); });
    time(4, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(x.narrow(0, o, n), true, dh.narrow(0, o, n), false, 0.0f, g1[j]); });
    time(5, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(dh.narrow(0, o, n), false, w1[j], true, 0.0f, dx.narrow(0, o, n)); });
    // The same weight-gradient products with beta 1 (accumulate into the gradient), for
    // comparison: what they cost when the gradient was zeroed by the optimizer and accumulated into.
    time(6, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(hid.narrow(0, o, n), true, dy.narrow(0, o, n), false, 1.0f, g2[j]); });
    time(7, [&](int64_t j, int64_t o, int64_t n) { mw::Gemm(x.narrow(0, o, n), true, dh.narrow(0, o, n), false, 1.0f, g1[j]); });
    if (r % 8 == 7) {  // keeps the accumulated values bounded
      g1.zero_();
      g2.zero_();
      hid.zero_();
      y.zero_();
    }
  }
  const char* names[] = {"fwd_xW1", "fwd_hW2", "bwd_dW2", "bwd_dh", "bwd_dW1", "bwd_dx", "bwd_dW2_beta1", "bwd_dW1_beta1"};
  double total = 0;
  std::string line = fmt::format("{{\"num_experts\": {}, \"rows_per_expert\": {}, \"onednn\": {}", e, slots / e,
                                 mw::GemmUsesOneDnn());
  for (int i = 0; i < 8; ++i) {
    line += fmt::format(", \"{}_ms\": {:.4f}", names[i], 1e3 * t[i] / reps);
    if (i < 6) total += t[i];
  }
  std::cout << line << fmt::format(", \"total_ms\": {:.4f}}}", 1e3 * total / reps) << std::endl;
}

int Fail(const std::string& message) {
  std::cerr << "moesweep-worker-steptime: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_file;
  int threads = 1, epochs_override = 0;
  bool gemm_probe = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--epochs" && i + 1 < argc) {
      epochs_override = std::atoi(argv[++i]);
    } else if (a == "--gemm-probe") {
      gemm_probe = true;
    } else if (a.rfind("--", 0) != 0 && config_file.empty()) {
      config_file = a;
    } else {
      return Fail("usage: moesweep-worker-steptime CONFIG.json [--threads T] [--epochs N] [--gemm-probe]");
    }
  }
  mw::TrialConfig c;
  moesweep::Status s = mw::LoadTrialConfigFile(config_file, &c);
  if (!s.ok()) return Fail(s.message());
  if (epochs_override > 0) c.epochs = epochs_override;
  if ((c.mixup_alpha > 0 && c.mixup_prob > 0) || c.early_stopping_patience > 0) {
    return Fail("mixup and early stopping are not supported");
  }
  // Same process setup as worker/trainer.cc (TuneMallocOnce, set_num_threads).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 16 << 20);
  at::set_num_threads(std::max(1, threads));
  if (gemm_probe) {
    GemmProbe(c);
    return 0;
  }

  mw::Dataset data;
  s = mw::LoadDataset(c, &data);
  if (!s.ok()) return Fail(s.message());
  mw::InputShape shape;
  shape.features = data.train_x.size(1);
  shape.num_classes = data.num_classes;
  shape.channels = data.channels;
  shape.height = data.height;
  shape.width = data.width;

  mw::TrialRng rng(c.seed);
  std::shared_ptr<mw::ModelImpl> model;
  s = mw::BuildModel(c, shape, mw::Compute{}, &rng, &model);  // The CPU kernels: what this tool times.
  if (!s.ok()) return Fail(s.message());
  std::vector<at::Tensor> params = model->parameters();
  mw::FusedAdamW optimizer(params, mw::AdamWOptions{c.lr, 0.9, 0.999, 1e-8, c.weight_decay});

  const int64_t n_train = data.train_x.size(0);
  const int64_t batch = std::min(c.batch_size, n_train);
  const int64_t steps_per_epoch = (n_train + batch - 1) / batch;
  const int64_t total_steps = c.epochs * steps_per_epoch;
  const int64_t warmup_steps = std::min(total_steps, c.warmup_epochs * steps_per_epoch);
  const char* names[] = {"gather", "forward", "backward", "grad_norm", "adamw"};
  constexpr int kPhases = 5;
  int64_t step = 0;
  for (int epoch = 1; epoch <= c.epochs; ++epoch) {
    model->train();
    double t[kPhases] = {};
    double loss_sum = 0;
    const auto epoch_start = Clock::now();
    at::Tensor order = at::randperm(n_train, rng.generator(), at::kLong);
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      auto t0 = Clock::now();
      const int64_t offset = b * batch, size = std::min(batch, n_train - offset);
      at::Tensor idx = order.narrow(0, offset, size);
      at::Tensor x = data.train_x.index_select(0, idx);
      at::Tensor y = data.train_y.index_select(0, idx);
      t[0] += Since(t0);

      t0 = Clock::now();
      mw::ModelOutput out = model->forward(x);
      at::Tensor loss = at::cross_entropy_loss(out.logits, y, {}, at::Reduction::Mean, -100, c.label_smoothing);
      at::Tensor aux = mw::AuxLoss(*model, c);  // As the trainer adds it.
      if (aux.defined()) loss = loss + aux;
      const double loss_value = loss.item<double>();
      t[1] += Since(t0);
      if (!std::isfinite(loss_value)) return Fail(fmt::format("training loss is not finite at epoch {}", epoch));

      t0 = Clock::now();
      loss.backward();
      t[2] += Since(t0);

      t0 = Clock::now();
      const double scale = c.grad_clip > 0 ? mw::ClipScale(optimizer.GradNorm(), c.grad_clip) : 1.0;
      t[3] += Since(t0);
      t0 = Clock::now();
      optimizer.Step(ScheduledLr(c.lr, step, warmup_steps, total_steps), scale);
      t[4] += Since(t0);
      ++step;
      loss_sum += loss_value * static_cast<double>(size);
    }
    const double seconds = Since(epoch_start);
    std::string line = fmt::format("{{\"epoch\": {}, \"train_loss\": {:.6g}, \"samples_per_sec\": {:.1f}, \"seconds\": {:.4f}",
                                   epoch, loss_sum / static_cast<double>(n_train),
                                   static_cast<double>(n_train) / seconds, seconds);
    for (int i = 0; i < kPhases; ++i) line += fmt::format(", \"{}\": {:.4f}", names[i], t[i]);
    std::cout << line << "}" << std::endl;
  }
  return 0;
}
