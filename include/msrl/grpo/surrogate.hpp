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
  V rho;      ///< importance ratio (token, or GSPO sequence ratio constant over the row)
  V log_rho;  ///< its logarithm before any clamp (logp - old_logp, or the row's mean log-ratio)
  V logp;     ///< log pi_theta(y_t)
  V adv;      ///< the token's advantage
  V row;      ///< row forms: the row's value coefficient (row_coefs::value); 1 otherwise
  V row_grad; ///< row forms: the row's gradient coefficient (row_coefs::grad); 1 otherwise
  V pm;       ///< the token's policy mask (1 without one); read by forms that consume it
};

/// A per-token surrogate (see the file comment for the semantics each member must have).
template <class F>
concept surrogate_form = std::is_trivially_copyable_v<F> && requires(const F& f, const token_args<double>& a) {
  { f(a) } -> std::same_as<math::surrogate<double>>;
};

/// Row forms (VESPO, GMPO) need a statistic of their whole row before the token pass: the row
/// pass feeds every position of the row to `row_token` (and, with per-token IS weights, to
/// `row_is_weight`), then `row_weight` turns the sums into the two coefficients the token pass
/// hands the form in token_args::row and ::row_grad. Their contract, beyond surrogate_form:
///   - the rollout IS weights are folded into the row statistic: they do not multiply the
///     surrogate (they still weight the KL under options.is_weight_kl);
///   - `consumes_policy_mask`: the policy mask enters the row statistic and the form's own
///     gradient (token_args::pm) instead of multiplying the surrogate;
///   - `empty_row_value(adv, w)`: what a row without unmasked tokens adds to the row sum (it has
///     no gradient; the aggregation weights it like a row of one token).
/// Row forms take one advantage per sequence and the token ratio level.
struct row_sums {
  double a = 0.0, b = 0.0, n = 0.0;
};
struct row_coefs {
  double value = 1.0, grad = 1.0;
};
template <class F>
concept row_form = surrogate_form<F> && requires(const F& f, row_sums& s, double d) {
  { F::consumes_policy_mask } -> std::convertible_to<bool>;
  f.row_token(s, d, d, d, d); // (sums, mask, policy mask, log-ratio (0 where masked), advantage)
  f.row_is_weight(s, d, d);   // (sums, mask, the token's IS weight)
  { f.row_weight(s, d, d, d) } -> std::same_as<row_coefs>; // (sums, L_i, the row's IS weight or 1, advantage)
  { f.empty_row_value(d, d) } -> std::same_as<double>;     // (advantage, the row's IS weight or 1)
};

