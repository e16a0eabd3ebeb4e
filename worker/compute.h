// Compute: how the built-in trainer's layers do their arithmetic. Two paths give the same results:
//   kernels  the hand-written CPU code (gemm.h, the fused AdamW, param_diversity.h, param_cache.h):
//            float32 on the CPU only, and the fastest there.
//   generic  LibTorch ops (batched expert GEMMs, foreach AdamW, autograd): any device, float32 or
//            bfloat16. CUDA and bf16 trials take it; a test can force it on the CPU to check it
//            against the kernels.
// No LibTorch here.
#ifndef MOESWEEP_WORKER_COMPUTE_H_
#define MOESWEEP_WORKER_COMPUTE_H_

namespace moesweep::worker {

struct Compute {
  bool generic = false;
  // Matrix products and expert activations in bfloat16 (generic only). Parameters, their
  // gradients and the optimizer state stay float32; so do routing, norms and losses.
  bool bf16 = false;
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_COMPUTE_H_
