#pragma once
/// \file Every per-token GRPO formula, once. Each is a MSRL_HOST_DEVICE template over a lane type
/// V (core/simd.hpp): `double` for device code and scalar host loops, an 8-lane double vector for
/// vectorised host loops. Each returns the value and its derivative, so gradients are closed-form.
///
/// Derivative conventions follow PyTorch autograd exactly, so results match the peers' training
/// code: clamp passes the gradient when lo <= x <= hi (inclusive); elementwise min/max split the
/// gradient in half on ties; abs has derivative 0 at 0.
#include <cmath>
#include <cstdint>
#include <utility>

#include "../core/config.hpp"
#include "../core/simd.hpp"

namespace msrl::grpo {

/// KL estimators of KL(pi_theta || pi_ref) from a sample, x = logp - ref_logp (Schulman's note).
enum class kl_estimator : int {
  k1,  ///< x                      (verl "kl"/"k1", OpenRLHF k1)
  abs, ///< |x|                    (verl "abs")
  k2,  ///< x^2 / 2                (verl "mse"/"k2", OpenRLHF k2)
  k3,  ///< e^-x + x - 1           (verl "low_var_kl"/"k3", TRL, ms-swift, Liger, OpenRLHF k3)
};

namespace math {

inline constexpr double inf = HUGE_VAL;

using simd::mand;
using simd::mask_t;
using simd::select;
using simd::splat;

/// A value and its derivative with respect to the policy log-prob.
template <class V = double>
struct value_grad {
  V value;
  V grad;
};

// The unbounded range [-inf, inf] (a clamp that is off) costs no lane arithmetic: the bounds are
// scalars, so the test is one predicted branch.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V clamp(V x, double lo, double hi) {
  if (lo == -inf && hi == inf) return x;
  return select(x < splat<V>(lo), splat<V>(lo), select(x > splat<V>(hi), splat<V>(hi), x));
}
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE mask_t<V> inside(V x, double lo, double hi) {
  if (lo == -inf && hi == inf) return x == x; // every lane but NaN
  return mand(splat<V>(lo) <= x, x <= splat<V>(hi));
}

/// The natural logarithm lane by lane (libm on the host, CUDA's log on the device): for the rare
/// forms that need it (DPPO-KL), not for the hot path.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V log(V x) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return ::log(x);
#else
  return simd::map(x, [](double y) { return std::log(y); });
#endif
}

namespace detail {
/// 1 / k!, exact to double rounding (k! is exact in double for k <= 18).
constexpr double inv_factorial(int k) {
  double f = 1.0;
  for (int j = 2; j <= k; ++j) f *= j;
  return 1.0 / f;
}
/// sum_{k=0}^{N} r^k / (k + Off)! in Horner form, unrolled: e^r's Taylor polynomial for Off = 0, the
/// series of (e^r - 1 - r) / r^2 for Off = 2.
template <int N, int Off, class V, int... J>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V taylor(V r, std::integer_sequence<int, J...>) {
  V p = splat<V>(inv_factorial(N + Off));
  ((p = p * r + inv_factorial(N - 1 - J + Off)), ...);
  return p;
}
template <int N, int Off = 0, class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V taylor(V r) {
  return taylor<N, Off>(r, std::make_integer_sequence<int, N>{});
}
/// p 2^k for integer lanes k, as two normal powers (Bias, MantBits: the element type's exponent
/// bias and mantissa width) so that subnormal results are reached without overflowing the field.
template <int Bias, int MantBits, class V, class K>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V scale_pow2(V p, K k) {
  const K k1 = k >> 1;
  const K k2 = k - k1;
  return p * simd::from_bits<V>((k1 + Bias) << MantBits) * simd::from_bits<V>((k2 + Bias) << MantBits);
}

/// e^x in single-precision lanes. x = k ln2 + r with k = round(x log2e) and ln2 split as
/// C1 + C2 (C1 = 0.693359375 has 10 significant bits, so k C1 and x - k C1 are exact for the
/// |k| <= 150 reached here); e^r by its Taylor series to r^7 on |r| <= 0.3467, whose truncation
/// is below 0.3467^8 / 8! * e^0.3467 = 7.4e-9 (1.1e-8 relative); 2^k from the exponent bits, as
/// two normal powers so that subnormal results are reached. With the rounding of Horner's scheme
/// the result is within 2 ulp of e^x for normal results (test_math_exp sweeps every 61st float of
/// the range: 0.92 ulp at most with FMA). Exact special cases: exp(NaN) = NaN, exp(+inf) =
/// +inf, exp(-inf) = 0, overflow to +inf above 88.7228, underflow to 0 below -103.9721.
///
/// When every lane lies in [-87, 87] (the common case: no NaN, no overflow, no subnormal result,
/// |k| <= 126) the clamp, the special cases and the split power are skipped: 2^k is then one
/// normal power and every product by a power of two is exact, so both routes give the same bits.
template <class V>
MSRL_FORCEINLINE V exp_single(V x) {
  constexpr double shifter = 12582912.0; // 1.5 * 2^23: adding it rounds to an integer
  const bool normal = !simd::any(simd::mnot(inside(x, -87.0, 87.0)));
  const V xc = normal ? x : select(x == x, clamp(x, -104.0, 89.0), splat<V>(0.0));
  const V kd = xc * 1.44269504088896341 + shifter;
  const auto k = simd::to_bits(kd) - simd::to_bits(splat<V>(shifter));
  const V kf = kd - shifter;
  const V r = (xc - kf * 0.693359375) - kf * -2.12194440e-4;
  const V p = taylor<7>(r);
  if (normal) return p * simd::from_bits<V>((k + 127) << 23);
  const V y = scale_pow2<127, 23>(p, k);
  return select(x != x, x, select(x > splat<V>(88.72283935546875), splat<V>(HUGE_VAL),
                                  select(x < splat<V>(-103.97208404541016), splat<V>(0.0), y)));
}
} // namespace detail

