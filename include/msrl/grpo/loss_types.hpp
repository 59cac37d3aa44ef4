#pragma once
/// \file The vocabulary of the GRPO policy loss: which ratio, which aggregation, the options, the
/// normaliser, the inputs (as spans for the algorithm, as pointers for kernels and ops that hand
/// device arrays across a translation-unit boundary), the metrics and the result. No algorithm
/// lives here, so the torch ops and the CUDA kernel sets include this header only.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "../core/token_layout.hpp"
#include "scalar_math.hpp"

namespace msrl::grpo {

/// Which importance ratio the surrogate uses.
enum class ratio_level : std::uint8_t {
  token,          ///< rho_t = exp(logp_t - old_t)                                  (PPO/GRPO)
  sequence,       ///< GSPO: s_i = exp(mean_t (logp - old)), gradient through the mean (TRL "sequence")
  sequence_token, ///< GSPO-token: exp(logp_t - sg(logp_t) + sg(log s_i)) (verl gspo, ms-swift "sequence_token")
};

/// The per-token surrogate (the built-in loss forms of surrogate.hpp; docs/grpo-math.md §3).
enum class loss_form : std::uint8_t {
  clipped_ratio,  ///< -min(min(rho, delta) A, clip(rho, 1-eps_lo, 1+eps_hi) A), dual clip   (PPO/GRPO)
  cispo_absolute, ///< -sg(min(rho, cispo_cap)) A logp                       (TRL, ms-swift, Liger cispo)
  cispo_relative, ///< -sg(clip(rho, 1-eps_lo, 1+eps_hi)) A logp                       (verl cispo)
  sapo,           ///< -(4/tau) sigmoid(tau (rho - 1)) A, tau = tau_pos if A > 0 else tau_neg (SAPO)
  reinforce,      ///< -A logp                                                     (verl gpg; REINFORCE)
  dppo_tv,        ///< -A sg(min(rho, cap)) logp v, v: |p - p_old| trust region (verl dppo_tv); token level
  dppo_kl,        ///< the same with v from the binary KL of (p_old, p)                (verl dppo_kl); token level
  dro,            ///< -(A logp - beta_dro/2 (logp - old)^2)                             (verl dro); token level
  vespo,          ///< -sg(phi_i) A logp, phi_i the gamma weight of the row's ratio     (TRL, Liger vespo); token level
  gmpo,           ///< -A_i exp(mean_t sign-aware clipped log-ratio), per row   (verl geo_mean, TRL GMPO); token level
  kl_cov,         ///< -A rho + kl_cov_coef pm |logp - old|, pm the KL-Cov selection (verl kl_cov); token level
};

/// How per-token losses become one number.  m = mask, L_i = tokens of row i, S = sequence count.
enum class aggregation : std::uint8_t {
  token_mean,              ///< sum m*l / N_tokens            (TRL dapo/bnpo, verl token-mean, OpenRLHF token)
  seq_mean_token_mean,     ///< mean_i [sum_t m*l / L_i]      (TRL/ms-swift grpo, verl seq-mean-token-mean)
  seq_mean_token_sum,      ///< mean_i [sum_t m*l]            (verl seq-mean-token-sum)
  seq_mean_token_sum_norm, ///< mean_i [sum_t m*l] / C        (Dr.GRPO; TRL dr_grpo, verl ...-norm)
  token_sum,               ///< sum m*l                       (verl token-sum)
};

/// Guard on a row's token count in seq_mean_token_mean.
enum class length_guard : std::uint8_t {
  clamp_one, ///< L_i -> max(L_i, 1)   (TRL, ms-swift, Liger)
  add_eps,   ///< L_i -> L_i + eps     (verl, OpenRLHF: 1e-8)
};

struct loss_options {
  // --- importance ratio
  ratio_level level = ratio_level::token;
  double log_ratio_clamp = math::inf;        ///< token log-ratio clamped to [-c, c] before exp (verl 20)
  double sequence_log_ratio_max = math::inf; ///< GSPO: log s_i capped at this value (verl 10)
  // --- clipping
  double clip_low = 0.2;        ///< epsilon_low
  double clip_high = 0.2;       ///< epsilon_high (clip-higher: 0.28)
  double dual_clip = math::inf; ///< c > 1 (verl 3.0); inf disables
  double delta = math::inf;     ///< two-sided clip delta > 1; inf disables
  // --- the loss form (clipped_ratio uses the clip fields above)
  loss_form form = loss_form::clipped_ratio;
  double cispo_cap = 5.0;        ///< cispo_absolute: the cap on the IS weight (>= 1; TRL's epsilon_high, docs: 5)
  double sapo_tau_pos = 1.0;     ///< sapo: temperature for A > 0
  double sapo_tau_neg = 1.05;    ///< sapo: temperature for A <= 0
  double dppo_ratio_cap = 20.0;  ///< dppo_tv / dppo_kl: the cap c on the detached ratio (verl clip_ratio_c, 20 there);
                                 ///< the trust region's bounds are clip_low / clip_high
  double dro_beta = 0.0;         ///< dro: the quadratic penalty's coefficient (verl dro_beta, required there)
  double vespo_k_pos = 2.0;      ///< vespo: gamma shape k for A >= 0 (TRL / Liger defaults)
  double vespo_lambda_pos = 3.0; ///< vespo: gamma rate lambda for A >= 0 (clamped to >= 1e-4)
  double vespo_k_neg = 3.0;      ///< vespo: k for A < 0
  double vespo_lambda_neg = 2.0; ///< vespo: lambda for A < 0
  /// gmpo (log-space clip bounds: clip_low / clip_high): a row without unmasked tokens adds -A_i
  /// to the row sum (TRL: its ratio is exp(0 / max(0, 1)) = 1) instead of 0 (verl).
  bool gmpo_empty_rows_minus_adv = false;
  /// kl_cov: the coefficient of |logp - old| on the selected tokens (verl ppo_kl_coef: 0.1 in its
  /// yaml, 1.0 when unset in code)
  double kl_cov_coef = 0.1;
  // --- KL to the reference policy
  double beta = 0.0;
  kl_estimator kl = kl_estimator::k3;
  bool kl_straight_through = false;
  double kl_log_ratio_clamp = math::inf; ///< verl/ms-swift k3: 20
  double kl_value_clamp = math::inf;     ///< verl/ms-swift k3: 10; OpenRLHF: 10 for every estimator
  /// The KL term times the importance ratio, not detached: rho_t at token level, s_i at sequence
  /// level, both raw (before the delta cap and any log-ratio clamp); the KL clamps apply to the
  /// estimate first (DeepSeek-V3.2's unbiased KL; TRL >= 1.10 use_bias_correction_kl, Liger).
  /// Not defined for ratio_level::sequence_token.
  bool kl_is_corrected = false;
  // --- rollout importance-sampling weights (loss_inputs::is_weights; rollout_correction.hpp)
  /// true: the weights multiply the KL term as well (ms-swift); false: the surrogate only (TRL,
  /// verl, OpenRLHF, Liger).
  bool is_weight_kl = false;
  // --- aggregation
  aggregation agg = aggregation::seq_mean_token_mean;
  bool count_empty_sequences = true; ///< fully masked rows count in S (TRL) or are excluded (verl, OpenRLHF)
  length_guard guard = length_guard::clamp_one;
  double length_eps = 1e-8;         ///< for length_guard::add_eps
  double constant_normalizer = 0.0; ///< C for seq_mean_token_sum_norm (max_completion_length)
  /// token_mean with a token count of 0 (every row masked, as mask_truncated_completions can make):
  /// true divides by max(N, 1), so the loss and gradient are 0 (TRL, Liger); false refuses it.
  bool clamp_token_count = false;
};

/// Normalisers that make gradient accumulation and data parallelism exact. Unset counts fall back
/// to the local micro-batch. `scale` multiplies the loss (e.g. 1/GA for TRL's grpo mode, or the
/// data-parallel world size for verl's global-batch semantics).
struct loss_normalizer {
  std::optional<double> global_tokens;    ///< N in token_mean (sum of the mask over the optimizer step and ranks)
  std::optional<double> global_sequences; ///< S in the seq_mean_* modes
  double scale = 1.0;
};

/// The per-token inputs. All arrays live in the backend's memory space.
template <class T, class M = std::uint8_t>
struct loss_inputs {
  token_layout layout;           ///< padded [B, T] or packed offsets
  std::span<const T> logp;       ///< log pi_theta(y_t), one per token
  std::span<const T> old_logp;   ///< log pi_old; empty = on-policy (old = logp, detached)
  std::span<const T> ref_logp;   ///< log pi_ref; required when beta != 0
  std::span<const T> advantages; ///< one per sequence [B] or one per token (read per sequence when B == N)
  std::span<const M> mask;       ///< 0/1 per token; empty = all tokens count
  /// Detached per-token loss weights, >= 0: the rollout/training mismatch correction
  /// (rollout_correction.hpp), one per sequence [B] or per token [N] (read per sequence when
  /// B == N); empty = none. They multiply the surrogate (and the KL when options.is_weight_kl);
  /// the normaliser does not change.
  std::span<const T> is_weights = {};
  /// 0/1 per token [N] multiplying the surrogate only (the KL and the normaliser keep the mask):
  /// TRL's high-entropy token mask (token_masks.hpp high_entropy_mask), its off-policy sequence
  /// mask (off_policy_sequence_mask), verl's Clip-Cov keep mask (cov_selection.hpp clip_cov_mask);
  /// empty = none. Forms that consume it read it themselves (surrogate.hpp): gmpo inside its
  /// geometric mean, kl_cov as the tokens its penalty selects (kl_cov_mask).
  std::span<const M> policy_mask = {};
};

struct loss_metrics {
  double tokens = 0;             ///< masked tokens in this call
  double sequences = 0;          ///< non-empty sequences in this call
  double clip_fraction_low = 0;  ///< over masked tokens: ratio < 1-eps_lo with A < 0
  double clip_fraction_high = 0; ///< ratio > 1+eps_hi with A > 0
  double clip_fraction = 0;      ///< low + high
  double dual_clip_fraction = 0; ///< A < 0 and the dual-clip bound active
  double ratio_mean = 0;         ///< mean ratio over masked tokens
  double kl_mean = 0;            ///< mean KL estimate over masked tokens (0 when beta == 0 and no ref)
  double log_ratio_mean = 0;     ///< mean of logp - old_logp over masked tokens (verl's ppo_kl is its negative)
  double policy_loss = 0;        ///< the surrogate part of the loss (aggregated, scaled)
  double kl_loss = 0;            ///< beta * KL part of the loss (aggregated, scaled)
  double normalizer = 0;         ///< the N, S or S*C the aggregation divided by
};

struct loss_result {
  double loss = 0;
  loss_metrics metrics;
};

/// The loss's per-token arrays as raw pointers, all in one memory space (the device's, for the
/// CUDA kernels and the libtorch ops' kernel sets; the packed layout's offsets too). n =
/// layout.total_tokens; null optional arrays are absent. `inputs(logp)` gives the span form the
/// algorithm takes, once the log-probs exist (a null logp gives an empty span, as for the others).
template <class T = float, class M = std::uint8_t>
struct loss_arrays {
  token_layout layout;
  const T* old_logp = nullptr;   ///< null = on-policy
  const T* ref_logp = nullptr;   ///< required when beta != 0
  const T* advantages = nullptr; ///< num_advantages entries: B (per sequence) or N (per token)
  std::size_t num_advantages = 0;
  const M* mask = nullptr;       ///< null = every token counts
  const T* is_weights = nullptr; ///< num_is_weights entries: B or N (loss_inputs::is_weights); null = none
  std::size_t num_is_weights = 0;
  const M* policy_mask = nullptr; ///< N entries or null (loss_inputs::policy_mask)

  loss_inputs<T, M> inputs(const T* logp) const {
    const std::size_t n = layout.total_tokens;
    return {layout,
            {logp, logp ? n : 0},
            {old_logp, old_logp ? n : 0},
            {ref_logp, ref_logp ? n : 0},
            {advantages, num_advantages},
            {mask, mask ? n : 0},
            {is_weights, is_weights ? num_is_weights : 0},
            {policy_mask, policy_mask ? n : 0}};
  }
};

} // namespace msrl::grpo
