#include "worker/losses.h"

#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "worker/param_cache.h"
#include "worker/param_diversity.h"

namespace moesweep::worker {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double kEps = 1e-12;

// Mean of the off-diagonal entries of a Gram matrix of unit vectors, from their sum s:
// (|s|^2 - E) / (E (E - 1)).
at::Tensor OffDiagonalMean(const at::Tensor& sum_squared_norm, int64_t e) {
  return (sum_squared_norm - static_cast<double>(e)) / static_cast<double>(e * (e - 1));
}

}  // namespace

at::Tensor BalanceLoss(const at::Tensor& probs, const at::Tensor& slot_share) {
  const int64_t e = probs.size(1);
  return (slot_share * probs.mean(0)).sum() * static_cast<double>(e);
}

at::Tensor RouterEntropy(const at::Tensor& probs, const at::Tensor& log_probs) {
  return -(probs * log_probs).sum(1).mean();
}

at::Tensor RouterZLoss(const at::Tensor& logits) { return at::logsumexp(logits, {1}).pow(2).mean(); }

namespace {

// The parameter-diversity loss as its own autograd node (see worker/param_diversity.h for the
// maths). The backward computes each expert's c_e and then its gradient while the expert's slice
// is still in cache. Results do not depend on the number of threads: work is split over experts,
// never inside a sum. Like GroupedFfn, the gradient goes straight into the parameters' .grad.
class ParamCosine : public torch::autograd::Function<ParamCosine> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList stacked) {
    DiversityForward f = ComputeDiversityForward(stacked);
    std::vector<at::Tensor> saved{at::tensor(f.inv)};
    for (at::Tensor& s : f.s) saved.push_back(std::move(s));
    for (const at::Tensor& p : stacked) saved.push_back(p);
    ctx->save_for_backward(saved);
    return {at::scalar_tensor(f.loss, at::kFloat)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const size_t n = (saved.size() - 1) / 2;
    const at::Tensor inv_t = saved[0].contiguous();
    const std::vector<float> inv(inv_t.data_ptr<float>(), inv_t.data_ptr<float>() + inv_t.numel());
    const int64_t e = static_cast<int64_t>(inv.size());
    std::vector<const float*> s(n), w(n);
    std::vector<int64_t> per(n);
    for (size_t t = 0; t < n; ++t) {
      s[t] = saved[1 + t].data_ptr<float>();
      w[t] = saved[1 + n + t].data_ptr<float>();
      per[t] = saved[1 + t].numel();
    }
    // The first writer of a gradient overwrites it (see worker/param_cache.h).
    std::vector<float*> g(n, nullptr);
    std::vector<char> overwrite(n, 0);
    for (size_t t = 0; t < n; ++t) {
      const at::Tensor& p = saved[1 + n + t];
      if (!p.requires_grad()) continue;
      bool fresh = false;
      g[t] = GradBufferForOverwrite(p, &fresh).data_ptr<float>();
      overwrite[t] = fresh;
    }
    const double upstream = grad_outputs[0].item<double>();
    std::vector<double> sq(n * e, 0.0);  // [tensor][expert]: sum of squares of the new gradient
    at::parallel_for(0, e, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        double c = 0;
        for (size_t t = 0; t < n; ++t) c += DiversityDot(s[t], w[t] + i * per[t], per[t]);
        float a = 0, b = 0;
        DiversityCoefficients(upstream, e, inv[i], c, &a, &b);
        for (size_t t = 0; t < n; ++t) {
          if (g[t] == nullptr) continue;
          sq[t * e + i] = DiversityGrad(g[t] + i * per[t], w[t] + i * per[t], s[t], nullptr, a, b, per[t],
                                        overwrite[t] != 0);
        }
      }
    });
    for (size_t t = 0; t < n; ++t) {
      if (g[t] == nullptr) continue;
      double total = 0;
      for (int64_t i = 0; i < e; ++i) total += sq[t * e + i];
      RecordGradSumSquares(saved[1 + n + t], total);
    }
    return variable_list(n);
  }
};

}  // namespace

at::Tensor ParamCosineSimilarity(const std::vector<at::Tensor>& stacked) {
  const int64_t e = stacked.at(0).size(0);
  if (e < 2) return at::zeros({}, stacked[0].options());
  return ParamCosine::apply(at::TensorList(stacked))[0];
}

at::Tensor ParamCosineSimilarityTensorOps(const std::vector<at::Tensor>& stacked) {
  const int64_t e = stacked.at(0).size(0);
  if (e < 2) return at::zeros({}, stacked[0].options());
  // Per tensor rather than through one concatenated [E, P] copy of every parameter.
  at::Tensor sq;
  for (const at::Tensor& p : stacked) {
    at::Tensor t = p.reshape({e, -1}).pow(2).sum(1);
    sq = sq.defined() ? sq + t : t;
  }
  const at::Tensor inv = sq.sqrt().clamp_min(kEps).reciprocal().unsqueeze(1);  // [E, 1]
  at::Tensor total;
  for (const at::Tensor& p : stacked) {
    at::Tensor t = (p.reshape({e, -1}) * inv).sum(0).pow(2).sum();  // |s restricted to p|^2
    total = total.defined() ? total + t : t;
  }
  return OffDiagonalMean(total, e);
}

at::Tensor ParamCosineSimilarityReference(const std::vector<at::Tensor>& stacked) {
  const int64_t e = stacked.at(0).size(0);
  if (e < 2) return at::zeros({}, stacked[0].options());
  std::vector<at::Tensor> flat;
  for (const at::Tensor& p : stacked) flat.push_back(p.reshape({e, -1}));
  at::Tensor theta = at::cat(flat, 1);
  at::Tensor u = theta / theta.norm(2, {1}, true).clamp_min(kEps);
  at::Tensor gram = at::mm(u, u.t());
  return (gram.sum() - gram.diagonal().sum()) / static_cast<double>(e * (e - 1));
}

at::Tensor OutputCosineSimilarity(const at::Tensor& mean_outputs) {
  const int64_t e = mean_outputs.size(0);
  if (e < 2) return at::zeros({}, mean_outputs.options());
  at::Tensor u = mean_outputs / mean_outputs.norm(2, {1}, true).clamp_min(kEps);
  return OffDiagonalMean(u.sum(0).pow(2).sum(), e);
}

at::Tensor MeanPairwiseJsDivergence(const at::Tensor& mean_outputs) {
  const int64_t e = mean_outputs.size(0);
  if (e < 2) return at::zeros({}, mean_outputs.options());
  at::Tensor logq = at::log_softmax(mean_outputs, 1);  // [E, d]
  at::Tensor q = logq.exp();
  at::Tensor m = (q.unsqueeze(1) + q.unsqueeze(0)) * 0.5;  // [E, E, d]
  at::Tensor logm = m.log();
  // KL(q_i || m_ij), summed over d: [E, E]; JS_ij = (KL_ij + KL_ji) / 2.
  at::Tensor kl = (q.unsqueeze(1) * (logq.unsqueeze(1) - logm)).sum(2);
  at::Tensor js = (kl + kl.t()) * 0.5;
  // The diagonal is 0, so the mean over i != j is the full sum over E (E - 1).
  return js.sum() / static_cast<double>(e * (e - 1));
}

}  // namespace moesweep::worker