/// e^x lane by lane. Double lanes: max error ~1 ulp (libm for one lane on the host, CUDA's exp on
/// the device, and for vector lanes straight-line code without a libm call). Float lanes:
/// detail::exp_single (within 2 ulp). Exact special cases: exp(NaN) = NaN, exp(+inf) = +inf,
/// exp(-inf) = 0, overflow to +inf above 709.78 (double), underflow to 0 below -745.13.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V exp(V x) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return ::exp(x);
#else
  // One lane: libm's table-driven exp is faster than a latency-bound polynomial.
  if constexpr (simd::lane_traits<V>::width == 1) return std::exp(x);
  else if constexpr (simd::single_v<V>) return detail::exp_single(x);
  else {
  constexpr double log2e = 1.4426950408889634074, ln2_hi = 6.93147180369123816490e-01,
                   ln2_lo = 1.90821492927058770002e-10, shifter = 0x1.8p52;
  // The short route, as in exp_single: every lane in [-708, 708] (|k| <= 1022, a normal result),
  // so 2^k is one normal power and the bits are those of the general route.
  const bool normal = !simd::any(simd::mnot(inside(x, -708.0, 708.0)));
  const V xc = normal ? x : select(x == x, clamp(x, -746.0, 710.0), splat<V>(0.0));
  // x = k ln2 + r, |r| <= ln2/2; k read from the low mantissa bits of (x*log2e + 1.5*2^52).
  const V kd = xc * log2e + shifter;
  const auto k = simd::to_bits(kd) - simd::to_bits(shifter);
  const V kf = kd - shifter;
  const V r = (xc - kf * ln2_hi) - kf * ln2_lo;
  // e^r by its Taylor series to r^13 (truncation < 2e-17 for |r| <= 0.347), Horner form.
  const V p = detail::taylor<13>(r);
  if (normal) return p * simd::from_bits<V>((k + 1023) << 52);
  const V y = detail::scale_pow2<1023, 52>(p, k);
  return select(x != x, x, select(x > splat<V>(709.782712893384), splat<V>(inf),
                                  select(x < splat<V>(-745.1332191019412), splat<V>(0.0), y)));
  }
#endif
}

/// Importance ratio rho = exp(clamp(logp - old_logp, -c, c)) and d rho / d logp.
/// verl/OpenRLHF use c = 20; TRL, ms-swift and Liger use no clamp (c = inf).
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE value_grad<V> ratio(V logp, V old_logp, double log_ratio_clamp) {
  const V x = logp - old_logp;
  const V r = math::exp(clamp(x, -log_ratio_clamp, log_ratio_clamp));
  return {r, select(inside(x, -log_ratio_clamp, log_ratio_clamp), r, splat<V>(0.0))};
}

/// Parameters of the clipped surrogate.
struct clip_params {
  double clip_low;  ///< epsilon_low: ratio floor 1 - clip_low
  double clip_high; ///< epsilon_high: ratio ceiling 1 + clip_high (clip-higher when != clip_low)
  double dual_clip; ///< c > 1: for A < 0 the loss is capped at -A*c (verl always c = 3; inf = off)
  double delta;     ///< two-sided clip: unclipped ratio capped at delta (TRL/ms-swift/Liger; inf = off)
};

/// Result of the clipped surrogate for one token (one lane each).
template <class V = double>
struct surrogate {
  V value;  ///< per-token policy loss
  V dratio; ///< d value / d ratio
  V dlogp;  ///< d value / d logp through paths other than the ratio (weighted log-prob forms; 0 here)
  mask_t<V> clipped_low;  ///< ratio < 1 - clip_low and A < 0   (TRL "clip_ratio/low")
  mask_t<V> clipped_high; ///< ratio > 1 + clip_high and A > 0  (TRL "clip_ratio/high")
  mask_t<V> dual_clipped; ///< A < 0 and the dual-clip bound -A*c is the active branch (verl pg_clipfrac_lower)
};

