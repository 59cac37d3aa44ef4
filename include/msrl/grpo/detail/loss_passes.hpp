#pragma once
/// \file The passes of msrl::grpo::policy_loss, each a functor a backend runs through for_each_n /
/// reduce_n (backend/concept.hpp). One body per pass, written over the lane type with
/// simd::for_lanes: `run<VL>` takes whole groups of tokens in the vector lane type VL (chosen at
/// run time on the host by simd::host_lanes: float lanes for fp32 inputs, double lanes otherwise),
/// a row's last tokens in the same lanes with masked loads; the call operator (the device, and hosts
/// without vector lanes) runs run<double>, token by token.
///
///   seq_pass     one task per row: L_i, the mean log-ratio (GSPO) and input validation counts
///   seq_coef     GSPO sequence level only: c_i = sum_t w_t d surrogate / d s_i
///   row_pass     row forms only (VESPO, GMPO): the row's coefficients and empty-row values
///   token_pass   one task per token block: loss terms, metrics and d loss / d logp
#include <cstddef>
#include <tuple>

#include "../../backend/concept.hpp"
#include "../../core/config.hpp"
#include "../../core/simd.hpp"
#include "../../core/token_layout.hpp"
#include "../aggregate.hpp"
#include "../loss_types.hpp"
#include "../scalar_math.hpp"
#include "../surrogate.hpp"

namespace msrl::grpo::detail {

enum stat : int { s_loss, s_pg, s_kl, s_tok, s_ratio, s_klsum, s_low, s_high, s_dual, s_lr, s_bad, s_count };

template <class M>
MSRL_HOST_DEVICE inline double mask_at(const M* mask, std::size_t t) {
  return mask ? static_cast<double>(mask[t]) : 1.0;
}

MSRL_HOST_DEVICE inline bool finite(double x) { return x == x && x != HUGE_VAL && x != -HUGE_VAL; }

// Accumulators of the row pass: the log-ratio sum in lanes, the counts as integers (simd::count).
template <class V>
struct seq_acc {
  V slr{};
  auto fields() { return std::tie(slr); }
};
struct seq_counts {
  std::size_t len = 0, bad_mask = 0, bad_w = 0, bad_pm = 0;
};

// Pass 1, one task per row: L_i, the mean log-ratio (GSPO levels only: need_lr) and the validation
// counts of the mask, the policy mask and the IS weights; the row's advantage must be finite when
// the row has tokens. The log-probs (and per-token advantages) are validated by the token pass,
// which reads them anyway. Absent old arrays alias logp; isw (the IS weights) may be null.
template <class T, class M>
struct seq_pass {
  token_layout lay;
  const T *lp, *old, *adv;
  const M* mask;
  bool adv_per_token;
  double *seq_len, *seq_lr;
  const T* isw = nullptr;
  bool isw_per_token = false;
  const M* pmask = nullptr;
  bool need_lr = true;

