#pragma once
/// \file The rollout/training mismatch correction: importance-sampling weights from the training
/// engine's recomputed log-probs (old_logp) and the sampler's (rollout_logp), for
/// loss_inputs::is_weights. Per token r_t = old_t - rollout_t at unmasked tokens; then
///
///   level token      u_t = exp(c(r_t))                           (one weight per token)
///   level sequence   U_i = exp(cs(S_i)), S_i = sum_t c(r_t)      (product: TRL, verl)
///                             or sum_t c(r_t) / max(L_i, 1)      (geometric mean: ms-swift, OpenRLHF)
///
/// and the rule on the unit weight u (u_t, or U_i broadcast over row i):
///
///   truncate    w = min(max(u, lower), upper)                   (TIS)
///   mask        w = u [lower <= u <= upper]                     (MIS / IcePop)
///   row_gated   w_t = exp(c(r_t)) [lower <= U_i <= upper]       (ms-swift sequence_mask, OpenRLHF
///               seq-mask-tis: token weights, whole rows dropped; needs level sequence)
///
/// c() and cs() are the optional safety clamps on each log-ratio (log_ratio_clamp: verl's token
/// level, ms-swift: 20) and on the row statistic (sequence_log_ratio_clamp: verl's sequence
/// level: 20); TRL and OpenRLHF clamp neither. Masked
/// tokens get weight 0. batch_normalize divides by the weights' mean (verl: over tokens at token
/// level, over non-empty rows at sequence level; skipped when that mean is <= 1e-8). Named
/// settings of each peer: rollout_presets (docs/grpo-math.md, "Rollout correction").
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../backend/concept.hpp"
#include "../backend/reference.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/ranges.hpp"
#include "../core/token_layout.hpp"
#include "aggregate.hpp"
#include "scalar_math.hpp"

namespace msrl::grpo {

/// Whether a weight belongs to each token or to each sequence.
enum class is_level : std::uint8_t { token, sequence };

/// How a sequence's weight is formed from its token log-ratios.
enum class sequence_ratio : std::uint8_t {
  product,        ///< exp(sum_t r_t)                 (TRL, verl)
  geometric_mean, ///< exp(sum_t r_t / max(L_i, 1))   (ms-swift, OpenRLHF)
};

/// What the bounds do to a weight (see the file comment).
enum class is_mode : std::uint8_t { truncate, mask, row_gated };

struct rollout_correction_options {
  is_level level = is_level::sequence;
  sequence_ratio seq = sequence_ratio::product;
  is_mode mode = is_mode::mask;
  double lower = 0.0;                          ///< C_min (0 = no lower bound)
  double upper = math::inf;                    ///< C_max (inf = no upper bound)
  double log_ratio_clamp = math::inf;          ///< each r_t clamped to [-c, c] (verl token level, ms-swift: 20)
  double sequence_log_ratio_clamp = math::inf; ///< S_i clamped to [-c, c] before exp (verl sequence level: 20)
  bool batch_normalize = false;                ///< verl rollout_is_batch_normalize
};

/// Over the unmasked tokens (a sequence weight counts once per token, as verl's metrics do).
struct rollout_correction_metrics {
  double tokens = 0;      ///< unmasked tokens
  double weight_mean = 0; ///< of the weights after the rule, before batch normalisation
  double weight_min = 0, weight_max = 0;
  double effective_sample_size = 0; ///< (sum w)^2 / (tokens sum w^2), in (0, 1]; 0 when every w = 0
  double masked_fraction = 0;       ///< tokens whose weight the rule set to 0 (mask, row_gated)
  double fraction_high = 0;         ///< tokens whose unit weight (u_t or U_i) is above upper
  double fraction_low = 0;          ///< ... below lower
  double mismatch_k1 = 0;           ///< mean of -r_t = log pi_rollout - log pi_old: KL(rollout || old), k1
  double mismatch_k3 = 0;           ///< mean of exp(r_t) - 1 - r_t: the same KL, k3
  double batch_norm_factor = 1;     ///< the mean the weights were divided by (1 when not normalised)
};

namespace detail {

enum rc_stat : int {
  rc_tok,
  rc_w,
  rc_w2,
  rc_masked,
  rc_high,
  rc_low,
  rc_k1,
  rc_k3,
  rc_rows,
  rc_wrow,
  rc_bad,
  rc_count
};

// One task per row: the row's weights, written to its own tokens, and its metric sums.
template <class T, class M, class W>
struct rollout_row_pass {
  token_layout lay;
  const T *old, *roll;
  const M* mask;
  W* out;
  double *row_min, *row_max;
  rollout_correction_options o;

