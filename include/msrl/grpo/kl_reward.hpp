#pragma once
/// \file The KL penalty applied to the reward before the advantages (instead of, or beside, the
/// KL term of the loss), in the peers' two shapes. x_t = logp_old_t - logp_ref_t; m_t the mask.
///
///   kl_reward_rows    ms-swift (`kl_in_reward`, grpo_trainer.py + rl_core/advantage.py):
///                     R_i <- R_i - beta * sum_t m_t x_t (k1, per row, before the advantage
///                     normalisation; verl's outcome estimators sum its token rewards to the same
///                     row value with their estimator).
///   kl_reward_tokens  verl (`use_kl_in_reward`, ray_trainer.py apply_kl_penalty + core_algos.py
///                     kl_penalty) and OpenRLHF (models/utils.py compute_reward + compute_approx_kl):
///                     r_t = m_t (clip(S_i) [t = last unmasked token of row i] - beta kl_t),
///                     kl_t the chosen estimator of x_t with each peer's clamps, clip the reward
///                     clip range (OpenRLHF --reward.clip_range, applied to the row score the
///                     estimator's baseline already shifted). The token rewards then feed the
///                     return-to-go (discounted_returns) or a row sum.
/// Both return kl_reward_stats: the mean per-row KL sum and verl's controller input, the mean over
/// rows of sum_t m_t kl_t / (sum_t m_t + 1e-8).
///
/// OpenRLHF computes kl_t unmasked and masks the rewards inside its return-to-go; verl masks
/// kl_t first. Both give the same returns; `kl_reward_tokens` writes the masked form.
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "../backend/concept.hpp"
#include "../core/error.hpp"
#include "../core/token_layout.hpp"
#include "scalar_math.hpp"

namespace msrl::grpo {

/// The token-level KL reward of one peer.
struct kl_reward_options {
  double beta = 0.0;                            ///< the coefficient (a controller's value)
  kl_estimator estimator = kl_estimator::k1;    ///< verl "kl"/"abs"/"mse"/"low_var_kl"; OpenRLHF k1/k2/k3
  double log_ratio_clamp = math::inf;           ///< k3: ref - old clamped to [-c, c] before exp (verl 20)
  double value_clamp = math::inf;               ///< estimate clamped to [-c, c] (verl k3: 10; OpenRLHF: 10)
  double reward_clip_low = -math::inf;          ///< the row score clipped first (OpenRLHF: -10)
  double reward_clip_high = math::inf;          ///< (OpenRLHF: 10)

