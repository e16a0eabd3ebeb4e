#include "worker/datasets.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

namespace moesweep::worker {
namespace {

constexpr double kFashionMean = 0.2860;
constexpr double kFashionStd = 0.3530;

uint64_t MixSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + stream * 0xD1B54A32D192ED03ULL + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// "size:mtime" of a file, so the cache notices a changed file; "" when it cannot be read.
std::string FileStamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return fmt::format("{}:{}", static_cast<long long>(st.st_size), static_cast<long long>(st.st_mtime));
}

// Takes the first `want` rows (0 = all); `what` names the key for the error.
Status TakeFirst(const char* what, int64_t want, at::Tensor* x, at::Tensor* y, const std::string& source) {
  const int64_t have = x->size(0);
  if (want == 0) return Status::Ok();
  if (want > have) {
    return Status::InvalidArgument(
        fmt::format("config.{}: {} is more than the {} samples available in {}", what, want, have, source));
  }
  *x = x->narrow(0, 0, want).clone();
  *y = y->narrow(0, 0, want).clone();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// CSV

// Splits one CSV line; double quotes group a field ("" is a quote inside one).
bool SplitCsvLine(const std::string& line, std::vector<std::string>* fields, std::string* error) {
  fields->clear();
  std::string cur;
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          cur += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        cur += c;
      }
    } else if (c == '"' && cur.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == ',') {
      fields->push_back(cur);
      cur.clear();
      was_quoted = false;
    } else {
      cur += c;
    }
  }
  if (quoted) {
    *error = "unterminated quoted field";
    return false;
  }
  fields->push_back(cur);
  return true;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

bool ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool ParseClassId(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  *out = std::stoll(s);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Synthetic

Status LoadSynthetic(const TrialConfig& c, Dataset* out) {
  const int64_t n_train = c.train_size > 0 ? c.train_size : 4096;
  const int64_t n_val = c.val_size > 0 ? c.val_size : 1024;
  const int64_t f = c.input_dim, k = c.num_classes, r = c.n_regimes;
  // The task (centres and per-regime rules) and each split have their own stream, so changing
  // train_size leaves the validation set and the rules unchanged.
  at::Generator task_gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(c.data_seed, 0));
  at::Tensor centres = at::empty({r, f}).normal_(0.0, 3.0, task_gen);
  at::Tensor rules = at::empty({r, f, k}).normal_(0.0, 1.0, task_gen);
  auto sample = [&](int64_t n, uint64_t stream, at::Tensor* x, at::Tensor* y) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(c.data_seed, stream));
    at::Tensor regime = at::empty({n}, at::kLong).random_(0, r, gen);
    at::Tensor offset = at::empty({n, f}).normal_(0.0, 1.0, gen);
    // Label = argmax of the regime's own linear rule on the offset from the regime's centre.
    at::Tensor scores = at::bmm(offset.unsqueeze(1), rules.index_select(0, regime)).squeeze(1);
    *y = scores.argmax(1);
    *x = centres.index_select(0, regime) + offset;
  };
  sample(n_train, 1, &out->train_x, &out->train_y);
  sample(n_val, 2, &out->val_x, &out->val_y);
  out->num_classes = k;
  out->channels = out->height = out->width = 0;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// idx

