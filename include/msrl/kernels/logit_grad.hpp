#pragma once
/// \file The chain rule from per-token (logp, entropy) to the logits, written once for the host
/// kernels and the CUDA kernels (MSRL_HOST_DEVICE, no other dependency).
///
/// With z = x / T, p = softmax(z), logp = z_y - lse and H = -sum_j p_j log p_j:
///   d logp / d x_j = (onehot_j - p_j) / T
///   d H / d x_j    = -p_j (log p_j + H) / T
/// so with upstream gradients g (on logp) and h (on H; verl's loss = pg_loss - entropy_coeff *
/// mean H gives h = -entropy_coeff / tokens)
///   d x_j = g onehot_j / T - p_j (a + b log2 p_j),   a = (g + h H) / T,   b = h ln 2 / T.
/// The row kernels hold log2 p_j as the exponent they already compute for p_j, so the entropy
/// term costs one fused multiply-add per element. A -inf logit has p_j = 0 and gets exactly 0
/// (the limit of p log p); the kernels clamp its exponent to a finite value first.
#include <cmath>

#include "../core/config.hpp"

namespace msrl::kernels {

/// Coefficients of the non-target entries: d x_j = -p_j (a + b log2 p_j).
struct logit_grad_coeffs {
  double a;
  double b;
};

MSRL_HOST_DEVICE inline logit_grad_coeffs logit_grad_coefficients(double g, double h, double entropy, double inv_t) {
  return {(g + h * entropy) * inv_t, h * 0.69314718055994530942 * inv_t};
}

/// The target entry (g (1 - p_y) - h p_y (log p_y + H)) / T from log p_y (double) and the sums the
/// kernel's sweep accumulated over j != y: rest = sum p_j and rest_plogp = sum p_j log p_j. When
/// p_y > 1/2 both factors are formed from those sums, 1 - p_y = rest and
/// log p_y + H = log p_y rest - rest_plogp, so neither cancels when the policy is confident (the
/// case RL produces; the forward's H is then small and only accurate to ~1e-7 absolute).
/// Otherwise 1 - p_y and log p_y + H are taken directly. A -inf target logit (p_y = 0) gets g / T.
MSRL_HOST_DEVICE inline double target_logit_grad(double g, double h, double entropy, double inv_t, double log_py, double rest,
                                                 double rest_plogp) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  const double py = ::exp(log_py);
#else
  const double py = std::exp(log_py);
#endif
  const bool confident = py > 0.5;
  const double one_minus = confident ? rest : 1.0 - py;
  double ent = 0.0;
  if (h != 0.0 && py > 0.0) ent = h * py * (confident ? log_py * rest - rest_plogp : log_py + entropy);
  return g * inv_t * one_minus - ent * inv_t;
}

} // namespace msrl::kernels