/// The PPO/GRPO clipped ratio  -min(min(rho, delta) A, clip(rho, 1 - eps_lo, 1 + eps_hi) A), with
/// verl's dual clip for A < 0 (math::clipped_surrogate). The form every preset uses.
struct clipped_ratio {
  static constexpr bool ratio_only = true; ///< dlogp is always 0 (see ratio_only_v)
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
    // Mask choices by lane algebra rather than `?:` on masks (GCC 12 fails on the latter in float lanes).
    const auto rel = simd::mask_of<V>(relative);
    s.clipped_low = simd::mand(rel, x.rho < splat<V>(lo));
    s.clipped_high = simd::mor(simd::mand(rel, x.rho > splat<V>(hi)),
                               simd::mand(simd::mnot(rel), simd::mand(x.rho > splat<V>(cap), x.adv > zero)));
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
/// KL-Cov (arXiv 2505.22617; verl core_algos.py compute_policy_loss_kl_cov, L1847-1925): the
/// unclipped -A rho, plus coef |log_rho| on the tokens the policy mask selects (kl_cov_mask in
/// cov_selection.hpp writes it: 1 = selected); d/d rho = -A, d/d logp = coef pm sign(log_rho)
/// (0 at log_rho = 0, as torch.abs). It reads the policy mask as that selection instead of
/// multiplying the surrogate by it; without one every token carries the penalty. No clip metrics.
struct kl_cov {
  double coef;
  static constexpr bool consumes_policy_mask = true;
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    using simd::select;
    using simd::splat;
    const V zero = splat<V>(0.0), one = splat<V>(1.0);
    const V sgn = select(x.log_rho > zero, one, select(x.log_rho < zero, -one, zero));
    math::surrogate<V> s;
    s.value = -x.adv * x.rho + coef * x.pm * sgn * x.log_rho;
    s.dratio = -x.adv;
    s.dlogp = coef * x.pm * sgn;
    s.clipped_low = s.clipped_high = s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

/// VESPO (arXiv 2602.10693; TRL GRPOTrainer.get_gamma_weights, Liger-Kernel
/// chunked_loss/grpo_loss.py get_gamma_weights): -sg(phi_i) A logp, d/d logp = -phi_i A, with the
/// row's gamma weight phi_i = exp(lambda + k log w - lambda w) (phi(1) = 1; non-finite -> 0),
/// log w = clamp(sum_t m clamp(lr_t, +-20) + sum_t m clamp(log v_t, ln 1e-8, 20), ln 1e-8, 20) (v:
/// the rollout IS weights, folded in here as TRL and Liger do; they sum over every position, where
/// TRL's padding has weight 1, so the masked sum is the same and holds in the packed layout too; a
/// per-row weight counts once), (k, lambda) = (k_pos, lambda_pos) for A >= 0, else (k_neg, lambda_neg), lambda >=
/// 1e-4. No clip metrics.
struct vespo {
  double k_pos, lambda_pos, k_neg, lambda_neg;
  static constexpr bool consumes_policy_mask = false;
  static constexpr double log_floor = -18.420680743952367; // ln 1e-8
  MSRL_HOST_DEVICE void row_token(row_sums& s, double m, double, double lr, double) const {
    s.a += m * math::clamp(lr, -20.0, 20.0);
  }
  MSRL_HOST_DEVICE void row_is_weight(row_sums& s, double m, double v) const {
    if (m != 0.0) s.b += math::clamp(math::log(v), log_floor, 20.0);
  }
  MSRL_HOST_DEVICE row_coefs row_weight(const row_sums& s, double, double seq_w, double adv) const {
    const double lw = math::clamp(s.a + s.b + math::clamp(math::log(seq_w), log_floor, 20.0), log_floor, 20.0);
    const double k = adv >= 0.0 ? k_pos : k_neg;
    double lam = adv >= 0.0 ? lambda_pos : lambda_neg;
    lam = lam < 1e-4 ? 1e-4 : lam;
    double phi = math::exp(lam + k * lw - lam * math::exp(lw));
    if (!(phi - phi == 0.0)) phi = 0.0; // nan_to_num(nan=0, posinf=0, neginf=0)
    return {phi, phi};
  }
  MSRL_HOST_DEVICE double empty_row_value(double, double) const { return 0.0; }
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    math::surrogate<V> s;
    s.value = -x.row * x.adv * x.logp;
    s.dratio = simd::splat<V>(0.0);
    s.dlogp = -x.row * x.adv;
    s.clipped_low = s.clipped_high = s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};

/// GMPO (arXiv 2507.20673; verl core_algos.py compute_policy_loss_geo_mean, TRL experimental
/// GMPOTrainer._compute_loss): the row loss -A_i s_i with the geometric mean of sign-aware clipped
/// token ratios, s_i = exp(sum_t m pm c_t / G(n_i)), c_t = min(lr_t, eps_hi) for A > 0 and
/// max(lr_t, -eps_lo) otherwise (log-space bounds: clip_low / clip_high), n_i = sum_t m pm (pm: the
/// policy mask, TRL's entropy mask inside the mean), G the options' length guard (TRL max(n, 1),
/// verl n + 1e-8). Per-token IS weights enter as their geometric mean exp(sum_t m log(v_t + 1e-10) /
/// G(L_i)) (verl); a per-row weight multiplies s_i. Every token carries the row value -A s_i, so
/// seq_mean_token_mean over all rows gives the plain mean over rows both peers take (verl's A L/(L +
/// 1e-8) included); d/d logp_t = -A s_i pm_t g_t L_i / G(n_i) before the aggregation weight, g_t the
/// clip gate ([lr_t <= eps_hi] for A > 0, [lr_t >= -eps_lo] otherwise). An empty row adds -A (TRL:
/// exp(0 / 1) = 1; times a per-row IS weight) when `empty_rows_minus_adv`, else 0 (verl). Metrics: TRL's clip regions.
struct gmpo {
  double eps_lo, eps_hi;
  bool clamp_one;
  double length_eps;
  bool empty_rows_minus_adv;
  static constexpr bool consumes_policy_mask = true;
  MSRL_HOST_DEVICE double guard(double n) const { return clamp_one ? (n > 1.0 ? n : 1.0) : n + length_eps; }
  MSRL_HOST_DEVICE void row_token(row_sums& s, double m, double pm, double lr, double adv) const {
    const double c = adv > 0.0 ? (lr < eps_hi ? lr : eps_hi) : (lr > -eps_lo ? lr : -eps_lo);
    s.a += m * pm * c;
    s.n += m * pm;
  }
  MSRL_HOST_DEVICE void row_is_weight(row_sums& s, double m, double v) const {
    if (m != 0.0) s.b += m * math::log(v + 1e-10);
  }
  MSRL_HOST_DEVICE row_coefs row_weight(const row_sums& s, double len, double seq_w, double) const {
    const double r = math::exp(s.a / guard(s.n)) * math::exp(s.b / guard(len)) * seq_w;
    return {r, r * len / guard(s.n)};
  }
  MSRL_HOST_DEVICE double empty_row_value(double adv, double seq_w) const {
    return empty_rows_minus_adv ? -adv * seq_w : 0.0;
  }
  template <class V>
  MSRL_HOST_DEVICE MSRL_FORCEINLINE math::surrogate<V> operator()(const token_args<V>& x) const {
    using simd::mand;
    using simd::select;
    using simd::splat;
    const V zero = splat<V>(0.0), one = splat<V>(1.0);
    const auto pos = x.adv > zero;
    const V gate = select(pos, select(x.log_rho <= splat<V>(eps_hi), one, zero),
                          select(x.log_rho >= splat<V>(-eps_lo), one, zero));
    math::surrogate<V> s;
    s.value = -x.adv * x.row;
    s.dratio = zero;
    s.dlogp = -x.adv * x.row_grad * x.pm * gate;
    s.clipped_low = mand(x.adv < zero, x.log_rho < splat<V>(-eps_lo));
    s.clipped_high = mand(pos, x.log_rho > splat<V>(eps_hi));
    s.dual_clipped = simd::mask_of<V>(false);
    return s;
  }
};
static_assert(surrogate_form<cispo> && surrogate_form<sapo> && surrogate_form<reinforce> && surrogate_form<dppo> &&
              surrogate_form<dro> && surrogate_form<kl_cov> && row_form<vespo> && row_form<gmpo>);

/// A form's optional flags: each is a `static constexpr bool` member a form may declare; absent
/// means false.
///   consumes_policy_mask  the form reads the policy mask itself (token_args::pm) instead of having
///                         the surrogate multiplied by it (gmpo: inside its row statistic; kl_cov:
///                         the tokens its penalty selects)
///   ratio_only            the gradient flows through the ratio alone (surrogate::dlogp is always
///                         0), so the token pass skips the dlogp term's lane arithmetic
template <class F>
consteval bool consumes_policy_mask_of() {
  if constexpr (requires { F::consumes_policy_mask; }) return F::consumes_policy_mask;
  else return false;
}
template <class F>
consteval bool ratio_only_of() {
  if constexpr (requires { F::ratio_only; }) return F::ratio_only;
  else return false;
}
template <class F>
inline constexpr bool consumes_policy_mask_v = consumes_policy_mask_of<F>();
template <class F>
inline constexpr bool ratio_only_v = ratio_only_of<F>();

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
  case loss_form::vespo:
    return f(vespo{opt.vespo_k_pos, opt.vespo_lambda_pos, opt.vespo_k_neg, opt.vespo_lambda_neg});
  case loss_form::gmpo:
    return f(gmpo{opt.clip_low, opt.clip_high, opt.guard == length_guard::clamp_one, opt.length_eps,
                  opt.gmpo_empty_rows_minus_adv});
  case loss_form::kl_cov:
    return f(kl_cov{opt.kl_cov_coef});
  case loss_form::clipped_ratio:
  default:
    return f(clipped_ratio{{opt.clip_low, opt.clip_high, opt.dual_clip, opt.delta}});
  }
}

} // namespace msrl::grpo