  MSRL_HOST_DEVICE bool inside(double u) const { return u >= o.lower && u <= o.upper; }
  // The rule on weight u whose bounds test `gate` (u itself, or the row's weight for row_gated).
  MSRL_HOST_DEVICE double rule(double u, double gate) const {
    if (o.mode == is_mode::truncate) return math::clamp(u, o.lower, o.upper);
    return inside(gate) ? u : 0.0;
  }

  MSRL_HOST_DEVICE sums<rc_count> operator()(std::size_t i) const {
    sums<rc_count> s{};
    double L = 0.0, sr = 0.0;
    for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
      const double m = mask ? static_cast<double>(mask[t]) : 1.0;
      if (m != 0.0 && m != 1.0) s[rc_bad] += 1.0;
      if (m != 1.0) continue;
      const double r = static_cast<double>(old[t]) - static_cast<double>(roll[t]);
      if (!(r - r == 0.0)) s[rc_bad] += 1.0; // NaN or inf input
      L += 1.0;
      sr += math::clamp(r, -o.log_ratio_clamp, o.log_ratio_clamp);
      s[rc_k1] += -r;
      s[rc_k3] += math::exp(r) - 1.0 - r;
    }
    const double S = o.seq == sequence_ratio::product ? sr : sr / (L > 1.0 ? L : 1.0);
    const double U = math::exp(math::clamp(S, -o.sequence_log_ratio_clamp, o.sequence_log_ratio_clamp));
    const bool seq = o.level == is_level::sequence;
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
      if ((mask ? static_cast<double>(mask[t]) : 1.0) != 1.0) {
        out[t] = W(0);
        continue;
      }
      const double ut =
          math::exp(math::clamp(static_cast<double>(old[t]) - static_cast<double>(roll[t]), -o.log_ratio_clamp, o.log_ratio_clamp));
      const double u = seq && o.mode != is_mode::row_gated ? U : ut;
      const double gate = seq ? U : u; // what the bounds test
      const double w = rule(u, gate);
      s[rc_tok] += 1.0;
      s[rc_w] += w;
      s[rc_w2] += w * w;
      s[rc_masked] += o.mode != is_mode::truncate && !inside(gate) ? 1.0 : 0.0;
      s[rc_high] += gate > o.upper ? 1.0 : 0.0;
      s[rc_low] += gate < o.lower ? 1.0 : 0.0;
      lo = w < lo ? w : lo;
      hi = w > hi ? w : hi;
      out[t] = static_cast<W>(w);
    }
    if (L > 0.0) {
      s[rc_rows] += 1.0;
      s[rc_wrow] += rule(U, U);
    }
    row_min[i] = lo;
    row_max[i] = hi;
    return s;
  }
};

template <class W>
struct scale_pass {
  W* w;
  double f;
  MSRL_HOST_DEVICE void operator()(std::size_t t) const { w[t] = static_cast<W>(static_cast<double>(w[t]) / f); }
};

inline void check_rollout_options(const rollout_correction_options& o, const char* where) {
  require(o.lower >= 0.0 && std::isfinite(o.lower), where, "options.lower", "must be finite and >= 0 (0 = no bound)");
  require(o.upper > 0.0 && !std::isnan(o.upper), where, "options.upper", "must be > 0 (inf = no bound)");
  require(o.lower <= o.upper, where, "options.lower", "must not exceed options.upper");
  require(o.log_ratio_clamp > 0.0, where, "options.log_ratio_clamp", "must be > 0 (inf disables it)");
  require(o.sequence_log_ratio_clamp > 0.0, where, "options.sequence_log_ratio_clamp", "must be > 0 (inf disables it)");
  require(o.mode != is_mode::row_gated || o.level == is_level::sequence, where, "options.mode",
          "row_gated gates rows by their sequence weight: it needs options.level = sequence");
}

// The shapes of the mismatch helpers' inputs (rollout_correction, rollout_rejection_mask): old and
// rollout log-probs per token, an optional mask, and the per-token output named `out`.
template <msrl::execution_backend Backend>
void check_mismatch_inputs(const Backend& exec, const token_layout& lay, std::size_t n_old, std::size_t n_roll,
                           std::size_t n_mask, std::size_t n_out, const char* out, const char* where) {
  const std::size_t N = lay.total_tokens;
  require<shape_error>(n_old == N, where, "old_logp", "must have one element per token (" + std::to_string(N) + ")");
  require<shape_error>(n_roll == N, where, "rollout_logp", "must match old_logp");
  require<shape_error>(n_mask == 0 || n_mask == N, where, "mask", "must be empty or match old_logp");
  require<shape_error>(n_out == N, where, out, "must have one element per token (" + std::to_string(N) + ")");
  require_packed_offsets(exec, lay, where);
}

} // namespace detail

