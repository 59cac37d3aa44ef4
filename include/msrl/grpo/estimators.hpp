#pragma once
/// \file Advantage estimators beyond the group baselines of advantages.hpp, each as verl computes it
/// (verl-project/verl@1dda039 trainer/ppo/core_algos.py; utils/torch_functional.py masked_whiten).
/// Scores are the rows' scalar rewards R_i (rows grouped consecutively, `group_size` per prompt);
/// token-level inputs and outputs follow a token_layout (padded [B, T] or packed).
///
///   opo_advantages        OPO (arXiv 2505.23585): A_i = R_i - sum_j L_j R_j / sum_j L_j over the
///                         group (L: completion lengths); a singleton's baseline is 0.
///   passk_advantages      GRPO pass@k (arXiv 2503.19595): the group's first best row gets
///                         r_max - r_2nd (over std_g + eps, unbiased, when normalized); others 0.
///   gpg_advantages        GPG: A_i = alpha (R_i - mean_g) / f_norm with alpha = rows / max(#{R_i != 0}, 1)
///                         over the whole batch; a singleton's mean is 0. Returns alpha.
///   token_whiten          masked whitening over every unmasked token of the batch:
///                         (x - mean) rsqrt(var + eps) (verl: unbiased var, eps 1e-8, both means
///                         over n + 1e-8 tokens), or rsqrt(max(var, eps)) with `floor_eps`
///                         (OpenRLHF: biased var, exact count); times the mask.
///   reinforce_pp_baseline REINFORCE++-baseline: x_i = R_i - mean_g (singleton 0) on every token of the
///                         row, then token_whiten (verl reinforce_plus_plus_baseline).
///   discounted_returns    G_t = r_t + gamma G_{t+1} backwards over each row, reset after a masked
///                         position (verl's loop; rewards are per token, the outcome on the last one);
///                         or G_t = m_t r_t + gamma G_{t+1} without resets (OpenRLHF).
///   reinforce_pp          REINFORCE++: discounted_returns, then token_whiten (verl reinforce_plus_plus).
///   remax_advantages      ReMax (arXiv 2310.10505): A_t = sum_{u >= t} m_u r_u - b_i m_t, b_i the reward
///                         of row i's greedy rollout.
///   swift_reinforce_pp    ms-swift `reinforce_plus_plus` (swift/rl_core/advantage.py compute_advantages):
///                         x_i = R_i - mean_g; A_i = x_i / (std + 1e-4), std the unbiased std of x
///                         over the batch (`scale_rewards batch`, its default) or the group (0 for
///                         one element), no re-centring; `none`: A = x. Per row.
///   gdpo_verl             verl's GDPO (compute_gdpo_outcome_advantage): per reward column verl's
///                         GRPO advantage ((r - mean_g) / (std_g + 1e-6), unbiased; a singleton has
///                         mean 0, std 1), weighted sum x_i, then token_whiten (verl) of x_i m_t.
///   openrlhf_advantages   OpenRLHF's REINFORCE family (experience_maker.py
///                         compute_advantages_and_returns): the estimator's row shaping (reinforce:
///                         R; rloo: R - (sum_g - R)/(G - 1); reinforce_baseline, dr_grpo: R - mean_g;
///                         group_norm: (R - mean_g)/(std_g + 1e-9), unbiased), then kl_reward_tokens
///                         (reward clip, -beta kl_t), the return-to-go without resets (gamma forced
///                         to 1 except for reinforce), then for reinforce and reinforce_baseline the
///                         whitening over all action tokens: biased var, rsqrt(max(var, 1e-8)),
///                         exact count (centring only with no_std_norm). Per token.
///
/// All run on any execution backend (arrays in its memory space). Bad input throws
/// msrl::invalid_argument naming the argument.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../backend/concept.hpp"
#include "../backend/reference.hpp"
#include "../core/error.hpp"
#include "../core/token_layout.hpp"
#include "advantages.hpp"
#include "kl_reward.hpp"

