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

/// Requests the cache lines of the block [j, j + U W) of p with the given locality (__builtin_prefetch's
/// 0-3). A block shorter than a line (the scalar ISA) requests its line on the block that starts it.
template <int Locality, class T>
MSRL_ROW_TARGET MSRL_FORCEINLINE void prefetch_block(const T* p, std::size_t j) {
  constexpr std::size_t line = 64 / sizeof(T);
  if (U * W >= line || j % line == 0)
    for (std::size_t b = 0; b < U * W; b += line) __builtin_prefetch(p + j + b, 0, Locality);
}

/// Lane state of the online softmax: max m (raw logit units); block sums s = sum 2^d2 and
/// t = sum 2^d2 d2 with d2 = (x - m) log2(e) / T; totals S, Tt. Block sums are folded into the
/// totals every few vectors (two-level summation keeps fp32 rounding near 1e-7 at V = 151,936).
struct lane_state {
  vec m, s, t, S, Tt;
};

/// The sum of squares q = sum 2^(2 d2) (block) and Q (total) of a lane, kept beside its
/// lane_state only for sum_j p_j^2 (forward_row<..., SumP2 = true>).
struct lane_sq {
  vec q, Q;
};

/// One online-softmax update of a lane state with raw logits x; k = log2(e) / T. A new max
/// rescales s by a = 2^(m_old - m_new) and, with SumP2, q by a^2. Always inlined: a call left
/// out of line (the tail's) would keep the lane states in memory for the whole row.
template <bool Entropy, bool SumP2>
MSRL_ROW_TARGET MSRL_FORCEINLINE void update(vec x, vec k, lane_state& st, lane_sq& sq) {
  const vec lo = isa::set1(isa::exp2_lo);
  if (isa::any(isa::gt(x, st.m))) { // rare after the first few vectors: rescale to the new max
    const vec mn = isa::max(st.m, x);
    const vec dm = isa::max(isa::mul(isa::sub(st.m, mn), k), lo);
    const vec a = isa::exp2(dm);
    if constexpr (Entropy) {
      st.t = isa::mul(a, isa::fma(dm, st.s, st.t));
      st.Tt = isa::mul(a, isa::fma(dm, st.S, st.Tt));
    }
    if constexpr (SumP2) {
      const vec a2 = isa::mul(a, a);
      sq.q = isa::mul(a2, sq.q);
      sq.Q = isa::mul(a2, sq.Q);
    }
    st.s = isa::mul(a, st.s);
    st.S = isa::mul(a, st.S);
    st.m = mn;
  }
  const vec d = isa::max(isa::mul(isa::sub(x, st.m), k), lo);
  const vec e = isa::exp2(d);
  st.s = isa::add(st.s, e);
  if constexpr (Entropy) st.t = isa::fma(e, d, st.t);
  if constexpr (SumP2) sq.q = isa::fma(e, e, sq.q);
}

MSRL_ROW_TARGET inline void fold(lane_state& st) {
  st.S = isa::add(st.S, st.s);
  st.Tt = isa::add(st.Tt, st.t);
  st.s = isa::set1(0.0f);
  st.t = isa::set1(0.0f);
}

MSRL_ROW_TARGET inline void fold(lane_sq& sq) {
  sq.Q = isa::add(sq.Q, sq.q);
  sq.q = isa::set1(0.0f);
}

