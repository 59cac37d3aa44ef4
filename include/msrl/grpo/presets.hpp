#pragma once
/// \file Named configurations that reproduce the peers' GRPO math exactly (docs/presets.md gives
/// each one's formula and the peer file it matches).
#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "advantages.hpp"
#include "policy_loss.hpp"
#include "token_shaping.hpp"

namespace msrl::grpo {

/// A full GRPO configuration: how advantages are formed and how the loss is computed.
/// `global_token_count` says whether the peer divides by a token count gathered over the
/// optimizer step (pass loss_normalizer::global_tokens) rather than the micro-batch.
struct preset {
  std::string_view name;
  advantage_options advantages;
  loss_options loss;
  bool global_token_count = false;
  /// The token selection or weighting the peer computes from the current log-probs before its loss
  /// (token_shaping.hpp); a trainer applies it with shape_tokens. none for most presets.
  token_shaping shaping = {};
};

namespace presets {

/// What the MSRL release scripts run (scripts/msrl/train_stage*_grpo.sh on the ms-swift 4.1 fork):
/// --beta 0 --epsilon 0.2 --epsilon_high 0.28 --scale_rewards none, loss_type grpo.
inline constexpr preset msrl_release{
    "msrl_release",
    {.scaling = std_scaling::none, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::as_zero},
    {.clip_low = 0.2,
     .clip_high = 0.28,
     .beta = 0.0,
     .kl = kl_estimator::k3,
     .agg = aggregation::seq_mean_token_mean,
     .count_empty_sequences = true,
     .guard = length_guard::clamp_one}};

/// The paper's description ("ms-swift defaults"): beta 0.04, epsilon 0.2, group-std advantages,
/// with the k3 KL of the MSRL fork (no clamps).
inline constexpr preset msrl_paper{
    "msrl_paper",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::as_zero},
    {.clip_low = 0.2,
     .clip_high = 0.2,
     .beta = 0.04,
     .kl = kl_estimator::k3,
     .agg = aggregation::seq_mean_token_mean,
     .count_empty_sequences = true,
     .guard = length_guard::clamp_one}};

/// ms-swift GRPOTrainer defaults (swift/rlhf_trainers/grpo_trainer.py, swift/rl_core/advantage.py):
/// beta 0.04, epsilon 0.2, loss_type grpo, scale_rewards group (std + 1e-4), k3 with the +-20 / +-10
/// clamps added in PR #8464; rollout IS weights, when given, multiply the KL term too (L1078-1083).
inline constexpr preset ms_swift_default{
    "ms_swift_default",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::as_zero},
    {.clip_low = 0.2,
     .clip_high = 0.2,
     .beta = 0.04,
     .kl = kl_estimator::k3,
     .kl_log_ratio_clamp = 20.0,
     .kl_value_clamp = 10.0,
     .is_weight_kl = true,
     .agg = aggregation::seq_mean_token_mean,
     .count_empty_sequences = true,
     .guard = length_guard::clamp_one}};

/// TRL GRPOTrainer defaults (trl/trainer/grpo_trainer.py `_compute_loss`, grpo_config.py):
/// beta 0, epsilon 0.2, loss_type dapo (token sum / num_items_in_batch gathered over the step,
/// clamped to at least 1, so an all-masked batch gives loss 0), scale_rewards group (std + 1e-4),
/// unscorable rows excluded; with beta > 0 the k3 KL times the ratio (use_bias_correction_kl, on by
/// default since TRL 1.10; the TRL presets follow TRL 1.16). TRL's default rollout correction with
/// vLLM is rollout_presets::trl_sequence_mask.
inline constexpr preset trl_default{
    "trl_default",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.clip_low = 0.2,
     .clip_high = 0.2,
     .beta = 0.0,
     .kl = kl_estimator::k3,
     .kl_is_corrected = true,
     .agg = aggregation::token_mean,
     .clamp_token_count = true},
    true};

