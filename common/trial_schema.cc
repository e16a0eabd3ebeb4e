#include "common/trial_schema.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/limits.h"

namespace moesweep {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

ConfigKey Int(std::string name, int64_t def, double min, double max, std::string help) {
  ConfigKey k{std::move(name), ValueType::kInt, Json(def), std::move(help)};
  k.min = min;
  k.max = max;
  return k;
}

ConfigKey Num(std::string name, double def, double min, double max, std::string help,
              bool min_exclusive = false) {
  ConfigKey k{std::move(name), ValueType::kNumber, Json(def), std::move(help)};
  k.min = min;
  k.max = max;
  k.min_exclusive = min_exclusive;
  return k;
}

ConfigKey Str(std::string name, std::string def, std::vector<std::string> choices, std::string help) {
  ConfigKey k{std::move(name), ValueType::kString, Json(std::move(def)), std::move(help)};
  k.choices = std::move(choices);
  return k;
}

ConfigKey Bool(std::string name, bool def, std::string help) {
  return ConfigKey{std::move(name), ValueType::kBool, Json(def), std::move(help)};
}

std::vector<ConfigKey> BuildKeys() {
  // Defaults of the MoE keys are seed 002's "optimal" parameters.
  return {
      // Model
      Str("model", "moe_mlp", {"moe_mlp", "moe_transformer"}, "Model family."),
      Bool("use_moe", true, "false replaces every MoE layer by one expert-shaped dense FFN (the dense baseline)."),
      Int("d_model", 64, 1, 65536, "Token width."),
      Int("num_blocks", 1, 1, 64, "MoE layers (moe_mlp) or transformer blocks (moe_transformer)."),
      Int("num_experts", 8, 1, 1024, "Experts per MoE layer."),
      Int("top_k", 2, 1, 1024, "Experts selected per token (at most num_experts)."),
      Int("expert_hidden_dim", 1024, 1, 1 << 20, "Hidden width of each expert."),
      Int("expert_layers", 2, 1, 16, "Hidden layers per expert."),
      Int("gate_layers", 2, 1, 2, "Router depth: 1 = Linear(d, E); 2 = Linear(d, d) -> GELU -> Dropout -> Linear(d, E)."),
      Num("temperature", 0.7, 0, kInf, "Router softmax temperature.", /*min_exclusive=*/true),
      Num("expert_dropout", 0.1, 0, 0.99, "Dropout inside experts."),
      Num("gate_dropout", 0.1, 0, 0.99, "Dropout inside a 2-layer router."),
      Num("activation_threshold", 0.1, 0, 1, "Selected experts whose renormalised weight is below this are dropped (top-1 always stays)."),
      Num("residual_weight", 1.0, -kInf, kInf, "Weight of the residual input in LayerNorm(r*x + sum w_e*expert_e(x))."),
      Num("balance_loss_weight", 0.01, 0, kInf, "Switch load-balancing loss E * sum_e f_e * P_e."),
      Num("sparsity_loss_weight", 0.001, 0, kInf, "Mean router entropy."),
      Num("diversity_loss_weight", 0.01, 0, kInf, "Mean pairwise cosine similarity of expert parameters."),
      Num("output_diversity_weight", 0.0, 0, kInf, "Mean pairwise cosine similarity of expert mean outputs (runs every expert on the batch)."),
      Num("js_divergence_weight", 0.0, 0, kInf, "Minus mean pairwise Jensen-Shannon divergence of expert outputs (runs every expert on the batch)."),
      Num("z_loss_weight", 0.0, 0, kInf, "mean(logsumexp(router logits)^2)."),
      Str("attention", "softmax", {"softmax", "gated", "linear", "window"}, "Attention of moe_transformer."),
      Str("gate_granularity", "elementwise", {"elementwise", "headwise"}, "Sigmoid gate shape for attention=gated."),
      Int("num_heads", 4, 1, 256, "Attention heads (must divide d_model)."),
      Num("attention_dropout", 0.0, 0, 0.99, "Dropout on attention weights."),
      Num("head_dropout", 0.0, 0, 0.99, "Probability of dropping a whole head in training."),
      Int("window_size", 20, 0, 1 << 20, "attention=window: each token sees +-window_size tokens."),
      Int("patch_size", 7, 1, 1024, "moe_transformer on images: patch side in pixels."),
      Int("token_dim", 8, 1, 1 << 20, "moe_transformer on non-image data: features per token."),
      // Training
      Int("epochs", 5, 1, 100000, "Training epochs."),
      Int("batch_size", 128, 1, 1 << 20, "Mini-batch size."),
      Num("lr", 1e-3, 0, kInf, "AdamW learning rate.", /*min_exclusive=*/true),
      Num("weight_decay", 0.01, 0, kInf, "AdamW weight decay."),
      Int("warmup_epochs", 0, 0, 100000, "Linear warm-up epochs before the cosine schedule."),
      Num("grad_clip", 1.0, 0, kInf, "Max global gradient norm; 0 disables clipping."),
      Num("label_smoothing", 0.0, 0, 0.99, "Cross-entropy label smoothing."),
      Num("mixup_alpha", 0.0, 0, kInf, "Mixup Beta(alpha, alpha); 0 disables mixup."),
      Num("mixup_prob", 0.0, 0, 1, "Probability that a batch is mixed."),
      Int("early_stopping_patience", 0, 0, 100000, "Stop after this many epochs without a better validation objective; 0 disables."),
      Str("device", "cpu", {"cpu", "cuda", "cuda:N", "auto"}, "Where the built-in trainer runs: cuda = the GPU the worker gives the trial (cuda:N = its N-th); auto = a GPU when the worker has one free, else the CPU (metric device_cuda says which)."),
      Str("precision", "fp32", {"fp32", "bf16"}, "Matrix products and expert activations in bfloat16 (bf16) or float32; parameters and optimizer state stay float32."),
      Int("seed", 0, 0, 9007199254740991.0, "Initialisation, shuffling and dropout seed (set per trial from the sweep's seeds)."),
      Int("data_seed", 1234, 0, 9007199254740991.0, "Seed of the data (synthetic generation, subsets), fixed so every seed sees the same data."),
      // Data
      Str("dataset", "synthetic", {"synthetic", "fashion-mnist", "csv"}, "Training data."),
      Int("train_size", 0, 0, 1 << 30, "Training samples; 0 = dataset default (synthetic 4096, others all)."),
      Int("val_size", 0, 0, 1 << 30, "Validation samples; 0 = dataset default (synthetic 1024, others all)."),
      Int("input_dim", 32, 1, 1 << 20, "synthetic: features per sample."),
      Int("num_classes", 10, 2, 1 << 20, "synthetic: classes."),
      Int("n_regimes", 4, 1, 1 << 20, "synthetic: clusters, each labelled by its own rule."),
      Str("data_dir", "/usr/share/datasets/fashion-mnist", {}, "fashion-mnist: folder of the idx .gz files."),
      Str("path", "", {}, "csv: file path."),
      Str("label", "label", {}, "csv: name of the label column."),
      Num("val_fraction", 0.2, 0, 1, "csv: share of rows held out for validation.", /*min_exclusive=*/true),
  };
}

std::string Suggest(std::string_view name, const std::vector<std::string_view>& candidates) {
  // No key is this long; comparing a 10 MB name with every key would take seconds.
  if (name.size() > kMaxSuggestedNameBytes) return "";
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (std::string_view c : candidates) {
    size_t d = EditDistance(name, c);
    if (d < best_distance) {
      best_distance = d;
      best = std::string(c);
    }
  }
  // Close enough to be a typo: at most 2 edits, or a third of the name for long names.
  size_t allowed = std::max<size_t>(2, name.size() / 3);
  return best_distance <= allowed ? best : "";
}

std::string FormatNumber(double v) { return fmt::format("{}", v); }

// A choice ending in ":N" ("cuda:N") stands for its prefix and a non-negative integer.
bool MatchesChoice(const std::string& choice, const std::string& value) {
  if (choice.size() < 2 || choice.compare(choice.size() - 2, 2, ":N") != 0) return choice == value;
  const size_t prefix = choice.size() - 1;  // "cuda:"
  if (value.size() <= prefix || value.size() > prefix + 9 || value.compare(0, prefix, choice, 0, prefix) != 0) {
    return false;
  }
  return std::all_of(value.begin() + prefix, value.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

const std::vector<ConfigKey>& TrialConfigKeys() {
  static const std::vector<ConfigKey> keys = BuildKeys();
  return keys;
}

const ConfigKey* FindConfigKey(std::string_view name) {
  for (const ConfigKey& k : TrialConfigKeys()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitute = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, substitute});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string SuggestConfigKey(std::string_view name) {
  std::vector<std::string_view> names;
  for (const ConfigKey& k : TrialConfigKeys()) names.push_back(k.name);
  return Suggest(name, names);
}

Status CheckConfigValue(const ConfigKey& key, const Json& value, const std::string& path) {
  switch (key.type) {
    case ValueType::kBool:
      if (!value.is_boolean()) {
        return Status::InvalidArgument(fmt::format("{}: expected a boolean, got {}", path, Abbreviate(value)));
      }
      return Status::Ok();
    case ValueType::kString:
      if (!value.is_string()) {
        return Status::InvalidArgument(fmt::format("{}: expected a string, got {}", path, Abbreviate(value)));
      }
      if (value.get_ref<const std::string&>().size() > kMaxStringBytes) {
        return Status::InvalidArgument(fmt::format("{}: a string of {} bytes is longer than the limit of {} bytes", path,
                                                   value.get_ref<const std::string&>().size(), kMaxStringBytes));
      }
      if (!key.choices.empty() && std::none_of(key.choices.begin(), key.choices.end(), [&](const std::string& c) {
            return MatchesChoice(c, value.get_ref<const std::string&>());
          })) {
        return Status::InvalidArgument(fmt::format("{}: {} is not one of: {}", path, Abbreviate(value),
                                                   fmt::join(key.choices, ", ")));
      }
      return Status::Ok();
    case ValueType::kInt:
    case ValueType::kNumber: {
      if (!value.is_number()) {
        return Status::InvalidArgument(fmt::format("{}: expected {}, got {}", path,
                                                   key.type == ValueType::kInt ? "an integer" : "a number",
                                                   Abbreviate(value)));
      }
      double v = value.get<double>();
      if (!std::isfinite(v)) return Status::InvalidArgument(fmt::format("{}: must be finite", path));
      if (key.type == ValueType::kInt && (value.is_number_float() && std::floor(v) != v)) {
        return Status::InvalidArgument(fmt::format("{}: expected an integer, got {}", path, Abbreviate(value)));
      }
      bool below = key.min_exclusive ? v <= key.min : v < key.min;
      if (below || v > key.max) {
        std::string range;
        if (std::isinf(key.max)) {
          range = fmt::format("{} {}", key.min_exclusive ? ">" : ">=", FormatNumber(key.min));
        } else {
          range = fmt::format("in {}{}, {}]", key.min_exclusive ? "(" : "[", FormatNumber(key.min),
                              FormatNumber(key.max));
        }
        return Status::InvalidArgument(fmt::format("{}: {} is out of range (must be {})", path, Abbreviate(value), range));
      }
      return Status::Ok();
    }
  }
  return Status::Ok();
}

void CheckTrialConfig(const Json& config, const std::string& path, std::vector<std::string>* errors) {
  if (!config.is_object()) {
    errors->push_back(fmt::format("{}: expected an object, got {}", path, JsonTypeName(config)));
    return;
  }
  for (auto it = config.begin(); it != config.end(); ++it) {
    std::string key_path = JoinPath(path, it.key());
    const ConfigKey* key = FindConfigKey(it.key());
    if (key == nullptr) {
      std::string suggestion = SuggestConfigKey(it.key());
      errors->push_back(suggestion.empty()
                            ? fmt::format("{}: unknown trial config key", key_path)
                            : fmt::format("{}: unknown trial config key (did you mean \"{}\"?)", key_path, suggestion));
      continue;
    }
    Status s = CheckConfigValue(*key, it.value(), key_path);
    if (!s.ok()) errors->push_back(s.message());
  }
}

Status ValidateTrialConfig(const Json& config, const std::string& path) {
  std::vector<std::string> errors;
  CheckTrialConfig(config, path, &errors);
  if (errors.empty()) return Status::Ok();
  return Status::InvalidArgument(fmt::format("{}", fmt::join(errors, "\n")));
}

namespace {

// The value of `key` in `config`, or its default.
const Json& ValueOr(const Json& config, const char* key) {
  auto it = config.find(key);
  return it != config.end() ? *it : FindConfigKey(key)->default_value;
}

// `value` as an int64 when it is a number that has one (1e30 has not: converting it is undefined).
bool AsInt(const Json& value, int64_t* out) {
  if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  } else if (value.is_number_float()) {
    double v = value.get<double>();
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return false;
  } else if (!value.is_number_integer()) {
    return false;
  }
  *out = value.get<int64_t>();
  return true;
}

}  // namespace

const std::vector<std::vector<std::string>>& CrossKeyRuleKeys() {
  static const std::vector<std::vector<std::string>> groups = {
      {"use_moe", "top_k", "num_experts"}, {"model", "d_model", "num_heads"}, {"dataset", "path"}};
  return groups;
}

void CheckCrossKeyRules(const Json& config, const std::string& path, std::vector<std::string>* errors) {
  if (!config.is_object()) return;
  // Each rule runs only when its values have the right types; CheckTrialConfig reports the rest.
  const Json& use_moe = ValueOr(config, "use_moe");
  const Json& top_k = ValueOr(config, "top_k");
  const Json& num_experts = ValueOr(config, "num_experts");
  int64_t k = 0, e = 0;
  if (use_moe.is_boolean() && use_moe.get<bool>() && AsInt(top_k, &k) && AsInt(num_experts, &e) && k > e) {
    errors->push_back(fmt::format("{}: {} is more than num_experts ({})", JoinPath(path, "top_k"), k, e));
  }
  // Only keys the chosen model uses: a sweep over d_model of an MLP must not fail on the unused
  // default num_heads.
  const Json& model = ValueOr(config, "model");
  const Json& d_model = ValueOr(config, "d_model");
  const Json& num_heads = ValueOr(config, "num_heads");
  int64_t d = 0, h = 0;
  if (model == "moe_transformer" && AsInt(d_model, &d) && AsInt(num_heads, &h) && h > 0 && d % h != 0) {
    errors->push_back(fmt::format("{}: {} does not divide d_model ({})", JoinPath(path, "num_heads"), h, d));
  }
  const Json& dataset = ValueOr(config, "dataset");
  const Json& csv_path = ValueOr(config, "path");
  if (dataset == "csv" && csv_path.is_string() && csv_path.get_ref<const std::string&>().empty()) {
    errors->push_back(fmt::format("{}: dataset \"csv\" needs a path to the CSV file", JoinPath(path, "path")));
  }
}

bool ParseDevice(const std::string& text, DeviceRequest* out) {
  DeviceRequest d;
  if (text == "cpu") {
    d.kind = DeviceRequest::kCpu;
  } else if (text == "auto") {
    d.kind = DeviceRequest::kAuto;
  } else if (text == "cuda") {
    d.kind = DeviceRequest::kCuda;
  } else if (MatchesChoice("cuda:N", text)) {
    d.kind = DeviceRequest::kCuda;
    d.index = std::stoi(text.substr(5));
  } else {
    return false;
  }
  *out = d;
  return true;
}

bool TrialNeedsGpu(const Json& config) {
  if (!config.is_object()) return false;
  auto it = config.find("device");
  DeviceRequest d;
  return it != config.end() && it->is_string() && ParseDevice(it->get<std::string>(), &d) &&
         d.kind == DeviceRequest::kCuda;
}

Json WithDefaults(const Json& config) {
  Json out = Json::object();
  for (const ConfigKey& k : TrialConfigKeys()) {
    auto it = config.find(k.name);
    out[k.name] = it != config.end() ? *it : k.default_value;
  }
  return out;
}

const std::vector<std::string>& KnownMetrics() {
  static const std::vector<std::string> metrics = {
      "epoch", "train_loss", "val_loss", "val_accuracy", "lr", "samples_per_sec",
      "val_top5_accuracy", "mAP", "rank1", "rank5", "params_total", "params_active",
      "train_seconds", "best_epoch", "device_cuda"};
  return metrics;
}

const std::vector<std::string>& PerEpochMetrics() {
  static const std::vector<std::string> metrics = {"epoch", "train_loss", "val_loss", "val_accuracy", "mAP",
                                                   "rank1", "rank5", "lr", "samples_per_sec", "device_cuda"};
  return metrics;
}

std::string SuggestMetric(std::string_view name) {
  std::vector<std::string_view> names(KnownMetrics().begin(), KnownMetrics().end());
  return Suggest(name, names);
}

}  // namespace moesweep
