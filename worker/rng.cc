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

at::Tensor TrialRng::DropoutMask(at::IntArrayRef sizes, double p, at::Device device) {
  if (!device.is_cpu()) return DropoutMaskTensorOps(sizes, p, device);
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

at::Tensor TrialRng::DropoutMaskTensorOps(at::IntArrayRef sizes, double p, at::Device device) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  const uint32_t threshold = static_cast<uint32_t>(p * 16777216.0);
  const uint64_t base = key_ + counter_ * 0x9E3779B97F4A7C15ULL;
  counter_ += static_cast<uint64_t>(n);
  // uint64 arithmetic in int64 tensors: + and * wrap alike in two's complement; a logical right
  // shift is an arithmetic one with the sign-extended bits masked off.
  auto bits = [](uint64_t v) { return static_cast<int64_t>(v); };
  auto shr = [](const at::Tensor& z, int s) {
    return at::bitwise_and(at::bitwise_right_shift(z, s), static_cast<int64_t>((uint64_t{1} << (64 - s)) - 1));
  };
  at::Tensor z = at::arange(n, at::TensorOptions().dtype(at::kLong).device(device));
  z = z.mul_(bits(0x9E3779B97F4A7C15ULL)).add_(bits(base));
  z = at::bitwise_xor(z, shr(z, 30)).mul_(bits(0xBF58476D1CE4E5B9ULL));
  z = at::bitwise_xor(z, shr(z, 27)).mul_(bits(0x94D049BB133111EBULL));
  z = at::bitwise_xor(z, shr(z, 31));
  const at::Tensor keep = shr(z, 40).ge(static_cast<int64_t>(threshold));
  return keep.to(at::kFloat).mul_(1.0 / (1.0 - p)).view(sizes);
}

at::Tensor TrialRng::Dropout(const at::Tensor& x, double p, bool training) {
  if (!training || p <= 0) return x;
  return x * DropoutMask(x.sizes(), p, x.device());
}

}  // namespace moesweep::worker