/// verl actor.yaml + algorithm adv_estimator=grpo (core_algos.py compute_grpo_outcome_advantage,
/// compute_policy_loss_vanilla, agg_loss, kl_penalty): std + 1e-6, singleton = raw score,
/// log-ratio clamp +-20, dual clip c = 3, token-mean over the global token count; the KL loss
/// (off by default) is low_var_kl with +-20 / +-10 clamps and coefficient 0.001 when enabled.
inline constexpr preset verl_default{"verl_default",
                                     {.scaling = std_scaling::group,
                                      .std_eps = 1e-6,
                                      .singleton = singleton_policy::raw_score,
                                      .nans = nan_policy::as_zero},
                                     {.log_ratio_clamp = 20.0,
                                      .clip_low = 0.2,
                                      .clip_high = 0.2,
                                      .dual_clip = 3.0,
                                      .beta = 0.0,
                                      .kl = kl_estimator::k3,
                                      .kl_log_ratio_clamp = 20.0,
                                      .kl_value_clamp = 10.0,
                                      .agg = aggregation::token_mean,
                                      .count_empty_sequences = false,
                                      .guard = length_guard::add_eps,
                                      .length_eps = 1e-8},
                                     true};

/// Dr.GRPO (Liu et al. 2025) as TRL loss_type="dr_grpo" with scale_rewards="none": no std
/// division, sum over tokens / (B * max_completion_length). C defaults to TRL's 512.
inline constexpr preset dr_grpo{
    "dr_grpo",
    {.scaling = std_scaling::none, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.clip_low = 0.2,
     .clip_high = 0.2,
     .beta = 0.0,
     .kl_is_corrected = true,
     .agg = aggregation::seq_mean_token_sum_norm,
     .count_empty_sequences = true,
     .constant_normalizer = 512.0}};

/// DAPO recipe: clip-higher 0.2/0.28, token-mean over the global count, no KL.
inline constexpr preset dapo{
    "dapo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.clip_low = 0.2, .clip_high = 0.28, .beta = 0.0, .agg = aggregation::token_mean},
    true};

/// GSPO (Zheng et al. 2025) as TRL importance_sampling_level="sequence", loss_type grpo, with the
/// paper's clip range 3e-4 / 4e-4.
inline constexpr preset gspo{
    "gspo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.level = ratio_level::sequence,
     .clip_low = 3e-4,
     .clip_high = 4e-4,
     .beta = 0.0,
     .kl_is_corrected = true,
     .agg = aggregation::seq_mean_token_mean,
     .count_empty_sequences = true,
     .guard = length_guard::clamp_one}};

/// verl policy_loss.loss_mode=gspo: the stop-gradient token form with log s capped at 10, forced
/// seq-mean-token-mean with empty rows excluded.
inline constexpr preset verl_gspo{"verl_gspo",
                                  {.scaling = std_scaling::group,
                                   .std_eps = 1e-6,
                                   .singleton = singleton_policy::raw_score,
                                   .nans = nan_policy::as_zero},
                                  {.level = ratio_level::sequence_token,
                                   .sequence_log_ratio_max = 10.0,
                                   .clip_low = 3e-4,
                                   .clip_high = 4e-4,
                                   .beta = 0.0,
                                   .agg = aggregation::seq_mean_token_mean,
                                   .count_empty_sequences = false,
                                   .guard = length_guard::add_eps,
                                   .length_eps = 1e-8}};

/// TRL loss_type="cispo" (huggingface/trl@f2cd577, trl/trainer/grpo_trainer.py L3080-3082; ms-swift
/// and Liger compute the same): -sg(min(rho, eps_max)) A logp with the absolute cap eps_max = 5 (TRL
/// reads it from epsilon_high, whose fallback 0.2 would cap at 0.2; msrl keeps the cap in its own
/// field and refuses a cap below 1), dapo aggregation (token mean over the step's global count).
inline constexpr preset trl_cispo{
    "trl_cispo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.form = loss_form::cispo_absolute,
     .cispo_cap = 5.0,
     .beta = 0.0,
     .kl_is_corrected = true,
     .agg = aggregation::token_mean,
     .clamp_token_count = true},
    true};

