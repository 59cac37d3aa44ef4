#pragma once
/// \file Host selective log-softmax: per-token log p(target) = x_y / T - logsumexp(x / T) from
/// logits [N, V] (fp32 / bf16 / fp16, fp32 accumulation), optional per-token entropy and
/// sum_v p_v^2 (for the optimal token baseline, grpo/otb.hpp), and the
/// backward d logits = g * (onehot - softmax(x / T)) / T into a caller buffer or in place, plus,
/// when an upstream gradient h on the entropy is given, h * dH/dx = -h p (log p + H) / T
/// (entropy bonus / penalty; formula in logit_grad.hpp).
///
/// One read of each row: online max / sum-exp per SIMD lane (a lane rescales only when its max
/// grows, which is rare after the first vectors; bf16 / fp16 rows without entropy or sum_p2: the
/// row's max, then its sum-exp, the second read from L2), a cheap polynomial exp (detail/simd_isa.hpp),
/// AVX-512 / AVX2 / scalar chosen at run time, rows split over threads. The backward reads the
/// row once more and writes the gradient once, the entropy term included (rows whose upstream
/// gradients are zero are written without being read). -inf logits contribute exactly 0 (and get
/// gradient 0); a row of only -inf logits has logp = lse = -inf, entropy = sum_p2 = 0 and
/// gradient 0; a negative target (ignore index, e.g. -100) gives logp = lse = entropy = sum_p2 = 0
/// and gradient 0, and its row is not read.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <type_traits>

#include "../core/backward_arrays.hpp"
#include "../backend/host_threads.hpp"
#include "../core/error.hpp"
#include "detail/rows.hpp"
#include "half.hpp"
#include "logit_grad.hpp"

namespace msrl::kernels {

/// A row-major matrix view: `rows` rows of `cols` elements, rows `stride` elements apart (0 = cols).
template <class T>
struct matrix_view {
  T* data = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t stride = 0;
  std::size_t ld() const { return stride ? stride : cols; }
  T* row(std::size_t i) const { return data + i * ld(); }
};

struct logprob_options {
  double temperature = 1.0; ///< logits are divided by T before the softmax (sampling temperature)
  unsigned threads = 0;     ///< worker threads over rows; 0 = std::thread::hardware_concurrency()
};

/// Per-token outputs. logp is required; lse (needed by the backward), entropy and sum_p2 are
/// optional (empty = not computed). lse is kept in double: its fp32 rounding (half an ulp, ~1e-6
/// at |lse| = 16) would otherwise be the largest error of the gradient. sum_p2 = sum_v p_v^2 with
/// p = softmax(x / T), from the same pass: beside s = sum e^(z - m) the row keeps
/// s2 = sum e^(2 (z - m)) (rescaled by e^(2 (m_old - m_new)) when the max grows), and
/// sum_p2 = s2 / s^2 (one more multiply-add per element, only when asked for).
struct logprob_outputs {
  std::span<float> logp;
  std::span<double> lse;
  std::span<float> entropy;
  std::span<float> sum_p2 = {};
};

/// What the backward needs: the forward's saved per-token statistics and the upstream gradients.
/// grad_entropy empty = no entropy term (the plain log-prob backward); when it is given, entropy
/// (the forward's output) is required. grad_logp empty = 0 (a loss of the entropy alone).
struct logprob_backward_inputs {
  std::span<const double> lse;               ///< from the forward, one per row
  std::span<const float> grad_logp;          ///< d loss / d logp, one per row, or empty (= 0)
  std::span<const float> entropy = {};       ///< from the forward; required with grad_entropy
  std::span<const float> grad_entropy = {};  ///< d loss / d entropy, one per row, or empty (= none)