/// PPO clipped surrogate  L = -min(min(rho, delta)*A, clip(rho, 1-eps_lo, 1+eps_hi)*A), then for
/// A < 0 with dual clip L = min(L, -A*c). Paper Eq. (GRPO objective); TRL/ms-swift `_compute_loss`
/// (delta), verl `compute_policy_loss_vanilla` (dual clip), OpenRLHF `PolicyLoss` (dual clip).
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE surrogate<V> clipped_surrogate(V rho, V adv, const clip_params& p) {
  const V zero = splat<V>(0.0), one = splat<V>(1.0);
  const double lo = 1.0 - p.clip_low, hi = 1.0 + p.clip_high;
  // Without the two-sided cap (delta = inf) r1 = rho and d r1 / d rho = 1, with no lane work.
  const bool capped_ratio = p.delta < inf;
  const V r1 = capped_ratio ? select(rho < splat<V>(p.delta), rho, splat<V>(p.delta)) : rho;
  const V g1 = capped_ratio ? select(rho <= splat<V>(p.delta), one, zero) : one; // d r1 / d rho
  const V r2 = clamp(rho, lo, hi);
  const V g2 = select(inside(rho, lo, hi), one, zero); // d r2 / d rho
  const V a = r1 * adv, b = r2 * adv;
  // -min(a, b): gradient goes to the smaller branch, split in half on a tie (torch.minimum).
  // g1, g2 are 0 or 1, so the half is exact and -A times it equals -A/2 times (g1 + g2).
  const V v = select(a < b, -a, -b);
  const V dv = -adv * select(a < b, g1, select(b < a, g2, 0.5 * (g1 + g2)));
  const auto neg = adv < zero;
  surrogate<V> s;
  s.value = v;
  s.dratio = dv;
  s.dlogp = zero;
  s.dual_clipped = simd::mask_of<V>(false);
  if (p.dual_clip < inf) { // dual clip for A < 0: min(v, -A*c), with the same tie rule
    const V cap = -adv * p.dual_clip;
    const auto capped = mand(neg, cap < v);
    const auto tie = mand(neg, cap == v);
    s.value = select(capped, cap, v);
    s.dratio = select(capped, zero, select(tie, 0.5 * dv, dv));
    s.dual_clipped = capped;
  }
  s.clipped_low = mand(rho < splat<V>(lo), neg);
  s.clipped_high = mand(rho > splat<V>(hi), adv > zero);
  return s;
}

/// Parameters of the KL penalty.
struct kl_params {
  kl_estimator estimator;
  bool straight_through;  ///< verl "k3+" style: value of the estimator, gradient of k2 (unbiased KL gradient)
  double log_ratio_clamp; ///< k3 only: ref_logp - logp clamped to [-c, c] before exp (verl/ms-swift 20)
  double value_clamp;     ///< estimate clamped to [-c, c] (verl/ms-swift k3: 10; OpenRLHF: every estimator)
};

/// Per-token KL estimate and d/d logp.  verl `kl_penalty_forward`, OpenRLHF `compute_approx_kl`,
/// TRL/ms-swift/Liger k3 (`exp(ref - logp) - (ref - logp) - 1`).
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE value_grad<V> kl_penalty(V logp, V ref_logp, const kl_params& p) {
  const V zero = splat<V>(0.0), one = splat<V>(1.0);
  const V x = logp - ref_logp;
  value_grad<V> r;
  switch (p.estimator) {
  case kl_estimator::k1:
    r = {x, one};
    break;
  case kl_estimator::abs:
    r = {select(x < zero, -x, x), select(x > zero, one, select(x < zero, -one, zero))};
    break;
  case kl_estimator::k2:
    r = {0.5 * x * x, x};
    break;
  case kl_estimator::k3:
  default: {
    const V d = ref_logp - logp;
    const V dc = clamp(d, -p.log_ratio_clamp, p.log_ratio_clamp);
    const auto live = inside(d, -p.log_ratio_clamp, p.log_ratio_clamp);
    if constexpr (simd::single_v<V>) {
      // In single precision e^d - d - 1 and 1 - e^d lose their digits to cancellation as d -> 0:
      // for |d| <= 1 the Taylor series q = e^d - 1 - d = d^2 sum_k d^k / (k + 2)! to d^11
      // (truncation below 1 / 12! = 2.1e-9 relative), e^d - 1 = d + q; beyond, the direct forms,
      // whose cancellation costs at most 2 ulp there.
      const V q = detail::taylor<10, 2>(dc) * dc * dc;
      const auto small = inside(dc, -1.0, 1.0);
      V e = one + dc + q; // e^d where |d| <= 1 (only its big lanes are read)
      if (simd::any(simd::mnot(small))) e = math::exp(dc);
      r = {select(small, q, e - dc - 1.0), select(live, -select(small, dc + q, e - one), zero)};
    } else {
      const V e = math::exp(dc);
      r = {e - dc - 1.0, select(live, one - e, zero)};
    }
    break;
  }
  }
  if (p.value_clamp < inf) { // clamp(x) is x inside the range (NaN stays NaN)
    r.grad = select(inside(r.value, -p.value_clamp, p.value_clamp), r.grad, zero);
    r.value = clamp(r.value, -p.value_clamp, p.value_clamp);
  }
  if (p.straight_through) r.grad = x; // k2 - sg(k2) + sg(k): gradient of k2 = x (unclamped, as verl)
  return r;
}

} // namespace math
} // namespace msrl::grpo
