#include "worker/linear.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "worker/gemm.h"
#include "worker/param_cache.h"

namespace moesweep::worker {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class DenseFunction : public torch::autograd::Function<DenseFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias) {
    at::Tensor y = bias.unsqueeze(0).expand({x.size(0), weight.size(0)}).contiguous();
    Gemm(x, false, weight, true, 1.0f, y);
    ctx->save_for_backward({x, weight, bias});
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &bias = saved[2];
    const at::Tensor dy = grad_outputs[0].contiguous();
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = at::empty({dy.size(0), weight.size(1)}, dy.options());
      Gemm(dy, false, weight, false, 0.0f, dx);
    }
    bool fresh = false;
    if (weight.requires_grad()) {
      at::Tensor& gw = GradBufferForOverwrite(weight, &fresh);
      Gemm(dy, true, x, false, fresh ? 0.0f : 1.0f, gw);
    }
    if (bias.requires_grad()) {
      at::Tensor& gb = GradBufferForOverwrite(bias, &fresh);
      if (fresh) {
        at::sum_out(gb, dy, at::IntArrayRef{0});
      } else {
        gb.add_(dy.sum(0));
      }
    }
    return {dx, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

DenseImpl::DenseImpl(int64_t in, int64_t out, TrialRng* rng, Compute compute) : compute_(compute) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  at::NoGradGuard no_grad;
  weight = register_parameter("weight", at::empty({out, in}).uniform_(-bound, bound, rng->generator()));
  bias = register_parameter("bias", at::empty({out}).uniform_(-bound, bound, rng->generator()));
}

at::Tensor DenseImpl::forward(const at::Tensor& x) {
  if (compute_.generic) {
    if (!compute_.bf16) return at::linear(x, weight, bias);
    return at::linear(x.to(at::kBFloat16), weight.to(at::kBFloat16), bias.to(at::kBFloat16)).to(x.scalar_type());
  }
  const int64_t in = weight.size(1), out = weight.size(0);
  if (x.dim() == 2) return DenseFunction::apply(x.contiguous(), weight, bias)[0];
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = out;
  return DenseFunction::apply(x.reshape({-1, in}).contiguous(), weight, bias)[0].view(sizes);
}

}  // namespace moesweep::worker
