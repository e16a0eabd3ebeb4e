#include "worker/rng.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

namespace moesweep::worker {
namespace {

// splitmix64's finaliser: a good 64-bit mix of a counter (passes BigCrush on sequential input).
inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

TrialRng::TrialRng(uint64_t seed)
    : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)),
      engine_(Mix(seed ^ 0x6D6F657377656570ULL)),
      key_(Mix(seed + 0x9E3779B97F4A7C15ULL)) {}

at::Tensor TrialRng::DropoutMask(at::IntArrayRef sizes, double p) {
  at::Tensor mask = at::empty(sizes, at::kFloat);
  const int64_t n = mask.numel();
  float* out = mask.data_ptr<float>();
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  // Keep when the top 24 bits of the hash are >= p * 2^24.
  const uint32_t threshold = static_cast<uint32_t>(p * 16777216.0);
  const uint64_t base = key_ + counter_ * 0x9E3779B97F4A7C15ULL;
  counter_ += static_cast<uint64_t>(n);
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      uint32_t r = static_cast<uint32_t>(Mix(base + static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL) >> 40);
      out[i] = r >= threshold ? scale : 0.0f;
    }
  });
  return mask;
}

at::Tensor TrialRng::Dropout(const at::Tensor& x, double p, bool training) {
  if (!training || p <= 0) return x;
  return x * DropoutMask(x.sizes(), p);
}

}  // namespace moesweep::worker