/// Single pass over one row of V logits: online max / sum-exp (and entropy, and sum_j p_j^2 with
/// SumP2: one more FMA per element) of x / T.
template <class T, bool Entropy, bool SumP2 = false>
MSRL_ROW_TARGET inline row_stats forward_row(const T* x, std::size_t V, double inv_t) {
  const vec k = isa::set1(static_cast<float>(inv_t) * log2e);
  constexpr int UQ = SumP2 ? U : 1; // lane_sq states (one unused one without SumP2)
  lane_state st[U];
  lane_sq sq[UQ];
MSRL_UNROLL(4)
  for (int u = 0; u < U; ++u) {
    st[u].m = isa::set1(-3.4028234663852886e38f);
    st[u].s = st[u].t = st[u].S = st[u].Tt = isa::set1(0.0f);
  }
MSRL_UNROLL(4)
  for (int u = 0; u < UQ; ++u) sq[u].q = sq[u].Q = isa::set1(0.0f);
  std::size_t j = 0;
  int since_fold = 0;
  // The lines 2 KiB ahead are requested while this block's exponentials run: with the hardware
  // prefetcher alone the loads of this compute-heavy pass wait on memory (an AVX-512 Xeon, 256 x
  // 151,936 fp32 logits: 12.4 -> 10.5 ms on two threads; docs/benchmarks.md).
  constexpr std::size_t ahead = 2048 / sizeof(T); // a multiple of a line
  for (; j + U * W <= V; j += U * W) {
    if (j + ahead + U * W <= V) prefetch_block<3>(x + ahead, j);
MSRL_UNROLL(4)
    for (int u = 0; u < U; ++u) update<Entropy, SumP2>(isa::template load<T>(x + j + u * W), k, st[u], sq[u % UQ]);
    if (++since_fold == 64) {
      since_fold = 0;
MSRL_UNROLL(4)
      for (int u = 0; u < U; ++u) fold(st[u]);
      if constexpr (SumP2) {
MSRL_UNROLL(4)
        for (int u = 0; u < U; ++u) fold(sq[u]);
      }
    }
  }
  for (; j + W <= V; j += W) update<Entropy, SumP2>(isa::template load<T>(x + j), k, st[0], sq[0]);
  if (j < V) update<Entropy, SumP2>(load_tail(x + j, V - j), k, st[1 % U], sq[1 % UQ]);
  float lm[U * W], ls[U * W], lt[U * W], lq[SumP2 ? U * W : 1];
MSRL_UNROLL(4)
  for (int u = 0; u < U; ++u) {
    fold(st[u]);
    isa::lanes(st[u].m, lm + u * W);
    isa::lanes(st[u].S, ls + u * W);
    isa::lanes(st[u].Tt, lt + u * W);
    if constexpr (SumP2) {
      fold(sq[u]);
      isa::lanes(sq[u].Q, lq + u * W);
    }
  }
  return combine_lanes(lm, ls, lt, SumP2 ? lq : nullptr, U * W, inv_t);
}

/// The sum of the lanes of two accumulators, in double (lane by lane, a's then b's per lane).
MSRL_ROW_TARGET inline double lane_sum(vec a, vec b) {
  float la[W], lb[W];
  isa::lanes(a, la);
  isa::lanes(b, lb);
  double r = 0.0;
  for (int i = 0; i < W; ++i) r += static_cast<double>(la[i]) + static_cast<double>(lb[i]);
  return r;
}

/// Writes g[j] = -p_j (a + b d_j) for j in [j0, j1), p_j = 2^d_j, d_j = (x_j - c) k (log2 p_j), and
/// adds those p to acc (and, with Entropy, p_j d_j to accq); na = -a, nb = -b. Without Entropy
/// b = 0 and g[j] = -a p_j. d_j is clamped to exp2_lo first, so a -inf logit gives p_j = 0 times a
/// finite factor: exactly 0.
struct sums {
  vec p0, p1, q0, q1;
};

template <class T, class G, bool Entropy>
MSRL_ROW_TARGET inline vec grad_of(vec x, vec k, vec c_hi, vec c_lo, vec na, vec nb, vec& p, vec& d) {
  d = isa::max(isa::mul(isa::sub(isa::sub(x, c_hi), c_lo), k), isa::set1(isa::exp2_lo));
  p = isa::exp2(d);
  if constexpr (Entropy) return isa::mul(p, isa::fma(d, nb, na));
  else return isa::mul(p, na);
}

template <class T, class G, bool Entropy>
MSRL_ROW_TARGET inline void sweep(const T* x, G* g, std::size_t j0, std::size_t j1, vec k, vec c_hi, vec c_lo, vec na, vec nb,
                                  sums& acc) {
  std::size_t j = j0;
  vec pa, pb, da, db;
  for (; j + 2 * W <= j1; j += 2 * W) {
    const vec a = isa::template load<T>(x + j), b = isa::template load<T>(x + j + W);
    const vec ga = grad_of<T, G, Entropy>(a, k, c_hi, c_lo, na, nb, pa, da);
    const vec gb = grad_of<T, G, Entropy>(b, k, c_hi, c_lo, na, nb, pb, db);
    acc.p0 = isa::add(acc.p0, pa);
    acc.p1 = isa::add(acc.p1, pb);
    if constexpr (Entropy) {
      acc.q0 = isa::fma(pa, da, acc.q0);
      acc.q1 = isa::fma(pb, db, acc.q1);
    }
    isa::template store<G>(g + j, ga);
    isa::template store<G>(g + j + W, gb);
  }
  for (; j + W <= j1; j += W) {
    const vec ga = grad_of<T, G, Entropy>(isa::template load<T>(x + j), k, c_hi, c_lo, na, nb, pa, da);
    acc.p0 = isa::add(acc.p0, pa);
    if constexpr (Entropy) acc.q0 = isa::fma(pa, da, acc.q0);
    isa::template store<G>(g + j, ga);
  }
  if (j < j1) {
    G buf[W];
    const vec gt = grad_of<T, G, Entropy>(load_tail(x + j, j1 - j), k, c_hi, c_lo, na, nb, pa, da);
    acc.p1 = isa::add(acc.p1, pa);
    if constexpr (Entropy) acc.q1 = isa::fma(pa, da, acc.q1);
    isa::template store<G>(buf, gt);
    for (std::size_t i = 0; i < j1 - j; ++i) g[j + i] = buf[i];
  }
}

