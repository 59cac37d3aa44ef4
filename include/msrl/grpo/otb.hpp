#pragma once
/// \file The optimal token baseline (OTB, arXiv 2602.07078): a baseline per token position, the
/// group's returns weighted by each trajectory's accumulated "realized energy", as verl computes
/// it (verl-project/verl@1dda039 trainer/ppo/core_algos.py compute_optimal_token_baseline_advantage,
/// docs/algo/otb.md). Rows are grouped consecutively, `group_size` per prompt; token arrays follow
/// a token_layout (padded [B, T] or packed).
///
/// For row i, token position t, mask m, token rewards r, the old policy's log-prob of the sampled
/// token old_logp and S_t = sum_v pi_{t,v}^2 (the old policy's sum of squared probabilities at the
/// sampling temperature: msrl::kernels::selective_log_softmax's `sum_p2` output):
///
///   G_t = sum_{u >= t} m_u r_u                           return-to-go
///   w_t = (1 - 2 pi_t + S_t) rho_t^2,  pi_t = exp(old_logp_t)   (rho: rollout IS weights, 1 if none)
///   W_t = sum_{u <= t} m_u w_u                           cumulative path variance ("realized energy")
///   B_t = sum_j G^j_t W^j_t m^j_t / (sum_j W^j_t m^j_t + eps)   over the rows j of the group
///   A_t = (G_t - B_t) m_t
///
/// A singleton group has no baseline (A = G m). With `handle_zero_tail`, when exactly one row of a
/// group has the largest length L = sum_t m_t and it is longer than every other row, its baselines
/// at positions t >= the second largest length are 0 (the tail no other row reaches keeps A = G).
///
/// Positions: verl indexes a token by its column in padded [B, T] tensors. For the padded layout
/// the position is the column; for the packed layout it is the offset within the row (token
/// begin(i) + t of row i is position t), and a row shorter than t + 1 takes no part at t, as a
/// masked position would. Masked tokens are not read (their inputs may be anything) and get A = 0.
/// verl's second output, the returns G, is discounted_returns(..., gamma 1, reset_after_masked
/// false) of estimators.hpp.
///
/// Runs on any execution backend (arrays in its memory space): one pass per row for G and W, one
/// per token for the baseline (O(group_size) each). Bad input throws msrl::invalid_argument naming
/// the argument.
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "../backend/concept.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/token_layout.hpp"
#include "aggregate.hpp"
#include "estimators.hpp"

