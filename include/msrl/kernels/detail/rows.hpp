#pragma once
/// \file Per-row kernels of the host selective log-softmax for each instruction set, and the
/// runtime choice among them (AVX-512 > AVX2 > scalar; core/cpu_isa.hpp; AVX-512 with AVX512_BF16
/// for the backward rows that write bf16).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <limits>

#include "simd_isa.hpp"

namespace msrl::kernels::detail {

/// Online statistics of one row in temperature-scaled units: lse = max + log_sum;
/// entropy = log_sum - mean_term (the entropy of softmax(x / T)); sum_p2 = sum_j p_j^2 of
/// p = softmax(x / T) (0 unless asked for). sum == 0 means every logit is -inf.
struct row_stats {
  double max;
  double log_sum;
  double sum;
  double entropy;
  double sum_p2;
};

/// What the backward sweep of a row accumulates over j != y: sum p_j and sum p_j log2 p_j (the
/// latter only with the entropy term).
struct row_rest {
  double p;
  double plog2p;
};

template <class T>
inline T neg_inf() {
  if constexpr (std::is_same_v<T, float>) return -std::numeric_limits<float>::infinity();
  else if constexpr (std::is_same_v<T, bf16>) return bf16{0xff80u};
  else return f16{0xfc00u};
}

/// Merges lane states (raw max m_l, sum s_l = sum 2^d2, t_l = sum 2^d2 d2 with d2 in log2 units of
/// (x - m_l) / T, and, when q is given, q_l = sum 2^(2 d2)) into the row's statistics in
/// temperature-scaled natural units: a lane rescaled to the row max M by a = e^((m_l - M) / T)
/// adds a s_l to the sum and a^2 q_l to the sum of squares, and sum_p2 = Q / S^2. inv_t is the
/// double 1 / T: the max is scaled in double (with fp32 1 / T, lse would be off by up to
/// |max / T| 2^-24, ~1e-6 at max / T = 20, which the entropy gradient of a confident row feels).
inline row_stats combine_lanes(const float* m, const float* s, const float* t, const float* q, int n, double inv_t) {
  constexpr double ln2 = 0.69314718055994530942, l2e = 1.44269504088896340736;
  double M = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < n; ++i)
    if (s[i] > 0.0f && m[i] > M) M = m[i];
  double S = 0.0, Tt = 0.0, Q = 0.0;
  for (int i = 0; i < n; ++i) {
    if (!(s[i] > 0.0f)) continue;
    const double dm = (static_cast<double>(m[i]) - M) * inv_t, a = std::exp(dm);
    S += a * s[i];
    Tt += a * (static_cast<double>(t[i]) + dm * l2e * s[i]);
    if (q) Q += a * a * q[i];
  }
  if (!(S > 0.0)) return {-std::numeric_limits<double>::infinity(), 0.0, 0.0, 0.0, 0.0};
  const double ls = std::log(S);
  return {M * inv_t, ls, S, ls - ln2 * Tt / S, q ? Q / (S * S) : 0.0};
}

} // namespace msrl::kernels::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define MSRL_ROW_NS msrl::kernels::detail::scalar_rows
#define MSRL_ROW_ISA ::msrl::kernels::detail::isa_scalar
#define MSRL_ROW_TARGET
namespace msrl::kernels::detail::scalar_rows {}
#include "row_kernels.inl"
#undef MSRL_ROW_NS
#undef MSRL_ROW_ISA
#undef MSRL_ROW_TARGET

#ifdef MSRL_KERNELS_X86
#define MSRL_ROW_NS msrl::kernels::detail::avx2_rows
#define MSRL_ROW_ISA ::msrl::kernels::detail::isa_avx2
#define MSRL_ROW_TARGET MSRL_TARGET_AVX2
#include "row_kernels.inl"
#undef MSRL_ROW_NS
#undef MSRL_ROW_ISA
#undef MSRL_ROW_TARGET

#define MSRL_ROW_NS msrl::kernels::detail::avx512_rows
#define MSRL_ROW_ISA ::msrl::kernels::detail::isa_avx512
#define MSRL_ROW_TARGET MSRL_TARGET_AVX512
#include "row_kernels.inl"
#undef MSRL_ROW_NS
#undef MSRL_ROW_ISA
#undef MSRL_ROW_TARGET

// Only its backward rows with bf16 gradients are used (selective_log_softmax.hpp pick_backward).
#define MSRL_ROW_NS msrl::kernels::detail::avx512_bf16_rows
#define MSRL_ROW_ISA ::msrl::kernels::detail::isa_avx512_bf16
#define MSRL_ROW_TARGET MSRL_TARGET_AVX512_BF16
#include "row_kernels.inl"
#undef MSRL_ROW_NS
#undef MSRL_ROW_ISA
#undef MSRL_ROW_TARGET
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace msrl::kernels {
// The ISA choice is msrl's (core/cpu_isa.hpp); these names are kept for the kernels' users.
using msrl::active_isa;
using msrl::clear_isa_cap;
using msrl::cpu_isa;
using msrl::detected_isa;
using msrl::set_isa_cap;
using msrl::to_string;
} // namespace msrl::kernels
