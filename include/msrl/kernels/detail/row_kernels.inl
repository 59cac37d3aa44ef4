// Row kernels of the host selective log-softmax, stamped once per ISA by rows.hpp with
// MSRL_ROW_NS (namespace), MSRL_ROW_ISA (isa struct) and MSRL_ROW_TARGET (target attribute).
// No include guard on purpose.
namespace MSRL_ROW_NS {

using isa = MSRL_ROW_ISA;
using vec = isa::vec;
inline constexpr int W = isa::width;
inline constexpr int U = W == 1 ? 4 : 4; // independent accumulators (latency hiding)

/// Loads the last n < W elements, padding with -inf (contributes exactly 0 to the sums).
template <class T>
MSRL_ROW_TARGET inline vec load_tail(const T* p, std::size_t n) {
  T buf[W];
  for (int i = 0; i < W; ++i) buf[i] = neg_inf<T>();
  for (std::size_t i = 0; i < n; ++i) buf[i] = p[i];
  return isa::template load<T>(buf);
}

/// One online-softmax update of a lane state (max m, sum s, sum of e*(x - m) t) with x.
template <bool Entropy>
MSRL_ROW_TARGET inline void update(vec x, vec& m, vec& s, vec& t) {
  const vec lo = isa::set1(exp_lo - 1.0f); // below exp_lo: exp() returns exactly 0
  if (isa::any(isa::gt(x, m))) { // rare after the first few vectors: rescale to the new max
    const vec mn = isa::max(m, x);
    const vec dm = isa::max(isa::sub(m, mn), lo);
    const vec a = isa::exp(dm);
    if constexpr (Entropy) t = isa::mul(a, isa::fma(dm, s, t));
    s = isa::mul(a, s);
    m = mn;
  }
  const vec d = isa::max(isa::sub(x, m), lo);
  const vec e = isa::exp(d);
  s = isa::add(s, e);
  if constexpr (Entropy) t = isa::fma(e, d, t);
}

/// Single pass over one row of V logits: online max / sum-exp (and entropy) of x * inv_t.
template <class T, bool Entropy>
MSRL_ROW_TARGET inline row_stats forward_row(const T* x, std::size_t V, float inv_t) {
  const vec it = isa::set1(inv_t);
  vec m[U], s[U], t[U];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    m[u] = isa::set1(-3.4028234663852886e38f);
    s[u] = isa::set1(0.0f);
    t[u] = isa::set1(0.0f);
  }
  std::size_t j = 0;
  for (; j + U * W <= V; j += U * W) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) update<Entropy>(isa::mul(isa::template load<T>(x + j + u * W), it), m[u], s[u], t[u]);
  }
  for (; j + W <= V; j += W) update<Entropy>(isa::mul(isa::template load<T>(x + j), it), m[0], s[0], t[0]);
  if (j < V) update<Entropy>(isa::mul(load_tail(x + j, V - j), it), m[1 % U], s[1 % U], t[1 % U]);
  float lm[U * W], ls[U * W], lt[U * W];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    isa::lanes(m[u], lm + u * W);
    isa::lanes(s[u], ls + u * W);
    isa::lanes(t[u], lt + u * W);
  }
  return combine_lanes(lm, ls, lt, U * W);
}

/// d logits = scale * (onehot - softmax(x * inv_t)) with softmax from the saved lse:
/// every element gets -scale * p; the target is fixed afterwards by the caller in full precision.
/// lse = lse_hi + lse_lo (two floats): x/T - lse_hi is exact enough near the row max, where
/// softmax is large, so the gradient keeps ~1e-7 relative accuracy even for |lse| >> 1.
template <class T, class G>
MSRL_ROW_TARGET inline void backward_row(const T* x, G* g, std::size_t V, float inv_t, float lse_hi, float lse_lo, float scale) {
  const vec it = isa::set1(inv_t), nl = isa::set1(-lse_hi), lo = isa::set1(lse_lo), ns = isa::set1(-scale);
  std::size_t j = 0;
  for (; j + 2 * W <= V; j += 2 * W) {
    const vec a = isa::template load<T>(x + j), b = isa::template load<T>(x + j + W);
    const vec pa = isa::exp(isa::sub(isa::fma(a, it, nl), lo)), pb = isa::exp(isa::sub(isa::fma(b, it, nl), lo));
    isa::template store<G>(g + j, isa::mul(pa, ns));
    isa::template store<G>(g + j + W, isa::mul(pb, ns));
  }
  for (; j + W <= V; j += W)
    isa::template store<G>(g + j, isa::mul(isa::exp(isa::sub(isa::fma(isa::template load<T>(x + j), it, nl), lo)), ns));
  if (j < V) {
    G buf[W];
    isa::template store<G>(buf, isa::mul(isa::exp(isa::sub(isa::fma(load_tail(x + j, V - j), it, nl), lo)), ns));
    for (std::size_t i = 0; i < V - j; ++i) g[j + i] = buf[i];
  }
}

} // namespace MSRL_ROW_NS
