// TrialConfig: the typed form of one trial's JSON config. It is read only through the shared
// schema (common/trial_schema.h), so the worker understands exactly the keys the coordinator
// accepts; cross-key rules that the per-key schema cannot express are checked here.
#ifndef MOESWEEP_WORKER_TRIAL_CONFIG_H_
#define MOESWEEP_WORKER_TRIAL_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "common/json.h"
#include "common/status.h"

namespace moesweep::worker {

struct TrialConfig {
  // Model
  std::string model;
  bool use_moe = true;
  int64_t d_model = 0;
  int64_t num_blocks = 0;
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t expert_hidden_dim = 0;
  int64_t expert_layers = 0;
  int64_t gate_layers = 0;
  double temperature = 1;
  double expert_dropout = 0;
  double gate_dropout = 0;
  double activation_threshold = 0;
  double residual_weight = 1;
  double balance_loss_weight = 0;
  double sparsity_loss_weight = 0;
  double diversity_loss_weight = 0;
  double output_diversity_weight = 0;
  double js_divergence_weight = 0;
  double z_loss_weight = 0;
  std::string attention;
  std::string gate_granularity;
  int64_t num_heads = 0;
  double attention_dropout = 0;
  double head_dropout = 0;
  int64_t window_size = 0;
  int64_t patch_size = 0;
  int64_t token_dim = 0;
  // Training
  int64_t epochs = 0;
  int64_t batch_size = 0;
  double lr = 0;
  double weight_decay = 0;
  int64_t warmup_epochs = 0;
  double grad_clip = 0;
  double label_smoothing = 0;
  double mixup_alpha = 0;
  double mixup_prob = 0;
  int64_t early_stopping_patience = 0;
  std::string device;     // cpu | cuda | cuda:N | auto (worker/device.h)
  std::string precision;  // fp32 | bf16
  uint64_t seed = 0;
  uint64_t data_seed = 0;
  // Data
  std::string dataset;
  int64_t train_size = 0;
  int64_t val_size = 0;
  int64_t input_dim = 0;
  int64_t num_classes = 0;
  int64_t n_regimes = 0;
  std::string data_dir;
  std::string path;
  std::string label;
  double val_fraction = 0;
};

// Validates `config` against the schema (unknown keys, types, ranges), fills defaults, reads every
// key and checks the cross-key rules (top_k <= num_experts, num_heads divides d_model, csv needs a
// path). Error messages name the key: "config.top_k: 4 is more than num_experts (2)".
Status ParseTrialConfig(const Json& config, TrialConfig* out);

// Same, from JSON text (a syntax error names line and column).
Status ParseTrialConfigText(std::string_view text, TrialConfig* out);

// Reads a config file; errors name the file.
Status LoadTrialConfigFile(const std::string& file, TrialConfig* out);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_TRIAL_CONFIG_H_