Status ReadIdxFile(const std::string& file, at::Tensor* out) {
  gzFile gz = gzopen(file.c_str(), "rb");
  if (gz == nullptr) {
    return Status::NotFound(fmt::format("{}: cannot open: {}", file, std::strerror(errno)));
  }
  auto close = [&] { gzclose(gz); };
  auto read = [&](void* buf, size_t n) -> int64_t { return gzread(gz, buf, static_cast<unsigned>(n)); };
  auto gz_error = [&]() -> std::string {
    int code = 0;
    const char* msg = gzerror(gz, &code);
    return code != Z_OK && msg != nullptr ? msg : "unexpected end of file";
  };

  unsigned char magic[4];
  if (read(magic, 4) != 4) {
    std::string e = gz_error();
    close();
    return Status::InvalidArgument(fmt::format("{}: truncated idx header ({})", file, e));
  }
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] == 0 || magic[3] > 4) {
    close();
    return Status::InvalidArgument(
        fmt::format("{}: bad idx magic number 0x{:02x}{:02x}{:02x}{:02x} (want 0x0000080N: unsigned bytes, "
                    "1 to 4 dimensions)", file, magic[0], magic[1], magic[2], magic[3]));
  }
  const int ndims = magic[3];
  std::vector<int64_t> dims(ndims);
  int64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    unsigned char b[4];
    if (read(b, 4) != 4) {
      std::string e = gz_error();
      close();
      return Status::InvalidArgument(fmt::format("{}: truncated idx header ({})", file, e));
    }
    dims[i] = (int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) | (int64_t{b[2]} << 8) | int64_t{b[3]};
    if (dims[i] == 0 || (i == 0 && dims[i] > (int64_t{1} << 28)) || (i > 0 && dims[i] > 65536)) {
      close();
      return Status::InvalidArgument(fmt::format("{}: implausible idx dimension {} = {}", file, i, dims[i]));
    }
    total *= dims[i];
    if (total > (int64_t{1} << 34)) {
      close();
      return Status::InvalidArgument(fmt::format("{}: idx data too large", file));
    }
  }
  at::Tensor t = at::empty(dims, at::kByte);
  uint8_t* p = t.data_ptr<uint8_t>();
  int64_t got = 0;
  while (got < total) {
    const int64_t chunk = std::min<int64_t>(total - got, 1 << 30);
    const int64_t n = read(p + got, static_cast<size_t>(chunk));
    if (n <= 0) break;
    got += n;
  }
  if (got != total) {
    std::string e = gz_error();
    close();
    return Status::InvalidArgument(
        fmt::format("{}: truncated: expected {} bytes of data, got {} ({})", file, total, got, e));
  }
  unsigned char extra;
  const bool trailing = read(&extra, 1) == 1;
  close();
  if (trailing) return Status::InvalidArgument(fmt::format("{}: unexpected data after {} bytes", file, total));
  *out = t;
  return Status::Ok();
}