/// verl policy_loss.loss_mode=cispo (verl-project/verl@1dda039, verl/trainer/ppo/core_algos.py
/// compute_policy_loss_cispo L2046-2104): -sg(clip(rho, 1-eps_lo, 1+eps_hi)) A logp, a relative
/// two-sided clip of the ratio from the +-20-clamped log-ratio, token-mean over the global count.
inline constexpr preset verl_cispo{"verl_cispo",
                                   {.scaling = std_scaling::group,
                                    .std_eps = 1e-6,
                                    .singleton = singleton_policy::raw_score,
                                    .nans = nan_policy::as_zero},
                                   {.log_ratio_clamp = 20.0,
                                    .clip_low = 0.2,
                                    .clip_high = 0.2,
                                    .form = loss_form::cispo_relative,
                                    .beta = 0.0,
                                    .agg = aggregation::token_mean,
                                    .count_empty_sequences = false,
                                    .guard = length_guard::add_eps,
                                    .length_eps = 1e-8},
                                   true};

/// TRL loss_type="sapo" (huggingface/trl@f2cd577, grpo_trainer.py L3087-3090; ms-swift and Liger
/// alike): -(4/tau) sigmoid(tau (rho - 1)) A, tau_pos 1.0, tau_neg 1.05, no log-ratio clamp, the
/// grpo normalisation (per-row mean over max(L, 1), empty rows counted).
inline constexpr preset trl_sapo{
    "trl_sapo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.form = loss_form::sapo,
     .sapo_tau_pos = 1.0,
     .sapo_tau_neg = 1.05,
     .beta = 0.0,
     .kl_is_corrected = true,
     .agg = aggregation::seq_mean_token_mean,
     .count_empty_sequences = true,
     .guard = length_guard::clamp_one}};

/// verl policy_loss.loss_mode=sapo (verl-project/verl@1dda039, core_algos.py compute_policy_loss_sapo
/// L1621-1704): the same gate on the ratio from the +-20-clamped log-ratio, aggregation forced to
/// seq-mean-token-mean with empty rows excluded and L + 1e-8.
inline constexpr preset verl_sapo{"verl_sapo",
                                  {.scaling = std_scaling::group,
                                   .std_eps = 1e-6,
                                   .singleton = singleton_policy::raw_score,
                                   .nans = nan_policy::as_zero},
                                  {.log_ratio_clamp = 20.0,
                                   .form = loss_form::sapo,
                                   .sapo_tau_pos = 1.0,
                                   .sapo_tau_neg = 1.05,
                                   .beta = 0.0,
                                   .agg = aggregation::seq_mean_token_mean,
                                   .count_empty_sequences = false,
                                   .guard = length_guard::add_eps,
                                   .length_eps = 1e-8}};

/// verl policy_loss.loss_mode=dppo_tv (verl-project/verl@1dda039, core_algos.py
/// compute_policy_loss_dppo_tv L1379-1460; DPPO, arXiv 2602.04879): -A sg(min(rho, 20)) logp v with
/// the TV trust region |p - p_old| bounded by clip_ratio_low / _high (0.2), the log-ratio clamped to
/// +-20, token-mean over the global count.
inline constexpr preset verl_dppo_tv{"verl_dppo_tv",
                                     {.scaling = std_scaling::group,
                                      .std_eps = 1e-6,
                                      .singleton = singleton_policy::raw_score,
                                      .nans = nan_policy::as_zero},
                                     {.log_ratio_clamp = 20.0,
                                      .clip_low = 0.2,
                                      .clip_high = 0.2,
                                      .form = loss_form::dppo_tv,
                                      .dppo_ratio_cap = 20.0,
                                      .beta = 0.0,
                                      .agg = aggregation::token_mean,
                                      .count_empty_sequences = false,
                                      .guard = length_guard::add_eps,
                                      .length_eps = 1e-8},
                                     true};