namespace msrl::grpo {

struct passk_options {
  bool normalize_by_std = true; ///< verl norm_adv_by_std_in_grpo
  double eps = 1e-6;
};

struct whiten_options {
  bool unbiased = true;   ///< Bessel's correction n / (n - 1) (verl masked_var)
  double eps = 1e-8;      ///< rsqrt(var + eps) (verl)
  bool floor_eps = false; ///< rsqrt(max(var, eps)) instead
  bool scale = true;      ///< false: centre only
  /// Added to the token count in both means (verl masked_mean: sum / (n + 1e-8)); OpenRLHF 0.
  double count_eps = 1e-8;
};

namespace detail_est {

// The values a predicate rejects, counted on the backend.
struct not_finite {
  MSRL_HOST_DEVICE bool operator()(double v) const { return !(v - v == 0.0); }
};
struct not_binary {
  MSRL_HOST_DEVICE bool operator()(double v) const { return !(v == 0.0 || v == 1.0); }
};
template <class Backend, class T, class Reject>
void require_none(const Backend& exec, std::span<const T> x, Reject reject, const char* where, const char* name,
                  const char* rule) {
  const T* p = x.data();
  auto bad = exec.reduce_n(
      x.size(),
      [p, reject] MSRL_HOST_DEVICE(std::size_t i) {
        sums<1> s{};
        s[0] = reject(static_cast<double>(p[i])) ? 1.0 : 0.0;
        return s;
      },
      sums<1>{});
  require<value_error>(bad[0] == 0.0, where, name, rule);
}
template <class Backend, class T>
void check_finite(const Backend& exec, std::span<const T> x, const char* where, const char* name) {
  require_none(exec, x, not_finite{}, where, name, "must be finite");
}
template <class Backend, class M>
void check_mask(const Backend& exec, std::span<const M> mask, const char* where) {
  require_none(exec, mask, not_binary{}, where, "mask", "values must be 0 or 1");
}

inline void check_groups(std::size_t rows, std::size_t group_size, std::size_t out, const char* where) {
  require(group_size >= 1, where, "group_size", "must be at least 1");
  require<shape_error>(rows % group_size == 0, where, "group_size",
                       "must divide the number of rows (" + std::to_string(rows) + ")");
  require<shape_error>(out == rows, where, "out", "must have one element per row (" + std::to_string(rows) + ")");
}

inline void check_tokens(const token_layout& lay, std::size_t n, const char* where, const char* name) {
  require<shape_error>(n == lay.total_tokens, where, name,
                       "must have one element per token (" + std::to_string(lay.total_tokens) + ")");
}

} // namespace detail_est

/// OPO's length-weighted group baseline (file comment). A group whose lengths sum to 0 gets
/// baseline 0 (verl divides 0 by 0).
template <msrl::execution_backend Backend, class T, class L, class U>
void opo_advantages(const Backend& exec, std::span<const T> scores, std::span<const L> lengths, std::size_t group_size,
                    std::span<U> out) {
  constexpr const char* where = "msrl::grpo::opo_advantages";
  detail_est::check_groups(scores.size(), group_size, out.size(), where);
  require<shape_error>(lengths.size() == scores.size(), where, "lengths", "must have one element per row");
  detail_est::check_finite(exec, scores, where, "scores");
  detail_est::check_finite(exec, lengths, where, "lengths");
  const T* r = scores.data();
  const L* len = lengths.data();
  U* a = out.data();
  const std::size_t G = group_size;
  auto neg = exec.reduce_n(
      scores.size() / G,
      [=] MSRL_HOST_DEVICE(std::size_t g) {
        double sl = 0.0, slr = 0.0, bad = 0.0;
        for (std::size_t j = g * G; j < (g + 1) * G; ++j) {
          const double l = static_cast<double>(len[j]);
          bad += l < 0.0 ? 1.0 : 0.0;
          sl += l;
          slr += l * static_cast<double>(r[j]);
        }
        const double b = G > 1 && sl > 0.0 ? slr / sl : 0.0;
        for (std::size_t j = g * G; j < (g + 1) * G; ++j) a[j] = static_cast<U>(static_cast<double>(r[j]) - b);
        sums<1> s{};
        s[0] = bad;
        return s;
      },
      sums<1>{});
  require<value_error>(neg[0] == 0.0, where, "lengths", "must be >= 0");
}

/// GRPO pass@k (file comment); needs group_size >= 2.
template <msrl::execution_backend Backend, class T, class U>
void passk_advantages(const Backend& exec, std::span<const T> scores, std::size_t group_size, std::span<U> out,
                      const passk_options& opt = {}) {
  constexpr const char* where = "msrl::grpo::passk_advantages";
  detail_est::check_groups(scores.size(), group_size, out.size(), where);
  require(group_size >= 2, where, "group_size", "must be at least 2 (pass@k compares the two best rows)");
  require(opt.eps >= 0.0 && std::isfinite(opt.eps), where, "options.eps", "must be finite and >= 0");
  detail_est::check_finite(exec, scores, where, "scores");
  const T* r = scores.data();
  U* a = out.data();
  const std::size_t G = group_size;
  const bool norm = opt.normalize_by_std;
  const double eps = opt.eps;
  exec.for_each_n(scores.size() / G, [=] MSRL_HOST_DEVICE(std::size_t g) {
    const std::size_t b = g * G;
    std::size_t imax = b;
    double mean = 0.0;
    for (std::size_t j = b; j < b + G; ++j) {
      mean += static_cast<double>(r[j]);
      if (static_cast<double>(r[j]) > static_cast<double>(r[imax])) imax = j;
    }
    mean /= static_cast<double>(G);
    double second = -HUGE_VAL, ss = 0.0;
    for (std::size_t j = b; j < b + G; ++j) {
      const double v = static_cast<double>(r[j]);
      if (j != imax && v > second) second = v;
      ss += (v - mean) * (v - mean);
    }
    double adv = static_cast<double>(r[imax]) - second;
    if (norm) adv /= std::sqrt(ss / static_cast<double>(G - 1)) + eps;
    for (std::size_t j = b; j < b + G; ++j) a[j] = static_cast<U>(j == imax ? adv : 0.0);
  });
}

/// GPG (file comment); returns alpha.
template <msrl::execution_backend Backend, class T, class U>
double gpg_advantages(const Backend& exec, std::span<const T> scores, std::size_t group_size, std::span<U> out,
                      double f_norm = 1.0) {
  constexpr const char* where = "msrl::grpo::gpg_advantages";
  detail_est::check_groups(scores.size(), group_size, out.size(), where);
  require(f_norm > 0.0 && std::isfinite(f_norm), where, "f_norm", "must be finite and > 0");
  detail_est::check_finite(exec, scores, where, "scores");
  const T* r = scores.data();
  U* a = out.data();
  const std::size_t G = group_size, B = scores.size();
  auto nz = exec.reduce_n(
      B,
      [r] MSRL_HOST_DEVICE(std::size_t i) {
        sums<1> s{};
        s[0] = static_cast<double>(r[i]) != 0.0 ? 1.0 : 0.0;
        return s;
      },
      sums<1>{});
  const double alpha = static_cast<double>(B) / (nz[0] > 1.0 ? nz[0] : 1.0);
  exec.for_each_n(B / G, [=] MSRL_HOST_DEVICE(std::size_t g) {
    double mean = 0.0;
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) mean += static_cast<double>(r[j]);
    mean = G > 1 ? mean / static_cast<double>(G) : 0.0;
    for (std::size_t j = g * G; j < (g + 1) * G; ++j)
      a[j] = static_cast<U>(alpha * (static_cast<double>(r[j]) - mean) / f_norm);
  });
  return alpha;
}