namespace msrl::grpo {

struct otb_options {
  bool handle_zero_tail = true; ///< verl handle_zero_tail: no baseline on a unique longest row's lone tail
  double eps = 1e-8;            ///< added to the group's sum of W m per position (verl epsilon)
};

/// The optimal token baseline's advantages (file comment): one per token in `out`. `is_weights`
/// (rollout importance weights per token, verl rollout_is_weights) may be empty (= none); `mask`
/// may be empty (= every token counts).
template <msrl::execution_backend Backend, class T, class L, class M, class U>
void otb_advantages(const Backend& exec, const token_layout& layout, std::span<const T> token_rewards,
                    std::span<const L> old_logp, std::span<const L> sum_pi_squared, std::span<const L> is_weights,
                    std::span<const M> mask, std::size_t group_size, std::span<U> out, const otb_options& opt = {}) {
  constexpr const char* where = "msrl::grpo::otb_advantages";
  const std::size_t N = layout.num_sequences, n = layout.total_tokens;
  detail_est::check_groups(N, group_size, N, where);
  detail_est::check_tokens(layout, token_rewards.size(), where, "token_rewards");
  detail_est::check_tokens(layout, old_logp.size(), where, "old_logp");
  detail_est::check_tokens(layout, sum_pi_squared.size(), where, "sum_pi_squared");
  detail_est::check_tokens(layout, out.size(), where, "out");
  require<shape_error>(is_weights.empty() || is_weights.size() == n, where, "is_weights",
                       "must be empty or have one element per token (" + std::to_string(n) + ")");
  require<shape_error>(mask.empty() || mask.size() == n, where, "mask",
                       "must be empty or have one element per token (" + std::to_string(n) + ")");
  require(opt.eps >= 0.0 && std::isfinite(opt.eps), where, "options.eps", "must be finite and >= 0");
  detail::require_packed_offsets(exec, layout, where);
  detail_est::check_mask(exec, mask, where);

  const T* r = token_rewards.data();
  const L *lp = old_logp.data(), *sp = sum_pi_squared.data(), *rho = is_weights.empty() ? nullptr : is_weights.data();
  const M* m = mask.empty() ? nullptr : mask.data();
  // The inputs of unmasked tokens: finite, except old_logp = -inf (pi = 0).
  auto bad = exec.reduce_n(
      n,
      [=] MSRL_HOST_DEVICE(std::size_t k) {
        sums<4> s{};
        if (m && static_cast<double>(m[k]) == 0.0) return s;
        const double rv = static_cast<double>(r[k]), lv = static_cast<double>(lp[k]), sv = static_cast<double>(sp[k]);
        s[0] = rv - rv == 0.0 ? 0.0 : 1.0;
        s[1] = lv - lv == 0.0 || lv == -HUGE_VAL ? 0.0 : 1.0;
        s[2] = sv - sv == 0.0 ? 0.0 : 1.0;
        if (rho) {
          const double wv = static_cast<double>(rho[k]);
          s[3] = wv - wv == 0.0 ? 0.0 : 1.0;
        }
        return s;
      },
      sums<4>{});
  require<value_error>(bad[0] == 0.0, where, "token_rewards", "must be finite at unmasked tokens");
  require<value_error>(bad[1] == 0.0, where, "old_logp", "must be finite or -inf at unmasked tokens");
  require<value_error>(bad[2] == 0.0, where, "sum_pi_squared", "must be finite at unmasked tokens");
  require<value_error>(bad[3] == 0.0, where, "is_weights", "must be finite at unmasked tokens");
  if (n == 0) return;

  // Per row: the return-to-go G and the cumulative energy W per token, and the length sum_t m_t.
  typename Backend::template buffer<double> gbuf(n), wbuf(n), lbuf(N);
  double *Gt = gbuf.data(), *Wt = wbuf.data(), *len = lbuf.data();
  const token_layout lay = layout;
  exec.for_each_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
    const std::size_t b = lay.begin(i), e = lay.end(i);
    double run = 0.0, cnt = 0.0;
    for (std::size_t k = b; k < e; ++k) {
      const double mk = m ? static_cast<double>(m[k]) : 1.0;
      if (mk != 0.0) {
        double w = 1.0 - 2.0 * std::exp(static_cast<double>(lp[k])) + static_cast<double>(sp[k]);
        if (rho) w = w * (static_cast<double>(rho[k]) * static_cast<double>(rho[k]));
        run += w * mk;
        cnt += mk;
      }
      Wt[k] = run;
    }
    len[i] = cnt;
    run = 0.0;
    for (std::size_t k = e; k-- > b;) {
      const double mk = m ? static_cast<double>(m[k]) : 1.0;
      if (mk != 0.0) run += static_cast<double>(r[k]) * mk;
      Gt[k] = run;
    }
  });

  // Per token: the group's baseline at its position, then A = (G - B) m.
  U* o = out.data();
  const std::size_t G = group_size;
  const bool zero_tail = opt.handle_zero_tail;
  const double eps = opt.eps;
  exec.for_each_n(n, [=] MSRL_HOST_DEVICE(std::size_t k) {
    const double mk = m ? static_cast<double>(m[k]) : 1.0;
    if (mk == 0.0) {
      o[k] = static_cast<U>(0.0);
      return;
    }
    const std::size_t i = lay.sequence_of(k), t = k - lay.begin(i);
    double B = 0.0;
    if (G > 1) {
      const std::size_t g0 = i / G * G;
      double num = 0.0, den = 0.0, other = 0.0; // other: the longest length among the other rows
      for (std::size_t j = g0; j < g0 + G; ++j) {
        if (j != i && len[j] > other) other = len[j];
        const std::size_t b = lay.begin(j);
        if (t >= lay.end(j) - b) continue;
        const std::size_t q = b + t;
        const double mq = m ? static_cast<double>(m[q]) : 1.0;
        if (mq == 0.0) continue;
        num += Gt[q] * Wt[q] * mq;
        den += Wt[q] * mq;
      }
      B = num / (den + eps);
      if (zero_tail && len[i] > other && static_cast<double>(t) >= other) B = 0.0;
    }
    o[k] = static_cast<U>((Gt[k] - B) * mk);
  });
}

/// The optimal token baseline without rollout IS weights.
template <msrl::execution_backend Backend, class T, class L, class M, class U>
void otb_advantages(const Backend& exec, const token_layout& layout, std::span<const T> token_rewards,
                    std::span<const L> old_logp, std::span<const L> sum_pi_squared, std::span<const M> mask,
                    std::size_t group_size, std::span<U> out, const otb_options& opt = {}) {
  otb_advantages(exec, layout, token_rewards, old_logp, sum_pi_squared, std::span<const L>{}, mask, group_size, out, opt);
}

} // namespace msrl::grpo