Status LoadFashionMnist(const TrialConfig& c, Dataset* out) {
  auto path = [&](const std::string& stem) {
    std::string gz = c.data_dir + "/" + stem + ".gz";
    std::string plain = c.data_dir + "/" + stem;
    return FileExists(gz) || !FileExists(plain) ? gz : plain;
  };
  struct Split {
    std::string images, labels;
    at::Tensor* x;
    at::Tensor* y;
  };
  Split splits[2] = {{path("train-images-idx3-ubyte"), path("train-labels-idx1-ubyte"), &out->train_x, &out->train_y},
                     {path("t10k-images-idx3-ubyte"), path("t10k-labels-idx1-ubyte"), &out->val_x, &out->val_y}};
  int64_t height = 0, width = 0;
  for (int i = 0; i < 2; ++i) {
    const Split& s = splits[i];
    at::Tensor images, labels;
    Status st = ReadIdxFile(s.images, &images);
    if (!st.ok()) return st;
    st = ReadIdxFile(s.labels, &labels);
    if (!st.ok()) return st;
    if (images.dim() != 3) {
      return Status::InvalidArgument(fmt::format("{}: expected 3 dimensions (n, rows, cols), got {}", s.images, images.dim()));
    }
    if (labels.dim() != 1) {
      return Status::InvalidArgument(fmt::format("{}: expected 1 dimension (n), got {}", s.labels, labels.dim()));
    }
    if (images.size(0) != labels.size(0)) {
      return Status::InvalidArgument(fmt::format("{}: {} labels for {} images in {}", s.labels, labels.size(0),
                                                 images.size(0), s.images));
    }
    if (i == 0) {
      height = images.size(1);
      width = images.size(2);
    } else if (images.size(1) != height || images.size(2) != width) {
      return Status::InvalidArgument(fmt::format("{}: images are {}x{}, training images are {}x{}", s.images,
                                                 images.size(1), images.size(2), height, width));
    }
    const int64_t max_label = labels.max().item<int64_t>();
    if (max_label >= 10) {
      return Status::InvalidArgument(fmt::format("{}: label {} out of range (10 classes)", s.labels, max_label));
    }
    *s.x = images.reshape({images.size(0), -1}).to(at::kFloat).div_(255.0).sub_(kFashionMean).div_(kFashionStd);
    *s.y = labels.to(at::kLong);
  }
  Status st = TakeFirst("train_size", c.train_size, &out->train_x, &out->train_y, splits[0].images);
  if (!st.ok()) return st;
  st = TakeFirst("val_size", c.val_size, &out->val_x, &out->val_y, splits[1].images);
  if (!st.ok()) return st;
  out->num_classes = 10;
  out->channels = 1;
  out->height = height;
  out->width = width;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// CSV

Status LoadCsv(const TrialConfig& c, Dataset* out) {
  const std::string& file = c.path;
  std::ifstream in(file);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open: {}", file, std::strerror(errno)));
  std::string line, error;
  std::vector<std::string> header, fields;
  int64_t line_no = 0;
  auto fail = [&](const std::string& why) {
    return Status::InvalidArgument(fmt::format("{}:{}: {}", file, line_no, why));
  };
  while (header.empty() && std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (Trim(line).empty()) continue;
    if (!SplitCsvLine(line, &header, &error)) return fail(error);
  }
  if (header.empty()) return Status::InvalidArgument(fmt::format("{}: empty file (no header line)", file));
  for (std::string& h : header) h = Trim(h);
  auto label_it = std::find(header.begin(), header.end(), c.label);
  if (label_it == header.end()) {
    return fail(fmt::format("no column named \"{}\" (columns: {})", c.label, fmt::join(header, ", ")));
  }
  const size_t label_col = static_cast<size_t>(label_it - header.begin());
  const size_t cols = header.size(), nfeat = cols - 1;
  if (nfeat == 0) return fail("no feature columns besides the label");

  std::vector<float> features;
  std::vector<std::string> labels;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (Trim(line).empty()) continue;
    if (!SplitCsvLine(line, &fields, &error)) return fail(error);
    if (fields.size() != cols) return fail(fmt::format("expected {} fields, got {}", cols, fields.size()));
    for (size_t j = 0; j < cols; ++j) {
      std::string v = Trim(fields[j]);
      if (j == label_col) {
        if (v.empty()) return fail(fmt::format("empty label in column \"{}\"", header[j]));
        labels.push_back(std::move(v));
        continue;
      }
      double d;
      if (!ParseDouble(v, &d)) return fail(fmt::format("column \"{}\": \"{}\" is not a finite number", header[j], v));
      features.push_back(static_cast<float>(d));
    }
  }
  if (in.bad()) return Status::InvalidArgument(fmt::format("{}: read error", file));
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n < 2) return Status::InvalidArgument(fmt::format("{}: {} data rows; need at least 2", file, n));

  // Class ids: the integers themselves when every label is one, else sorted distinct labels.
  std::vector<int64_t> ids(n);
  bool numeric = true;
  int64_t max_id = 0;
  for (int64_t i = 0; i < n && numeric; ++i) {
    numeric = ParseClassId(labels[i], &ids[i]);
    if (numeric) max_id = std::max(max_id, ids[i]);
  }
  int64_t num_classes = max_id + 1;
  if (!numeric) {
    std::set<std::string> distinct(labels.begin(), labels.end());
    std::vector<std::string> sorted(distinct.begin(), distinct.end());
    for (int64_t i = 0; i < n; ++i) {
      ids[i] = std::lower_bound(sorted.begin(), sorted.end(), labels[i]) - sorted.begin();
    }
    num_classes = static_cast<int64_t>(sorted.size());
  }
  if (num_classes < 2) return Status::InvalidArgument(fmt::format("{}: only one class in column \"{}\"", file, c.label));

  at::Tensor x = at::from_blob(features.data(), {n, static_cast<int64_t>(nfeat)}, at::kFloat).clone();
  at::Tensor y = at::from_blob(ids.data(), {n}, at::kLong).clone();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(c.data_seed, 3));
  at::Tensor order = at::randperm(n, gen, at::kLong);
  int64_t n_val = std::max<int64_t>(1, static_cast<int64_t>(std::llround(n * c.val_fraction)));
  if (n_val >= n) {
    return Status::InvalidArgument(
        fmt::format("{}: val_fraction {} leaves no training rows out of {}", file, c.val_fraction, n));
  }
  at::Tensor train_idx = order.narrow(0, 0, n - n_val), val_idx = order.narrow(0, n - n_val, n_val);
  out->train_x = x.index_select(0, train_idx);
  out->train_y = y.index_select(0, train_idx);
  out->val_x = x.index_select(0, val_idx);
  out->val_y = y.index_select(0, val_idx);
  Status st = TakeFirst("train_size", c.train_size, &out->train_x, &out->train_y, file);
  if (!st.ok()) return st;
  st = TakeFirst("val_size", c.val_size, &out->val_x, &out->val_y, file);
  if (!st.ok()) return st;
  at::Tensor mean = out->train_x.mean(0, true);
  at::Tensor std = out->train_x.std(0, /*unbiased=*/false, true);
  std = at::where(std > 1e-12, std, at::ones_like(std));
  out->train_x = (out->train_x - mean) / std;
  out->val_x = (out->val_x - mean) / std;
  out->num_classes = num_classes;
  out->channels = out->height = out->width = 0;
  return Status::Ok();
}