/// Masked whitening over every unmasked token (file comment); `out` may alias `values`. An empty
/// mask means every token counts. Needs at least one unmasked token (two when unbiased).
template <msrl::execution_backend Backend, class T, class M, class U>
void token_whiten(const Backend& exec, const token_layout& layout, std::span<const T> values, std::span<const M> mask,
                  std::span<U> out, const whiten_options& opt = {}) {
  constexpr const char* where = "msrl::grpo::token_whiten";
  detail_est::check_tokens(layout, values.size(), where, "values");
  detail_est::check_tokens(layout, out.size(), where, "out");
  require<shape_error>(mask.empty() || mask.size() == values.size(), where, "mask", "must be empty or match values");
  require(opt.eps >= 0.0 && std::isfinite(opt.eps), where, "options.eps", "must be finite and >= 0");
  require(opt.count_eps >= 0.0 && opt.count_eps < 1.0, where, "options.count_eps", "must be in [0, 1)");
  detail_est::check_mask(exec, mask, where);
  const T* x = values.data();
  const M* m = mask.empty() ? nullptr : mask.data();
  auto s1 = exec.reduce_n(
      values.size(),
      [=] MSRL_HOST_DEVICE(std::size_t t) {
        const double w = m ? static_cast<double>(m[t]) : 1.0;
        const double v = static_cast<double>(x[t]);
        sums<3> s{};
        s[0] = w;
        s[1] = w != 0.0 ? v : 0.0;
        s[2] = w != 0.0 && !(v - v == 0.0) ? 1.0 : 0.0;
        return s;
      },
      sums<3>{});
  require<value_error>(s1[2] == 0.0, where, "values", "must be finite at unmasked tokens");
  const double n = s1[0];
  require<value_error>(n >= (opt.unbiased ? 2.0 : 1.0), where, "mask",
                       opt.unbiased ? "must leave at least two tokens (unbiased variance)"
                                    : "must leave at least one token");
  const double mean = s1[1] / (n + opt.count_eps);
  auto s2 = exec.reduce_n(
      values.size(),
      [=] MSRL_HOST_DEVICE(std::size_t t) {
        const double w = m ? static_cast<double>(m[t]) : 1.0;
        const double d = static_cast<double>(x[t]) - mean;
        sums<1> s{};
        s[0] = w != 0.0 ? d * d : 0.0;
        return s;
      },
      sums<1>{});
  double var = s2[0] / (n + opt.count_eps);
  if (opt.unbiased) var *= n / (n - 1.0);
  const double denom = opt.floor_eps ? (var > opt.eps ? var : opt.eps) : var + opt.eps;
  const double k = opt.scale ? 1.0 / std::sqrt(denom) : 1.0;
  U* o = out.data();
  exec.for_each_n(values.size(), [=] MSRL_HOST_DEVICE(std::size_t t) {
    const double w = m ? static_cast<double>(m[t]) : 1.0;
    o[t] = static_cast<U>(w != 0.0 ? (static_cast<double>(x[t]) - mean) * k : 0.0);
  });
}

