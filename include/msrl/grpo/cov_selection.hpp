#pragma once
/// \file Token selection by the covariance of advantage and log-prob (Clip-Cov and KL-Cov, the
/// Entropy-Mechanism paper, arXiv 2505.22617; verl core_algos.py compute_policy_loss_clip_cov /
/// _kl_cov at verl-project/verl@1dda039, L1742-1925).
///
/// Over the unmasked tokens of the batch (the local micro-batch, as verl),
///
///   cov_t = (A_t - mean_u A_u) (logp_t - mean_u logp_u),     k = max(1, floor(ratio * N_unmasked)),
///
/// with A_t the row's advantage (one per sequence) or the token's. The selections are decisions, not
/// differentiated; the log-probs are those of the current forward, so a trainer computes them
/// before the loss call, then passes the mask as loss_inputs::policy_mask:
///
///   clip_cov_mask  Clip-Cov: among the tokens whose clipped branch does not win (-A clip(rho) >
///                  -A rho is false, rho = exp(logp - old_logp) unclamped) and lower < cov_t < upper,
///                  k chosen uniformly at random get loss 0. Writes 1 = keep, 0 = zeroed: the mask
///                  multiplies the clipped-ratio surrogate (preset verl_clip_cov); the KL and the
///                  normaliser keep every token, as verl's `corr`. verl draws the subset with
///                  torch.randperm over the candidates in row-major order: pass that permutation
///                  (`permutation`) to reproduce a verl step exactly; otherwise `seed` drives msrl's own
///                  deterministic draw (splitmix64, Fisher-Yates), the same on every platform.
///   kl_cov_mask    KL-Cov: the k tokens of largest cov_t. Writes 1 = selected: the kl_cov form reads
///                  the policy mask as that selection (-A rho + coef |logp - old| there, -A rho
///                  elsewhere; preset verl_kl_cov). Equal covariances are taken in token order
///                  (torch.topk leaves their order unspecified).
///
/// Both return the number of candidates and of selected tokens (verl's Clip-Cov pg_clipfrac is
/// selected / N_unmasked).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/ranges.hpp"
#include "../core/token_layout.hpp"

namespace msrl::grpo {

struct cov_selection {
  std::size_t unmasked = 0;   ///< tokens in the statistic
  std::size_t candidates = 0; ///< tokens eligible for the selection
  std::size_t selected = 0;   ///< tokens selected (Clip-Cov: zeroed; KL-Cov: penalised)
};

struct clip_cov_options {
  double ratio = 2e-4;    ///< verl clip_cov_ratio: k = max(1, floor(ratio * N_unmasked))
  double lower = 1.0;     ///< verl clip_cov_lb (exclusive)
  double upper = 5.0;     ///< verl clip_cov_ub (exclusive)
  double clip_low = 0.2;  ///< the loss's epsilon_low (the clipped branch test)
  double clip_high = 0.2; ///< the loss's epsilon_high
  std::uint64_t seed = 0; ///< msrl's draw when no permutation is given
  /// verl's torch.randperm(candidates): its first k entries index the candidates in row-major order
  /// (must be a permutation of 0 .. candidates - 1; empty: draw with `seed`)
  std::span<const std::int64_t> permutation = {};
};

struct kl_cov_options {
  double ratio = 2e-4; ///< verl kl_cov_ratio: k = max(1, floor(ratio * N_unmasked))
};

namespace detail {

// The covariance statistic of every token (0 at masked ones) and the unmasked count.
template <class T, class M>
std::size_t token_covariance(const char* where, const token_layout& layout, std::span<const T> logp,
                             std::span<const T> advantages, std::span<const M> mask, std::vector<double>& cov) {
  const std::size_t B = layout.num_sequences, N = layout.total_tokens;
  require<shape_error>(logp.size() == N, where, "logp", "must have one element per token (" + std::to_string(N) + ")");
  require<shape_error>(advantages.size() == B || advantages.size() == N, where, "advantages",
                       "must have one element per sequence or per token");
  require<shape_error>(mask.empty() || mask.size() == N, where, "mask", "must be empty or match logp");
  const bool per_token = advantages.size() != B;
  auto adv_at = [&](std::size_t i, std::size_t t) {
    return static_cast<double>(per_token ? advantages[t] : advantages[i]);
  };
  double n = 0, sa = 0, sl = 0;
  for (std::size_t i = 0; i < B; ++i)
    for (std::size_t t = layout.begin(i); t < layout.end(i); ++t) {
      const double m = mask.empty() ? 1.0 : static_cast<double>(mask[t]);
      require<value_error>(m == 0.0 || m == 1.0, where, "mask", "values must be 0 or 1");
      if (m == 0.0) continue;
      const double a = adv_at(i, t), l = static_cast<double>(logp[t]);
      require<value_error>(std::isfinite(a) && std::isfinite(l), where, "logp/advantages",
                           "must be finite at unmasked tokens");
      n += 1;
      sa += a;
      sl += l;
    }
  cov.assign(N, 0.0);
  if (n == 0) return 0;
  const double ma = sa / n, ml = sl / n;
  for (std::size_t i = 0; i < B; ++i)
    for (std::size_t t = layout.begin(i); t < layout.end(i); ++t)
      if (mask.empty() || mask[t] != M(0)) cov[t] = (adv_at(i, t) - ma) * (static_cast<double>(logp[t]) - ml);
  return static_cast<std::size_t>(n);
}

inline std::size_t cov_k(double ratio, std::size_t unmasked) {
  const auto k = static_cast<std::size_t>(ratio * static_cast<double>(unmasked)); // Python int(): floor here
  return std::max<std::size_t>(k, 1);
}

// splitmix64 (Steele, Lea, Flood 2014) and an unbiased draw in [0, n).
struct splitmix64 {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    std::uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }
};

} // namespace detail

