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

/// Lane state of the online softmax: max m (raw logit units); block sums s = sum 2^d2 and
/// t = sum 2^d2 d2 with d2 = (x - m) log2(e) / T; totals S, Tt. Block sums are folded into the
/// totals every few vectors (two-level summation keeps fp32 rounding near 1e-7 at V = 151,936).
struct lane_state {
  vec m, s, t, S, Tt;
};

/// One online-softmax update of a lane state with raw logits x; k = log2(e) / T.
template <bool Entropy>
MSRL_ROW_TARGET inline void update(vec x, vec k, lane_state& st) {
  const vec lo = isa::set1(isa::exp2_lo);
  if (isa::any(isa::gt(x, st.m))) { // rare after the first few vectors: rescale to the new max
    const vec mn = isa::max(st.m, x);
    const vec dm = isa::max(isa::mul(isa::sub(st.m, mn), k), lo);
    const vec a = isa::exp2(dm);
    if constexpr (Entropy) {
      st.t = isa::mul(a, isa::fma(dm, st.s, st.t));
      st.Tt = isa::mul(a, isa::fma(dm, st.S, st.Tt));
    }
    st.s = isa::mul(a, st.s);
    st.S = isa::mul(a, st.S);
    st.m = mn;
  }
  const vec d = isa::max(isa::mul(isa::sub(x, st.m), k), lo);
  const vec e = isa::exp2(d);
  st.s = isa::add(st.s, e);
  if constexpr (Entropy) st.t = isa::fma(e, d, st.t);
}

MSRL_ROW_TARGET inline void fold(lane_state& st) {
  st.S = isa::add(st.S, st.s);
  st.Tt = isa::add(st.Tt, st.t);
  st.s = isa::set1(0.0f);
  st.t = isa::set1(0.0f);
}

/// Single pass over one row of V logits: online max / sum-exp (and entropy) of x / T.
template <class T, bool Entropy>
MSRL_ROW_TARGET inline row_stats forward_row(const T* x, std::size_t V, float inv_t) {
  const vec k = isa::set1(inv_t * log2e);
  lane_state st[U];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    st[u].m = isa::set1(-3.4028234663852886e38f);
    st[u].s = st[u].t = st[u].S = st[u].Tt = isa::set1(0.0f);
  }
  std::size_t j = 0;
  int since_fold = 0;
  for (; j + U * W <= V; j += U * W) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) update<Entropy>(isa::template load<T>(x + j + u * W), k, st[u]);
    if (++since_fold == 64) {
      since_fold = 0;
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) fold(st[u]);
    }
  }
  for (; j + W <= V; j += W) update<Entropy>(isa::template load<T>(x + j), k, st[0]);
  if (j < V) update<Entropy>(load_tail(x + j, V - j), k, st[1 % U]);
  float lm[U * W], ls[U * W], lt[U * W];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    fold(st[u]);
    isa::lanes(st[u].m, lm + u * W);
    isa::lanes(st[u].S, ls + u * W);
    isa::lanes(st[u].Tt, lt + u * W);
  }
  return combine_lanes(lm, ls, lt, U * W, inv_t);
}

/// Writes g[j] = -scale * p_j for j in [j0, j1), p_j = 2^((x_j - c) k), and adds those p to acc.
template <class T, class G>
MSRL_ROW_TARGET inline void sweep(const T* x, G* g, std::size_t j0, std::size_t j1, vec k, vec c_hi, vec c_lo, vec ns, vec& acc0,
                                  vec& acc1) {
  const vec lo = isa::set1(isa::exp2_lo);
  std::size_t j = j0;
  for (; j + 2 * W <= j1; j += 2 * W) {
    const vec a = isa::template load<T>(x + j), b = isa::template load<T>(x + j + W);
    const vec pa = isa::exp2(isa::max(isa::mul(isa::sub(isa::sub(a, c_hi), c_lo), k), lo));
    const vec pb = isa::exp2(isa::max(isa::mul(isa::sub(isa::sub(b, c_hi), c_lo), k), lo));
    acc0 = isa::add(acc0, pa);
    acc1 = isa::add(acc1, pb);
    isa::template store<G>(g + j, isa::mul(pa, ns));
    isa::template store<G>(g + j + W, isa::mul(pb, ns));
  }
  for (; j + W <= j1; j += W) {
    const vec p = isa::exp2(isa::max(isa::mul(isa::sub(isa::sub(isa::template load<T>(x + j), c_hi), c_lo), k), lo));
    acc0 = isa::add(acc0, p);
    isa::template store<G>(g + j, isa::mul(p, ns));
  }
  if (j < j1) {
    G buf[W];
    const vec p = isa::exp2(isa::max(isa::mul(isa::sub(isa::sub(load_tail(x + j, j1 - j), c_hi), c_lo), k), lo));
    acc1 = isa::add(acc1, p);
    isa::template store<G>(buf, isa::mul(p, ns));
    for (std::size_t i = 0; i < j1 - j; ++i) g[j + i] = buf[i];
  }
}

/// d logits = scale * (onehot - softmax(x / T)) with softmax from the saved lse, passed as
/// c = lse * T = c_hi + c_lo in raw logit units (two floats: x - c stays exact near the row max,
/// where softmax is large). Returns sum_{j != y} p_j, from which the caller forms the target
/// entry scale * (1 - p_y) without the cancellation of 1 - p_y when p_y is near 1. Element y
/// itself is left for the caller.
template <class T, class G>
MSRL_ROW_TARGET inline double backward_row(const T* x, G* g, std::size_t V, std::size_t y, float inv_t, float c_hi, float c_lo,
                                           float scale) {
  const vec k = isa::set1(inv_t * log2e), ch = isa::set1(c_hi), cl = isa::set1(c_lo), ns = isa::set1(-scale);
  vec acc0 = isa::set1(0.0f), acc1 = isa::set1(0.0f);
  double rest = 0.0;
  sweep<T, G>(x, g, 0, y, k, ch, cl, ns, acc0, acc1);
  sweep<T, G>(x, g, y + 1, V, k, ch, cl, ns, acc0, acc1);
  float l0[W], l1[W];
  isa::lanes(acc0, l0);
  isa::lanes(acc1, l1);
  for (int i = 0; i < W; ++i) rest += static_cast<double>(l0[i]) + static_cast<double>(l1[i]);
  return rest;
}

} // namespace MSRL_ROW_NS