/// REINFORCE++-baseline (file comment): one advantage per token in `out`.
template <msrl::execution_backend Backend, class T, class M, class U>
void reinforce_pp_baseline(const Backend& exec, const token_layout& layout, std::span<const T> scores,
                           std::size_t group_size, std::span<const M> mask, std::span<U> out,
                           const whiten_options& opt = {}) {
  constexpr const char* where = "msrl::grpo::reinforce_pp_baseline";
  require<shape_error>(scores.size() == layout.num_sequences, where, "scores",
                       "must have one element per row (" + std::to_string(layout.num_sequences) + ")");
  detail_est::check_groups(scores.size(), group_size, scores.size(), where);
  detail_est::check_tokens(layout, out.size(), where, "out");
  detail_est::check_finite(exec, scores, where, "scores");
  const T* r = scores.data();
  U* o = out.data();
  const std::size_t G = group_size;
  const token_layout lay = layout;
  exec.for_each_n(scores.size(), [=] MSRL_HOST_DEVICE(std::size_t i) {
    const std::size_t g0 = i / G * G;
    double mean = 0.0;
    for (std::size_t j = g0; j < g0 + G; ++j) mean += static_cast<double>(r[j]);
    mean = G > 1 ? mean / static_cast<double>(G) : 0.0;
    const double x = static_cast<double>(r[i]) - mean;
    for (std::size_t t = lay.begin(i); t < lay.end(i); ++t) o[t] = static_cast<U>(x);
  });
  token_whiten(exec, layout, std::span<const U>(o, out.size()), mask, out, opt);
}