/// verl policy_loss.loss_mode=dppo_kl (same file, compute_policy_loss_dppo_kl L1462-1543): the trust
/// region from the binary KL of (p_old, p), moves in the safe direction always allowed.
inline constexpr preset verl_dppo_kl{"verl_dppo_kl",
                                     {.scaling = std_scaling::group,
                                      .std_eps = 1e-6,
                                      .singleton = singleton_policy::raw_score,
                                      .nans = nan_policy::as_zero},
                                     {.log_ratio_clamp = 20.0,
                                      .clip_low = 0.2,
                                      .clip_high = 0.2,
                                      .form = loss_form::dppo_kl,
                                      .dppo_ratio_cap = 20.0,
                                      .beta = 0.0,
                                      .agg = aggregation::token_mean,
                                      .count_empty_sequences = false,
                                      .guard = length_guard::add_eps,
                                      .length_eps = 1e-8},
                                     true};

/// TRL loss_type="luspo" (grpo_trainer.py L3143-3147; LUSPO, arXiv 2602.05261): the GSPO sequence
/// ratio, each row's loss times its length, mean over all rows: seq_mean_token_sum with empty rows
/// counted. TRL's luspo with beta != 0 broadcasts the per-row loss over [B, T] and averages without
/// the mask; msrl adds the KL per masked token instead (docs/presets.md).
inline constexpr preset trl_luspo{
    "trl_luspo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.level = ratio_level::sequence,
     .clip_low = 0.2,
     .clip_high = 0.2,
     .beta = 0.0,
     .kl_is_corrected = true,
     .agg = aggregation::seq_mean_token_sum,
     .count_empty_sequences = true}};

/// TRL loss_type="vespo" (grpo_trainer.py get_gamma_weights L2943-2989; Liger-Kernel v0.8.2
/// chunked_loss/grpo_loss.py get_gamma_weights; VESPO, arXiv 2602.10693): -sg(phi_i) A logp with
/// the gamma weight of the row's summed, clamped log-ratio, (k, lambda) = (2, 3) for A >= 0 and
/// (3, 2) otherwise; vLLM IS weights folded into phi, not multiplied; dapo aggregation.
inline constexpr preset trl_vespo{
    "trl_vespo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.form = loss_form::vespo,
     .beta = 0.0,
     .kl_is_corrected = true,
     .agg = aggregation::token_mean,
     .clamp_token_count = true},
    true};
/// TRL experimental GMPOTrainer._compute_loss (trl/experimental/gmpo/gmpo_trainer.py L80-122; GMPO,
/// arXiv 2507.20673): -A_i exp(sum_t m c_t / max(L, 1)) with the sign-aware log-space clip at
/// GMPOConfig's +-0.4, plain mean over all rows (an empty row adds -A_i: its ratio is 1), the KL
/// as a per-row token mean (no ratio correction).
inline constexpr preset trl_gmpo{
    "trl_gmpo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::exclude},
    {.clip_low = 0.4,
     .clip_high = 0.4,
     .form = loss_form::gmpo,
     .gmpo_empty_rows_minus_adv = true,
     .beta = 0.0,
     .agg = aggregation::seq_mean_token_mean,
     .count_empty_sequences = true,
     .guard = length_guard::clamp_one}};
/// verl policy_loss.loss_mode=geo_mean (verl-project/verl@1dda039, core_algos.py
/// compute_policy_loss_geo_mean L1927-2011): the same row loss with L + 1e-8 in both means (so the
/// advantage is A L / (L + 1e-8)), clip_ratio_low / _high 0.2 as log-space bounds, rollout IS
/// weights by their per-row geometric mean, torch.mean over all rows (empty rows add 0; no global
/// count). verl adds its KL loss with loss_agg_mode; msrl aggregates it like the surrogate.
inline constexpr preset verl_gmpo{"verl_gmpo",
                                  {.scaling = std_scaling::group,
                                   .std_eps = 1e-6,
                                   .singleton = singleton_policy::raw_score,
                                   .nans = nan_policy::as_zero},
                                  {.clip_low = 0.2,
                                   .clip_high = 0.2,
                                   .form = loss_form::gmpo,
                                   .beta = 0.0,
                                   .agg = aggregation::seq_mean_token_mean,
                                   .count_empty_sequences = true,
                                   .guard = length_guard::add_eps,
                                   .length_eps = 1e-8}};

