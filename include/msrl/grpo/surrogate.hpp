#pragma once
/// \file The per-token surrogate of the policy loss: the extension point for loss forms.
///
/// A loss form is a small, trivially copyable object F whose call operator, a MSRL_HOST_DEVICE
/// template over the lane type V (core/simd.hpp), maps one token
///
///   token_args<V>{rho, log_rho, logp, adv}   (rho: the token ratio, or the GSPO sequence ratio)
///
/// to math::surrogate<V>{value, dratio, dlogp, clipped_low, clipped_high, dual_clipped}:
///
///   value   the token's loss before aggregation
///   dratio  d value / d rho; policy_loss multiplies it by d rho / d logp (token ratio) or carries
///           it through the sequence mean (GSPO). Ratio-gated forms  -f(rho) A  give only this.
///   dlogp   d value / d logp along every other path. Weighted log-prob forms  -sg(W) A logp
///           give only this (dratio = 0).
///   masks   the clip metrics (all-false where the form has no clip).
///
/// Written once, a form runs in the host's vector lanes, its scalar tail and CUDA threads: use
/// only the lane algebra (simd::select, simd::splat, mask operations) and math:: formulas.
/// `policy_loss(exec, form, inputs, options, ...)` takes any form (the options' clip fields are
/// then unused); `policy_loss(exec, inputs, options, ...)` uses the built-in `clipped_ratio`
/// configured by the options.
#include <concepts>
#include <type_traits>

#include "../core/config.hpp"
#include "../core/simd.hpp"
#include "scalar_math.hpp"

namespace msrl::grpo {

/// What a loss form sees of one token (one lane each).
template <class V = double>
struct token_args {
  V rho;     ///< importance ratio (token, or GSPO sequence ratio constant over the row)
  V log_rho; ///< its logarithm before any clamp (logp - old_logp, or the row's mean log-ratio)
  V logp;    ///< log pi_theta(y_t)
  V adv;     ///< the token's advantage
};

/// A per-token surrogate (see the file comment for the semantics each member must have).
template <class F>
concept surrogate_form = std::is_trivially_copyable_v<F> && requires(const F& f, const token_args<double>& a) {
  { f(a) } -> std::same_as<math::surrogate<double>>;
};

/// The PPO/GRPO clipped ratio  -min(min(rho, delta) A, clip(rho, 1 - eps_lo, 1 + eps_hi) A), with
/// verl's dual clip for A < 0 (math::clipped_surrogate). The form every preset uses.
struct clipped_ratio {
  math::clip_params clip;
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    return math::clipped_surrogate(x.rho, x.adv, clip);
  }
};
static_assert(surrogate_form<clipped_ratio>);

} // namespace msrl::grpo