Status LoadDataset(const TrialConfig& config, Dataset* out) {
  if (config.dataset == "synthetic") return LoadSynthetic(config, out);
  if (config.dataset == "fashion-mnist") return LoadFashionMnist(config, out);
  if (config.dataset == "csv") return LoadCsv(config, out);
  return Status::InvalidArgument(fmt::format("config.dataset: unknown dataset \"{}\"", config.dataset));
}

// ---------------------------------------------------------------------------------------------
// Cache

std::string DatasetCache::Key(const TrialConfig& c) {
  if (c.dataset == "synthetic") {
    return fmt::format("synthetic|{}|{}|{}|{}|{}|{}", c.data_seed, c.train_size, c.val_size, c.input_dim,
                       c.num_classes, c.n_regimes);
  }
  if (c.dataset == "fashion-mnist") {
    return fmt::format("fashion-mnist|{}|{}|{}|{}", c.data_dir, FileStamp(c.data_dir + "/train-images-idx3-ubyte.gz"),
                       c.train_size, c.val_size);
  }
  return fmt::format("{}|{}|{}|{}|{}|{}|{}|{}", c.dataset, c.path, FileStamp(c.path), c.label, c.val_fraction,
                     c.data_seed, c.train_size, c.val_size);
}

size_t DatasetCache::loads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loads_;
}

Status DatasetCache::Get(const TrialConfig& config, std::shared_ptr<const Dataset>* out) {
  const std::string key = Key(config);
  std::promise<std::pair<Status, std::shared_ptr<const Dataset>>> promise;
  Entry entry;
  bool loader = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    recent_.remove(key);
    recent_.push_front(key);
    if (it != entries_.end()) {
      entry = it->second;
    } else {
      entry = promise.get_future().share();
      entries_[key] = entry;
      loader = true;
      ++loads_;
      while (recent_.size() > capacity_) {
        entries_.erase(recent_.back());
        recent_.pop_back();
      }
    }
  }
  if (loader) {
    auto data = std::make_shared<Dataset>();
    Status s;
    try {
      s = LoadDataset(config, data.get());
    } catch (const std::exception& e) {
      s = Status::Internal(fmt::format("loading {} data: {}", config.dataset, e.what()));
    }
    promise.set_value({s, s.ok() ? std::shared_ptr<const Dataset>(data) : nullptr});
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = entries_.find(key);
      if (it != entries_.end()) {
        entries_.erase(it);
        recent_.remove(key);
      }
    }
  }
  const auto& result = entry.get();
  if (!result.first.ok()) return result.first;
  *out = result.second;
  return Status::Ok();
}

}  // namespace moesweep::worker
