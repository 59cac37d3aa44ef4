#pragma once
/// \file The one host GEMM of the fused linear kernels: C (+)= op(A) op(B), fp32, row-major.
///
/// With MSRL_HAS_BLAS (the msrl::blas component) it is one cblas_sgemm call, threaded by the BLAS
/// library itself (OpenBLAS: OPENBLAS_NUM_THREADS); otherwise one Eigen GEMM per part of C, split
/// over `threads` std::threads along C's larger dimension. The two builds live in different inline
/// namespaces, so translation units compiled with and without BLAS can share a program.
#include <algorithm>
#include <climits>
#include <cstddef>

#include <Eigen/Core>

#include "../../backend/host_threads.hpp"
#include "../../core/error.hpp"

#if MSRL_HAS_BLAS
#if __has_include(<cblas.h>)
#include <cblas.h>
#else
#error "msrl: MSRL_HAS_BLAS is set but <cblas.h> is not on the include path (Debian: libblas-dev)"
#endif
#define MSRL_HOST_GEMM_NS gemm_blas
#else
#define MSRL_HOST_GEMM_NS gemm_eigen
#endif

namespace msrl::kernels::detail {
inline namespace MSRL_HOST_GEMM_NS {

/// "blas" or "eigen": which GEMM the host fused linear kernels call in this build.
inline constexpr const char* host_gemm_name =
#if MSRL_HAS_BLAS
    "blas";
#else
    "eigen";
#endif

using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using cmap = Eigen::Map<const row_major, 0, Eigen::OuterStride<>>;
using mmap = Eigen::Map<row_major, 0, Eigen::OuterStride<>>;

/// Calls f(lo, hi) on `parts` contiguous pieces of [0, n) in parallel.
template <class F>
void parallel_parts(unsigned threads, std::size_t n, F f) {
  const backend::host_threads pool{threads, 1};
  const std::size_t parts = std::max<std::size_t>(1, std::min<std::size_t>(pool.effective_threads(n), n));
  pool.for_each_n(parts, [&](std::size_t p) { f(n * p / parts, n * (p + 1) / parts); });
}

/// A row-major fp32 matrix operand: `rows` x `cols` stored with leading dimension `ld`; `trans`
/// makes the operand its transpose (so its shape is cols x rows).
struct gemm_operand {
  const float* data;
  std::size_t rows, cols, ld;
  bool trans = false;
  [[nodiscard]] std::size_t op_rows() const { return trans ? cols : rows; }
  [[nodiscard]] std::size_t op_cols() const { return trans ? rows : cols; }
};

/// C[m x n] = op(A) op(B) (accumulate: C += op(A) op(B)); C is row-major with leading dimension ldc.
inline void host_gemm(const gemm_operand& a, const gemm_operand& b, float* c, std::size_t ldc, bool accumulate, unsigned threads) {
  constexpr const char* where = "msrl::kernels::detail::host_gemm";
  const std::size_t m = a.op_rows(), n = b.op_cols(), k = a.op_cols();
  require<shape_error>(b.op_rows() == k, where, "b", "inner dimensions must agree");
  if (m == 0 || n == 0) return;
#if MSRL_HAS_BLAS
  (void)threads;
  const auto fits = [](std::size_t v) { return v <= static_cast<std::size_t>(INT_MAX); };
  require<shape_error>(fits(m) && fits(n) && fits(k) && fits(a.ld) && fits(b.ld) && fits(ldc), where, "shape",
                       "BLAS dimensions and leading dimensions must fit a 32-bit int");
  cblas_sgemm(CblasRowMajor, a.trans ? CblasTrans : CblasNoTrans, b.trans ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.0f, a.data, static_cast<int>(a.ld), b.data, static_cast<int>(b.ld),
              accumulate ? 1.0f : 0.0f, c, static_cast<int>(ldc));
#else
  const auto map = [](const gemm_operand& o) {
    return cmap(o.data, static_cast<Eigen::Index>(o.rows), static_cast<Eigen::Index>(o.cols),
                Eigen::OuterStride<>(static_cast<Eigen::Index>(o.ld)));
  };
  const cmap A = map(a), B = map(b);
  mmap C(c, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n), Eigen::OuterStride<>(static_cast<Eigen::Index>(ldc)));
  // op(A) rows [r0, r1) times op(B) columns [c0, c1) into the matching block of C
  const auto block = [&](std::size_t r0, std::size_t r1, std::size_t c0, std::size_t c1) {
    const auto ri = static_cast<Eigen::Index>(r0), rn = static_cast<Eigen::Index>(r1 - r0);
    const auto ci = static_cast<Eigen::Index>(c0), cn = static_cast<Eigen::Index>(c1 - c0);
    auto Cb = C.block(ri, ci, rn, cn);
    const auto run = [&](const auto& opA, const auto& opB) {
      if (accumulate)
        Cb.noalias() += opA.middleRows(ri, rn) * opB.middleCols(ci, cn);
      else
        Cb.noalias() = opA.middleRows(ri, rn) * opB.middleCols(ci, cn);
    };
    if (a.trans && b.trans) run(A.transpose(), B.transpose());
    else if (a.trans) run(A.transpose(), B);
    else if (b.trans) run(A, B.transpose());
    else run(A, B);
  };
  if (m >= n)
    parallel_parts(threads, m, [&](std::size_t r0, std::size_t r1) { block(r0, r1, 0, n); });
  else
    parallel_parts(threads, n, [&](std::size_t c0, std::size_t c1) { block(0, m, c0, c1); });
#endif
}

} // namespace MSRL_HOST_GEMM_NS
} // namespace msrl::kernels::detail
