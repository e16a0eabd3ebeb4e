// What the worker's own kernels keep about parameters between the phases of a training step, so
// that passes over all (expert) parameters are not repeated: parked gradient buffers, and sums of
// squares recorded while the values were in cache.
//
// Gradients. The custom backward functions (Dense, GroupedFfn, the parameter-diversity loss) write
// parameter gradients in place instead of returning them. A gradient's life in one step:
//   - FusedAdamW::Step reads it and parks it (ParkGrad): .grad() becomes undefined, so autograd and
//     everything else see "no gradient yet", but the buffer stays allocated. A fresh multi-MB
//     tensor every step cost page faults, and zeroing it cost a memory pass.
//   - The first writer of the next backward reclaims the buffer. GradBufferForOverwrite hands it
//     over without zeroing (its caller overwrites every element: a GEMM with beta 0 instead of
//     beta 1, which oneDNN runs 2x faster for ~8-row expert slices); GradBuffer zero-fills it for
//     writers that can only add.
//   - Later writers in the same backward get the now-defined gradient and add to it.
// Whether a writer overwrites or adds depends only on whether the gradient is defined, so the
// result does not depend on which writer runs first; only the speed does.
//
// Records. A sum of squares recorded for a tensor is tied to that tensor's version counter: every
// in-place ATen op bumps it, and so do GradBuffer* (for gradients) and FusedAdamW::Step (for
// parameters), which write through raw pointers. A record is used only while the version is the
// one it was taken at, so a stale record is never used; at worst a pass is not saved.
#ifndef MOESWEEP_WORKER_PARAM_CACHE_H_
#define MOESWEEP_WORKER_PARAM_CACHE_H_

#include <vector>

#include <ATen/core/Tensor.h>

namespace moesweep::worker {

// t.grad() for a writer that adds into it: reuses t's parked buffer, zero-filled, or allocates
// zeros.
at::Tensor& GradBuffer(const at::Tensor& t);

// t.grad() for a writer that can overwrite it. *fresh = true: the buffer holds garbage and the
// caller must write every element. *fresh = false: it holds gradient from an earlier writer and
// the caller must add to it.
at::Tensor& GradBufferForOverwrite(const at::Tensor& t, bool* fresh);

// Moves t.grad(), if defined, into t's parking slot (replacing an older one) and leaves .grad()
// undefined.
void ParkGrad(const at::Tensor& t);

// The sum of squares of t.grad(), recorded by its last writer, so that the global gradient norm
// does not read the gradient again.
void RecordGradSumSquares(const at::Tensor& t, double sum_squares);
bool RecordedGradSumSquares(const at::Tensor& t, double* sum_squares);

// The sum of squares of each dim-0 slice of parameter p (one per expert for stacked expert
// tensors), recorded by FusedAdamW::Step as it writes p, for the parameter-diversity loss's norms.
void RecordSliceSumSquares(const at::Tensor& p, std::vector<double> sums);
bool RecordedSliceSumSquares(const at::Tensor& p, std::vector<double>* sums);

// Forgets everything kept for t, parked buffer included (for the owner of t's optimizer state, on
// destruction).
void DropParamCache(const at::Tensor& t);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_PARAM_CACHE_H_
