#pragma once
/// \file Every per-token GRPO formula, once, as MSRL_HOST_DEVICE inline functions shared by the
/// host backends, the Thrust backend and the CUDA kernels. Each returns the value and its
/// derivative, so gradients are closed-form (no autograd).
///
/// Derivative conventions follow PyTorch autograd exactly, so results match the peers' training
/// code to the last bit of behaviour: clamp passes the gradient when lo <= x <= hi (inclusive);
/// elementwise min/max split the gradient in half on ties; abs has derivative 0 at 0.
#include <cmath>
#include <cstdint>

#include "../core/config.hpp"

namespace msrl::grpo {

/// KL estimators of KL(pi_theta || pi_ref) from a sample, x = logp - ref_logp (Schulman's note).
enum class kl_estimator : std::uint8_t {
  k1,  ///< x                      (verl "kl"/"k1", OpenRLHF k1)
  abs, ///< |x|                    (verl "abs")
  k2,  ///< x^2 / 2                (verl "mse"/"k2", OpenRLHF k2)
  k3,  ///< e^-x + x - 1           (verl "low_var_kl"/"k3", TRL, ms-swift, Liger, OpenRLHF k3)
};

namespace math {

inline constexpr double inf = HUGE_VAL;

/// A value and its derivative with respect to the policy log-prob.
struct value_grad {
  double value;
  double grad;
};

MSRL_HOST_DEVICE inline double clamp(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }
MSRL_HOST_DEVICE inline bool inside(double x, double lo, double hi) { return lo <= x && x <= hi; }

/// Importance ratio rho = exp(clamp(logp - old_logp, -c, c)) and d rho / d logp.
/// verl/OpenRLHF use c = 20; TRL, ms-swift and Liger use no clamp (c = inf).
MSRL_HOST_DEVICE inline value_grad ratio(double logp, double old_logp, double log_ratio_clamp) {
  const double x = logp - old_logp;
  const double xc = clamp(x, -log_ratio_clamp, log_ratio_clamp);
  const double r = std::exp(xc);
  return {r, inside(x, -log_ratio_clamp, log_ratio_clamp) ? r : 0.0};
}

/// Parameters of the clipped surrogate.
struct clip_params {
  double clip_low;  ///< epsilon_low: ratio floor 1 - clip_low
  double clip_high; ///< epsilon_high: ratio ceiling 1 + clip_high (clip-higher when != clip_low)
  double dual_clip; ///< c > 1: for A < 0 the loss is capped at -A*c (verl always c = 3; inf = off)
  double delta;     ///< two-sided clip: unclipped ratio capped at delta (TRL/ms-swift/Liger; inf = off)
};

/// Result of the clipped surrogate for one token.
struct surrogate {
  double value;  ///< per-token policy loss
  double dratio; ///< d value / d ratio
  bool clipped_low;  ///< ratio < 1 - clip_low and A < 0   (TRL "clip_ratio/low")
  bool clipped_high; ///< ratio > 1 + clip_high and A > 0  (TRL "clip_ratio/high")
  bool dual_clipped; ///< A < 0 and the dual-clip bound -A*c is the active branch (verl pg_clipfrac_lower)
};

/// PPO clipped surrogate  L = -min(min(rho, delta)*A, clip(rho, 1-eps_lo, 1+eps_hi)*A), then for
/// A < 0 with dual clip L = min(L, -A*c). Paper Eq. (GRPO objective); TRL/ms-swift `_compute_loss`
/// (delta), verl `compute_policy_loss_vanilla` (dual clip), OpenRLHF `PolicyLoss` (dual clip).
MSRL_HOST_DEVICE inline surrogate clipped_surrogate(double rho, double adv, const clip_params& p) {
  const double lo = 1.0 - p.clip_low, hi = 1.0 + p.clip_high;
  const double r1 = rho < p.delta ? rho : p.delta;
  const double g1 = rho <= p.delta ? 1.0 : 0.0; // d r1 / d rho
  const double r2 = clamp(rho, lo, hi);
  const double g2 = inside(rho, lo, hi) ? 1.0 : 0.0; // d r2 / d rho
  const double a = r1 * adv, b = r2 * adv;
  surrogate s{};
  // -min(a, b): gradient goes to the smaller branch, split in half on a tie (torch.minimum).
  if (a < b) {
    s.value = -a;
    s.dratio = -adv * g1;
  } else if (b < a) {
    s.value = -b;
    s.dratio = -adv * g2;
  } else {
    s.value = -a;
    s.dratio = -adv * 0.5 * (g1 + g2);
  }
  if (adv < 0.0 && p.dual_clip < inf) {
    const double cap = -adv * p.dual_clip;
    if (cap < s.value) {
      s.value = cap;
      s.dratio = 0.0;
      s.dual_clipped = true;
    } else if (cap == s.value) {
      s.dratio *= 0.5;
    }
  }
  s.clipped_low = rho < lo && adv < 0.0;
  s.clipped_high = rho > hi && adv > 0.0;
  return s;
}

/// Parameters of the KL penalty.
struct kl_params {
  kl_estimator estimator;
  bool straight_through; ///< verl "k3+" style: value of the estimator, gradient of k2 (unbiased KL gradient)
  double log_ratio_clamp; ///< k3 only: ref_logp - logp clamped to [-c, c] before exp (verl/ms-swift 20)
  double value_clamp;     ///< estimate clamped to [-c, c] (verl/ms-swift k3: 10; OpenRLHF: every estimator)
};

/// Per-token KL estimate and d/d logp.  verl `kl_penalty_forward`, OpenRLHF `compute_approx_kl`,
/// TRL/ms-swift/Liger k3 (`exp(ref - logp) - (ref - logp) - 1`).
MSRL_HOST_DEVICE inline value_grad kl_penalty(double logp, double ref_logp, const kl_params& p) {
  const double x = logp - ref_logp;
  value_grad r{};
  switch (p.estimator) {
  case kl_estimator::k1:
    r = {x, 1.0};
    break;
  case kl_estimator::abs:
    r = {x < 0.0 ? -x : x, x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0)};
    break;
  case kl_estimator::k2:
    r = {0.5 * x * x, x};
    break;
  case kl_estimator::k3: {
    const double d = ref_logp - logp;
    const double dc = clamp(d, -p.log_ratio_clamp, p.log_ratio_clamp);
    const double e = std::exp(dc);
    r = {e - dc - 1.0, inside(d, -p.log_ratio_clamp, p.log_ratio_clamp) ? 1.0 - e : 0.0};
    break;
  }
  }
  if (!inside(r.value, -p.value_clamp, p.value_clamp)) r = {clamp(r.value, -p.value_clamp, p.value_clamp), 0.0};
  if (p.straight_through) r.grad = x; // k2 - sg(k2) + sg(k): gradient of k2 = x (unclamped, as verl)
  return r;
}

/// Group statistics in one place so host loops and kernels agree: unbiased (n-1) or biased (n).
MSRL_HOST_DEVICE inline double std_from_moments(double sum, double sumsq_centered, double n, bool unbiased) {
  (void)sum;
  const double d = unbiased ? n - 1.0 : n;
  return d > 0.0 ? std::sqrt(sumsq_centered / d) : 0.0;
}

} // namespace math
} // namespace msrl::grpo