/// d logits = g onehot / T - p (a + b log2 p) (logit_grad.hpp; b = 0 without Entropy) with
/// softmax from the saved lse, passed as c = lse * T = c_hi + c_lo in raw logit units (two
/// floats: x - c stays exact near the row max, where softmax is large). One read and one write of
/// the row. Returns sum_{j != y} p_j and (with Entropy) sum_{j != y} p_j log2 p_j, from which the
/// caller forms the target entry (logit_grad.hpp target_logit_grad) without the cancellation of
/// 1 - p_y and log p_y + H when p_y is near 1. Element y itself is left for the caller.
template <class T, class G, bool Entropy>
MSRL_ROW_TARGET inline row_rest backward_row(const T* x, G* g, std::size_t V, std::size_t y, float inv_t, float c_hi, float c_lo,
                                             float a, float b) {
  const vec k = isa::set1(inv_t * log2e), ch = isa::set1(c_hi), cl = isa::set1(c_lo), na = isa::set1(-a), nb = isa::set1(-b);
  sums acc{isa::set1(0.0f), isa::set1(0.0f), isa::set1(0.0f), isa::set1(0.0f)};
  sweep<T, G, Entropy>(x, g, 0, y, k, ch, cl, na, nb, acc);
  sweep<T, G, Entropy>(x, g, y + 1, V, k, ch, cl, na, nb, acc);
  return {lane_sum(acc.p0, acc.p1), Entropy ? lane_sum(acc.q0, acc.q1) : 0.0};
}

/// The largest logit of a row (raw units; -inf when every logit is -inf). A NaN logit is passed
/// over, as the online forward passes over it (max(x, m) returns m when x is NaN).
template <class T>
MSRL_ROW_TARGET inline float row_max(const T* x, std::size_t V) {
  vec m[U];
MSRL_UNROLL(4)
  for (int u = 0; u < U; ++u) m[u] = isa::set1(-std::numeric_limits<float>::infinity());
  std::size_t j = 0;
  for (; j + U * W <= V; j += U * W) {
MSRL_UNROLL(4)
    for (int u = 0; u < U; ++u) m[u] = isa::max(isa::template load<T>(x + j + u * W), m[u]);
  }
  for (; j + W <= V; j += W) m[0] = isa::max(isa::template load<T>(x + j), m[0]);
  if (j < V) m[1 % U] = isa::max(load_tail(x + j, V - j), m[1 % U]);
  float l[U * W];
MSRL_UNROLL(4)
  for (int u = 0; u < U; ++u) isa::lanes(m[u], l + u * W);
  float r = l[0];
  for (int i = 1; i < U * W; ++i) r = l[i] > r ? l[i] : r;
  return r;
}

/// Writes e_j = 2^((x_j - m) k) (k = log2(e) / T, m = row_max(x), finite) to the fp32 scratch
/// row e and returns sum_j e_j: the softmax numerators the backward (scale_row) reuses, so the
/// row pays one exponential per element for forward and backward together. Two-level summation
/// as in forward_row. When next is given (the row to be read after this one), its lines are
/// prefetched into L2 at the pace of this row's: the exponentials are compute-bound, so its
/// memory traffic overlaps them instead of stalling the next row's first pass.
/// Keep = false: the sum alone, nothing written (e is not read; a forward that has no backward).
template <class T, bool Keep = true>
MSRL_ROW_TARGET inline double exp_row(const T* x, std::size_t V, float m, float k, float* e, const T* next) {
  const vec kv = isa::set1(k), mv = isa::set1(m), lo = isa::set1(isa::exp2_lo);
  vec s[U], S[U];
MSRL_UNROLL(4)
  for (int u = 0; u < U; ++u) s[u] = S[u] = isa::set1(0.0f);
  std::size_t j = 0;
  int since_fold = 0;
  constexpr std::size_t line = 64 / sizeof(T);
  for (; j + U * W <= V; j += U * W) {
    if (next) prefetch_block<2>(next, j);
MSRL_UNROLL(4)
    for (int u = 0; u < U; ++u) {
      const vec p = isa::exp2(isa::max(isa::mul(isa::sub(isa::template load<T>(x + j + u * W), mv), kv), lo));
      if constexpr (Keep) isa::template store<float>(e + j + u * W, p);
      s[u] = isa::add(s[u], p);
    }
    if (++since_fold == 64) {
      since_fold = 0;
MSRL_UNROLL(4)
      for (int u = 0; u < U; ++u) {
        S[u] = isa::add(S[u], s[u]);
        s[u] = isa::set1(0.0f);
      }
    }
  }
  if (next)
    for (std::size_t b = j; b < V; b += line) __builtin_prefetch(next + b, 0, 2);
  for (; j + W <= V; j += W) {
    const vec p = isa::exp2(isa::max(isa::mul(isa::sub(isa::template load<T>(x + j), mv), kv), lo));
    if constexpr (Keep) isa::template store<float>(e + j, p);
    s[0] = isa::add(s[0], p);
  }
  if (j < V) {
    const vec p = isa::exp2(isa::max(isa::mul(isa::sub(load_tail(x + j, V - j), mv), kv), lo));
    if constexpr (Keep) {
      float buf[W];
      isa::template store<float>(buf, p);
      for (std::size_t i = 0; i < V - j; ++i) e[j + i] = buf[i];
    }
    s[1 % U] = isa::add(s[1 % U], p);
  }
  float l[U * W];
  double r = 0.0;
MSRL_UNROLL(4)
  for (int u = 0; u < U; ++u) isa::lanes(isa::add(S[u], s[u]), l + u * W);
  for (int i = 0; i < U * W; ++i) r += static_cast<double>(l[i]);
  return r;
}

