#include "worker/moe_layer.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "worker/gemm.h"
#include "worker/linear.h"
#include "worker/losses.h"

namespace moesweep::worker {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GroupedFfnArgs {
  const std::vector<int64_t>* counts;
  double dropout;  // 0 = none.
  TrialRng* rng;
};

// Expert index of every row: counts[0] zeros, then counts[1] ones, ...
at::Tensor RowExperts(const std::vector<int64_t>& counts, int64_t rows) {
  at::Tensor out = at::empty({rows}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (size_t e = 0; e < counts.size(); ++e) p = std::fill_n(p, counts[e], static_cast<int64_t>(e));
  return out;
}

// The expert FFNs on grouped rows, as one autograd node: forward and backward each do one GEMM per
// (expert, layer) on a contiguous row slice. The weight gradients are accumulated straight into
// the stacked parameters' .grad (and nothing is returned for them), because autograd through
// per-expert views would materialise a full-size zero gradient per expert, and a fresh gradient
// tensor per step costs page faults; the optimizer zeroes .grad after using it. So the stacked
// weights must be leaves, and their gradients are only available through backward(), not
// torch::autograd::grad().
class GroupedFfn : public torch::autograd::Function<GroupedFfn> {
 public:
  // params = W0, b0, W1, b1, ...; saved: x, params, then per hidden layer (pre-activation,
  // post-dropout activation, mask or undefined).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                               const GroupedFfnArgs& args) {
    const std::vector<int64_t>& counts = *args.counts;
    const size_t layers = params.size() / 2;
    at::Tensor h = x.contiguous();  // GEMMs want unit-stride rows
    std::vector<at::Tensor> saved;
    saved.reserve(2 + params.size() + 3 * layers);
    saved.push_back(h);
    for (const at::Tensor& p : params) saved.push_back(p);
    const at::Tensor row_experts = RowExperts(counts, x.size(0));
    for (size_t l = 0; l < layers; ++l) {
      const at::Tensor& w = params[2 * l];
      const at::Tensor& b = params[2 * l + 1];
      // Each row starts as its expert's bias; the GEMMs add x_e W_e on top.
      at::Tensor out = counts.size() == 1 ? b.expand({h.size(0), w.size(2)}).contiguous()
                                          : b.index_select(0, row_experts);
      int64_t offset = 0;
      for (size_t e = 0; e < counts.size(); ++e) {
        const int64_t c = counts[e];
        if (c == 0) continue;
        Gemm(h.narrow(0, offset, c), false, w[e], false, 1.0f, out.narrow(0, offset, c));
        offset += c;
      }
      if (l + 1 == layers) {
        h = out;
        break;
      }
      at::Tensor act = at::gelu(out);
      at::Tensor mask;
      if (args.dropout > 0) {
        mask = args.rng->DropoutMask(act.sizes(), args.dropout);
        act.mul_(mask);
      }
      saved.push_back(out);
      saved.push_back(act);
      saved.push_back(mask);
      h = act;
    }
    saved.push_back(row_experts);
    ctx->save_for_backward(saved);
    ctx->saved_data["counts"] = c10::IValue(counts);
    ctx->saved_data["layers"] = static_cast<int64_t>(layers);
    return {h};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const size_t layers = static_cast<size_t>(ctx->saved_data["layers"].toInt());
    const at::Tensor& x = saved[0];
    auto param = [&](size_t i) -> const at::Tensor& { return saved[1 + i]; };
    auto hidden = [&](size_t l, size_t what) -> const at::Tensor& {  // l in 1..layers-1
      return saved[1 + 2 * layers + 3 * (l - 1) + what];
    };

    const at::Tensor& row_experts = saved.back();
    variable_list grads(1 + 2 * layers + 1);  // x, params (left undefined), args
    at::Tensor dz = grad_outputs[0].contiguous();
    for (size_t l = layers; l-- > 0;) {
      const at::Tensor& w = param(2 * l);
      const at::Tensor& b = param(2 * l + 1);
      const at::Tensor& input = l == 0 ? x : hidden(l, 1);
      const bool need_weight = w.requires_grad();
      at::Tensor gw = need_weight ? GradBuffer(w) : at::Tensor();
      if (b.requires_grad()) GradBuffer(b).index_add_(0, row_experts, dz);
      const bool need_input = l > 0 || ctx->needs_input_grad(0);
      at::Tensor dh = need_input ? at::empty({dz.size(0), w.size(1)}, dz.options()) : at::Tensor();
      int64_t offset = 0;
      for (size_t e = 0; e < counts.size(); ++e) {
        const int64_t c = counts[e];
        if (c == 0) continue;
        const at::Tensor dz_e = dz.narrow(0, offset, c);
        const at::Tensor w_e = w[e];
        if (need_weight) Gemm(input.narrow(0, offset, c), true, dz_e, false, 1.0f, gw[e]);
        if (need_input) Gemm(dz_e, false, w_e, true, 0.0f, dh.narrow(0, offset, c));
        offset += c;
      }
      if (l == 0) {
        grads[0] = dh;
        break;
      }
      const at::Tensor& mask = hidden(l, 2);
      if (mask.defined()) dh.mul_(mask);
      dz = at::gelu_backward(dh, hidden(l, 0));
    }
    return grads;
  }
};

void InitUniform(at::Tensor& t, double bound, TrialRng* rng) {
  at::NoGradGuard no_grad;
  t.uniform_(-bound, bound, rng->generator());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// GroupedExperts

GroupedExpertsImpl::GroupedExpertsImpl(int64_t num_experts, int64_t d_model, int64_t hidden, int64_t layers,
                                       double dropout, TrialRng* rng)
    : num_experts_(num_experts), dropout_(dropout), rng_(rng) {
  for (int64_t l = 0; l <= layers; ++l) {
    const int64_t in = l == 0 ? d_model : hidden;
    const int64_t out = l == layers ? d_model : hidden;
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    at::Tensor w = at::empty({num_experts, in, out});
    at::Tensor b = at::empty({num_experts, out});
    InitUniform(w, bound, rng);
    InitUniform(b, bound, rng);
    params_.push_back(register_parameter("weight" + std::to_string(l), w));
    params_.push_back(register_parameter("bias" + std::to_string(l), b));
  }
}

int64_t GroupedExpertsImpl::params_per_expert() const {
  int64_t n = 0;
  for (const at::Tensor& p : params_) n += p.numel() / num_experts_;
  return n;
}

at::Tensor GroupedExpertsImpl::forward(const at::Tensor& x_sorted, const std::vector<int64_t>& counts) {
  GroupedFfnArgs args{&counts, is_training() ? dropout_ : 0.0, rng_};
  return GroupedFfn::apply(x_sorted, at::TensorList(params_), args)[0];
}

at::Tensor GroupedExpertsImpl::ForwardAll(const at::Tensor& x) {
  const int64_t n = x.size(0);
  std::vector<int64_t> counts(num_experts_, n);
  GroupedFfnArgs args{&counts, 0.0, rng_};
  at::Tensor y = GroupedFfn::apply(x.repeat({num_experts_, 1}), at::TensorList(params_), args)[0];
  return y.view({num_experts_, n, -1});
}

// ---------------------------------------------------------------------------------------------
// Routing

Routing Route(const at::Tensor& logits, double temperature, int64_t top_k, double threshold) {
  Routing r;
  r.logits = logits;
  at::Tensor scaled = temperature == 1.0 ? logits : logits / temperature;
  r.log_probs = at::log_softmax(scaled, 1);
  r.probs = r.log_probs.exp();
  auto [values, experts] = r.probs.topk(top_k, 1, /*largest=*/true, /*sorted=*/true);
  r.experts = experts;
  r.first = values / values.sum(1, true);
  if (threshold > 0 && top_k > 1) {
    r.keep = r.first.detach().ge(threshold);
    r.keep.select(1, 0).fill_(true);  // At least the top-1 stays.
    at::Tensor kept = values * r.keep;
    r.weights = kept / kept.sum(1, true);
  } else {
    r.keep = at::ones_like(experts, at::kBool);
    r.weights = r.first;
  }
  return r;
}

DispatchPlan PlanDispatch(const at::Tensor& experts, const at::Tensor& keep, int64_t num_experts) {
  // Integer bookkeeping over N*k slot ids only; the expert computation itself is per expert.
  at::Tensor ex = experts.contiguous();
  at::Tensor kp = keep.contiguous();
  const int64_t n = ex.size(0), k = ex.size(1), slots = n * k;
  const int64_t* e_ptr = ex.data_ptr<int64_t>();
  const bool* k_ptr = kp.data_ptr<bool>();
  DispatchPlan plan;
  plan.counts.assign(num_experts, 0);
  for (int64_t s = 0; s < slots; ++s) {
    if (k_ptr[s]) ++plan.counts[e_ptr[s]];
  }
  std::vector<int64_t> next(num_experts, 0);
  int64_t total = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    next[e] = total;
    total += plan.counts[e];
  }
  plan.token_index = at::empty({total}, at::kLong);
  plan.slot_index = at::empty({total}, at::kLong);
  int64_t* tok = plan.token_index.data_ptr<int64_t>();
  int64_t* slot = plan.slot_index.data_ptr<int64_t>();
  for (int64_t s = 0; s < slots; ++s) {
    if (!k_ptr[s]) continue;
    const int64_t pos = next[e_ptr[s]]++;
    tok[pos] = s / k;
    slot[pos] = s;
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// MoELayer

MoELayerImpl::MoELayerImpl(const MoELayerOptions& options, TrialRng* rng) : options_(options), rng_(rng) {
  const int64_t d = options.d_model;
  if (options.use_moe) {
    if (options.gate_layers >= 2) {
      gate1_ = register_module("gate1", Dense(d, d, rng));
    }
    gate2_ = register_module("gate2", Dense(d, options.num_experts, rng));
  }
  experts_ = register_module(
      "experts", GroupedExperts(options.use_moe ? options.num_experts : 1, d, options.expert_hidden_dim,
                                options.expert_layers, options.expert_dropout, rng));
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  stats_.Reset(options.use_moe ? options.num_experts : 0);
}

int64_t MoELayerImpl::inactive_params() const {
  if (!options_.use_moe) return 0;
  return (options_.num_experts - options_.top_k) * experts_->params_per_expert();
}

at::Tensor MoELayerImpl::forward(const at::Tensor& x) {
  const double r = options_.residual_weight;
  at::Tensor residual = r == 1.0 ? x : x * r;
  if (!options_.use_moe) {
    std::vector<int64_t> counts{x.size(0)};
    return norm_(residual + experts_(x, counts));
  }
  at::Tensor h = x;
  if (gate1_) {
    h = rng_->Dropout(at::gelu(gate1_(h)), options_.gate_dropout, is_training());
  }
  routing_ = Route(gate2_(h), options_.temperature, options_.top_k, options_.activation_threshold);
  const Routing& route = routing_;
  DispatchPlan plan = PlanDispatch(route.experts, route.keep, options_.num_experts);

  at::Tensor y = experts_(x.index_select(0, plan.token_index), plan.counts);
  at::Tensor w = route.weights.reshape({-1}).index_select(0, plan.slot_index).unsqueeze(1);
  at::Tensor mixed = at::zeros_like(x).index_add(0, plan.token_index, y * w);
  at::Tensor out = norm_(residual + mixed);

  aux_ = MoEAux{};
  if (is_training()) {
    const int64_t e = options_.num_experts;
    if (options_.want_balance) {
      at::Tensor share = at::empty({e}, at::kFloat);
      float* s = share.data_ptr<float>();
      const double total = static_cast<double>(plan.token_index.size(0));
      for (int64_t i = 0; i < e; ++i) s[i] = static_cast<float>(plan.counts[i] / total);
      aux_.balance = BalanceLoss(route.probs, share);
    }
    if (options_.want_entropy) aux_.entropy = RouterEntropy(route.probs, route.log_probs);
    if (options_.want_z_loss) aux_.z_loss = RouterZLoss(route.logits);
    if (options_.want_param_diversity) aux_.param_similarity = ParamCosineSimilarity(experts_->stacked_params());
    if (options_.want_output_losses) {
      at::Tensor means = experts_->ForwardAll(x).mean(1);  // [E, d]
      aux_.output_similarity = OutputCosineSimilarity(means);
      aux_.js_divergence = MeanPairwiseJsDivergence(means);
    }
  }
  if (collect_stats_) AccumulateStats(route, plan);
  return out;
}

void MoELayerImpl::AccumulateStats(const Routing& r, const DispatchPlan& plan) {
  at::NoGradGuard no_grad;
  const int64_t n = r.probs.size(0), k = r.experts.size(1);
  at::Tensor probs = r.probs.detach();
  at::Tensor prob_sum = probs.sum(0).to(at::kDouble);
  const double* ps = prob_sum.data_ptr<double>();
  for (size_t e = 0; e < stats_.prob_sum.size(); ++e) {
    stats_.prob_sum[e] += ps[e];
    stats_.routed_slots[e] += static_cast<double>(plan.counts[e]);
  }
  stats_.tokens += static_cast<double>(n);
  stats_.topk_slots += static_cast<double>(n * k);
  stats_.slots_above_threshold +=
      r.first.detach().ge(options_.activation_threshold).sum().item<double>();
  stats_.prob_variance_sum += probs.var(1, /*unbiased=*/false).sum().item<double>();
  stats_.entropy_sum += (-(probs * r.log_probs.detach()).sum()).item<double>();
}

}  // namespace moesweep::worker
