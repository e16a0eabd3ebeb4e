#include "worker/trial_config.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "common/trial_schema.h"

namespace moesweep::worker {

Status ParseTrialConfig(const Json& config, TrialConfig* out) {
  Status s = ValidateTrialConfig(config, "config");
  if (!s.ok()) return s;
  const Json c = WithDefaults(config);
  TrialConfig t;
  auto i64 = [&](const char* k) { return c.at(k).get<int64_t>(); };
  auto num = [&](const char* k) { return c.at(k).get<double>(); };
  auto str = [&](const char* k) { return c.at(k).get<std::string>(); };

  t.model = str("model");
  t.use_moe = c.at("use_moe").get<bool>();
  t.d_model = i64("d_model");
  t.num_blocks = i64("num_blocks");
  t.num_experts = i64("num_experts");
  t.top_k = i64("top_k");
  t.expert_hidden_dim = i64("expert_hidden_dim");
  t.expert_layers = i64("expert_layers");
  t.gate_layers = i64("gate_layers");
  t.temperature = num("temperature");
  t.expert_dropout = num("expert_dropout");
  t.gate_dropout = num("gate_dropout");
  t.activation_threshold = num("activation_threshold");
  t.residual_weight = num("residual_weight");
  t.balance_loss_weight = num("balance_loss_weight");
  t.sparsity_loss_weight = num("sparsity_loss_weight");
  t.diversity_loss_weight = num("diversity_loss_weight");
  t.output_diversity_weight = num("output_diversity_weight");
  t.js_divergence_weight = num("js_divergence_weight");
  t.z_loss_weight = num("z_loss_weight");
  t.attention = str("attention");
  t.gate_granularity = str("gate_granularity");
  t.num_heads = i64("num_heads");
  t.attention_dropout = num("attention_dropout");
  t.head_dropout = num("head_dropout");
  t.window_size = i64("window_size");
  t.patch_size = i64("patch_size");
  t.token_dim = i64("token_dim");
  t.epochs = i64("epochs");
  t.batch_size = i64("batch_size");
  t.lr = num("lr");
  t.weight_decay = num("weight_decay");
  t.warmup_epochs = i64("warmup_epochs");
  t.grad_clip = num("grad_clip");
  t.label_smoothing = num("label_smoothing");
  t.mixup_alpha = num("mixup_alpha");
  t.mixup_prob = num("mixup_prob");
  t.early_stopping_patience = i64("early_stopping_patience");
  t.device = str("device");
  t.precision = str("precision");
  t.seed = static_cast<uint64_t>(i64("seed"));
  t.data_seed = static_cast<uint64_t>(i64("data_seed"));
  t.dataset = str("dataset");
  t.train_size = i64("train_size");
  t.val_size = i64("val_size");
  t.input_dim = i64("input_dim");
  t.num_classes = i64("num_classes");
  t.n_regimes = i64("n_regimes");
  t.data_dir = str("data_dir");
  t.path = str("path");
  t.label = str("label");
  t.val_fraction = num("val_fraction");

  // Cross-key rules: one definition, shared with the coordinator's spec validation.
  std::vector<std::string> errors;
  CheckCrossKeyRules(c, "config", &errors);
  if (!errors.empty()) return Status::InvalidArgument(fmt::format("{}", fmt::join(errors, "\n")));
  *out = std::move(t);
  return Status::Ok();
}

Status ParseTrialConfigText(std::string_view text, TrialConfig* out) {
  Json j;
  Status s = ParseJson(text, &j);
  if (!s.ok()) return Status::InvalidArgument("config: " + s.message());
  return ParseTrialConfig(j, out);
}

Status LoadTrialConfigFile(const std::string& file, TrialConfig* out) {
  std::ifstream in(file);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open config file", file));
  std::stringstream buf;
  buf << in.rdbuf();
  Json j;
  Status s = ParseJson(buf.str(), &j);
  if (!s.ok()) return Status::InvalidArgument(fmt::format("{}: {}", file, s.message()));
  s = ParseTrialConfig(j, out);
  if (!s.ok()) return Status::InvalidArgument(fmt::format("{}: {}", file, s.message()));
  return Status::Ok();
}

}  // namespace moesweep::worker