/// verl's discounted return-to-go (file comment): one value per token in `out`.
template <msrl::execution_backend Backend, class T, class M, class U>
void discounted_returns(const Backend& exec, const token_layout& layout, std::span<const T> token_rewards,
                        std::span<const M> mask, double gamma, std::span<U> out, bool reset_after_masked = true) {
  constexpr const char* where = "msrl::grpo::discounted_returns";
  detail_est::check_tokens(layout, token_rewards.size(), where, "token_rewards");
  detail_est::check_tokens(layout, out.size(), where, "out");
  require<shape_error>(mask.empty() || mask.size() == token_rewards.size(), where, "mask",
                       "must be empty or match token_rewards");
  require(std::isfinite(gamma), where, "gamma", "must be finite");
  detail_est::check_finite(exec, token_rewards, where, "token_rewards");
  detail_est::check_mask(exec, mask, where);
  const T* r = token_rewards.data();
  const M* m = mask.empty() ? nullptr : mask.data();
  U* o = out.data();
  const token_layout lay = layout;
  exec.for_each_n(layout.num_sequences, [=] MSRL_HOST_DEVICE(std::size_t i) {
    double run = 0.0;
    for (std::size_t t = lay.end(i); t-- > lay.begin(i);) {
      if (reset_after_masked) {
        run = static_cast<double>(r[t]) + gamma * run;
        o[t] = static_cast<U>(run);
        if (m) run *= static_cast<double>(m[t]);
      } else { // OpenRLHF get_cumulative_returns: masked rewards count 0, nothing resets
        run = (m ? static_cast<double>(m[t]) : 1.0) * static_cast<double>(r[t]) + gamma * run;
        o[t] = static_cast<U>(run);
      }
    }
  });
}

/// REINFORCE++ (file comment): discounted returns, then token_whiten, into `out`.
template <msrl::execution_backend Backend, class T, class M, class U>
void reinforce_pp(const Backend& exec, const token_layout& layout, std::span<const T> token_rewards,
                  std::span<const M> mask, double gamma, std::span<U> out, const whiten_options& opt = {}) {
  discounted_returns(exec, layout, token_rewards, mask, gamma, out);
  token_whiten(exec, layout, std::span<const U>(out.data(), out.size()), mask, out, opt);
}

/// ReMax (file comment): one advantage per token in `out`; `baselines` one per row.
template <msrl::execution_backend Backend, class T, class M, class U>
void remax_advantages(const Backend& exec, const token_layout& layout, std::span<const T> token_rewards,
                      std::span<const T> baselines, std::span<const M> mask, std::span<U> out) {
  constexpr const char* where = "msrl::grpo::remax_advantages";
  detail_est::check_tokens(layout, token_rewards.size(), where, "token_rewards");
  detail_est::check_tokens(layout, out.size(), where, "out");
  require<shape_error>(baselines.size() == layout.num_sequences, where, "baselines", "must have one element per row");
  require<shape_error>(mask.empty() || mask.size() == token_rewards.size(), where, "mask",
                       "must be empty or match token_rewards");
  detail_est::check_finite(exec, token_rewards, where, "token_rewards");
  detail_est::check_finite(exec, baselines, where, "baselines");
  detail_est::check_mask(exec, mask, where);
  const T *r = token_rewards.data(), *bl = baselines.data();
  const M* m = mask.empty() ? nullptr : mask.data();
  U* o = out.data();
  const token_layout lay = layout;
  exec.for_each_n(layout.num_sequences, [=] MSRL_HOST_DEVICE(std::size_t i) {
    double run = 0.0;
    const double b = static_cast<double>(bl[i]);
    for (std::size_t t = lay.end(i); t-- > lay.begin(i);) {
      const double w = m ? static_cast<double>(m[t]) : 1.0;
      run += w * static_cast<double>(r[t]);
      o[t] = static_cast<U>(run - b * w);
    }
  });
}