  MSRL_HOST_DEVICE sums<6> operator()(std::size_t i) const { return run<double>(i); }
  // run<VL> works on a local copy of the pass, so that the compiler keeps its parameters in
  // registers across the lane loop (stores to the outputs cannot alias a local).
  template <class VL>
  MSRL_HOST_DEVICE sums<6> run(std::size_t i) const {
    const seq_pass local = *this;
    return local.template body<VL>(i);
  }
  template <class VL>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE sums<6> body(std::size_t i) const {
    seq_acc<double> acc;
    seq_counts cn;
    simd::for_lanes<VL>(lay.begin(i), lay.end(i), acc, [&](std::size_t t, auto& a, auto n) MSRL_LAMBDA_INLINE {
      using V = std::remove_reference_t<decltype(a.slr)>;
      using simd::count;
      using simd::mand;
      using simd::mnot;
      using simd::select;
      using simd::splat;
      const V zero = splat<V>(0.0), one = splat<V>(1.0);
      const auto live = simd::first_n<V>(n); // lanes past a row's tail count as neither
      const V m = mask ? simd::load_as<V>(mask + t, n) : one;
      const auto on = mand(live, m == one);
      cn.len += static_cast<std::size_t>(count(on));
      cn.bad_mask += static_cast<std::size_t>(count(mand(live, mnot(simd::mor(m == zero, m == one)))));
      if (pmask) {
        const V pm = simd::load_as<V>(pmask + t, n);
        cn.bad_pm += static_cast<std::size_t>(count(mand(live, mnot(simd::mor(pm == zero, pm == one)))));
      }
      if (need_lr) {
        const V l = simd::load_as<V>(lp + t, n), o = simd::load_as<V>(old + t, n);
        a.slr = a.slr + select(on, l - o, zero);
      }
      if (isw && isw_per_token) { // a weight must be finite and >= 0 (NaN fails w >= 0)
        const V wt = simd::load_as<V>(isw + t, n);
        cn.bad_w += static_cast<std::size_t>(count(mand(on, mnot(mand(wt >= zero, wt - wt == zero)))));
      }
    });
    const double len = static_cast<double>(cn.len);
    double bad_adv = 0.0, bad_w = static_cast<double>(cn.bad_w);
    if (!adv_per_token && len > 0.0 && !finite(static_cast<double>(adv[i]))) bad_adv = 1.0;
    if (isw && !isw_per_token && len > 0.0) {
      const double wi = static_cast<double>(isw[i]);
      if (!(wi >= 0.0) || !finite(wi)) bad_w += 1.0;
    }
    seq_len[i] = len;
    seq_lr[i] = acc.slr / (len > 1.0 ? len : 1.0);
    sums<6> s{};
    s[0] = len;
    s[1] = len > 0.0 ? 1.0 : 0.0;
    s[2] = static_cast<double>(cn.bad_mask);
    s[3] = bad_adv;
    s[4] = bad_w;
    s[5] = static_cast<double>(cn.bad_pm);
    return s;
  }
};

// The IS weight of token t of row i (1 without weights).
template <class T>
MSRL_HOST_DEVICE inline double weight_at(const T* isw, bool per_token, std::size_t i, std::size_t t) {
  return isw ? static_cast<double>(isw[per_token ? t : i]) : 1.0;
}

// Pass 2 (GSPO sequence level only), one task per row: c_i = sum_t w_t v_t d surrogate / d s_i
// (v: the IS weight) and, with the corrected KL, k_i = sum_t w_t beta KL_t (times v_t when the
// weights cover the KL), the row sum the ratio's gradient carries to every token.
template <class T, class M, class Form>
struct seq_coef_pass {
  token_layout lay;
  const T *lp, *ref, *adv;
  const M* mask;
  bool adv_per_token;
  const double *seq_len, *seq_lr;
  double *seq_coef, *seq_klc;
  weight_fn weight;
  Form form;
  double smax;
  const T* isw;
  bool isw_per_token, is_weight_kl, kl_corrected;
  math::kl_params kp;
  double beta;
  const M* pmask;

  MSRL_HOST_DEVICE void operator()(std::size_t i) const {
    const double lr = seq_lr[i];
    const double s = math::exp(lr < smax ? lr : smax);
    const double w = weight(seq_len[i]);
    double c = 0.0, k = 0.0;
    for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
      if (mask_at(mask, t) == 0.0) continue;
      const double v = weight_at(isw, isw_per_token, i, t);
      const token_args<double> x{
          s, lr, static_cast<double>(lp[t]), static_cast<double>(adv[adv_per_token ? t : i]), 1.0, 1.0, 1.0};
      c += w * v * mask_at(pmask, t) * form(x).dratio;
      if (kl_corrected)
        k += w * beta * (is_weight_kl ? v : 1.0) *
             math::kl_penalty(static_cast<double>(lp[t]), static_cast<double>(ref[t]), kp).value;
    }
    seq_coef[i] = c;
    seq_klc[i] = k;
  }
};

// Row forms only, one task per row: the row's coefficients (surrogate.hpp row_form) into
// seq_row / seq_row_grad, and the weighted value of an empty row (its only contribution).
// Advantages are per sequence (checked by the caller).
template <class T, class M, class Form>
struct row_pass {
  token_layout lay;
  const T *lp, *old, *adv;
  const M* mask;
  const double* seq_len;
  double *seq_row, *seq_row_grad;
  weight_fn weight;
  Form form;
  const T* isw;
  bool isw_per_token;
  const M* pmask;

  MSRL_HOST_DEVICE sums<1> operator()(std::size_t i) const {
    const double a = static_cast<double>(adv[i]);
    row_sums s;
    for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
      const double m = mask_at(mask, t);
      const double lr = m != 0.0 ? static_cast<double>(lp[t]) - static_cast<double>(old[t]) : 0.0;
      form.row_token(s, m, mask_at(pmask, t), lr, a);
      if (isw && isw_per_token) form.row_is_weight(s, m, static_cast<double>(isw[t]));
    }
    const double L = seq_len[i];
    const double seq_w = isw && !isw_per_token ? static_cast<double>(isw[i]) : 1.0;
    const row_coefs c = form.row_weight(s, L, seq_w, a);
    seq_row[i] = c.value;
    seq_row_grad[i] = c.grad;
    sums<1> r{};
    r[0] = L > 0.0 ? 0.0 : weight(1.0) * form.empty_row_value(a, seq_w);
    return r;
  }
};

