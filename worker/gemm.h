// Row-major float GEMM for the hot matrix products. Uses oneDNN's sgemm (libdnnl, which LibTorch
// already depends on) when it was found at build time: its JIT kernels use AVX-512, while the
// OpenBLAS 0.3.21 behind LibTorch's mm picks Haswell kernels on newer CPUs and packs both operands
// on every call, which makes the small per-expert products 2-4x slower. Falls back to ATen.
#ifndef MOESWEEP_WORKER_GEMM_H_
#define MOESWEEP_WORKER_GEMM_H_

#include <ATen/core/Tensor.h>

namespace moesweep::worker {

// c = op(a) * op(b) + beta * c, where op(x) = x^T when trans_x. All three are 2-D float tensors
// whose last dimension is contiguous (row slices of a bigger matrix are fine). With beta == 0, c's
// old contents are ignored. Intra-op threads: the calling thread's at::get_num_threads().
void Gemm(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b, float beta, const at::Tensor& c);

// True when Gemm runs on oneDNN.
bool GemmUsesOneDnn();

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_GEMM_H_