/// ms-swift's REINFORCE++ (file comment); `scale` none, group or batch. One advantage per row.
template <msrl::execution_backend Backend, class T, class U>
void swift_reinforce_pp(const Backend& exec, std::span<const T> scores, std::size_t group_size, std::span<U> out,
                        std_scaling scale = std_scaling::batch, double eps = 1e-4) {
  constexpr const char* where = "msrl::grpo::swift_reinforce_pp";
  detail_est::check_groups(scores.size(), group_size, out.size(), where);
  require(eps >= 0.0 && std::isfinite(eps), where, "eps", "must be finite and >= 0");
  detail_est::check_finite(exec, scores, where, "scores");
  const T* r = scores.data();
  U* a = out.data();
  const std::size_t G = group_size, N = scores.size();
  // x = R - mean_g written to out; the group's sum of squares of x reduced for the batch std.
  auto ss = exec.reduce_n(N / G, [=] MSRL_HOST_DEVICE(std::size_t g) {
    double mean = 0.0;
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) mean += static_cast<double>(r[j]);
    mean /= static_cast<double>(G);
    sums<2> s{};
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) {
      const double x = static_cast<double>(r[j]) - mean;
      a[j] = static_cast<U>(x);
      s[0] += x;
      s[1] += x * x;
    }
    return s;
  }, sums<2>{});
  if (scale == std_scaling::none || N == 0) return;
  if (scale == std_scaling::batch) {
    const double n = static_cast<double>(N);
    const double mean = ss[0] / n;
    auto dev = exec.reduce_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
      const double d = static_cast<double>(a[i]) - mean;
      sums<1> s{};
      s[0] = d * d;
      return s;
    }, sums<1>{});
    const double sd = N > 1 ? std::sqrt(dev[0] / (n - 1.0)) : 0.0;
    exec.for_each_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) { a[i] = static_cast<U>(static_cast<double>(a[i]) / (sd + eps)); });
    return;
  }
  exec.for_each_n(N / G, [=] MSRL_HOST_DEVICE(std::size_t g) {
    double mean = 0.0, dev = 0.0;
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) mean += static_cast<double>(a[j]);
    mean /= static_cast<double>(G);
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) dev += (static_cast<double>(a[j]) - mean) * (static_cast<double>(a[j]) - mean);
    const double sd = G > 1 ? std::sqrt(dev / static_cast<double>(G - 1)) : 0.0;
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) a[j] = static_cast<U>(static_cast<double>(a[j]) / (sd + eps));
  });
}

/// verl's GDPO (file comment): one advantage per token in `out`. Every reward must be finite.
template <msrl::execution_backend Backend, class T, class M, class U>
void gdpo_verl(const Backend& exec, const token_layout& layout, reward_matrix<T> rewards, std::size_t group_size,
               std::span<const M> mask, std::span<U> out, double eps = 1e-6, bool normalize_by_std = true) {
  constexpr const char* where = "msrl::grpo::gdpo_verl";
  require(rewards.columns >= 1, where, "rewards.columns", "must be at least 1");
  require<shape_error>(rewards.values.size() == layout.num_sequences * rewards.columns, where, "rewards.values",
                       "must have rows x columns elements (" + std::to_string(layout.num_sequences) + " rows)");
  const std::size_t N = layout.num_sequences, K = rewards.columns;
  detail_est::check_groups(N, group_size, N, where);
  detail_est::check_tokens(layout, out.size(), where, "out");
  require<shape_error>(mask.size() == out.size(), where, "mask", "must have one element per token");
  require<shape_error>(rewards.weights.empty() || rewards.weights.size() == K, where, "rewards.weights",
                       "must be empty or have one weight per column");
  require(eps >= 0.0 && std::isfinite(eps), where, "eps", "must be finite and >= 0");
  detail_est::check_finite(exec, rewards.values, where, "rewards.values");
  std::vector<double> hw(K, 1.0);
  for (std::size_t k = 0; k < rewards.weights.size(); ++k) {
    hw[k] = rewards.weights[k];
    require<value_error>(std::isfinite(hw[k]), where, "rewards.weights", "must be finite");
  }
  typename Backend::template buffer<double> wbuf(K);
  wbuf.copy_from_host(std::span<const double>(hw));
  const double* w = wbuf.data();
  const T* r = rewards.values.data();
  U* o = out.data();
  const std::size_t G = group_size;
  const token_layout lay = layout;
  exec.for_each_n(N / G, [=] MSRL_HOST_DEVICE(std::size_t g) {
    const std::size_t r0 = g * G;
    for (std::size_t j = r0; j < r0 + G; ++j) {
      double x = 0.0;
      for (std::size_t k = 0; k < K; ++k) {
        double mean = 0.0, sd = 1.0;
        if (G > 1) {
          for (std::size_t q = r0; q < r0 + G; ++q) mean += static_cast<double>(r[q * K + k]);
          mean /= static_cast<double>(G);
          double dev = 0.0;
          for (std::size_t q = r0; q < r0 + G; ++q) {
            const double d = static_cast<double>(r[q * K + k]) - mean;
            dev += d * d;
          }
          sd = std::sqrt(dev / static_cast<double>(G - 1));
        }
        const double c = static_cast<double>(r[j * K + k]) - mean;
        x += w[k] * (normalize_by_std ? c / (sd + eps) : c);
      }
      for (std::size_t t = lay.begin(j); t < lay.end(j); ++t) o[t] = static_cast<U>(x);
    }
  });
  token_whiten(exec, layout, std::span<const U>(o, out.size()), mask, out);
}