  /// The spans over the pointer form's arrays of n rows (null = empty).
  static logprob_backward_inputs of(const backward_arrays& a, std::size_t n) {
    auto f = [n](const float* p) { return p ? std::span<const float>(p, n) : std::span<const float>{}; };
    return {{a.lse, a.lse ? n : 0}, f(a.grad_logp), f(a.entropy), f(a.grad_entropy)};
  }
};

namespace detail {

inline backend::host_threads row_pool(unsigned threads, std::size_t cols) {
  // rows are heavy: split them as soon as a thread gets ~64 K elements
  const std::size_t grain = std::max<std::size_t>(1, (std::size_t{1} << 16) / std::max<std::size_t>(cols, 1));
  return backend::host_threads{threads, grain};
}

template <class T>
void check_logits(const matrix_view<const T>& x, const char* where) {
  require<shape_error>(x.rows == 0 || x.data != nullptr, where, "logits", "must not be null when it has rows");
  require<shape_error>(x.cols >= 1, where, "logits", "must have at least one column (vocabulary size >= 1)");
  require<shape_error>(x.stride == 0 || x.stride >= x.cols, where, "logits.stride", "must be 0 or >= cols");
}

inline void check_options(const logprob_options& o, const char* where) {
  require(std::isfinite(o.temperature) && o.temperature > 0.0, where, "options.temperature", "must be finite and > 0");
}

inline void check_targets(std::span<const std::int64_t> targets, std::size_t rows, std::size_t V, const char* where) {
  require<shape_error>(targets.size() == rows, where, "targets",
                       "must have one entry per logits row (" + std::to_string(rows) + "), got " + std::to_string(targets.size()));
  const auto bad = std::find_if(targets.begin(), targets.end(), [V](std::int64_t t) { return t >= static_cast<std::int64_t>(V); });
  require<value_error>(bad == targets.end(), where, "targets",
                       "must be < the vocabulary size (" + std::to_string(V) + "); negative ids are ignored tokens");
}

/// Ignored ids (negative) only at masked tokens: a loss counts every unmasked token. mask: 0/1 per
/// token or empty (every token counts); its size is the caller's to check.
template <class M>
void check_unmasked_targets(std::span<const std::int64_t> targets, std::span<const M> mask, const char* where) {
  for (std::size_t i = 0; i < targets.size(); ++i)
    if (targets[i] < 0 && (mask.empty() || mask[i] != M(0)))
      require<value_error>(false, where, "targets", "must be >= 0 at unmasked tokens (token " + std::to_string(i) + ")");
}

template <class T>
using forward_fn = row_stats (*)(const T*, std::size_t, double);
template <class T, class G>
using backward_fn = row_rest (*)(const T*, G*, std::size_t, std::size_t, float, float, float, float, float);

template <class T, bool Entropy, bool SumP2>
forward_fn<T> pick_forward() {
#ifdef MSRL_KERNELS_X86
  switch (active_isa()) {
  case cpu_isa::avx512: return &avx512_rows::forward_row<T, Entropy, SumP2>;
  case cpu_isa::avx2: return &avx2_rows::forward_row<T, Entropy, SumP2>;
  default: break;
  }
#endif
  return &scalar_rows::forward_row<T, Entropy, SumP2>;
}

/// The row kernel for the requested statistics (the plain one when neither is asked for).
template <class T>
forward_fn<T> pick_forward(bool entropy, bool sum_p2) {
  if (sum_p2) return entropy ? pick_forward<T, true, true>() : pick_forward<T, false, true>();
  return entropy ? pick_forward<T, true, false>() : pick_forward<T, false, false>();
}

template <class T, class G, bool Entropy>
backward_fn<T, G> pick_backward() {
#ifdef MSRL_KERNELS_X86
  switch (active_isa()) {
  case cpu_isa::avx512:
    if constexpr (std::is_same_v<G, bf16>)
      if (has_avx512_bf16()) return &avx512_bf16_rows::backward_row<T, G, Entropy>;
    return &avx512_rows::backward_row<T, G, Entropy>;
  case cpu_isa::avx2: return &avx2_rows::backward_row<T, G, Entropy>;
  default: break;
  }
#endif
  return &scalar_rows::backward_row<T, G, Entropy>;
}

template <class T>
using row_max_fn = float (*)(const T*, std::size_t);
template <class T>
using exp_row_fn = double (*)(const T*, std::size_t, float, float, float*, const T*);

template <class T>
row_max_fn<T> pick_row_max() {
#ifdef MSRL_KERNELS_X86
  switch (active_isa()) {
  case cpu_isa::avx512: return &avx512_rows::row_max<T>;
  case cpu_isa::avx2: return &avx2_rows::row_max<T>;
  default: break;
  }
#endif
  return &scalar_rows::row_max<T>;
}

/// Keep: write the numerators to the scratch row (kept_row.hpp) or only sum them.
template <class T, bool Keep>
exp_row_fn<T> pick_exp_row() {
#ifdef MSRL_KERNELS_X86
  switch (active_isa()) {
  case cpu_isa::avx512: return &avx512_rows::exp_row<T, Keep>;
  case cpu_isa::avx2: return &avx2_rows::exp_row<T, Keep>;
  default: break;
  }
#endif
  return &scalar_rows::exp_row<T, Keep>;
}

/// The forward of one row at a time: row i's log-prob and the statistics `out` asks for.
template <class T>
struct row_forward {
  forward_fn<T> fwd;
  double inv_td;
  std::size_t V;
  float* lp;
  double* ls;
  float* en;
  float* q2;

