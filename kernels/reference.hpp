#pragma once
// The kernel lab's double-precision reference: the selective log-softmax, its entropy and its
// backward computed the plain way (two passes, std::exp in double). Every msrl kernel (host SIMD,
// CUDA) is validated against these functions.
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
};

/// x: one row of V logits already widened to double; temperature t.
inline ref_row ref_forward(const double* x, std::size_t V, std::int64_t y, double t) {
  constexpr double ninf = -std::numeric_limits<double>::infinity();
  if (y < 0) return {0.0, 0.0, 0.0};
  double m = ninf;
  for (std::size_t j = 0; j < V; ++j) m = std::max(m, x[j] / t);
  if (m == ninf) return {ninf, ninf, 0.0};
  double s = 0.0, sx = 0.0;
  for (std::size_t j = 0; j < V; ++j) {
    const double z = x[j] / t - m;
    if (z == ninf) continue;
    const double e = std::exp(z);
    s += e;
    sx += e * z;
  }
  const double lse = m + std::log(s);
  return {x[y] / t - lse, lse, std::log(s) - sx / s};
}

/// d logits = g (onehot - softmax(x / t)) / t, in double.
inline void ref_backward(const double* x, std::size_t V, std::int64_t y, double t, double g, std::vector<double>& out) {
  out.assign(V, 0.0);
  if (y < 0 || g == 0.0) return;
  const ref_row r = ref_forward(x, V, y, t);
  if (!(r.lse > -std::numeric_limits<double>::infinity())) return;
  for (std::size_t j = 0; j < V; ++j) out[j] = -g / t * std::exp(x[j] / t - r.lse);
  out[static_cast<std::size_t>(y)] += g / t;
}

} // namespace msrl::lab
