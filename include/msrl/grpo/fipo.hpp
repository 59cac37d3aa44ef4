#pragma once
/// \file FIPO's influence weights (arXiv 2603.19835; ms-swift GRPOTrainer._compute_fipo_influence,
/// rlhf_trainers/grpo_trainer.py, loss_type "fipo").
///
/// Per token of row i, with lr_t = logp_t - old_logp_t and rho_t = exp(lr_t) (token ratio level):
///
///   d_t = m_t lr_t, and 0 where rho_t > delta (ms-swift's two-sided clip `delta`, when set)
///   F_t = m_t sum_{u >= t} gamma^(u - t) d_u,   gamma = 2^(-1 / decay_rate)   (the "future KL")
///   w_t = clamp(exp(F_t), lo, 1 + clip_range), lo = 1 (clip_high_only) or 1 - clip_range
///   w_t = clamp(w_t, 0.8, 1) where A_t < 0 and rho_t > safety_threshold
///
/// (positions count within the row, padding included, as ms-swift's matmul over [B, T]). The
/// weight is detached and multiplies the token's clipped-ratio surrogate: pass it as
/// loss_inputs::is_weights with options.is_weight_kl = false (preset ms_swift_fipo), which is
/// ms-swift exactly. With rollout IS weights v as well, pass w v: ms-swift then also weights its KL
/// by v (not by w), which msrl's single weight cannot express when beta > 0.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/ranges.hpp"
#include "../core/token_layout.hpp"
#include "scalar_math.hpp"

namespace msrl::grpo {

struct fipo_options {
  double decay_rate = 32.0;      ///< tau: gamma = 2^(-1/tau) (ms-swift fipo_decay_rate)
  double clip_range = 0.2;       ///< the weight's clip range; 0 disables the clip (fipo_clip_range)
  bool clip_high_only = true;    ///< [1, 1 + c] instead of [1 - c, 1 + c] (fipo_clip_high_only)
  double safety_threshold = 4.0; ///< A < 0 and rho above this: w in [0.8, 1]; inf disables (fipo_safety_threshold)
  double delta = math::inf;      ///< tokens with rho > delta leave the future KL; inf: none (ms-swift delta)
};

/// Masked means of the future KL, the weight and the safety keep indicator (ms-swift's fipo metrics).
struct fipo_stats {
  double future_kl_mean = 0.0, weight_mean = 0.0, safety_keep_ratio = 0.0;
};

/// Writes w_t per token (file comment). `advantages` one per sequence [B] or per token [N].
template <class T, class M, msrl::output_range R>
fipo_stats fipo_weights(const token_layout& layout, std::span<const T> logp, std::span<const T> old_logp,
                        std::span<const T> advantages, std::span<const M> mask, const fipo_options& opt, R&& out) {
  constexpr const char* where = "msrl::grpo::fipo_weights";
  auto o = msrl::as_span(out);
  const std::size_t B = layout.num_sequences, N = layout.total_tokens;
  require(opt.decay_rate > 0.0 && std::isfinite(opt.decay_rate), where, "options.decay_rate", "must be finite and > 0");
  require(opt.clip_range >= 0.0 && opt.clip_range < 1.0, where, "options.clip_range", "must be in [0, 1)");
  require(!std::isnan(opt.safety_threshold), where, "options.safety_threshold", "must not be NaN (inf disables it)");
  require(!std::isnan(opt.delta), where, "options.delta", "must not be NaN (inf disables it)");
  require<shape_error>(logp.size() == N, where, "logp", "must have one element per token (" + std::to_string(N) + ")");
  require<shape_error>(old_logp.size() == N, where, "old_logp", "must match logp");
  require<shape_error>(advantages.size() == B || advantages.size() == N, where, "advantages",
                       "must have one element per sequence or per token");
  require<shape_error>(mask.empty() || mask.size() == N, where, "mask", "must be empty or match logp");
  require<shape_error>(o.size() == N, where, "out", "must have one element per token");
  const bool per_token = advantages.size() != B;
  const double gamma = std::exp2(-1.0 / opt.decay_rate);
  const double hi = 1.0 + opt.clip_range, lo = opt.clip_high_only ? 1.0 : 1.0 - opt.clip_range;
  fipo_stats st;
  double n = 0;
  for (std::size_t i = 0; i < B; ++i) {
    const std::size_t b = layout.begin(i), e = layout.end(i);
    double F = 0.0; // the discounted sum of the row's d_u from the end back to t
    for (std::size_t t = e; t-- > b;) {
      const double m = mask.empty() ? 1.0 : static_cast<double>(mask[t]);
      require<value_error>(m == 0.0 || m == 1.0, where, "mask", "values must be 0 or 1");
      const double lr = m != 0.0 ? static_cast<double>(logp[t]) - static_cast<double>(old_logp[t]) : 0.0;
      require<value_error>(std::isfinite(lr), where, "logp/old_logp", "must be finite at unmasked tokens");
      const double rho = std::exp(lr);
      F = (rho > opt.delta ? 0.0 : lr) + gamma * F;
      const double Fm = m != 0.0 ? F : 0.0;
      double w = std::exp(Fm);
      if (opt.clip_range > 0.0) w = std::clamp(w, lo, hi);
      const double a = m != 0.0 ? static_cast<double>(per_token ? advantages[t] : advantages[i]) : 0.0;
      const bool keep = !(a < 0.0 && rho > opt.safety_threshold);
      if (!keep) w = std::clamp(w, 0.8, 1.0);
      o[t] = static_cast<std::remove_reference_t<decltype(o[t])>>(w);
      if (m != 0.0) {
        n += 1;
        st.future_kl_mean += Fm;
        st.weight_mean += w;
        st.safety_keep_ratio += keep ? 1.0 : 0.0;
      }
    }
  }
  if (n > 0) {
    st.future_kl_mean /= n;
    st.weight_mean /= n;
    st.safety_keep_ratio /= n;
  }
  return st;
}

} // namespace msrl::grpo
