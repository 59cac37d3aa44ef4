#pragma once
/// \file Token and row selections that multiply the surrogate only (loss_inputs::policy_mask) or
/// edit the mask, as the peers apply them:
///
///   high_entropy_mask        TRL / ms-swift top_entropy_quantile ("80/20"): keep_t = m_t [H_t >= theta],
///                            theta the (1 - q) quantile of the unmasked entropies, linear
///                            interpolation as torch.quantile (position p (n - 1) between order
///                            statistics). TRL multiplies the surrogate by it; the KL and the
///                            normaliser keep the original mask.
///   off_policy_sequence_mask DeepSeek-V3.2's off-policy sequence mask (TRL off_policy_mask_threshold,
///                            ms-swift off_policy_sequence_mask_delta): keep row i unless A_i < 0 and
///                            delta_i = mean_t m_t (sampling_logp - logp) > delta. TRL multiplies the
///                            surrogate (pass it as policy_mask); ms-swift removes the rows from the
///                            mask (AND it into the mask; its dapo normaliser, counted before, stays).
///   truncated_completion_mask TRL mask_truncated_completions: a row whose last id is neither an EOS
///                            id nor the pad id ran out of tokens; its tokens leave the mask (before
///                            the normaliser is counted).
///
/// Host arrays; the log-probs are those of the current forward (the decision is not
/// differentiated), so a trainer computes them before the loss call. Multi-rank runs that gather
/// the entropies (TRL) compute the threshold over the gathered values with
/// entropy_quantile_threshold and apply it with tokens_at_or_above.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/ranges.hpp"
#include "../core/token_layout.hpp"

