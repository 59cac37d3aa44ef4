#pragma once
/// \file One row's log-softmax forward and backward through its kept softmax numerators, for a
/// loss whose gradient follows its forward while the row is in cache (the fused GRPO loss's
/// one-pass sweep, grpo_loss.hpp). The forward finds the row max m, writes
/// e_j = 2^((x_j - m) log2(e) / T) to a per-thread fp32 scratch row and sums them (S); the
/// backward scales that row: d x_j = -(g / T) e_j / S for j != y, and the target entry from
/// sum_{j != y} e_j / S (logit_grad.hpp). One exponential per element for both instead of two
/// (the online kernels, row_forward / row_backward, take one in each). While the exponentials of
/// a row of 16-bit logits run, the next row is prefetched; a gradient that does not overwrite the
/// row is written with non-temporal stores (its lines are not in the caches, and a normal store would
/// first read each from memory).
///
/// The online kernels still take rows whose max is not finite and any call that asks for the
/// entropy or sum_j p_j^2. Both give the same results up to fp32 rounding (a few ulp per entry;
/// test_grpo_from_logits compares them).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../selective_log_softmax.hpp"

namespace msrl::kernels::detail {

template <class G>
using scale_row_fn = double (*)(const float*, G*, std::size_t, std::size_t, float);

template <class G, bool Stream>
scale_row_fn<G> pick_scale_row() {
#ifdef MSRL_KERNELS_X86
  switch (active_isa()) {
  case cpu_isa::avx512:
    if constexpr (std::is_same_v<G, bf16>)
      if (has_avx512_bf16()) return &avx512_bf16_rows::scale_row<G, Stream>;
    return &avx512_rows::scale_row<G, Stream>;
  case cpu_isa::avx2: return &avx2_rows::scale_row<G, Stream>;
  default: break;
  }
#endif
  return &scalar_rows::scale_row<G, Stream>;
}

/// This thread's fp32 scratch row of at least n elements (kept between calls; grows only).
inline float* scratch_row(std::size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

/// The forward and backward of one row at a time with the numerators kept between them.
template <class T, class G>
struct kept_row {
  row_forward<T> fwd; ///< the online kernels: the fallback
  row_backward<T, G> bwd;
  row_max_fn<T> max_of;
  exp_row_fn<T> exp_of;
  scale_row_fn<G> scale, scale_stream;
  float k;
  double inv_td;
  std::size_t V;
  bool kept; ///< whether rows go through the scratch row (no entropy / sum_p2 output)

  /// What the forward leaves for the backward: the row's lse and, on the kept route, S and the
  /// scratch row (e == nullptr: the online route).
  struct row_state {
    double lse;
    double sum;
    const float* e;
  };

  kept_row(const logprob_outputs& out, const logprob_options& opt, std::size_t cols)
      : fwd(out, opt, cols), bwd(opt, cols, false), max_of(pick_row_max<T>()), exp_of(pick_exp_row<T, true>()),
        scale(pick_scale_row<G, false>()), scale_stream(pick_scale_row<G, true>()),
        k(static_cast<float>(1.0 / opt.temperature) * log2e), inv_td(1.0 / opt.temperature), V(cols),
        kept(out.entropy.empty() && out.sum_p2.empty()) {}

  /// A row that is not read: zero outputs and (when g is given) a zero gradient.
  void skip(std::size_t i, G* g) const {
    fwd.skip(i);
    if (g) std::memset(static_cast<void*>(g), 0, V * sizeof(G));
  }

  /// Reads row i (target y >= 0): its log-prob and lse as row_forward writes them.
  /// next: the row this thread reads after this one (prefetched during the exponentials of 16-bit
  /// rows), or null.
  row_state forward(const T* row, std::size_t i, std::int64_t y, const T* next = nullptr) const {
    if (!kept) return {fwd(row, i, y), 0.0, nullptr};
    const float m = max_of(row, V);
    if (!std::isfinite(m)) return {fwd(row, i, y), 0.0, nullptr};
    float* e = scratch_row(V);
    // The next row is prefetched during the exponentials for 16-bit logits only: an fp32 row, its
    // scratch row and the next row (3 x 600 KB at V = 151,936) crowd a 2 MB L2, and the evictions
    // cost the exponentials more than the prefetch saves the next max pass (docs/benchmarks.md).
    const double S = exp_of(row, V, m, k, e, sizeof(T) == 2 ? next : nullptr); // >= 1: the max's own term is 2^0
    return {fwd.record_max_sum(row, i, y, m, S), S, e};
  }

  /// d loss / d row into g (may alias the row) from the forward's state and gi = d loss / d logp.
  void backward(const row_state& s, const T* row, G* g, std::int64_t y, float gi) const {
    if (!s.e || gi == 0.0f) return bwd(row, g, y, s.lse, gi, 0.0f, 0.0);
    const double xy = static_cast<double>(to_float(row[y])) * inv_td; // read before an in-place overwrite
    // a gradient written over the row just read is in the caches; any other goes past them
    const bool in_place = static_cast<const void*>(g) == static_cast<const void*>(row);
    const double rest = (in_place ? scale : scale_stream)(s.e, g, V, static_cast<std::size_t>(y),
                                                          static_cast<float>(-(gi * inv_td) / s.sum)) / s.sum;
    g[y] = from_float<G>(static_cast<float>(target_logit_grad(gi, 0.0, 0.0, inv_td, xy - s.lse, rest, 0.0)));
  }
};

} // namespace msrl::kernels::detail