/// Writes the per-token IS weights of the rollout correction to `weights` ([N], masked tokens 0)
/// and returns the metrics. old_logp: the training engine's log-probs of the sampled tokens;
/// rollout_logp: the sampler's. Every array has one entry per token, in the backend's memory.
template <msrl::execution_backend Backend, class T, class M, class W>
rollout_correction_metrics rollout_correction(const Backend& exec, const token_layout& lay, std::span<const T> old_logp,
                                              std::span<const T> rollout_logp, std::span<const M> mask,
                                              const rollout_correction_options& opt, std::span<W> weights) {
  constexpr const char* where = "msrl::grpo::rollout_correction";
  const std::size_t B = lay.num_sequences, N = lay.total_tokens;
  detail::check_rollout_options(opt, where);
  detail::check_mismatch_inputs(exec, lay, old_logp.size(), rollout_logp.size(), mask.size(), weights.size(), "weights",
                                where);
  typename Backend::template buffer<double> rmin(B), rmax(B);
  using detail::rc_stat;
  const auto s = exec.reduce_n(B,
                               detail::rollout_row_pass<T, M, W>{lay, old_logp.data(), rollout_logp.data(),
                                                                 mask.empty() ? nullptr : mask.data(), weights.data(),
                                                                 rmin.data(), rmax.data(), opt},
                               sums<rc_stat::rc_count>{});
  require<value_error>(s[rc_stat::rc_bad] == 0.0, where, "old_logp/rollout_logp/mask",
                       "log-probs must be finite at unmasked tokens and the mask 0 or 1");
  rollout_correction_metrics mt;
  const double n = s[rc_stat::rc_tok];
  mt.tokens = n;
  if (n > 0) {
    mt.weight_mean = s[rc_stat::rc_w] / n;
    mt.effective_sample_size =
        s[rc_stat::rc_w2] > 0 ? s[rc_stat::rc_w] * s[rc_stat::rc_w] / (n * s[rc_stat::rc_w2]) : 0.0;
    mt.masked_fraction = s[rc_stat::rc_masked] / n;
    mt.fraction_high = s[rc_stat::rc_high] / n;
    mt.fraction_low = s[rc_stat::rc_low] / n;
    mt.mismatch_k1 = s[rc_stat::rc_k1] / n;
    mt.mismatch_k3 = s[rc_stat::rc_k3] / n;
    std::vector<double> lo(B), hi(B);
    if constexpr (is_host_backend_v<Backend>) {
      for (std::size_t i = 0; i < B; ++i) lo[i] = rmin.data()[i], hi[i] = rmax.data()[i];
    } else {
      rmin.copy_to_host(std::span<double>(lo));
      rmax.copy_to_host(std::span<double>(hi));
    }
    mt.weight_min = HUGE_VAL;
    mt.weight_max = -HUGE_VAL;
    for (std::size_t i = 0; i < B; ++i) {
      mt.weight_min = lo[i] < mt.weight_min ? lo[i] : mt.weight_min;
      mt.weight_max = hi[i] > mt.weight_max ? hi[i] : mt.weight_max;
    }
  }
  if (opt.batch_normalize && n > 0) {
    const double mean = opt.level == is_level::token || opt.mode == is_mode::row_gated
                            ? s[rc_stat::rc_w] / n
                            : s[rc_stat::rc_wrow] / s[rc_stat::rc_rows];
    if (mean > 1e-8) {
      exec.for_each_n(N, detail::scale_pass<W>{weights.data(), mean});
      mt.batch_norm_factor = mean;
    }
  }
  return mt;
}

/// The same with the weights written to any writable contiguous range.
template <msrl::execution_backend Backend, class T, class M, msrl::output_range R>
rollout_correction_metrics rollout_correction(const Backend& exec, const token_layout& lay, std::span<const T> old_logp,
                                              std::span<const T> rollout_logp, std::span<const M> mask,
                                              const rollout_correction_options& opt, R&& weights) {
  return rollout_correction(exec, lay, old_logp, rollout_logp, mask, opt, msrl::as_span(weights));
}

/// On the reference backend.
template <class T, class M, msrl::output_range R>
rollout_correction_metrics rollout_correction(const token_layout& lay, std::span<const T> old_logp,
                                              std::span<const T> rollout_logp, std::span<const M> mask,
                                              const rollout_correction_options& opt, R&& weights) {
  return rollout_correction(backend::reference{}, lay, old_logp, rollout_logp, mask, opt, msrl::as_span(weights));
}

