// Training data of a trial: synthetic mixture-of-regimes, Fashion-MNIST idx files and CSV, plus a
// small cache so that a worker loads each dataset once and shares it read-only between slots.
#ifndef MOESWEEP_WORKER_DATASETS_H_
#define MOESWEEP_WORKER_DATASETS_H_

#include <cstdint>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <ATen/core/Tensor.h>

#include "common/status.h"
#include "worker/trial_config.h"

namespace moesweep::worker {

// Features are float [N, F], labels int64 [N] in [0, num_classes). Never modified after loading.
struct Dataset {
  at::Tensor train_x, train_y, val_x, val_y;
  int64_t num_classes = 0;
  int64_t channels = 0, height = 0, width = 0;  // Image layout of the features, or 0.
};

// n_regimes Gaussian clusters in input_dim dimensions, each with its own random linear classifier
// applied to the offset from its centre, so the best rule depends on the regime. Deterministic in
// data_seed (train_size / val_size 0 mean 4096 / 1024).
Status LoadSynthetic(const TrialConfig& config, Dataset* out);

// Reads a gzip-compressed (or plain) idx file: magic 0x0000080N (unsigned bytes, N dims), N
// big-endian sizes, then the data. Returns uint8 with those sizes. Errors name the file.
Status ReadIdxFile(const std::string& file, at::Tensor* out);

// {data_dir}/train-images-idx3-ubyte.gz etc.; validation is the official test split. Pixels are
// scaled to [0, 1] and standardised with the dataset's mean 0.2860 and std 0.3530. train_size /
// val_size take the first N samples (0 = all).
Status LoadFashionMnist(const TrialConfig& config, Dataset* out);

// A header line, then one row per sample; the `label` column is the class (integers are used as
// class ids, any other labels are numbered in sorted order); every other column must be numeric.
// Rows are shuffled with data_seed, the last val_fraction of them are validation, and features are
// standardised with the training part's mean and std. Errors name the file and line.
Status LoadCsv(const TrialConfig& config, Dataset* out);

// Loads whatever config.dataset names.
Status LoadDataset(const TrialConfig& config, Dataset* out);

// Thread-safe cache of loaded datasets keyed by the data-relevant config keys; concurrent requests
// for the same data wait for one load. Keeps the `capacity` most recently used; failures are not
// cached (a fixed file is read again).
class DatasetCache {
 public:
  explicit DatasetCache(size_t capacity = 4) : capacity_(capacity) {}
  Status Get(const TrialConfig& config, std::shared_ptr<const Dataset>* out);
  // The cache key of a config (exposed for tests).
  static std::string Key(const TrialConfig& config);
  size_t loads() const;  // Loads started so far.

 private:
  using Entry = std::shared_future<std::pair<Status, std::shared_ptr<const Dataset>>>;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // GUARDED_BY(mu_)
  std::list<std::string> recent_;         // GUARDED_BY(mu_), most recent first.
  size_t loads_ = 0;                      // GUARDED_BY(mu_)
};

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_DATASETS_H_
