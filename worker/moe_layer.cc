#include "worker/moe_layer.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "worker/gemm.h"
#include "worker/linear.h"
#include "worker/losses.h"
#include "worker/param_cache.h"
#include "worker/param_diversity.h"

namespace moesweep::worker {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GroupedFfnArgs {
  const std::vector<int64_t>* counts;
  double dropout;  // 0 = none.
  TrialRng* rng;
  bool with_diversity = false;  // Also return the experts' parameter-diversity loss.
};

// Expert index of every row: counts[0] zeros, then counts[1] ones, ...
at::Tensor RowExperts(const std::vector<int64_t>& counts, int64_t rows) {
  at::Tensor out = at::empty({rows}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (size_t e = 0; e < counts.size(); ++e) p = std::fill_n(p, counts[e], static_cast<int64_t>(e));
  return out;
}

// The expert FFNs on grouped rows, as one autograd node: forward and backward each do one GEMM per
// (expert, layer) on a contiguous row slice. The weight gradients are written straight into the
// stacked parameters' .grad (and nothing is returned for them), because autograd through
// per-expert views would materialise a full-size zero gradient per expert, and a fresh gradient
// tensor per step costs page faults (see worker/param_cache.h). So the stacked weights must be
// leaves, and their gradients are only available through backward(), not
// torch::autograd::grad().
//
// With args.with_diversity the node also returns the parameter-diversity loss of the stacked
// parameters (worker/param_diversity.h) as a second output, fused into the per-expert loops: the
// forward takes c_e = s . theta_e right after each expert's GEMM has read its weights, and the
// backward writes each expert's weight gradient once, as GEMM result (from a scratch) plus the
// diversity term. As a separate node (ParamCosineSimilarity) the loss reads the parameters once
// more and reads and writes their whole gradient again; that was 0.4 ms per step slower, at 8 and
// at 32 experts, on the development VM (BENCHMARKS.md, "Worker").
class GroupedFfn : public torch::autograd::Function<GroupedFfn> {
 public:
  // params = W0, b0, W1, b1, ...; saved: x, params, then per hidden layer (pre-activation,
  // post-dropout activation, mask or undefined), row_experts, and with the diversity loss inv,
  // c and s per parameter tensor.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                               const GroupedFfnArgs& args) {
    const std::vector<int64_t>& counts = *args.counts;
    const int64_t experts = static_cast<int64_t>(counts.size());
    const size_t layers = params.size() / 2;
    at::Tensor h = x.contiguous();  // GEMMs want unit-stride rows
    std::vector<at::Tensor> saved;
    saved.reserve(4 + 2 * params.size() + 3 * layers);
    saved.push_back(h);
    for (const at::Tensor& p : params) saved.push_back(p);
    DiversityForward div;
    std::vector<double> c;  // c_e = s . theta_e
    if (args.with_diversity) {
      div = ComputeDiversityForward(params);
      c.assign(experts, 0.0);
    }
    const at::Tensor row_experts = RowExperts(counts, x.size(0));
    for (size_t l = 0; l < layers; ++l) {
      const at::Tensor& w = params[2 * l];
      const at::Tensor& b = params[2 * l + 1];
      // Each row starts as its expert's bias; the GEMMs add x_e W_e on top.
      at::Tensor out = counts.size() == 1 ? b.expand({h.size(0), w.size(2)}).contiguous()
                                          : b.index_select(0, row_experts);
      const int64_t w_per = w.numel() / experts, b_per = b.numel() / experts;
      int64_t offset = 0;
      for (int64_t e = 0; e < experts; ++e) {
        const int64_t rows = counts[e];
        if (rows > 0) Gemm(h.narrow(0, offset, rows), false, w[e], false, 1.0f, out.narrow(0, offset, rows));
        if (args.with_diversity) {  // In tensor order (W, b per layer), as ParamCosineSimilarity sums.
          c[e] += DiversityDot(div.s[2 * l].data_ptr<float>(), w.data_ptr<float>() + e * w_per, w_per);
          c[e] += DiversityDot(div.s[2 * l + 1].data_ptr<float>(), b.data_ptr<float>() + e * b_per, b_per);
        }
        offset += rows;
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
    if (args.with_diversity) {
      saved.push_back(at::tensor(div.inv));
      saved.push_back(at::tensor(c, at::kDouble));
      for (const at::Tensor& s : div.s) saved.push_back(s);
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["counts"] = c10::IValue(counts);
    ctx->saved_data["layers"] = static_cast<int64_t>(layers);
    ctx->saved_data["diversity"] = args.with_diversity;
    if (!args.with_diversity) return {h};
    return {h, at::scalar_tensor(div.loss, at::kFloat)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const int64_t experts = static_cast<int64_t>(counts.size());
    const size_t layers = static_cast<size_t>(ctx->saved_data["layers"].toInt());
    const bool with_diversity = ctx->saved_data["diversity"].toBool();
    const at::Tensor& x = saved[0];
    auto param = [&](size_t i) -> const at::Tensor& { return saved[1 + i]; };
    auto hidden = [&](size_t l, size_t what) -> const at::Tensor& {  // l in 1..layers-1
      return saved[1 + 2 * layers + 3 * (l - 1) + what];
    };
    const size_t after_hidden = 1 + 2 * layers + 3 * (layers - 1);
    const at::Tensor& row_experts = saved[after_hidden];

    // The diversity loss's gradient, a_e s + b_e theta_e per expert.
    std::vector<float> div_a, div_b;
    if (with_diversity) {
      const at::Tensor inv = saved[after_hidden + 1].contiguous(), c = saved[after_hidden + 2].contiguous();
      const double upstream = grad_outputs[1].defined() ? grad_outputs[1].item<double>() : 0.0;
      div_a.resize(experts);
      div_b.resize(experts);
      for (int64_t e = 0; e < experts; ++e) {
        DiversityCoefficients(upstream, experts, inv.data_ptr<float>()[e], c.data_ptr<double>()[e], &div_a[e],
                              &div_b[e]);
      }
    }
    auto div_s = [&](size_t i) { return saved[after_hidden + 3 + i].data_ptr<float>(); };  // s of param i

    variable_list grads(1 + 2 * layers + 1);  // x, params (left undefined), args
    at::Tensor dz = grad_outputs[0].contiguous();
    std::vector<double> sq(experts);
    for (size_t l = layers; l-- > 0;) {
      const at::Tensor& w = param(2 * l);
      const at::Tensor& b = param(2 * l + 1);
      const at::Tensor& input = l == 0 ? x : hidden(l, 1);
      const bool need_weight = w.requires_grad();
      const int64_t w_per = w.numel() / experts, b_per = b.numel() / experts;
      if (b.requires_grad()) {
        at::Tensor& gb = GradBuffer(b);
        gb.index_add_(0, row_experts, dz);
        if (with_diversity) {
          for (int64_t e = 0; e < experts; ++e) {
            sq[e] = DiversityGrad(gb.data_ptr<float>() + e * b_per, b.data_ptr<float>() + e * b_per, div_s(2 * l + 1),
                                  nullptr, div_a[e], div_b[e], b_per, /*overwrite=*/false);
          }
          RecordGradSumSquares(b, Sum(sq));
        }
      }
      // A fresh (reclaimed, unzeroed) buffer is overwritten: beta 0 runs about 2x faster than
      // beta 1 on ~8-row slices, and it saves zeroing the gradient every step.
      bool fresh = false;
      at::Tensor gw = need_weight ? GradBufferForOverwrite(w, &fresh) : at::Tensor();
      const float beta = fresh ? 0.0f : 1.0f;
      // With the diversity loss, each expert's task gradient goes to this L2-sized scratch first
      // and is written to .grad together with the diversity term.
      at::Tensor scratch;
      if (need_weight && with_diversity) scratch = at::empty({w.size(1), w.size(2)}, w.options());
      const bool need_input = l > 0 || ctx->needs_input_grad(0);
      at::Tensor dh = need_input ? at::empty({dz.size(0), w.size(1)}, dz.options()) : at::Tensor();
      int64_t offset = 0;
      for (int64_t e = 0; e < experts; ++e) {
        const int64_t rows = counts[e];
        const at::Tensor dz_e = dz.narrow(0, offset, rows);
        // dh first: it reads W_e, which the diversity term below then finds in cache (L3 at least).
        if (rows > 0 && need_input) Gemm(dz_e, false, w[e], true, 0.0f, dh.narrow(0, offset, rows));
        if (need_weight && with_diversity) {
          if (rows > 0) Gemm(input.narrow(0, offset, rows), true, dz_e, false, 0.0f, scratch);
          sq[e] = DiversityGrad(gw.data_ptr<float>() + e * w_per, w.data_ptr<float>() + e * w_per, div_s(2 * l),
                                rows > 0 ? scratch.data_ptr<float>() : nullptr, div_a[e], div_b[e], w_per, fresh);
        } else if (need_weight && rows > 0) {
          Gemm(input.narrow(0, offset, rows), true, dz_e, false, beta, gw[e]);
        } else if (need_weight && fresh) {
          gw[e].zero_();  // An expert without rows has a zero task gradient.
        }
        offset += rows;
      }
      if (need_weight && with_diversity) RecordGradSumSquares(w, Sum(sq));
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

 private:
  static double Sum(const std::vector<double>& v) {
    double total = 0;
    for (double x : v) total += x;
    return total;
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
                                       double dropout, TrialRng* rng, Compute compute)
    : num_experts_(num_experts), dropout_(dropout), rng_(rng), compute_(compute) {
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

at::Tensor GroupedExpertsImpl::forward(const at::Tensor& x_sorted, const std::vector<int64_t>& counts,
                                       at::Tensor* diversity, const at::Tensor& row_experts) {
  if (compute_.generic) {
    if (diversity != nullptr) {
      *diversity = num_experts_ >= 2 ? ParamCosineSimilarityTensorOps(params_) : at::zeros({}, params_[0].options());
    }
    return ForwardBatched(x_sorted, counts, row_experts);
  }
  GroupedFfnArgs args{&counts, is_training() ? dropout_ : 0.0, rng_};
  if (diversity != nullptr && num_experts_ < 2) *diversity = at::zeros({}, params_[0].options());
  args.with_diversity = diversity != nullptr && num_experts_ >= 2;
  variable_list out = GroupedFfn::apply(x_sorted, at::TensorList(params_), args);
  if (args.with_diversity) *diversity = out[1];
  return out[0];
}

at::Tensor GroupedExpertsImpl::BatchedLayers(at::Tensor h,
                                             const std::function<at::Tensor(const at::Tensor&)>& dropout) {
  const at::ScalarType dtype = h.scalar_type();
  const size_t layers = params_.size() / 2;
  for (size_t l = 0; l < layers; ++l) {
    // Casts of the float32 parameters are autograd ops: their gradients come back as float32.
    const at::Tensor w = params_[2 * l].to(dtype), b = params_[2 * l + 1].to(dtype);
    at::Tensor out = at::baddbmm(b.unsqueeze(1), h, w);  // [E, rows, out]
    if (l + 1 == layers) return out;
    h = at::gelu(out);
    if (dropout) h = h * dropout(h);
  }
  return h;
}

// Rows go to a [E, capacity, d] layout, capacity = the largest expert's row count, so that each
// layer of every expert is one baddbmm; a loop over experts costs 2 E kernel launches per layer
// and pass, which is most of a small step on a GPU. The padding rows are zeros: they compute
// something finite that is never read back, so their gradients are zero. The cost is the routing
// imbalance in expert FLOPs (the busiest expert's rows over the mean; BENCHMARKS.md, "Worker on a
// GPU", for when that should give way to a loop).
at::Tensor GroupedExpertsImpl::ForwardBatched(const at::Tensor& x_sorted, const std::vector<int64_t>& counts,
                                              const at::Tensor& row_experts) {
  const int64_t e = num_experts_, rows = x_sorted.size(0), d = x_sorted.size(1);
  const at::ScalarType dtype = compute_.bf16 ? at::kBFloat16 : x_sorted.scalar_type();
  int64_t cap = 0;
  for (int64_t c : counts) cap = std::max(cap, c);
  if (rows == 0) return at::zeros({0, params_.back().size(1)}, x_sorted.options());
  // dest: the padded row of each sorted row; undefined when every expert has `cap` rows (then the
  // two layouts are the same).
  at::Tensor dest;
  at::Tensor h = x_sorted.to(dtype);
  if (cap * e != rows) {
    const at::TensorOptions on_device = at::TensorOptions().dtype(at::kLong).device(x_sorted.device());
    std::vector<int64_t> starts(e, 0);
    for (int64_t i = 1; i < e; ++i) starts[i] = starts[i - 1] + counts[i - 1];
    const at::Tensor re = row_experts.defined() ? row_experts : RowExperts(counts, rows).to(x_sorted.device());
    const at::Tensor first_row = at::tensor(starts, at::kLong).to(x_sorted.device()).index_select(0, re);
    dest = re * cap + (at::arange(rows, on_device) - first_row);  // expert * capacity + rank within it
    h = at::zeros({e * cap, d}, h.options()).index_copy(0, dest, h);
  }
  std::function<at::Tensor(const at::Tensor&)> dropout;
  if (is_training() && dropout_ > 0) {
    // Drawn in sorted-row order, like the kernel path, so both paths see the same masks.
    dropout = [&](const at::Tensor& act) {
      const int64_t width = act.size(2);
      at::Tensor mask = rng_->DropoutMask({rows, width}, dropout_, act.device()).to(act.scalar_type());
      if (dest.defined()) mask = at::ones({e * cap, width}, mask.options()).index_copy(0, dest, mask);
      return mask.view({e, cap, width});
    };
  }
  at::Tensor y = BatchedLayers(h.view({e, cap, d}), dropout).reshape({e * cap, -1});
  if (dest.defined()) y = y.index_select(0, dest);
  return y.to(x_sorted.scalar_type());
}

at::Tensor GroupedExpertsImpl::ForwardAll(const at::Tensor& x) {
  const int64_t n = x.size(0);
  if (compute_.generic) {
    const at::ScalarType dtype = compute_.bf16 ? at::kBFloat16 : x.scalar_type();
    return BatchedLayers(x.to(dtype).unsqueeze(0).expand({num_experts_, n, x.size(1)}), {}).to(x.scalar_type());
  }
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

DispatchPlan PlanDispatch(const at::Tensor& experts, const at::Tensor& keep, int64_t num_experts, bool tensor_ops) {
  if (tensor_ops) {
    // Dropped slots get key num_experts and sort last; a stable sort keeps slot order within an
    // expert, as the counting sort below does.
    const int64_t k = experts.size(1);
    const at::Tensor key = experts.reshape({-1}).masked_fill(keep.reshape({-1}).logical_not(), num_experts);
    auto [sorted, order] = at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const at::Tensor counts = at::bincount(key, {}, num_experts + 1).to(at::kCPU).contiguous();
    DispatchPlan plan;
    plan.counts.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + num_experts);
    int64_t total = 0;
    for (int64_t c : plan.counts) total += c;
    plan.slot_index = order.narrow(0, 0, total);
    plan.token_index = at::div(plan.slot_index, k, "floor");
    plan.row_experts = sorted.narrow(0, 0, total);
    return plan;
  }
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
      gate1_ = register_module("gate1", Dense(d, d, rng, options.compute));
    }
    gate2_ = register_module("gate2", Dense(d, options.num_experts, rng, options.compute));
  }
  experts_ = register_module(
      "experts", GroupedExperts(options.use_moe ? options.num_experts : 1, d, options.expert_hidden_dim,
                                options.expert_layers, options.expert_dropout, rng, options.compute));
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
  aux_ = MoEAux{};
  at::Tensor h = x;
  if (gate1_) {
    h = rng_->Dropout(at::gelu(gate1_(h)), options_.gate_dropout, is_training());
  }
  routing_ = Route(gate2_(h), options_.temperature, options_.top_k, options_.activation_threshold);
  const Routing& route = routing_;
  DispatchPlan plan = PlanDispatch(route.experts, route.keep, options_.num_experts, options_.compute.generic);

  // The parameter-diversity loss comes out of the expert FFN, which fuses it into its passes.
  const bool want_diversity = is_training() && options_.want_param_diversity;
  at::Tensor y = experts_(x.index_select(0, plan.token_index), plan.counts,
                          want_diversity ? &aux_.param_similarity : nullptr, plan.row_experts);
  at::Tensor w = route.weights.reshape({-1}).index_select(0, plan.slot_index).unsqueeze(1);
  at::Tensor mixed = at::zeros_like(x).index_add(0, plan.token_index, y * w);
  at::Tensor out = norm_(residual + mixed);

  if (is_training()) {
    const int64_t e = options_.num_experts;
    if (options_.want_balance) {
      at::Tensor share = at::empty({e}, at::kFloat);
      float* s = share.data_ptr<float>();
      const double total = static_cast<double>(plan.token_index.size(0));
      for (int64_t i = 0; i < e; ++i) s[i] = static_cast<float>(plan.counts[i] / total);
      aux_.balance = BalanceLoss(route.probs, share.to(route.probs.device()));
    }
    if (options_.want_entropy) aux_.entropy = RouterEntropy(route.probs, route.log_probs);
    if (options_.want_z_loss) aux_.z_loss = RouterZLoss(route.logits);
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
  at::Tensor prob_sum = probs.sum(0).to(at::kCPU, at::kDouble).contiguous();
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