  row_forward(const logprob_outputs& out, const logprob_options& opt, std::size_t cols)
      : fwd(pick_forward<T>(!out.entropy.empty(), !out.sum_p2.empty())), inv_td(1.0 / opt.temperature), V(cols),
        lp(out.logp.data()), ls(out.lse.empty() ? nullptr : out.lse.data()), en(out.entropy.empty() ? nullptr : out.entropy.data()),
        q2(out.sum_p2.empty() ? nullptr : out.sum_p2.data()) {}
  /// A row that is not read (masked, or a negative target): zeros.
  void skip(std::size_t i) const {
    lp[i] = 0.0f;
    if (ls) ls[i] = 0.0;
    if (en) en[i] = 0.0f;
    if (q2) q2[i] = 0.0f;
  }
  /// Reads row i (target y >= 0); returns its lse (-inf when every logit is -inf).
  double operator()(const T* row, std::size_t i, std::int64_t y) const {
    return record(i, static_cast<double>(to_float(row[y])) * inv_td, fwd(row, V, inv_td));
  }
  /// Writes row i's outputs from its raw max m (finite) and S = sum_j 2^((x_j - m) log2(e) / T),
  /// the two-pass statistics (no entropy / sum_p2); returns its lse.
  double record_max_sum(const T* row, std::size_t i, std::int64_t y, float m, double S) const {
    const row_stats st{static_cast<double>(m) * inv_td, std::log(S), S, 0.0, 0.0};
    return record(i, static_cast<double>(to_float(row[y])) * inv_td, st);
  }
  /// Writes row i's outputs from its statistics and its target's scaled logit xy; returns its lse.
  double record(std::size_t i, double xy, const row_stats& st) const {
    const double lse = st.max + st.log_sum;
    lp[i] = st.sum > 0.0 ? static_cast<float>((xy - st.max) - st.log_sum) : -std::numeric_limits<float>::infinity();
    if (ls) ls[i] = lse;
    if (en) en[i] = static_cast<float>(st.entropy);
    if (q2) q2[i] = static_cast<float>(st.sum_p2);
    return st.sum > 0.0 ? lse : -std::numeric_limits<double>::infinity();
  }
};

/// Forward over all rows; rows with skip[i] == 0 (when skip is given) or a negative target are not read.
/// Half-precision logits without entropy / sum_p2 take two passes over each row instead of the
/// online one: its max, then sum_j 2^((x_j - m) log2(e) / T) with the next row prefetched. The
/// online update's compare and rescale per vector cost more than the second read of a row from L2
/// where the exponentials, not the memory, bound the row (bf16 on AVX-512: docs/benchmarks.md).
/// Rows whose max is not finite take the online kernel.
template <class T, class M>
void forward_rows(const matrix_view<const T>& x, const std::int64_t* targets, const logprob_outputs& out,
                  const logprob_options& opt, const M* skip) {
  const row_forward<T> fwd(out, opt, x.cols);
  const bool two_pass = sizeof(T) == 2 && out.entropy.empty() && out.sum_p2.empty();
  const row_max_fn<T> max_of = pick_row_max<T>();
  const exp_row_fn<T> sum_of = pick_exp_row<T, false>();
  const float k = static_cast<float>(1.0 / opt.temperature) * log2e;
  const std::size_t V = x.cols;
  row_pool(opt.threads, x.cols).for_each_n(x.rows, [&](std::size_t i) {
    const std::int64_t y = targets[i];
    if (y < 0 || (skip && skip[i] == M(0))) return fwd.skip(i);
    const T* row = x.row(i);
    if (two_pass) {
      const float m = max_of(row, V);
      if (std::isfinite(m)) {
        const double S = sum_of(row, V, m, k, nullptr, i + 1 < x.rows ? x.row(i + 1) : nullptr); // >= 1
        fwd.record_max_sum(row, i, y, m, S);
        return;
      }
    }
    fwd(row, i, y);
  });
}

/// The backward of one row at a time: g = d loss / d row from the row's lse and upstream
/// gradients (gi: d loss / d logp, gh: d loss / d entropy, with the row's entropy H).
template <class T, class G>
struct row_backward {
  backward_fn<T, G> bwd, bwd_ent;
  float inv_t;
  double inv_td, temperature;
  std::size_t V;