// Accumulators of the token pass, one lane each. The counts (tokens, clipped tokens, non-finite
// inputs) are not lanes: each step adds its mask's popcount to an integer (simd::count), which
// keeps five vector registers and their adds out of the loop.
template <class V>
struct token_acc {
  V pg{}, kl{}, rsum{}, klsum{}, lr{};
  auto fields() { return std::tie(pg, kl, rsum, klsum, lr); }
};
struct token_counts {
  std::size_t tok = 0, low = 0, high = 0, dual = 0, bad = 0;
};

// The token pass over one block of tokens [bi*blk, min(N, (bi+1)*blk)), split at row boundaries.
// Masked tokens' inputs are replaced by 0 before any arithmetic, so -inf/NaN there never reach
// it. When the caller passes no old_logp that pointer aliases logp (ratio = 1, on-policy);
// without ref_logp the KL term is skipped.
template <ratio_level Level, class T, class M, class G, class Form>
struct token_pass {
  token_layout lay;
  const T *lp, *old, *ref, *adv;
  const M* mask;
  G* grad;
  const double *seq_len, *seq_lr, *seq_coef, *seq_klc;
  weight_fn weight;
  Form form;
  math::kl_params kp;
  double beta, log_ratio_clamp, smax;
  std::size_t n, blk;
  bool has_kl, adv_per_token;
  const T* isw = nullptr; ///< IS weights (null = none), per token or per row
  bool isw_per_token = false, is_weight_kl = false, kl_corrected = false;
  const M* pmask = nullptr;                                 ///< the surrogate-only mask (null = none)
  const double *seq_row = nullptr, *seq_row_grad = nullptr; ///< row forms: row_pass's coefficients