/// verl policy_loss.loss_mode=clip_cov (verl-project/verl@1dda039, core_algos.py
/// compute_policy_loss_clip_cov L1742-1845; arXiv 2505.22617): PPO-clip with clip_ratio_low / _high
/// 0.2, no log-ratio clamp and no dual clip, token-mean over the global count; pass the keep mask of
/// clip_cov_mask (cov_selection.hpp) as the policy mask. Without it this is plain PPO-clip.
inline constexpr preset verl_clip_cov{"verl_clip_cov",
                                      {.scaling = std_scaling::group,
                                       .std_eps = 1e-6,
                                       .singleton = singleton_policy::raw_score,
                                       .nans = nan_policy::as_zero},
                                      {.clip_low = 0.2,
                                       .clip_high = 0.2,
                                       .beta = 0.0,
                                       .agg = aggregation::token_mean,
                                       .count_empty_sequences = false,
                                       .guard = length_guard::add_eps,
                                       .length_eps = 1e-8},
                                      true,
                                      {.kind = shaping_kind::clip_cov, .clip_cov = {.ratio = 2e-4, .lower = 1.0, .upper = 5.0}}};

/// verl policy_loss.loss_mode=kl_cov (same file, compute_policy_loss_kl_cov L1847-1925): the
/// unclipped -A rho (no log-ratio clamp), plus ppo_kl_coef |logp - old| (0.1, verl's yaml) on the
/// tokens kl_cov_mask selects, passed as the policy mask; token-mean over the global count.
inline constexpr preset verl_kl_cov{"verl_kl_cov",
                                    {.scaling = std_scaling::group,
                                     .std_eps = 1e-6,
                                     .singleton = singleton_policy::raw_score,
                                     .nans = nan_policy::as_zero},
                                    {.form = loss_form::kl_cov,
                                     .kl_cov_coef = 0.1,
                                     .beta = 0.0,
                                     .agg = aggregation::token_mean,
                                     .count_empty_sequences = false,
                                     .guard = length_guard::add_eps,
                                     .length_eps = 1e-8},
                                    true,
                                    {.kind = shaping_kind::kl_cov, .kl_cov = {.ratio = 2e-4}}};

/// ms-swift loss_type "fipo" (rlhf_trainers/grpo_trainer.py _compute_loss_and_metrics and
/// _compute_fipo_influence; FIPO, arXiv 2603.19835): ms-swift's defaults (group std + 1e-4, epsilon
/// 0.2, beta 0.04 with the clamped k3) with the clipped-ratio surrogate times the detached influence
/// weight of fipo_weights (fipo.hpp), passed as is_weights; the KL is not weighted; token sum over
/// the global token count (ms-swift's dapo normaliser).
inline constexpr preset ms_swift_fipo{
    "ms_swift_fipo",
    {.scaling = std_scaling::group, .std_eps = 1e-4, .singleton = singleton_policy::zero, .nans = nan_policy::as_zero},
    {.clip_low = 0.2,
     .clip_high = 0.2,
     .beta = 0.04,
     .kl = kl_estimator::k3,
     .kl_log_ratio_clamp = 20.0,
     .kl_value_clamp = 10.0,
     .is_weight_kl = false,
     .agg = aggregation::token_mean,
     .count_empty_sequences = true,
     .guard = length_guard::clamp_one},
    true,
    {.kind = shaping_kind::fipo, .fipo = {}}};

inline constexpr std::array<const preset*, 22> all{
    &msrl_release, &msrl_paper,   &ms_swift_default, &trl_default,   &verl_default, &dr_grpo,     &dapo,
    &gspo,         &verl_gspo,    &trl_cispo,        &verl_cispo,    &trl_sapo,     &verl_sapo,   &verl_dppo_tv,
    &verl_dppo_kl, &trl_luspo,    &trl_vespo,        &trl_gmpo,      &verl_gmpo,    &verl_clip_cov, &verl_kl_cov,
    &ms_swift_fipo};

} // namespace presets

/// Looks a preset up by name; throws msrl::invalid_argument listing the known names otherwise.
inline const preset& find_preset(std::string_view name) {
  return detail::find_named(presets::all, name, "msrl::grpo::find_preset");
}

} // namespace msrl::grpo