  row_backward(const logprob_options& opt, std::size_t cols, bool entropy_term)
      : bwd(pick_backward<T, G, false>()), bwd_ent(entropy_term ? pick_backward<T, G, true>() : bwd),
        inv_t(static_cast<float>(1.0 / opt.temperature)), inv_td(1.0 / opt.temperature), temperature(opt.temperature), V(cols) {}
  void operator()(const T* row, G* g, std::int64_t y, double lse, float gi, float gh, double H) const {
    if (y < 0 || (gi == 0.0f && gh == 0.0f) || !(lse > -std::numeric_limits<double>::infinity())) {
      std::memset(static_cast<void*>(g), 0, V * sizeof(G));
      return;
    }
    const double xy = static_cast<double>(to_float(row[y])) * inv_td; // read before an in-place overwrite
    const double c = lse * temperature; // lse in raw logit units, split in two floats
    const float hi = static_cast<float>(c), lo = static_cast<float>(c - static_cast<double>(hi));
    const logit_grad_coeffs k = logit_grad_coefficients(gi, gh, H, inv_td);
    const row_rest r = gh != 0.0f ? bwd_ent(row, g, V, static_cast<std::size_t>(y), inv_t, hi, lo, static_cast<float>(k.a),
                                            static_cast<float>(k.b))
                                  : bwd(row, g, V, static_cast<std::size_t>(y), inv_t, hi, lo, gi * inv_t, 0.0f);
    constexpr double ln2 = 0.69314718055994530942;
    g[y] = from_float<G>(static_cast<float>(target_logit_grad(gi, gh, H, inv_td, xy - lse, r.p, ln2 * r.plog2p)));
  }
};

/// Backward over all rows. grad_logp and grad_entropy may be null (= 0); entropy is read only
/// where grad_entropy is non-zero.
template <class T, class G>
void backward_rows(const matrix_view<const T>& x, const std::int64_t* targets, const double* lse, const float* grad_logp,
                   const float* entropy, const float* grad_entropy, const matrix_view<G>& gx, const logprob_options& opt) {
  const row_backward<T, G> bwd(opt, x.cols, grad_entropy != nullptr);
  row_pool(opt.threads, x.cols).for_each_n(x.rows, [&](std::size_t i) {
    const float gi = grad_logp ? grad_logp[i] : 0.0f, gh = grad_entropy ? grad_entropy[i] : 0.0f;
    bwd(x.row(i), gx.row(i), targets[i], lse[i], gi, gh, gh != 0.0f ? static_cast<double>(entropy[i]) : 0.0);
  });
}

} // namespace detail

/// Per-token log-probabilities (and optionally lse, entropy, sum_v p_v^2) of `targets` under
/// softmax(logits / T).
template <class T>
void selective_log_softmax(const matrix_view<const T>& logits, std::span<const std::int64_t> targets,
                           const logprob_outputs& out, const logprob_options& opt = {}) {
  static_assert(is_logit_type_v<T>, "logits must be float, msrl::kernels::bf16 or msrl::kernels::f16");
  constexpr const char* where = "msrl::kernels::selective_log_softmax";
  detail::check_logits(logits, where);
  detail::check_options(opt, where);
  detail::check_targets(targets, logits.rows, logits.cols, where);
  const std::size_t N = logits.rows;
  require<shape_error>(out.logp.size() == N, where, "out.logp", "must have one entry per row (" + std::to_string(N) + ")");
  require<shape_error>(out.lse.empty() || out.lse.size() == N, where, "out.lse", "must be empty or have one entry per row");
  require<shape_error>(out.entropy.empty() || out.entropy.size() == N, where, "out.entropy",
                       "must be empty or have one entry per row");
  require<shape_error>(out.sum_p2.empty() || out.sum_p2.size() == N, where, "out.sum_p2",
                       "must be empty or have one entry per row");
  detail::forward_rows<T, std::uint8_t>(logits, targets.data(), out, opt, nullptr);
}

/// d logits[i, :] = grad_logp[i] (onehot(targets[i]) - p_i) / T - grad_entropy[i] p_i (log p_i + H_i) / T
/// with p_i = softmax(logits[i, :] / T), from the forward's lse (and entropy H when grad_entropy
/// is given). grad_logits may be the logits themselves (same type and stride): the gradient then
/// overwrites them. Rows whose upstream gradients are both 0, whose target is negative or whose
/// logits are all -inf get zeros; -inf logits get exactly 0.
template <class T, class G>
void selective_log_softmax_backward(const matrix_view<const T>& logits, std::span<const std::int64_t> targets,
                                    const logprob_backward_inputs& in, const matrix_view<G>& grad_logits,
                                    const logprob_options& opt = {}) {
  static_assert(is_logit_type_v<T> && is_logit_type_v<G>, "logits and gradients must be float, bf16 or f16");
  constexpr const char* where = "msrl::kernels::selective_log_softmax_backward";
  detail::check_logits(logits, where);
  detail::check_options(opt, where);
  detail::check_targets(targets, logits.rows, logits.cols, where);
  const std::size_t N = logits.rows;
  require<shape_error>(in.lse.size() == N, where, "lse", "must have one entry per row (from the forward)");
  require<shape_error>(in.grad_logp.empty() || in.grad_logp.size() == N, where, "grad_logp", "must be empty or have one entry per row");
  require<shape_error>(in.grad_entropy.empty() || in.grad_entropy.size() == N, where, "grad_entropy",
                       "must be empty or have one entry per row");
  require<shape_error>(in.grad_entropy.empty() || in.entropy.size() == N, where, "entropy",
                       "must have one entry per row (the forward's entropy output) when grad_entropy is given");
  require<shape_error>(grad_logits.rows == N && grad_logits.cols == logits.cols, where, "grad_logits",
                       "must have the shape of logits");
  require<shape_error>(grad_logits.stride == 0 || grad_logits.stride >= grad_logits.cols, where, "grad_logits.stride",
                       "must be 0 or >= cols");
  require<shape_error>(N == 0 || grad_logits.data != nullptr, where, "grad_logits", "must not be null");
  if (N == 0) return;
  const auto* xb = reinterpret_cast<const unsigned char*>(logits.data);
  const auto* xe = reinterpret_cast<const unsigned char*>(logits.row(N - 1) + logits.cols);
  const auto* gb = reinterpret_cast<const unsigned char*>(grad_logits.data);
  const auto* ge = reinterpret_cast<const unsigned char*>(grad_logits.row(N - 1) + grad_logits.cols);
  const bool overlap = gb < xe && xb < ge;
  const bool in_place = static_cast<const void*>(gb) == static_cast<const void*>(xb) && sizeof(G) == sizeof(T) &&
                        std::is_same_v<std::remove_const_t<G>, std::remove_const_t<T>> && grad_logits.ld() == logits.ld();
  require<shape_error>(!overlap || in_place, where, "grad_logits",
                       "must either not overlap the logits or be exactly the logits (same type and stride) for in-place");
  detail::backward_rows<T, G>(logits, targets.data(), in.lse.data(), in.grad_logp.empty() ? nullptr : in.grad_logp.data(),
                              in.grad_entropy.empty() ? nullptr : in.entropy.data(),
                              in.grad_entropy.empty() ? nullptr : in.grad_entropy.data(), grad_logits, opt);
}

/// The log-prob backward alone: d logits[i, :] = grad_logp[i] (onehot(targets[i]) - softmax(logits[i, :] / T)) / T.
/// `lse` comes from the forward; grad_logp has one entry per row. In place as above.
template <class T, class G>
void selective_log_softmax_backward(const matrix_view<const T>& logits, std::span<const std::int64_t> targets,
                                    std::span<const double> lse, std::span<const float> grad_logp,
                                    const matrix_view<G>& grad_logits, const logprob_options& opt = {}) {
  require<shape_error>(grad_logp.size() == logits.rows, "msrl::kernels::selective_log_softmax_backward", "grad_logp",
                       "must have one entry per row");
  selective_log_softmax_backward<T, G>(logits, targets, logprob_backward_inputs{lse, grad_logp, {}, {}}, grad_logits, opt);
}

} // namespace msrl::kernels
