// Small helpers shared by the worker tests: a temporary directory and fixture writers.
#ifndef MOESWEEP_TESTS_WORKER_TEST_UTIL_H_
#define MOESWEEP_TESTS_WORKER_TEST_UTIL_H_

#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace moesweep::worker::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "moesweep-worker-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void WriteText(const std::string& file, const std::string& text) {
  std::ofstream(file) << text;
}

inline void WriteGz(const std::string& file, const std::vector<uint8_t>& bytes) {
  gzFile gz = gzopen(file.c_str(), "wb");
  gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(gz);
}

// idx bytes: magic 0x0000080N, big-endian dims, then `data`.
inline std::vector<uint8_t> IdxBytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(d >> shift));
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

}  // namespace moesweep::worker::testing

#endif  // MOESWEEP_TESTS_WORKER_TEST_UTIL_H_