  /// ms-swift `kl_in_reward`: k1, no clamp (kl_reward_rows).
  static kl_reward_options ms_swift(double beta) {
    kl_reward_options o;
    o.beta = beta;
    return o;
  }
  /// verl apply_kl_penalty with `algorithm.kl_penalty` = estimator.
  static kl_reward_options verl(double beta, kl_estimator e = kl_estimator::k1) {
    kl_reward_options o;
    o.beta = beta;
    o.estimator = e;
    if (e == kl_estimator::k3) {
      o.log_ratio_clamp = 20.0;
      o.value_clamp = 10.0;
    }
    return o;
  }
  /// OpenRLHF compute_reward with `--algo.kl.estimator` = estimator and the default
  /// `--reward.clip_range` (-10, 10).
  static kl_reward_options openrlhf(double beta, kl_estimator e = kl_estimator::k1) {
    kl_reward_options o;
    o.beta = beta;
    o.estimator = e;
    o.value_clamp = 10.0;
    o.reward_clip_low = -10.0;
    o.reward_clip_high = 10.0;
    return o;
  }
};

/// What the KL in the reward measured.
struct kl_reward_stats {
  double row_sum_mean = 0.0; ///< mean over rows of sum_t m_t kl_t (ms-swift's "kl" metric)
  double row_mean = 0.0;     ///< mean over rows of sum_t m_t kl_t / (sum_t m_t + 1e-8): verl's
                             ///< reward_kl_penalty, the adaptive controller's input
};

namespace detail_klr {
inline void check(const token_layout& lay, std::size_t rows, std::size_t old_n, std::size_t ref_n, std::size_t mask_n,
                  std::size_t out_n, bool out_tokens, const char* where, bool logps_may_be_empty = false) {
  const std::string per_tok = "must have one element per token (" + std::to_string(lay.total_tokens) + ")";
  const std::string per_row = "must have one element per row (" + std::to_string(lay.num_sequences) + ")";
  require<shape_error>(rows == lay.num_sequences, where, out_tokens ? "scores" : "rewards", per_row);
  if (!(logps_may_be_empty && old_n == 0 && ref_n == 0)) {
    require<shape_error>(old_n == lay.total_tokens, where, "old_logp", per_tok);
    require<shape_error>(ref_n == lay.total_tokens, where, "ref_logp", per_tok);
  }
  require<shape_error>(mask_n == lay.total_tokens, where, "mask", per_tok);
  require<shape_error>(out_n == (out_tokens ? lay.total_tokens : lay.num_sequences), where, "out",
                       out_tokens ? per_tok : per_row);
}

// Counts rows whose inputs break a rule: [0] non-finite row value, [1] non-finite log-prob at a
// masked-in token, [2] mask value other than 0/1.
template <class Backend, class T, class L, class M>
sums<3> scan(const Backend& exec, const token_layout& lay, const T* r, const L* old, const L* ref, const M* m) {
  return exec.reduce_n(lay.num_sequences, [=] MSRL_HOST_DEVICE(std::size_t i) {
    sums<3> s{};
    const double v = static_cast<double>(r[i]);
    s[0] = v - v == 0.0 ? 0.0 : 1.0;
    for (std::size_t t = lay.begin(i); t < lay.end(i); ++t) {
      const double w = static_cast<double>(m[t]);
      if (!(w == 0.0 || w == 1.0)) s[2] += 1.0;
      if (!old) continue; // no log-probs (kl_reward_tokens with beta 0)
      const double d = static_cast<double>(old[t]) - static_cast<double>(ref[t]);
      if (w != 0.0 && !(d - d == 0.0)) s[1] += 1.0;
    }
    return s;
  }, sums<3>{});
}

inline kl_reward_stats stats(const sums<2>& t, std::size_t rows) {
  const double n = rows ? static_cast<double>(rows) : 1.0;
  return {t[0] / n, t[1] / n};
}

template <class Backend, class T, class L, class M>
void validate(const Backend& exec, const token_layout& lay, const T* r, const L* old, const L* ref, const M* m,
              const char* where, const char* row_name) {
  const sums<3> bad = scan(exec, lay, r, old, ref, m);
  require<value_error>(bad[0] == 0.0, where, row_name, "must be finite");
  require<value_error>(bad[1] == 0.0, where, "old_logp/ref_logp", "must be finite at unmasked tokens");
  require<value_error>(bad[2] == 0.0, where, "mask", "values must be 0 or 1");
}
} // namespace detail_klr

/// ms-swift's KL in the reward (file comment): `out` (one per row, may alias `rewards`).
/// Returns kl_reward_stats. `options` (beta, estimator, clamps; the
/// reward clip is not used) default to ms-swift's k1 without clamps; verl's outcome estimators
/// see the same row sum of its token rewards.
template <msrl::execution_backend Backend, class T, class L, class M, class U>
kl_reward_stats kl_reward_rows(const Backend& exec, const token_layout& layout, std::span<const T> rewards,
                      std::span<const L> old_logp, std::span<const L> ref_logp, std::span<const M> mask,
                      const kl_reward_options& opt, std::span<U> out) {
  constexpr const char* where = "msrl::grpo::kl_reward_rows";
  detail_klr::check(layout, rewards.size(), old_logp.size(), ref_logp.size(), mask.size(), out.size(), false, where);
  require(std::isfinite(opt.beta), where, "options.beta", "must be finite");
  require(opt.log_ratio_clamp > 0.0, where, "options.log_ratio_clamp", "must be > 0");
  require(opt.value_clamp > 0.0, where, "options.value_clamp", "must be > 0");
  const double beta = opt.beta;
  const math::kl_params kp{opt.estimator, false, opt.log_ratio_clamp, opt.value_clamp};
  const T* r = rewards.data();
  const L *o = old_logp.data(), *rf = ref_logp.data();
  const M* m = mask.data();
  detail_klr::validate(exec, layout, r, o, rf, m, where, "rewards");
  U* a = out.data();
  const token_layout lay = layout;
  auto tot = exec.reduce_n(layout.num_sequences, [=] MSRL_HOST_DEVICE(std::size_t i) {
    double kl = 0.0, n = 0.0;
    for (std::size_t t = lay.begin(i); t < lay.end(i); ++t)
      if (static_cast<double>(m[t]) != 0.0) {
        kl += math::kl_penalty(static_cast<double>(o[t]), static_cast<double>(rf[t]), kp).value;
        n += 1.0;
      }
    const double R = static_cast<double>(r[i]);
    a[i] = static_cast<U>(R - beta * kl);
    sums<2> s{};
    s[0] = kl;
    s[1] = kl / (n + 1e-8);
    return s;
  }, sums<2>{});
  return detail_klr::stats(tot, layout.num_sequences);
}

/// verl's / OpenRLHF's KL in the reward (file comment): token rewards in `out`. Rows without an
/// unmasked token get no score. `old_logp` and `ref_logp` may both be empty when options.beta is 0
/// (the scores placed on the last tokens, clipped, and a KL of 0). Returns kl_reward_stats
/// (row_mean: verl's controller input).
template <msrl::execution_backend Backend, class T, class L, class M, class U>
kl_reward_stats kl_reward_tokens(const Backend& exec, const token_layout& layout, std::span<const T> scores,
                        std::span<const L> old_logp, std::span<const L> ref_logp, std::span<const M> mask,
                        const kl_reward_options& opt, std::span<U> out) {
  constexpr const char* where = "msrl::grpo::kl_reward_tokens";
  detail_klr::check(layout, scores.size(), old_logp.size(), ref_logp.size(), mask.size(), out.size(), true, where,
                    opt.beta == 0.0);
  require(std::isfinite(opt.beta), where, "options.beta", "must be finite");
  require(opt.log_ratio_clamp > 0.0, where, "options.log_ratio_clamp", "must be > 0");
  require(opt.value_clamp > 0.0, where, "options.value_clamp", "must be > 0");
  require(opt.reward_clip_low <= opt.reward_clip_high, where, "options.reward_clip_low",
          "must not exceed options.reward_clip_high");
  const T* r = scores.data();
  const L *o = old_logp.empty() ? nullptr : old_logp.data(), *rf = ref_logp.data();
  const M* m = mask.data();
  detail_klr::validate(exec, layout, r, o, rf, m, where, "scores");
  U* a = out.data();
  const token_layout lay = layout;
  const math::kl_params kp{opt.estimator, false, opt.log_ratio_clamp, opt.value_clamp};
  const double beta = opt.beta, lo = opt.reward_clip_low, hi = opt.reward_clip_high;
  auto tot = exec.reduce_n(layout.num_sequences, [=] MSRL_HOST_DEVICE(std::size_t i) {
    const std::size_t b = lay.begin(i), e = lay.end(i);
    std::size_t last = e;
    double n = 0.0, kls = 0.0, vlast = 0.0;
    for (std::size_t t = b; t < e; ++t) {
      const bool in = static_cast<double>(m[t]) != 0.0;
      double v = 0.0;
      if (in) {
        const double k = o ? math::kl_penalty(static_cast<double>(o[t]), static_cast<double>(rf[t]), kp).value : 0.0;
        v = -beta * k;
        kls += k;
        n += 1.0;
        last = t;
        vlast = v;
      }
      a[t] = static_cast<U>(v);
    }
    if (last != e) {
      double S = static_cast<double>(r[i]);
      S = S < lo ? lo : (S > hi ? hi : S);
      a[last] = static_cast<U>(S + vlast);
    }
    sums<2> s{};
    s[0] = kls;
    s[1] = kls / (n + 1e-8);
    return s;
  }, sums<2>{});
  return detail_klr::stats(tot, layout.num_sequences);
}

} // namespace msrl::grpo
