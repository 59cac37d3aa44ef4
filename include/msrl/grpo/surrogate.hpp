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
#include "loss_types.hpp"
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

/// CISPO (MiniMax-M1): the clipped IS weight as a stop-gradient coefficient of the log-prob,
/// -sg(W) A logp with d/d logp = -W A. `relative` = verl's W = clip(rho, 1-eps_lo, 1+eps_hi)
/// (metrics: rho outside the range); otherwise TRL/ms-swift/Liger's absolute cap W = min(rho, cap)
/// (metric clipped_high: rho > cap and A > 0, TRL's cispo_clip_ratio).
struct cispo {
  double cap, lo, hi;
  bool relative;
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    using simd::select;
    using simd::splat;
    const V zero = splat<V>(0.0);
    const V W = relative ? math::clamp(x.rho, lo, hi) : select(x.rho < splat<V>(cap), x.rho, splat<V>(cap));
    math::surrogate<V> s;
    s.value = -W * x.adv * x.logp;
    s.dratio = zero;
    s.dlogp = -W * x.adv;
    s.clipped_low = relative ? x.rho < splat<V>(lo) : simd::mask_of<V>(false);
    s.clipped_high = relative ? x.rho > splat<V>(hi) : simd::mand(x.rho > splat<V>(cap), x.adv > zero);
    s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

/// SAPO's soft gate: -(4/tau) sigmoid(tau (rho - 1)) A with tau = tau_pos for A > 0, tau_neg
/// otherwise; d/d rho = -4 sigma (1 - sigma) A (= -A at rho = 1, as PPO). No clip metrics.
struct sapo {
  double tau_pos, tau_neg;
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    using simd::select;
    using simd::splat;
    const V zero = splat<V>(0.0), one = splat<V>(1.0);
    const V tau = select(x.adv > zero, splat<V>(tau_pos), splat<V>(tau_neg));
    const V sig = one / (one + math::exp(-tau * (x.rho - one)));
    math::surrogate<V> s;
    s.value = -4.0 * sig * x.adv / tau;
    s.dratio = -4.0 * sig * (one - sig) * x.adv;
    s.dlogp = zero;
    s.clipped_low = s.clipped_high = s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

/// REINFORCE / verl's gpg loss: -A logp, d/d logp = -A (the ratio is not used).
struct reinforce {
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    math::surrogate<V> s;
    s.value = -x.adv * x.logp;
    s.dratio = simd::splat<V>(0.0);
    s.dlogp = -x.adv;
    s.clipped_low = s.clipped_high = s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};
/// DPPO (verl-project/verl@1dda039 core_algos.py compute_policy_loss_dppo_tv / _dppo_kl,
/// L1379-1543): -A sg(min(rho, cap)) logp v with d/d logp = -A min(rho, cap) v. The trust-region
/// indicator v uses p = e^logp and p_old = e^(logp - log_rho): TV, v = [p - p_old <= hi] for
/// A > 0 and [p - p_old >= -lo] otherwise; KL, with D = p_old (log p_old - log p) + (1 - p_old)
/// log((1 - p_old + 1e-8) / (1 - p + 1e-8)), v = [D <= hi or p <= p_old] for A > 0 and
/// [D <= lo or p >= p_old] otherwise. Metrics: tokens outside the region (clipped_high for A > 0,
/// clipped_low otherwise; verl's pg_clipfrac is their sum). Token ratio level only.
struct dppo {
  double cap, lo, hi;
  bool kl;
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    using simd::mand;
    using simd::mnot;
    using simd::mor;
    using simd::select;
    using simd::splat;
    const V zero = splat<V>(0.0), one = splat<V>(1.0);
    const V W = select(x.rho < splat<V>(cap), x.rho, splat<V>(cap));
    const V p = math::exp(x.logp), pold = math::exp(x.logp - x.log_rho);
    simd::mask_t<V> pos, neg;
    if (kl) {
      const V d = -pold * x.log_rho + (one - pold) * math::log((one - pold + 1e-8) / (one - p + 1e-8));
      pos = mor(d <= splat<V>(hi), p <= pold);
      neg = mor(d <= splat<V>(lo), p >= pold);
    } else {
      pos = p - pold <= splat<V>(hi);
      neg = p - pold >= splat<V>(-lo);
    }
    const auto apos = x.adv > zero;
    const auto valid = mor(mand(apos, pos), mand(mnot(apos), neg));
    const V v = select(valid, one, zero);
    math::surrogate<V> s;
    s.value = -x.adv * W * x.logp * v;
    s.dratio = zero;
    s.dlogp = -x.adv * W * v;
    s.clipped_high = mand(apos, mnot(valid));
    s.clipped_low = mand(mnot(apos), mnot(valid));
    s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

/// DRO (verl core_algos.py compute_policy_loss_dro, L2013-2044): -(A logp - beta/2 (logp - old)^2),
/// d/d logp = -A + beta (logp - old), with log_rho = logp - old (token ratio level only).
struct dro {
  double beta;
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    math::surrogate<V> s;
    s.value = -(x.adv * x.logp - 0.5 * beta * x.log_rho * x.log_rho);
    s.dratio = simd::splat<V>(0.0);
    s.dlogp = -x.adv + beta * x.log_rho;
    s.clipped_low = s.clipped_high = s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};
static_assert(surrogate_form<cispo> && surrogate_form<sapo> && surrogate_form<reinforce> && surrogate_form<dppo> &&
              surrogate_form<dro>);

/// Calls f with the built-in form the options name (loss_options::form and its parameters).
template <class F>
decltype(auto) with_loss_form(const loss_options& opt, F&& f) {
  switch (opt.form) {
  case loss_form::cispo_absolute:
    return f(cispo{opt.cispo_cap, 1.0 - opt.clip_low, 1.0 + opt.clip_high, false});
  case loss_form::cispo_relative:
    return f(cispo{opt.cispo_cap, 1.0 - opt.clip_low, 1.0 + opt.clip_high, true});
  case loss_form::sapo:
    return f(sapo{opt.sapo_tau_pos, opt.sapo_tau_neg});
  case loss_form::reinforce:
    return f(reinforce{});
  case loss_form::dppo_tv:
    return f(dppo{opt.dppo_ratio_cap, opt.clip_low, opt.clip_high, false});
  case loss_form::dppo_kl:
    return f(dppo{opt.dppo_ratio_cap, opt.clip_low, opt.clip_high, true});
  case loss_form::dro:
    return f(dro{opt.dro_beta});
  case loss_form::clipped_ratio:
  default:
    return f(clipped_ratio{{opt.clip_low, opt.clip_high, opt.dual_clip, opt.delta}});
  }
}

} // namespace msrl::grpo
