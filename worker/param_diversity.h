// The parameter-diversity loss, mean over pairs i != j of cos(theta_i, theta_j), where theta_e is
// all of expert e's parameters flattened (the e-th dim-0 slice of every stacked expert tensor), in
// pieces that passes over the expert parameters can share. ParamCosineSimilarity (losses.h) runs
// them on their own; GroupedFfn (moe_layer.cc) fuses them into its per-expert GEMM loops, where each
// expert's weights and gradient slice are in cache anyway. At 32 experts the parameters are 34 MB,
// so every separate pass over them or their gradient costs about 1 ms.
//
// With inv_e = 1 / |theta_e|, u_e = inv_e theta_e and s = sum_e u_e (no E x E Gram matrix):
//   loss = (|s|^2 - E) / (E (E - 1))
//   d loss / d theta_e = a_e s + b_e theta_e,  with c_e = s . theta_e, k = upstream / (E (E - 1)),
//   a_e = 2 k inv_e, b_e = -2 k c_e inv_e^3.
#ifndef MOESWEEP_WORKER_PARAM_DIVERSITY_H_
#define MOESWEEP_WORKER_PARAM_DIVERSITY_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace moesweep::worker {

struct DiversityForward {
  std::vector<float> inv;     // [E] 1 / |theta_e|
  std::vector<at::Tensor> s;  // per stacked tensor: s restricted to it, [numel / E] float
  double loss = 0;
};

// inv, s and the loss. `stacked`: contiguous float tensors with the expert index as dim 0, E >= 2.
// The norms come from the sums of squares FusedAdamW::Step records as it writes the parameters
// (param_cache.h) when they are valid, so this usually reads the parameters once. The result does
// not depend on the number of threads.
DiversityForward ComputeDiversityForward(at::TensorList stacked);

// s . x over n floats, summed in double.
double DiversityDot(const float* s, const float* x, int64_t n);

// The sum of x[i]^2 over n floats, in double, in 16 fixed lanes: the same result whatever the
// vector width. The parameter norms here and the gradient norm (optimizer.cc) both use it.
double SumSquares(const float* x, int64_t n);

// (a_e, b_e) of one expert from the upstream gradient of the loss, the number of experts, inv_e and
// c_e = s . theta_e.
void DiversityCoefficients(double upstream, int64_t experts, float inv, double c, float* a, float* b);

// One expert's slice (n floats) of one tensor's gradient, in one pass:
//   g = g_old + extra + (a s + b w)
// where g_old is dropped when `overwrite` and extra when it is null (extra: the slice's task
// gradient from a GEMM into a scratch buffer). Returns the sum of squares of the new g, for the
// gradient norm (RecordGradSumSquares).
double DiversityGrad(float* g, const float* w, const float* s, const float* extra, float a, float b, int64_t n,
                     bool overwrite);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_PARAM_DIVERSITY_H_
