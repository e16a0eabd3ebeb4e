// Helpers shared by the fuzz targets: a check that names the broken invariant and aborts (libFuzzer
// then keeps the input), a guard that turns an escaping exception into such a failure, and a
// reader that draws small decisions from the fuzzer's bytes. Header-only and free of clang's
// <fuzzer/FuzzedDataProvider.h>, so the same targets build with g++ as corpus replayers.
#ifndef MOESWEEP_FUZZ_FUZZ_UTIL_H_
#define MOESWEEP_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace moesweep::fuzz {

[[noreturn]] inline void Fail(const char* file, int line, const char* condition, const std::string& detail) {
  std::fprintf(stderr, "%s:%d: invariant broken: %s\n%s\n", file, line, condition, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// Every call that takes fuzzed input goes through this: an exception must never escape (on the
// coordinator's thread it would end the process).
template <typename F>
void NoThrow(const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    Fail(__FILE__, __LINE__, what, fmt::format("exception escaped: {}", e.what()));
  } catch (...) {
    Fail(__FILE__, __LINE__, what, "a non-std exception escaped");
  }
}

// Splits at NUL bytes: several text fields in one input.
inline std::vector<std::string_view> SplitNul(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t nul = text.find('\0', start);
    parts.push_back(text.substr(start, nul == std::string_view::npos ? std::string_view::npos : nul - start));
    if (nul == std::string_view::npos) return parts;
    start = nul + 1;
  }
}

// Draws bytes from the front; past the end every draw is zero, so any input is a complete run.
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}

  bool empty() const { return pos_ >= data_.size(); }
  uint8_t Byte() { return empty() ? 0 : static_cast<uint8_t>(data_[pos_++]); }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | Byte();
    return v;
  }
  // Mostly the values that matter to scoring: ordinary, equal, huge, and non-finite.
  double Double() {
    switch (Byte() % 8) {
      case 0: return std::numeric_limits<double>::quiet_NaN();
      case 1: return std::numeric_limits<double>::infinity();
      case 2: return -std::numeric_limits<double>::infinity();
      case 3: return (Byte() % 2 ? -1 : 1) * 1e308;
      case 4: {
        uint64_t bits = U64();
        double d;
        std::memcpy(&d, &bits, sizeof d);
        return d;
      }
      default: return static_cast<int8_t>(Byte()) / 4.0;
    }
  }
  std::string String(size_t max_bytes) {
    size_t n = std::min<size_t>(Byte(), max_bytes);
    n = std::min(n, data_.size() - std::min(pos_, data_.size()));
    std::string s(data_.substr(std::min(pos_, data_.size()), n));
    pos_ += n;
    return s;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

}  // namespace moesweep::fuzz

#define FUZZ_CHECK(condition, ...)                                                           \
  do {                                                                                       \
    if (!(condition)) ::moesweep::fuzz::Fail(__FILE__, __LINE__, #condition, fmt::format(__VA_ARGS__)); \
  } while (0)

#endif  // MOESWEEP_FUZZ_FUZZ_UTIL_H_
