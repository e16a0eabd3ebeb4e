#include "worker/gemm.h"

#include <cstdint>

#include <ATen/ATen.h>

#ifdef MOESWEEP_HAVE_DNNL  // Defined by worker/CMakeLists.txt only when OpenMP is on too.
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>  // The same oneDNN (libdnnl2) that Debian's LibTorch links.
#endif

namespace moesweep::worker {
namespace {

// Products below this many multiply-adds run on the calling thread alone: splitting them costs
// more in fork/join (and in oneDNN's spinning barrier when the cores are shared) than it saves.
constexpr int64_t kParallelMacs = int64_t{1} << 22;

}  // namespace

void Gemm(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b, float beta, const at::Tensor& c) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "Gemm: 2-D operands only");
  TORCH_CHECK(a.is_cpu() && b.is_cpu() && c.is_cpu(), "Gemm: CPU tensors only (other devices take the generic path)");
  const int64_t m = c.size(0), n = c.size(1), k = trans_a ? a.size(0) : a.size(1);
  TORCH_CHECK((trans_a ? a.size(1) : a.size(0)) == m && (trans_b ? b.size(0) : b.size(1)) == n &&
                  (trans_b ? b.size(1) : b.size(0)) == k,
              "Gemm: shape mismatch ", a.sizes(), " x ", b.sizes(), " -> ", c.sizes());
  if (m == 0 || n == 0) return;
  at::Tensor out = c;  // Handle (not data) copy, so that the in-place calls below are allowed.
  if (k == 0) {
    if (beta == 0) {
      out.zero_();
    } else {
      out.mul_(beta);
    }
    return;
  }
#ifdef MOESWEEP_HAVE_DNNL
  auto row_major = [](const at::Tensor& t) { return t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1)); };
  if (a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat && c.scalar_type() == at::kFloat &&
      row_major(a) && row_major(b) && row_major(c)) {
    // oneDNN's OpenMP build sizes its team from omp_get_max_threads(), a per-thread setting, so this
    // does not affect other slots.
    const int threads = omp_get_max_threads();
    const bool serial = threads > 1 && m * n * k < kParallelMacs;
    if (serial) omp_set_num_threads(1);
    const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a.data_ptr<float>(),
                                  a.stride(0), b.data_ptr<float>(), b.stride(0), beta, out.data_ptr<float>(),
                                  out.stride(0));
    if (serial) omp_set_num_threads(threads);
    TORCH_CHECK(status == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(status));
    return;
  }
#endif
  const at::Tensor lhs = trans_a ? a.t() : a;
  const at::Tensor rhs = trans_b ? b.t() : b;
  if (beta == 0) {
    at::mm_out(out, lhs, rhs);
  } else {
    out.addmm_(lhs, rhs, beta, 1.0);
  }
}

bool GemmUsesOneDnn() {
#ifdef MOESWEEP_HAVE_DNNL
  return true;
#else
  return false;
#endif
}

}  // namespace moesweep::worker
