#pragma once
// The kernel lab's double-precision reference: the selective log-softmax, its entropy and its
// backward (log-prob and entropy gradients) computed the plain way (two passes, std::exp in
// double). Every msrl kernel (host SIMD, CUDA) is validated against these functions.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace msrl::lab {

struct ref_row {
  double logp;
  double lse;
  double entropy;
  double zmax;     ///< max_j x_j / t
  double lse_rest; ///< lse - zmax = log(1 + s1)
};

/// x: one row of V logits already widened to double; temperature t. The sum of exponentials is
/// kept as 1 + s1 with s1 over every entry but the (first) maximum, and log(1 + s1) taken with
/// log1p: a confident row (s1 ~ 1e-13) keeps lse, H and log p + H accurate to double precision
/// relative to their own size, which the entropy gradient's tests need.
inline ref_row ref_forward(const double* x, std::size_t V, std::int64_t y, double t) {
  constexpr double ninf = -std::numeric_limits<double>::infinity();
  if (y < 0) return {0.0, 0.0, 0.0, 0.0, 0.0};
  double m = ninf;
  std::size_t am = 0;
  for (std::size_t j = 0; j < V; ++j)
    if (x[j] / t > m) m = x[j] / t, am = j;
  if (m == ninf) return {ninf, ninf, 0.0, ninf, 0.0};
  double s1 = 0.0, sx = 0.0;
  for (std::size_t j = 0; j < V; ++j) {
    const double z = x[j] / t - m;
    if (z == ninf || j == am) continue;
    const double e = std::exp(z);
    s1 += e;
    sx += e * z;
  }
  const double ls = std::log1p(s1), lse = m + ls;
  return {(x[y] / t - m) - ls, lse, ls - sx / (1.0 + s1), m, ls};
}

/// d logits = g (onehot - softmax(x / t)) / t + h dH/dx, in double, the plain way:
/// d x_j = (g (onehot_j - p_j) - h p_j (log p_j + H)) / t (d H / d z_j = -p_j (log p_j + H)), with
/// p_j log p_j = 0 where p_j = 0. Ignored rows (y < 0) and all -inf rows get 0.
inline void ref_backward(const double* x, std::size_t V, std::int64_t y, double t, double g, double h, std::vector<double>& out) {
  out.assign(V, 0.0);
  if (y < 0 || (g == 0.0 && h == 0.0)) return;
  const ref_row r = ref_forward(x, V, y, t);
  if (!(r.lse > -std::numeric_limits<double>::infinity())) return;
  for (std::size_t j = 0; j < V; ++j) {
    const double lp = (x[j] / t - r.zmax) - r.lse_rest, p = std::exp(lp);
    out[j] = -g / t * p - (p > 0.0 ? h / t * p * (lp + r.entropy) : 0.0);
  }
  out[static_cast<std::size_t>(y)] += g / t;
}

/// d logits = g (onehot - softmax(x / t)) / t, in double.
inline void ref_backward(const double* x, std::size_t V, std::int64_t y, double t, double g, std::vector<double>& out) {
  ref_backward(x, V, y, t, g, 0.0, out);
}

} // namespace msrl::lab