/// g[j] = c e[j] for j in [j, j + n), n <= W, through a lane buffer; adds those e to acc.
template <class G>
MSRL_ROW_TARGET inline void scale_part(const float* e, G* g, std::size_t n, vec c, vec& acc) {
  float in[W];
  G buf[W];
  for (int i = 0; i < W; ++i) in[i] = 0.0f;
  for (std::size_t i = 0; i < n; ++i) in[i] = e[i];
  const vec a = isa::template load<float>(in);
  acc = isa::add(acc, a);
  isa::template store<G>(buf, isa::mul(a, c));
  for (std::size_t i = 0; i < n; ++i) g[i] = buf[i];
}

template <class G, bool Stream>
MSRL_ROW_TARGET MSRL_FORCEINLINE void put(G* p, vec v) {
  if constexpr (Stream) isa::template stream<G>(p, v);
  else isa::template store<G>(p, v);
}

/// g[j] = c e[j] for j in [j0, j1); adds those e to acc0 / acc1. With Stream the whole vectors
/// go to memory past the caches (no read for ownership of g's lines): g's lines up to the first
/// aligned vector and after the last one are written through lane buffers.
template <class G, bool Stream>
MSRL_ROW_TARGET inline void scale_span(const float* e, G* g, std::size_t j0, std::size_t j1, vec c, vec& acc0, vec& acc1) {
  std::size_t j = j0;
  if constexpr (Stream) {
    constexpr std::size_t a = W * sizeof(G);
    const std::size_t head = (a - reinterpret_cast<std::uintptr_t>(g + j) % a) % a / sizeof(G);
    if (reinterpret_cast<std::uintptr_t>(g) % sizeof(G) != 0 || head >= j1 - j)
      return scale_span<G, false>(e, g, j0, j1, c, acc0, acc1);
    if (head) scale_part<G>(e + j, g + j, head, c, acc0);
    j += head;
  }
  for (; j + 2 * W <= j1; j += 2 * W) {
    const vec a = isa::template load<float>(e + j), b = isa::template load<float>(e + j + W);
    acc0 = isa::add(acc0, a);
    acc1 = isa::add(acc1, b);
    put<G, Stream>(g + j, isa::mul(a, c));
    put<G, Stream>(g + j + W, isa::mul(b, c));
  }
  for (; j + W <= j1; j += W) {
    const vec a = isa::template load<float>(e + j);
    acc0 = isa::add(acc0, a);
    put<G, Stream>(g + j, isa::mul(a, c));
  }
  if (j < j1) scale_part<G>(e + j, g + j, j1 - j, c, acc1);
}

/// The backward of a row from its kept numerators (exp_row): g[j] = c e[j] for j != y (c = -(d
/// loss / d logp) / (T sum_j e_j)); returns sum_{j != y} e_j. Element y is left for the caller.
/// Stream: non-temporal stores, for a g that is not the row just read (its lines are not in the
/// caches, and a normal store would first read each of them from memory).
template <class G, bool Stream>
MSRL_ROW_TARGET inline double scale_row(const float* e, G* g, std::size_t V, std::size_t y, float c) {
  const vec cv = isa::set1(c);
  vec a0 = isa::set1(0.0f), a1 = isa::set1(0.0f);
  scale_span<G, Stream>(e, g, 0, y, cv, a0, a1);
  scale_span<G, Stream>(e, g, y + 1, V, cv, a0, a1);
  if constexpr (Stream) isa::fence();
  return lane_sum(a0, a1);
}

} // namespace MSRL_ROW_NS
