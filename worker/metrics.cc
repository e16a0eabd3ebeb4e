#include "worker/metrics.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace moesweep::worker {

namespace {

// Order-preserving map from a float to uint32 (a larger float gets a larger key).
inline uint32_t OrderedKey(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Sorts `idx` by `key` ascending, stably, with a 4-pass LSD radix sort (keys and idx permuted
// together; `key_tmp` and `idx_tmp` are scratch of the same size).
void RadixSort(std::vector<uint32_t>& key, std::vector<int32_t>& idx, std::vector<uint32_t>& key_tmp,
               std::vector<int32_t>& idx_tmp) {
  const size_t n = key.size();
  for (int shift = 0; shift < 32; shift += 8) {
    size_t count[257] = {0};
    for (size_t i = 0; i < n; ++i) ++count[((key[i] >> shift) & 0xFF) + 1];
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (size_t i = 0; i < n; ++i) {
      const size_t pos = count[(key[i] >> shift) & 0xFF]++;
      key_tmp[pos] = key[i];
      idx_tmp[pos] = idx[i];
    }
    key.swap(key_tmp);
    idx.swap(idx_tmp);
  }
}

}  // namespace

RetrievalMetrics ComputeRetrieval(const at::Tensor& embeddings, const at::Tensor& labels) {
  RetrievalMetrics m;
  const int64_t n = embeddings.size(0);
  if (n < 2) return m;
  // The ranking loops read CPU memory; embeddings on another device come over once.
  at::Tensor e = embeddings.to(at::kCPU, at::kFloat).contiguous();
  e = e / e.norm(2, {1}, true).clamp_min(1e-12);
  const at::Tensor y_tensor = labels.to(at::kCPU, at::kLong).contiguous();
  const int64_t* y = y_tensor.data_ptr<int64_t>();
  // Per-query results, summed in query order afterwards so the totals do not depend on threads.
  std::vector<double> ap(n, 0.0), hit1(n, 0.0), hit5(n, 0.0);
  std::vector<char> valid(n, 0);
  const int64_t block = 256;
  for (int64_t start = 0; start < n; start += block) {
    const int64_t b = std::min(block, n - start);
    const at::Tensor sim = at::mm(e.narrow(0, start, b), e.t()).contiguous();  // [b, n]
    const float* s = sim.data_ptr<float>();
    at::parallel_for(0, b, 8, [&](int64_t begin, int64_t end) {
      std::vector<uint32_t> key(n - 1), key_tmp(n - 1);
      std::vector<int32_t> idx(n - 1), idx_tmp(n - 1);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t q = start + r;
        // Descending similarity, ties by sample index (the sort is stable), the query itself left out.
        size_t k = 0;
        for (int64_t j = 0; j < n; ++j) {
          if (j == q) continue;
          key[k] = ~OrderedKey(s[r * n + j]);
          idx[k] = static_cast<int32_t>(j);
          ++k;
        }
        RadixSort(key, idx, key_tmp, idx_tmp);
        double hits = 0, sum_precision = 0;
        bool top5 = false;
        for (size_t rank = 0; rank < idx.size(); ++rank) {
          if (y[idx[rank]] != y[q]) continue;
          hits += 1;
          sum_precision += hits / static_cast<double>(rank + 1);
          if (rank < 5) top5 = true;
          if (rank == 0) hit1[q] = 1;
        }
        if (hits > 0) {
          valid[q] = 1;
          ap[q] = sum_precision / hits;
          hit5[q] = top5 ? 1 : 0;
        }
      }
    });
  }
  double ap_sum = 0, r1 = 0, r5 = 0;
  int64_t queries = 0;
  for (int64_t q = 0; q < n; ++q) {
    if (!valid[q]) continue;
    ++queries;
    ap_sum += ap[q];
    r1 += hit1[q];
    r5 += hit5[q];
  }
  if (queries > 0) {
    m.map = ap_sum / static_cast<double>(queries);
    m.rank1 = r1 / static_cast<double>(queries);
    m.rank5 = r5 / static_cast<double>(queries);
  }
  return m;
}

int64_t CountTopK(const at::Tensor& logits, const at::Tensor& labels, int64_t k) {
  k = std::min<int64_t>(k, logits.size(1));
  at::Tensor top = std::get<1>(logits.topk(k, 1));
  return top.eq(labels.unsqueeze(1)).any(1).sum().item<int64_t>();
}

}  // namespace moesweep::worker
