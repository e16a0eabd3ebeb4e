#include "worker/param_cache.h"

#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include <ATen/ATen.h>

namespace moesweep::worker {
namespace {

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

// A value recorded for one version of one tensor. The tensor is held weakly: that does not keep its
// data alive, but its address cannot be reused by another tensor while the record exists.
template <typename T>
struct Record {
  std::optional<WeakImpl> tensor;
  uint32_t version = 0;
  T value{};

  void Set(const at::Tensor& t, T v) {
    tensor.emplace(t.getIntrusivePtr());
    version = t._version();
    value = std::move(v);
  }
  bool Matches(const at::Tensor& t) const {
    return tensor && tensor->_unsafe_get_target() == t.unsafeGetTensorImpl() && version == t._version();
  }
};

struct Entry {
  at::Tensor parked;  // The consumed gradient's buffer, while .grad() is undefined.
  Record<double> grad_sum_squares;
  Record<std::vector<double>> slice_sum_squares;
};

// Keyed by the parameter's TensorImpl. Slots running side by side share the map, hence the mutex;
// it is taken a few times per parameter per step.
struct Registry {
  std::mutex mu;
  std::unordered_map<const c10::TensorImpl*, Entry> entries;
};

Registry& GetRegistry() {
  static Registry* registry = new Registry();  // Never destroyed: parameters may outlive statics.
  return *registry;
}

// A parked buffer fits t if it is a plain contiguous tensor of t's shape and type.
bool Fits(const at::Tensor& buffer, const at::Tensor& t) {
  return buffer.defined() && buffer.sizes() == t.sizes() && buffer.scalar_type() == t.scalar_type() &&
         buffer.device() == t.device() && buffer.is_contiguous();
}

// Takes t's parked buffer if it fits, else an undefined tensor.
at::Tensor Unpark(const at::Tensor& t) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.entries.find(t.unsafeGetTensorImpl());
  if (it == r.entries.end()) return at::Tensor();
  at::Tensor buffer = std::move(it->second.parked);
  it->second.parked = at::Tensor();
  return Fits(buffer, t) ? buffer : at::Tensor();
}

}  // namespace

at::Tensor& GradBuffer(const at::Tensor& t) {
  bool fresh = false;
  at::Tensor& g = GradBufferForOverwrite(t, &fresh);
  if (fresh) g.zero_();
  return g;
}

at::Tensor& GradBufferForOverwrite(const at::Tensor& t, bool* fresh) {
  at::Tensor& g = const_cast<at::Tensor&>(t).mutable_grad();
  *fresh = !g.defined();
  if (*fresh) {
    g = Unpark(t);
    if (!g.defined()) g = at::empty_like(t, at::MemoryFormat::Contiguous);
  }
  // The caller writes through raw pointers: retire any record of the old values.
  g.unsafeGetTensorImpl()->bump_version();
  return g;
}

void ParkGrad(const at::Tensor& t) {
  at::Tensor& g = const_cast<at::Tensor&>(t).mutable_grad();
  if (!g.defined()) return;
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  Entry& entry = r.entries[t.unsafeGetTensorImpl()];
  entry.parked = std::move(g);
  entry.grad_sum_squares = Record<double>();
  g = at::Tensor();
}

void RecordGradSumSquares(const at::Tensor& t, double sum_squares) {
  const at::Tensor& g = t.grad();
  if (!g.defined()) return;
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries[t.unsafeGetTensorImpl()].grad_sum_squares.Set(g, sum_squares);
}

bool RecordedGradSumSquares(const at::Tensor& t, double* sum_squares) {
  const at::Tensor& g = t.grad();
  if (!g.defined()) return false;
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.entries.find(t.unsafeGetTensorImpl());
  if (it == r.entries.end() || !it->second.grad_sum_squares.Matches(g)) return false;
  *sum_squares = it->second.grad_sum_squares.value;
  return true;
}

void RecordSliceSumSquares(const at::Tensor& p, std::vector<double> sums) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries[p.unsafeGetTensorImpl()].slice_sum_squares.Set(p, std::move(sums));
}

bool RecordedSliceSumSquares(const at::Tensor& p, std::vector<double>* sums) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.entries.find(p.unsafeGetTensorImpl());
  if (it == r.entries.end() || !it->second.slice_sum_squares.Matches(p)) return false;
  *sums = it->second.slice_sum_squares.value;
  return true;
}

void DropParamCache(const at::Tensor& t) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries.erase(t.unsafeGetTensorImpl());
}

}  // namespace moesweep::worker
