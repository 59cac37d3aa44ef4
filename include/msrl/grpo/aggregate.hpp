#pragma once
/// \file The weight the policy loss gives each token: the aggregation's denominator (N, S or S*C),
/// the per-row weight, the option checks every loss algorithm shares, and aggregate_tokens, which
/// applies the same weights to any other per-token quantity (an entropy bonus, a length penalty).
///
///   token_mean               w = scale / N                     (N = masked tokens, or the global count)
///   seq_mean_token_mean      w = scale / (S * guard(L_i))      (guard: max(L, 1) or L + eps)
///   seq_mean_token_sum       w = scale / S
///   seq_mean_token_sum_norm  w = scale / (S * C)
///   token_sum                w = scale
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../backend/concept.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/token_layout.hpp"
#include "loss_types.hpp"

namespace msrl::grpo {
namespace detail {

// Aggregation weight of a masked-in token of a row with L tokens.
struct weight_fn {
  aggregation agg;
  double scale; // normalizer.scale / denominator
  bool clamp_one;
  double length_eps;
  MSRL_HOST_DEVICE double operator()(double L) const {
    if (agg == aggregation::seq_mean_token_mean) return scale / (clamp_one ? (L > 1.0 ? L : 1.0) : L + length_eps);
    return scale;
  }
};

// Entry i of packed offsets is consistent: 0 = o_0 <= o_1 <= ... <= o_B = N.
MSRL_HOST_DEVICE inline bool offset_ok(const std::int64_t* off, std::size_t i, std::size_t B, std::size_t N) {
  const std::int64_t o = off[i];
  bool ok = o >= 0 && static_cast<std::size_t>(o) <= N;
  if (i == 0) ok = ok && o == 0;
  if (i == B) ok = ok && static_cast<std::size_t>(o) == N;
  if (i > 0) ok = ok && off[i - 1] <= o;
  return ok;
}

inline void require_offsets(bool ok, std::size_t N, const char* where) {
  require<shape_error>(ok, where, "layout.offsets",
                       "must start at 0, be non-decreasing and end at the token count (" + std::to_string(N) + ")");
}

// A packed layout's offsets, checked on the backend that holds them (they may live on the device).
template <class Backend>
void require_packed_offsets(const Backend& exec, const token_layout& lay, const char* where) {
  if (!lay.is_packed()) return;
  const std::int64_t* off = lay.offsets;
  const std::size_t B = lay.num_sequences, N = lay.total_tokens;
  auto bad = exec.reduce_n(
      B + 1,
      [=] MSRL_HOST_DEVICE(std::size_t i) {
        sums<1> s{};
        s[0] = offset_ok(off, i, B, N) ? 0.0 : 1.0;
        return s;
      },
      sums<1>{});
  require_offsets(bad[0] == 0.0, N, where);
}

// Looks a named setting up in `all` (presets, rollout presets); the error lists the names.
template <class Range>
const auto& find_named(const Range& all, std::string_view name, const char* where) {
  for (const auto* p : all)
    if (p->name == name) return *p;
  std::string known;
  for (const auto* p : all) known.append(known.empty() ? "" : ", ").append(p->name);
  throw invalid_argument(std::string(where) + ": argument 'name' must be one of: " + known + " (got '" +
                         std::string(name) + "')");
}

// The options of the aggregation and the normaliser (every algorithm that weighs tokens).
inline void check_aggregation(const loss_options& opt, const loss_normalizer& norm, const char* where) {
  require(opt.length_eps >= 0.0 && std::isfinite(opt.length_eps), where, "options.length_eps",
          "must be finite and >= 0");
  require(opt.agg != aggregation::seq_mean_token_sum_norm ||
              (opt.constant_normalizer > 0.0 && std::isfinite(opt.constant_normalizer)),
          where, "options.constant_normalizer", "must be finite and > 0 for seq_mean_token_sum_norm");
  require(std::isfinite(norm.scale), where, "normalizer.scale", "must be finite");
  if (norm.global_tokens)
    require((*norm.global_tokens > 0.0 || (opt.clamp_token_count && *norm.global_tokens == 0.0)) &&
                std::isfinite(*norm.global_tokens),
            where, "normalizer.global_tokens",
            "must be finite and > 0 (token count zero; options.clamp_token_count allows 0, as TRL)");
  if (norm.global_sequences)
    require(*norm.global_sequences > 0.0 && std::isfinite(*norm.global_sequences), where, "normalizer.global_sequences",
            "must be finite and > 0");
}

// Every loss option: the aggregation's, then the ratio, clip and KL options.
inline void check_loss_options(const loss_options& opt, const loss_normalizer& norm, const char* where) {
  auto nonneg = [](double x) { return x >= 0.0 && x == x; };
  require(nonneg(opt.clip_low) && std::isfinite(opt.clip_low), where, "options.clip_low", "must be finite and >= 0");
  require(nonneg(opt.clip_high) && std::isfinite(opt.clip_high), where, "options.clip_high", "must be finite and >= 0");
  require(opt.dual_clip > 1.0, where, "options.dual_clip", "must be > 1 (inf disables it)");
  require(opt.delta > 1.0, where, "options.delta", "must be > 1 (inf disables it)");
  require(opt.log_ratio_clamp > 0.0, where, "options.log_ratio_clamp", "must be > 0 (inf disables it)");
  require(opt.sequence_log_ratio_max == opt.sequence_log_ratio_max, where, "options.sequence_log_ratio_max",
          "must not be NaN");
  require(nonneg(opt.beta) && std::isfinite(opt.beta), where, "options.beta", "must be finite and >= 0");
  require(opt.kl_log_ratio_clamp > 0.0, where, "options.kl_log_ratio_clamp", "must be > 0 (inf disables it)");
  require(opt.kl_value_clamp > 0.0, where, "options.kl_value_clamp", "must be > 0 (inf disables it)");
  require(opt.form != loss_form::cispo_absolute || (opt.cispo_cap >= 1.0 && std::isfinite(opt.cispo_cap)), where,
          "options.cispo_cap", "must be finite and >= 1 (an absolute cap on the IS weight; TRL's docs use 5)");
  require(opt.form != loss_form::sapo || (opt.sapo_tau_pos > 0.0 && std::isfinite(opt.sapo_tau_pos)), where,
          "options.sapo_tau_pos", "must be finite and > 0");
  require(opt.form != loss_form::sapo || (opt.sapo_tau_neg > 0.0 && std::isfinite(opt.sapo_tau_neg)), where,
          "options.sapo_tau_neg", "must be finite and > 0");
  const bool row = opt.form == loss_form::vespo || opt.form == loss_form::gmpo;
  const bool token_only = opt.form == loss_form::dppo_tv || opt.form == loss_form::dppo_kl ||
                          opt.form == loss_form::dro || opt.form == loss_form::kl_cov || row;
  require(!token_only || opt.level == ratio_level::token, where, "options.form",
          "dppo_tv, dppo_kl, dro, kl_cov, vespo and gmpo are defined at the token ratio level only (options.level = "
          "token)");
  for (const auto& [v, name] : {std::pair{opt.vespo_k_pos, "options.vespo_k_pos"},
                                {opt.vespo_k_neg, "options.vespo_k_neg"},
                                {opt.vespo_lambda_pos, "options.vespo_lambda_pos"},
                                {opt.vespo_lambda_neg, "options.vespo_lambda_neg"}})
    require(opt.form != loss_form::vespo || std::isfinite(v), where, name, "must be finite");
  const bool dppo = opt.form == loss_form::dppo_tv || opt.form == loss_form::dppo_kl;
  require(!dppo || opt.dppo_ratio_cap > 0.0, where, "options.dppo_ratio_cap", "must be > 0 (inf disables it)");
  require(opt.form != loss_form::dro || (opt.dro_beta >= 0.0 && std::isfinite(opt.dro_beta)), where, "options.dro_beta",
          "must be finite and >= 0");
  require(opt.form != loss_form::kl_cov || (opt.kl_cov_coef >= 0.0 && std::isfinite(opt.kl_cov_coef)), where,
          "options.kl_cov_coef", "must be finite and >= 0");
  require(!opt.kl_is_corrected || opt.level != ratio_level::sequence_token, where, "options.kl_is_corrected",
          "is defined for the token and sequence ratio levels only (no peer corrects the GSPO-token KL)");
  check_aggregation(opt, norm, where);
}

// The N, S or S*C the aggregation divides by (before loss_normalizer::scale).
inline double denominator(const loss_options& opt, const loss_normalizer& norm, double local_tokens, std::size_t B,
                          double nonempty, const char* where) {
  double denom = 1.0;
  switch (opt.agg) {
  case aggregation::token_mean:
    denom = norm.global_tokens.value_or(local_tokens);
    if (opt.clamp_token_count && denom < 1.0) denom = 1.0; // TRL / Liger: clamp(min=1)
    require(
        denom > 0.0, where, "normalizer.global_tokens",
        "token count is zero: no unmasked token and no global count (options.clamp_token_count gives loss 0, as TRL)");
    break;
  case aggregation::seq_mean_token_mean:
  case aggregation::seq_mean_token_sum:
  case aggregation::seq_mean_token_sum_norm:
    denom = norm.global_sequences.value_or(opt.count_empty_sequences ? static_cast<double>(B) : nonempty);
    require(denom > 0.0, where, "normalizer.global_sequences", "sequence count is zero");
    if (opt.agg == aggregation::seq_mean_token_sum_norm) denom *= opt.constant_normalizer;
    break;
  case aggregation::token_sum:
    denom = 1.0;
    break;
  }
  return denom;
}

// The weight function for a call with these counts.
inline weight_fn weights(const loss_options& opt, const loss_normalizer& norm, double denom) {
  return {opt.agg, norm.scale / denom, opt.guard == length_guard::clamp_one, opt.length_eps};
}

} // namespace detail

/// The loss's aggregation applied to any other per-token quantity x (an entropy bonus, a length
/// penalty): returns sum_t w_t m_t x_t with the weights policy_loss gives each token under
/// `opt` (agg, guard, count_empty_sequences, constant_normalizer) and `norm`, and writes
/// d result / d x_t = w_t m_t into grad_x when it is given. Host memory, one sweep.
///   verl's entropy bonus:  loss = policy_loss(...) - entropy_coeff * aggregate_tokens(layout, entropy, mask, opt,
///   norm)
template <class T, class M = std::uint8_t, class G = T>
double aggregate_tokens(const token_layout& layout, std::type_identity_t<std::span<const T>> x,
                        std::type_identity_t<std::span<const M>> mask, const loss_options& opt,
                        const loss_normalizer& norm = {}, std::type_identity_t<std::span<G>> grad_x = {}) {
  constexpr const char* where = "msrl::grpo::aggregate_tokens";
  const std::size_t B = layout.num_sequences, N = layout.total_tokens;
  require<shape_error>(x.size() == N, where, "x",
                       "must have one element per token (" + std::to_string(N) + "), got " + std::to_string(x.size()));
  require<shape_error>(mask.empty() || mask.size() == N, where, "mask", "must be empty or match x");
  require<shape_error>(grad_x.empty() || grad_x.size() == N, where, "grad_x", "must be empty or match x");
  detail::check_aggregation(opt, norm, where);
  if (layout.is_packed())
    for (std::size_t i = 0; i <= B; ++i) detail::require_offsets(detail::offset_ok(layout.offsets, i, B, N), N, where);
  std::vector<double> len(B, 0.0);
  double tokens = 0, nonempty = 0;
  for (std::size_t i = 0; i < B; ++i) {
    for (std::size_t t = layout.begin(i), e = layout.end(i); t < e; ++t) {
      const double m = mask.empty() ? 1.0 : static_cast<double>(mask[t]);
      require<value_error>(m == 0.0 || m == 1.0, where, "mask", "values must be 0 or 1");
      require<value_error>(m == 0.0 || std::isfinite(static_cast<double>(x[t])), where, "x",
                           "must be finite at unmasked positions");
      len[i] += m;
    }
    tokens += len[i];
    nonempty += len[i] > 0.0 ? 1.0 : 0.0;
  }
  const detail::weight_fn weight =
      detail::weights(opt, norm, detail::denominator(opt, norm, tokens, B, nonempty, where));
  double total = 0;
  for (std::size_t i = 0; i < B; ++i) {
    const double w = weight(len[i]);
    for (std::size_t t = layout.begin(i), e = layout.end(i); t < e; ++t) {
      const double wm = (mask.empty() || mask[t]) ? w : 0.0;
      if (wm != 0.0) total += wm * static_cast<double>(x[t]);
      if (!grad_x.empty()) grad_x[t] = static_cast<G>(wm);
    }
  }
  return total;
}

} // namespace msrl::grpo