/// Clip-Cov's keep mask (file comment); `advantages` one per sequence [B] or per token [N].
template <class T, class M, msrl::output_range R>
cov_selection clip_cov_mask(const token_layout& layout, std::span<const T> logp, std::span<const T> old_logp,
                            std::span<const T> advantages, std::span<const M> mask, const clip_cov_options& opt,
                            R&& out) {
  constexpr const char* where = "msrl::grpo::clip_cov_mask";
  auto o = msrl::as_span(out);
  const std::size_t B = layout.num_sequences, N = layout.total_tokens;
  require(opt.ratio > 0.0 && std::isfinite(opt.ratio), where, "options.ratio", "must be finite and > 0");
  require(!std::isnan(opt.lower) && !std::isnan(opt.upper), where, "options.lower/upper", "must not be NaN");
  require(opt.clip_low >= 0.0 && std::isfinite(opt.clip_low), where, "options.clip_low", "must be finite and >= 0");
  require(opt.clip_high >= 0.0 && std::isfinite(opt.clip_high), where, "options.clip_high", "must be finite and >= 0");
  require<shape_error>(old_logp.size() == N, where, "old_logp", "must match logp");
  require<shape_error>(o.size() == N, where, "out", "must have one element per token");
  std::vector<double> cov;
  cov_selection r;
  r.unmasked = detail::token_covariance(where, layout, logp, advantages, mask, cov);
  const bool per_token = advantages.size() != B;
  std::vector<std::size_t> cand;
  for (std::size_t i = 0; i < B; ++i)
    for (std::size_t t = layout.begin(i); t < layout.end(i); ++t) {
      o[t] = 1;
      if (!mask.empty() && mask[t] == M(0)) continue;
      const double a = static_cast<double>(per_token ? advantages[t] : advantages[i]);
      const double rho = std::exp(static_cast<double>(logp[t]) - static_cast<double>(old_logp[t]));
      require<value_error>(!std::isnan(rho), where, "old_logp", "must be finite at unmasked tokens");
      const double rc = std::clamp(rho, 1.0 - opt.clip_low, 1.0 + opt.clip_high);
      const bool clipped_wins = -a * rc > -a * rho;
      if (!clipped_wins && cov[t] > opt.lower && cov[t] < opt.upper) cand.push_back(t);
    }
  r.candidates = cand.size();
  if (cand.empty()) return r;
  const std::size_t k = std::min(detail::cov_k(opt.ratio, r.unmasked), cand.size());
  if (!opt.permutation.empty()) {
    require<shape_error>(opt.permutation.size() == cand.size(), where, "options.permutation",
                         "must have one entry per candidate (" + std::to_string(cand.size()) + ")");
    std::vector<char> seen(cand.size(), 0);
    for (const std::int64_t p : opt.permutation) {
      require<value_error>(p >= 0 && static_cast<std::size_t>(p) < cand.size() && !seen[static_cast<std::size_t>(p)],
                           where, "options.permutation", "must be a permutation of 0 .. candidates - 1");
      seen[static_cast<std::size_t>(p)] = 1;
    }
    for (std::size_t j = 0; j < k; ++j) o[cand[static_cast<std::size_t>(opt.permutation[j])]] = 0;
  } else {
    detail::splitmix64 g{opt.seed};
    for (std::size_t j = 0; j < k; ++j) {
      std::swap(cand[j], cand[j + g.below(cand.size() - j)]);
      o[cand[j]] = 0;
    }
  }
  r.selected = k;
  return r;
}

/// KL-Cov's selection mask (file comment); `advantages` one per sequence [B] or per token [N].
template <class T, class M, msrl::output_range R>
cov_selection kl_cov_mask(const token_layout& layout, std::span<const T> logp, std::span<const T> advantages,
                          std::span<const M> mask, const kl_cov_options& opt, R&& out) {
  constexpr const char* where = "msrl::grpo::kl_cov_mask";
  auto o = msrl::as_span(out);
  const std::size_t N = layout.total_tokens;
  require(opt.ratio > 0.0 && std::isfinite(opt.ratio), where, "options.ratio", "must be finite and > 0");
  require<shape_error>(o.size() == N, where, "out", "must have one element per token");
  std::vector<double> cov;
  cov_selection r;
  r.unmasked = detail::token_covariance(where, layout, logp, advantages, mask, cov);
  std::vector<std::size_t> cand;
  cand.reserve(r.unmasked);
  for (std::size_t t = 0; t < N; ++t) {
    o[t] = 0;
    if (mask.empty() || mask[t] != M(0)) cand.push_back(t);
  }
  r.candidates = cand.size();
  if (cand.empty()) return r;
  const std::size_t k = std::min(detail::cov_k(opt.ratio, r.unmasked), cand.size());
  std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(k), cand.end(),
                    [&](std::size_t a, std::size_t b) { return cov[a] > cov[b] || (cov[a] == cov[b] && a < b); });
  for (std::size_t j = 0; j < k; ++j) o[cand[j]] = 1;
  r.selected = k;
  return r;
}

} // namespace msrl::grpo