  MSRL_HOST_DEVICE sums<s_count> operator()(std::size_t bi) const { return run<double>(bi); }
  template <class VL>
  MSRL_HOST_DEVICE sums<s_count> run(std::size_t bi) const {
    const token_pass local = *this; // parameters in registers (see seq_pass::run)
    return local.template body<VL>(bi);
  }
  template <class VL>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE sums<s_count> body(std::size_t bi) const {
    token_acc<double> acc;
    token_counts cn;
    const std::size_t t0 = bi * blk, t1 = t0 + blk < n ? t0 + blk : n;
    std::size_t i = lay.sequence_of(t0);
    for (std::size_t ta = t0; ta < t1;) {
      while (lay.end(i) <= ta) ++i;
      const std::size_t tb = lay.end(i) < t1 ? lay.end(i) : t1;
      const double w = weight(seq_len[i]);
      const double len1 = seq_len[i] > 1.0 ? seq_len[i] : 1.0;
      const double lr = seq_lr[i];
      const double adv_seq = adv_per_token ? 0.0 : static_cast<double>(adv[i]);
      // GSPO: the sequence ratio, its token derivative and (direct form) the token gradient are
      // constant over the row.
      const double srho = Level == ratio_level::token ? 1.0 : math::exp(lr < smax ? lr : smax);
      const double sdrho = lr <= smax ? srho : 0.0;
      const double gseq = Level == ratio_level::sequence ? (lr <= smax ? srho / len1 : 0.0) * seq_coef[i] : 0.0;
      // The corrected KL at sequence level: KL_t s_i with the raw s_i, whose gradient adds
      // s_i / L_i * k_i to every token of the row.
      const double kc_seq = Level == ratio_level::sequence && kl_corrected ? math::exp(lr) : 1.0;
      const double gkl_seq = Level == ratio_level::sequence && kl_corrected ? kc_seq / len1 * seq_klc[i] : 0.0;
      const double isw_seq = isw && !isw_per_token ? static_cast<double>(isw[i]) : 1.0;
      // Row forms fold the IS weights (and, if they say so, the policy mask) into their row.
      constexpr bool folds = row_form<Form>;
      constexpr bool eats_pm = consumes_policy_mask_v<Form>;
      const double row = folds ? seq_row[i] : 1.0, row_grad = folds ? seq_row_grad[i] : 1.0;
      simd::for_lanes<VL>(ta, tb, acc, [&](std::size_t t, auto& a, auto cnt) MSRL_LAMBDA_INLINE {
        using V = std::remove_reference_t<decltype(a.pg)>;
        using simd::mand;
        using simd::select;
        using simd::splat;
        const V zero = splat<V>(0.0), one = splat<V>(1.0);
        const auto live = simd::first_n<V>(cnt);
        const auto on = mask ? mand(live, simd::load_as<V>(mask + t, cnt) != zero) : live;
        const V l0 = simd::load_as<V>(lp + t, cnt), o0 = simd::load_as<V>(old + t, cnt), r0 = simd::load_as<V>(ref + t, cnt);
        const V a0 = adv_per_token ? simd::load_as<V>(adv + t, cnt) : zero;
        // x - x is 0 exactly when x is finite (inf - inf and NaN - NaN are NaN), so the sum of the
        // four differences is 0 exactly when all four inputs are.
        const auto fin = (l0 - l0) + (o0 - o0) + ((r0 - r0) + (a0 - a0)) == zero;
        cn.bad += static_cast<std::size_t>(simd::count(mand(on, simd::mnot(fin))));
        const V l = select(on, l0, zero);
        const V o = select(on, o0, zero);
        const V r = select(on, r0, zero);
        const V av = adv_per_token ? select(on, a0, zero) : splat<V>(adv_seq);
        V rho = splat<V>(srho), drho = splat<V>(sdrho), lrho = splat<V>(lr);
        if constexpr (Level == ratio_level::token) {
          const math::value_grad<V> q = math::ratio(l, o, log_ratio_clamp);
          rho = q.value;
          drho = q.grad;
          lrho = l - o;
        }
        const V pm = pmask ? select(on, simd::load_as<V>(pmask + t, cnt), zero) : one;
        V wk, wp; // the KL's weight, the surrogate's weight
        if ((isw && isw_per_token) || pmask) {
          const V wv = splat<V>(w);
          const V v = isw && isw_per_token ? select(on, simd::load_as<V>(isw + t, cnt), zero) : splat<V>(isw_seq);
          const V vs = folds ? one : v; // the surrogate's IS weight
          wk = is_weight_kl ? wv * v : wv;
          wp = eats_pm ? wv * vs : wv * vs * pm;
        } else { // constant over the row
          wk = splat<V>(is_weight_kl ? w * isw_seq : w);
          wp = splat<V>(folds ? w : w * isw_seq);
        }
        const math::surrogate<V> sur = form(token_args<V>{rho, lrho, l, av, splat<V>(row), splat<V>(row_grad), pm});
        // Without ref_logp there is no KL term at all (skips an exp per token).
        math::value_grad<V> k = has_kl ? math::kl_penalty(l, r, kp) : math::value_grad<V>{zero, zero};
        const V kraw = k.value; // the estimate itself, for the kl_mean metric
        if (kl_corrected) {
          if constexpr (Level == ratio_level::token) { // d(rho k)/dl = rho (k' + k), rho raw
            const V c = math::exp(l - o);
            k = {c * k.value, c * (k.grad + k.value)};
          } else if constexpr (Level == ratio_level::sequence) { // the row-sum part is gkl_seq
            k = {kc_seq * k.value, kc_seq * k.grad};
          }
        }
        V g = Level == ratio_level::sequence ? splat<V>(gseq) : wp * sur.dratio * drho;
        if constexpr (!ratio_only_v<Form>) g = g + wp * sur.dlogp;
        if (has_kl) g = g + wk * beta * k.grad;
        if constexpr (Level == ratio_level::sequence) g = g + splat<V>(gkl_seq);
        a.pg = a.pg + select(on, wp * sur.value, zero);
        a.kl = a.kl + select(on, wk * beta * k.value, zero);
        a.rsum = a.rsum + select(on, rho, zero);
        a.klsum = a.klsum + select(on, kraw, zero);
        a.lr = a.lr + (l - o); // masked tokens' inputs are 0 here
        cn.tok += static_cast<std::size_t>(simd::count(on));
        cn.low += static_cast<std::size_t>(simd::count(mand(on, sur.clipped_low)));
        cn.high += static_cast<std::size_t>(simd::count(mand(on, sur.clipped_high)));
        cn.dual += static_cast<std::size_t>(simd::count(mand(on, sur.dual_clipped)));
        simd::store_as(grad + t, select(on, g, zero), cnt);
      });
      ta = tb;
    }
    sums<s_count> s{};
    s[s_pg] = acc.pg;
    s[s_kl] = acc.kl;
    s[s_loss] = acc.pg + acc.kl;
    s[s_tok] = static_cast<double>(cn.tok);
    s[s_ratio] = acc.rsum;
    s[s_klsum] = acc.klsum;
    s[s_low] = static_cast<double>(cn.low);
    s[s_high] = static_cast<double>(cn.high);
    s[s_dual] = static_cast<double>(cn.dual);
    s[s_lr] = acc.lr;
    s[s_bad] = static_cast<double>(cn.bad);
    return s;
  }
};

// Tokens per task of the token pass: a backend may say (member `token_block`); otherwise host
// backends take 512-token blocks and device backends one token per task.
template <class Backend>
constexpr std::size_t token_block() {
  if constexpr (requires { Backend::token_block; })
    return Backend::token_block;
  else if constexpr (is_host_backend_v<Backend>)
    return 512;
  else
    return 1;
}

} // namespace msrl::grpo::detail