/// A peer's rollout-correction setting by name.
struct rollout_preset {
  std::string_view name;
  rollout_correction_options options;
};

namespace rollout_presets {
inline constexpr double none = math::inf;
/// TRL GRPOConfig vllm_importance_sampling_mode (huggingface/trl grpo_trainer.py L2579-2622): no
/// clamp before exp, products at sequence level, C_max 3, no C_min. `trl_sequence_mask` is TRL's
/// default whenever vLLM generates.
inline constexpr rollout_preset trl_token_truncate{
    "trl_token_truncate", {is_level::token, sequence_ratio::product, is_mode::truncate, 0.0, 3.0}};
inline constexpr rollout_preset trl_token_mask{"trl_token_mask",
                                               {is_level::token, sequence_ratio::product, is_mode::mask, 0.0, 3.0}};
inline constexpr rollout_preset trl_sequence_truncate{
    "trl_sequence_truncate", {is_level::sequence, sequence_ratio::product, is_mode::truncate, 0.0, 3.0}};
inline constexpr rollout_preset trl_sequence_mask{
    "trl_sequence_mask", {is_level::sequence, sequence_ratio::product, is_mode::mask, 0.0, 3.0}};
/// verl rollout_corr_helper.py compute_rollout_correction_weights: TIS, threshold 2, the token
/// log-ratio (token level) or the row sum of the raw ones (sequence level) clamped to +-20; `verl_sequence_tis` is the
/// level verl takes when enabled.
inline constexpr rollout_preset verl_token_tis{
    "verl_token_tis", {is_level::token, sequence_ratio::product, is_mode::truncate, 0.0, 2.0, 20.0}};
inline constexpr rollout_preset verl_sequence_tis{
    "verl_sequence_tis", {is_level::sequence, sequence_ratio::product, is_mode::truncate, 0.0, 2.0, none, 20.0}};
/// ms-swift rollout_importance_sampling_mode (grpo_trainer.py L2328-2376): threshold 2, each
/// log-ratio clamped to +-20 (before the mean), geometric means at sequence level; sequence_mask keeps token weights
/// and drops rows. ms-swift also weights the KL term (loss_options::is_weight_kl, set in ms_swift_default).
inline constexpr rollout_preset ms_swift_token_truncate{
    "ms_swift_token_truncate", {is_level::token, sequence_ratio::geometric_mean, is_mode::truncate, 0.0, 2.0, 20.0}};
inline constexpr rollout_preset ms_swift_token_mask{
    "ms_swift_token_mask", {is_level::token, sequence_ratio::geometric_mean, is_mode::mask, 0.0, 2.0, 20.0}};
inline constexpr rollout_preset ms_swift_sequence_truncate{
    "ms_swift_sequence_truncate",
    {is_level::sequence, sequence_ratio::geometric_mean, is_mode::truncate, 0.0, 2.0, 20.0}};
inline constexpr rollout_preset ms_swift_sequence_mask{
    "ms_swift_sequence_mask", {is_level::sequence, sequence_ratio::geometric_mean, is_mode::row_gated, 0.0, 2.0, 20.0}};
/// OpenRLHF --algo.advantage.is_correction_* (models/loss.py L197-219): bounds [0.5, 5], no clamp.
inline constexpr rollout_preset openrlhf_tis{
    "openrlhf_tis", {is_level::token, sequence_ratio::geometric_mean, is_mode::truncate, 0.5, 5.0}};
inline constexpr rollout_preset openrlhf_icepop{
    "openrlhf_icepop", {is_level::token, sequence_ratio::geometric_mean, is_mode::mask, 0.5, 5.0}};
inline constexpr rollout_preset openrlhf_seq_mask_tis{
    "openrlhf_seq_mask_tis", {is_level::sequence, sequence_ratio::geometric_mean, is_mode::row_gated, 0.5, 5.0}};

inline constexpr std::array<const rollout_preset*, 13> all{
    &trl_token_truncate,      &trl_token_mask,      &trl_sequence_truncate,
    &trl_sequence_mask,       &verl_token_tis,      &verl_sequence_tis,
    &ms_swift_token_truncate, &ms_swift_token_mask, &ms_swift_sequence_truncate,
    &ms_swift_sequence_mask,  &openrlhf_tis,        &openrlhf_icepop,
    &openrlhf_seq_mask_tis};
} // namespace rollout_presets

/// Looks a rollout-correction preset up by name; throws msrl::invalid_argument listing the names.
inline const rollout_preset& find_rollout_preset(std::string_view name) {
  return detail::find_named(rollout_presets::all, name, "msrl::grpo::find_rollout_preset");
}

} // namespace msrl::grpo