namespace msrl::grpo {

/// The (1 - top_quantile) quantile of the unmasked values, torch.quantile's linear interpolation;
/// +inf when no token is unmasked (then no token is kept). top_quantile in (0, 1].
template <class T, class M>
double entropy_quantile_threshold(std::span<const T> entropy, std::span<const M> mask, double top_quantile) {
  constexpr const char* where = "msrl::grpo::entropy_quantile_threshold";
  require(top_quantile > 0.0 && top_quantile <= 1.0, where, "top_quantile", "must be in (0, 1]");
  require<shape_error>(mask.empty() || mask.size() == entropy.size(), where, "mask", "must be empty or match entropy");
  std::vector<double> v;
  v.reserve(entropy.size());
  for (std::size_t t = 0; t < entropy.size(); ++t) {
    if (!mask.empty() && mask[t] == M(0)) continue;
    const double h = static_cast<double>(entropy[t]);
    require<value_error>(std::isfinite(h), where, "entropy", "must be finite at unmasked tokens");
    v.push_back(h);
  }
  if (v.empty()) return HUGE_VAL;
  std::sort(v.begin(), v.end());
  const double p = (1.0 - top_quantile) * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(p));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (p - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

/// out_t = m_t [value_t >= threshold] (0/1); returns the number kept.
template <class T, class M, msrl::output_range R>
std::size_t tokens_at_or_above(std::span<const T> values, std::span<const M> mask, double threshold, R&& out) {
  constexpr const char* where = "msrl::grpo::tokens_at_or_above";
  auto o = msrl::as_span(out);
  require<shape_error>(mask.empty() || mask.size() == values.size(), where, "mask", "must be empty or match values");
  require<shape_error>(o.size() == values.size(), where, "out", "must have one element per token");
  std::size_t kept = 0;
  for (std::size_t t = 0; t < values.size(); ++t) {
    const bool k = (mask.empty() || mask[t] != M(0)) && static_cast<double>(values[t]) >= threshold;
    o[t] = k ? 1 : 0;
    kept += k;
  }
  return kept;
}

/// TRL's high-entropy token mask over the local tokens; returns the threshold.
template <class T, class M, msrl::output_range R>
double high_entropy_mask(std::span<const T> entropy, std::span<const M> mask, double top_quantile, R&& out) {
  const double theta = entropy_quantile_threshold(entropy, mask, top_quantile);
  tokens_at_or_above(entropy, mask, theta, out);
  return theta;
}

/// Writes keep_i m_t per token (0/1) and returns the number of rows dropped. advantages: one per
/// row [B], or one per token [N] (a row's advantage is then its masked mean, as ms-swift takes it).
template <class T, class M, msrl::output_range R>
std::size_t off_policy_sequence_mask(const token_layout& layout, std::span<const T> logp,
                                     std::span<const T> sampling_logp, std::span<const T> advantages,
                                     std::span<const M> mask, double delta, R&& out) {
  constexpr const char* where = "msrl::grpo::off_policy_sequence_mask";
  auto o = msrl::as_span(out);
  const std::size_t B = layout.num_sequences, N = layout.total_tokens;
  require(!std::isnan(delta), where, "delta", "must not be NaN");
  require<shape_error>(logp.size() == N, where, "logp", "must have one element per token (" + std::to_string(N) + ")");
  require<shape_error>(sampling_logp.size() == N, where, "sampling_logp", "must match logp");
  require<shape_error>(advantages.size() == B || advantages.size() == N, where, "advantages",
                       "must have one element per sequence or per token");
  require<shape_error>(mask.empty() || mask.size() == N, where, "mask", "must be empty or match logp");
  require<shape_error>(o.size() == N, where, "out", "must have one element per token");
  const bool per_token = advantages.size() != B;
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < B; ++i) {
    double L = 0, dev = 0, asum = 0;
    for (std::size_t t = layout.begin(i), e = layout.end(i); t < e; ++t) {
      const double m = mask.empty() ? 1.0 : static_cast<double>(mask[t]);
      require<value_error>(m == 0.0 || m == 1.0, where, "mask", "values must be 0 or 1");
      if (m == 0.0) continue;
      const double d = static_cast<double>(sampling_logp[t]) - static_cast<double>(logp[t]);
      require<value_error>(std::isfinite(d), where, "logp/sampling_logp", "must be finite at unmasked tokens");
      L += 1;
      dev += d;
      if (per_token) asum += static_cast<double>(advantages[t]);
    }
    const double A = per_token ? asum / std::max(L, 1.0) : static_cast<double>(advantages[i]);
    const bool keep = A >= 0.0 || dev / std::max(L, 1.0) <= delta;
    dropped += keep ? 0 : 1;
    for (std::size_t t = layout.begin(i), e = layout.end(i); t < e; ++t)
      o[t] = keep && (mask.empty() || mask[t] != M(0)) ? 1 : 0;
  }
  return dropped;
}

/// Writes m_t [row i not truncated] per token (0/1) and returns the number of truncated rows. A row
/// is truncated when its last id (position T - 1 of the padded row; the row's last token when
/// packed) is neither in `eos_ids` nor `pad_id` (TRL grpo_trainer.py, mask_truncated_completions).
/// A packed row without tokens is not truncated.
template <class I, class M, msrl::output_range R>
std::size_t truncated_completion_mask(const token_layout& layout, std::span<const I> ids, std::span<const M> mask,
                                      std::span<const I> eos_ids, I pad_id, R&& out) {
  constexpr const char* where = "msrl::grpo::truncated_completion_mask";
  auto o = msrl::as_span(out);
  const std::size_t B = layout.num_sequences, N = layout.total_tokens;
  require<shape_error>(ids.size() == N, where, "ids", "must have one element per token (" + std::to_string(N) + ")");
  require<shape_error>(mask.empty() || mask.size() == N, where, "mask", "must be empty or match ids");
  require<shape_error>(o.size() == N, where, "out", "must have one element per token");
  require(!eos_ids.empty(), where, "eos_ids", "must name at least one end-of-sequence id");
  std::size_t truncated = 0;
  for (std::size_t i = 0; i < B; ++i) {
    const std::size_t b = layout.begin(i), e = layout.end(i);
    bool cut = false;
    if (e > b) {
      const I last = ids[e - 1];
      cut = last != pad_id && std::find(eos_ids.begin(), eos_ids.end(), last) == eos_ids.end();
    }
    truncated += cut ? 1 : 0;
    for (std::size_t t = b; t < e; ++t) {
      const double m = mask.empty() ? 1.0 : static_cast<double>(mask[t]);
      require<value_error>(m == 0.0 || m == 1.0, where, "mask", "values must be 0 or 1");
      o[t] = !cut && m != 0.0 ? 1 : 0;
    }
  }
  return truncated;
}

} // namespace msrl::grpo
