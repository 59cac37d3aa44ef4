#pragma once
/// \file Zeroing a large fp32 matrix on the host with streaming stores over `threads` threads: the
/// fresh d W of the fused linear ops (linear_options::overwrite_d_weight). A [V, H] gradient is
/// far larger than the caches (151,936 x 512 fp32: 311 MB), so a plain fill pays a read for
/// ownership of every line and runs on one thread: 32 ms on the 2-core VM, against 8.5 ms for
/// the non-temporal stores on two threads (docs/benchmarks.md). The stores are SSE's movntps
/// (part of x86-64's baseline, so no dispatch); other targets use std::fill.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../../backend/host_threads.hpp"
#include "../../core/cpu_isa.hpp"
#ifdef MSRL_X86_DISPATCH
#include <immintrin.h>
#endif

namespace msrl::kernels::detail {

/// p[0, n) = 0 with non-temporal stores where the target has them; ordered before the return.
inline void stream_zero(float* p, std::size_t n) {
#ifdef MSRL_X86_DISPATCH
  std::size_t i = 0;
  for (; i < n && (reinterpret_cast<std::uintptr_t>(p + i) & 15u) != 0; ++i) p[i] = 0.0f;
  const __m128 z = _mm_setzero_ps();
  for (; i + 16 <= n; i += 16) { // one 64-byte line per iteration
    _mm_stream_ps(p + i, z);
    _mm_stream_ps(p + i + 4, z);
    _mm_stream_ps(p + i + 8, z);
    _mm_stream_ps(p + i + 12, z);
  }
  for (; i < n; ++i) p[i] = 0.0f;
  _mm_sfence();
#else
  std::fill(p, p + n, 0.0f);
#endif
}

/// The rows x cols matrix at p with leading dimension ld >= cols set to 0 (the columns past cols
/// untouched), split over `threads` threads (0: all) in blocks of about 256 KiB.
inline void zero_matrix(float* p, std::size_t rows, std::size_t cols, std::size_t ld, unsigned threads) {
  if (rows == 0 || cols == 0) return;
  const backend::host_threads exec{threads, 1};
  if (ld == cols) { // contiguous: one range
    const std::size_t n = rows * cols, block = std::size_t{1} << 16;
    exec.for_each_n((n + block - 1) / block, [&](std::size_t b) { stream_zero(p + b * block, std::min(block, n - b * block)); });
    return;
  }
  const std::size_t per = std::max<std::size_t>(1, (std::size_t{1} << 16) / cols); // rows per block
  exec.for_each_n((rows + per - 1) / per, [&](std::size_t b) {
    for (std::size_t r = b * per; r < std::min(rows, (b + 1) * per); ++r) stream_zero(p + r * ld, cols);
  });
}

} // namespace msrl::kernels::detail