/// OpenRLHF's advantage estimators without a critic (`--algo.advantage.estimator`).
enum class openrlhf_estimator : std::uint8_t { reinforce, rloo, reinforce_baseline, group_norm, dr_grpo };

struct openrlhf_options {
  openrlhf_estimator estimator = openrlhf_estimator::reinforce_baseline;
  double gamma = 1.0;       ///< --algo.advantage.gamma (used by reinforce only, as OpenRLHF)
  bool no_std_norm = false; ///< --algo.advantage.no_std_norm
  kl_reward_options kl = kl_reward_options::openrlhf(0.0); ///< --algo.kl.* (use_loss off) and --reward.clip_range
};

/// OpenRLHF's REINFORCE family (file comment): one advantage per token in `out` (0 outside the
/// mask, where OpenRLHF leaves -mean rstd that no loss reads). `old_logp`/`ref_logp` may be empty
/// when `options.kl.beta` is 0. Returns kl_reward_tokens' statistics.
template <msrl::execution_backend Backend, class T, class L, class M, class U>
kl_reward_stats openrlhf_advantages(const Backend& exec, const token_layout& layout, std::span<const T> scores,
                           std::size_t group_size, std::span<const L> old_logp, std::span<const L> ref_logp,
                           std::span<const M> mask, std::span<U> out, const openrlhf_options& opt = {}) {
  constexpr const char* where = "msrl::grpo::openrlhf_advantages";
  require<shape_error>(scores.size() == layout.num_sequences, where, "scores",
                       "must have one element per row (" + std::to_string(layout.num_sequences) + ")");
  detail_est::check_groups(scores.size(), group_size, scores.size(), where);
  const openrlhf_estimator est = opt.estimator;
  require(group_size >= 2 || !(est == openrlhf_estimator::rloo || est == openrlhf_estimator::group_norm), where,
          "group_size", "must be at least 2 for rloo and group_norm (OpenRLHF divides by G - 1)");
  require(std::isfinite(opt.gamma), where, "options.gamma", "must be finite");
  detail_est::check_finite(exec, scores, where, "scores");
  const std::size_t N = scores.size(), G = group_size;
  typename Backend::template buffer<double> shaped(N);
  double* x = shaped.data();
  const T* r = scores.data();
  exec.for_each_n(N / G, [=] MSRL_HOST_DEVICE(std::size_t g) {
    double sum = 0.0;
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) sum += static_cast<double>(r[j]);
    const double mean = sum / static_cast<double>(G);
    double sd = 0.0;
    if (est == openrlhf_estimator::group_norm) {
      for (std::size_t j = g * G; j < (g + 1) * G; ++j)
        sd += (static_cast<double>(r[j]) - mean) * (static_cast<double>(r[j]) - mean);
      sd = std::sqrt(sd / static_cast<double>(G - 1));
    }
    for (std::size_t j = g * G; j < (g + 1) * G; ++j) {
      const double R = static_cast<double>(r[j]);
      switch (est) {
      case openrlhf_estimator::reinforce: x[j] = R; break;
      case openrlhf_estimator::rloo: x[j] = R - (sum - R) / static_cast<double>(G - 1); break;
      case openrlhf_estimator::group_norm: x[j] = (R - mean) / (sd + 1e-9); break;
      default: x[j] = R - mean; break;
      }
    }
  });
  const kl_reward_stats kl = kl_reward_tokens(exec, layout, std::span<const double>(x, N), old_logp, ref_logp, mask, opt.kl, out);
  const double gamma = est == openrlhf_estimator::reinforce ? opt.gamma : 1.0;
  discounted_returns(exec, layout, std::span<const U>(out.data(), out.size()), mask, gamma, out, false);
  if (est == openrlhf_estimator::reinforce || est == openrlhf_estimator::reinforce_baseline) {
    whiten_options w;
    w.unbiased = false;
    w.eps = 1e-8;
    w.floor_eps = true;
    w.scale = !opt.no_std_norm;
    w.count_eps = 0.0;
    token_whiten(exec, layout, std::span<const U>(out.data(), out.size()), mask, out, w);
  }
  return kl;
}

} // namespace msrl::grpo
