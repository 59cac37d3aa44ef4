#pragma once
/// \file Several optimizer updates on one sampled GRPO batch: `grpo_updates` (component msrl::torch),
/// TRL's `num_iterations` (mu in the DeepSeekMath algorithm), verl's `ppo_epochs`.
///
///   auto st = msrl::trainer::grpo_updates(t, groups, msrl::grpo::presets::msrl_release, {.num_iterations = 2});
///
/// Each update is a full trainer::grpo_step over the same groups. The groups' old log-probs stay the
/// sampler's, so the first update is on-policy (ratio 1) and each later one takes its ratio against
/// the policy that sampled the batch: from the second update on the clip acts. The returned metrics
/// are the mean over the updates (loss, grad norm, entropy, clip fractions, ratio, KL, token-shaping
/// counts), as verl averages the metrics of its updates; the advantage statistics and the skipped
/// groups are the first update's (every update sees the same rewards).
#include <cstddef>
#include <iterator>
#include <vector>

#include "../core/error.hpp"
#include "steps_torch.hpp"

namespace msrl::trainer {

struct update_options {
  int num_iterations = 1;      ///< updates per batch, >= 1
  double temperature = 1.0;    ///< as grpo_step
  double entropy_coeff = 0.0;  ///< as grpo_step
  bool measure_entropy = false; ///< as grpo_step
};

inline step_stats grpo_updates(trainer& t, const std::vector<grpo_group>& groups, const grpo::preset& preset,
                               const update_options& o = {}) {
  require(o.num_iterations >= 1, "msrl::trainer::grpo_updates", "num_iterations", "must be at least 1");
  step_stats st = t.grpo_step(groups, preset, o.temperature, o.entropy_coeff, o.measure_entropy);
  if (o.num_iterations == 1) return st;
  auto& m = st.metrics;
  double* const mean[] = {&st.loss, &st.grad_norm, &st.entropy, &st.selected_tokens, &st.fipo_weight_mean,
                          &m.clip_fraction, &m.clip_fraction_low, &m.clip_fraction_high, &m.dual_clip_fraction,
                          &m.ratio_mean, &m.kl_mean, &m.log_ratio_mean, &m.policy_loss, &m.kl_loss};
  for (int it = 1; it < o.num_iterations; ++it) {
    const step_stats u = t.grpo_step(groups, preset, o.temperature, o.entropy_coeff, o.measure_entropy);
    const auto& um = u.metrics;
    const double add[] = {u.loss, u.grad_norm, u.entropy, u.selected_tokens, u.fipo_weight_mean,
                          um.clip_fraction, um.clip_fraction_low, um.clip_fraction_high, um.dual_clip_fraction,
                          um.ratio_mean, um.kl_mean, um.log_ratio_mean, um.policy_loss, um.kl_loss};
    for (std::size_t k = 0; k < std::size(mean); ++k) *mean[k] += add[k];
  }
  for (double* v : mean) *v /= static_cast<double>(o.num_iterations);
  return st;
}

} // namespace msrl::trainer
