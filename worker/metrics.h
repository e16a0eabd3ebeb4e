// Evaluation metrics computed from tensors: top-k accuracy and retrieval over embeddings.
#ifndef MOESWEEP_WORKER_METRICS_H_
#define MOESWEEP_WORKER_METRICS_H_

#include <ATen/core/Tensor.h>

namespace moesweep::worker {

struct RetrievalMetrics {
  double map = 0;    // Mean average precision over queries with at least one relevant item.
  double rank1 = 0;  // Share of those queries whose nearest other sample has the same label.
  double rank5 = 0;  // ... with a same-label sample among the 5 nearest.
};

// Each sample queries all others by cosine similarity of `embeddings` [N, D]; relevant = same
// label. Ties are broken by sample index. Computed on the CPU whatever the tensors' device.
// Blocks of 256 queries, each ranked with a radix sort:
// O(N^2) time, O(256 N) memory.
RetrievalMetrics ComputeRetrieval(const at::Tensor& embeddings, const at::Tensor& labels);

// Number of rows whose label is among the k highest logits (k clamped to the class count).
int64_t CountTopK(const at::Tensor& logits, const at::Tensor& labels, int64_t k);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_METRICS_H_
