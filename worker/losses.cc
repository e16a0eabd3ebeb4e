#include "worker/losses.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "worker/linear.h"

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

// grad[e, j] += a[e] * s[j] + b[e] * w[e, j] for an [E, P] block, in one pass.
__attribute__((target_clones("avx512f", "avx2", "default")))
void DiversityGradKernel(float* __restrict grad, const float* __restrict w, const float* __restrict s, float a,
                         float b, int64_t n) {
  for (int64_t j = 0; j < n; ++j) grad[j] += a * s[j] + b * w[j];
}

// Mean pairwise cosine similarity of the experts' parameter vectors theta_e (all tensors of
// expert e, flattened). With u_e = theta_e / |theta_e| and s = sum_e u_e:
//   loss = (|s|^2 - E) / (E (E - 1)),
//   d|s|^2 / d theta_e = 2 (s - (s . u_e) u_e) / |theta_e|.
// Four passes over the parameters instead of an E x E Gram matrix. Like GroupedFfn, the gradient
// goes straight into the parameters' .grad.
class ParamCosine : public torch::autograd::Function<ParamCosine> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList stacked) {
    const int64_t e = stacked[0].size(0);
    at::Tensor sq = at::zeros({e}, at::kDouble);
    for (const at::Tensor& p : stacked) sq += at::norm(p.reshape({e, -1}), 2, {1}).to(at::kDouble).pow(2);
    at::Tensor inv = sq.sqrt().clamp_min(kEps).reciprocal().to(at::kFloat);  // [E]
    double total = 0;
    std::vector<at::Tensor> saved{inv};
    for (const at::Tensor& p : stacked) {
      at::Tensor s = at::mv(p.reshape({e, -1}).t(), inv);  // sum_e u_e restricted to this tensor
      total += at::dot(s, s).item<double>();
      saved.push_back(s);
    }
    for (const at::Tensor& p : stacked) saved.push_back(p);
    ctx->save_for_backward(saved);
    return {at::scalar_tensor((total - e) / static_cast<double>(e * (e - 1)), at::kFloat)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const size_t n = (saved.size() - 1) / 2;
    const at::Tensor& inv = saved[0];
    const int64_t e = inv.size(0);
    const double coef = grad_outputs[0].item<double>() / static_cast<double>(e * (e - 1));
    // c_e = s . theta_e
    at::Tensor c = at::zeros({e}, at::kFloat);
    for (size_t t = 0; t < n; ++t) c += at::mv(saved[1 + n + t].reshape({e, -1}), saved[1 + t]);
    const float* inv_p = inv.data_ptr<float>();
    const float* c_p = c.data_ptr<float>();
    for (size_t t = 0; t < n; ++t) {
      const at::Tensor& p = saved[1 + n + t];
      if (!p.requires_grad()) continue;
      at::Tensor& g = GradBuffer(p);
      const at::Tensor w = p.contiguous(), s = saved[1 + t];
      const int64_t per = w.numel() / e;
      for (int64_t i = 0; i < e; ++i) {
        const double a = 2.0 * coef * inv_p[i];
        const double b = -2.0 * coef * c_p[i] * inv_p[i] * inv_p[i] * inv_p[i];
        DiversityGradKernel(g.data_ptr<float>() + i * per, w.data_ptr<float>() + i * per, s.data_ptr<float>(),
                            static_cast<float>(a), static_cast<float>(b), per);
      }
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
