#pragma once
/// \file CUDA selective log-softmax: per-token log p(target) (+ lse, entropy, sum_v p_v^2) from logits [N, V]
/// (fp32 / bf16 / fp16, fp32 accumulation) and d logits = g (onehot - softmax(x / T)) / T, plus
/// -h p (log p + H) / T when an upstream gradient h on the entropy is given (the chain rule is
/// msrl/kernels/logit_grad.hpp, shared with the host kernels).
///
/// * forward: one block per row (rows on grid.x only, so N >= 65,536 works), 16-byte loads, four
///   in flight per thread, online max / sum-exp per thread in log2 units (ex2.approx), one block
///   reduction. One read of the logits. sum_v p_v^2 (optional, for the optimal token baseline):
///   beside s = sum 2^(z - m) each thread keeps q = sum 2^(2 (z - m)) (one FMA per element,
///   rescaled by a^2 when the max moves by a), and sum_p2 = q / s^2.
/// * backward: one block per row, one read + one write; the target entry is formed from
///   sum_{j != y} p_j (and sum_{j != y} p_j log p_j for the entropy term: no cancellation when
///   p_y -> 1); in place allowed (grad == logits). The entropy term adds one FMA per element.
/// * fwd_bwd: both in one kernel when the per-token upstream gradient is known at forward time;
///   the second read of a row comes from L2 when few enough rows are in flight (one 1024-thread
///   block per SM keeps 132 x 304 KB bf16 rows < 50 MB of L2).
/// Rows whose target is negative (ignore index) or whose skip mask is 0 are not read: logp = lse
/// = entropy = sum_p2 = 0, gradient 0. -inf logits contribute exactly 0; an all -inf row has
/// logp = lse = -inf and entropy = sum_p2 = 0.
/// 64-bit offsets throughout; rows whose base is not 16-byte aligned (ragged strides) take a
/// scalar path. Launchers are noexcept and return msrl::cuda::status.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../core/backward_arrays.hpp"
#include "../kernels/logit_grad.hpp"
#include "status.cuh"

namespace msrl::cuda {

namespace detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr double kLn2 = 0.69314718055994531;

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <class T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }

template <class G>
__device__ __forceinline__ G from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

/// Elements of T in one 16-byte vector.
template <class T>
inline constexpr int vec_elems = 16 / static_cast<int>(sizeof(T));

template <class T>
__device__ __forceinline__ void unpack(const uint4& u, float* f) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(w[i]);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __half2 h;
      memcpy(&h, &w[i], 4);
      const float2 v = __half22float2(h);
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  }
}

/// Stores N floats as G at dst (dst aligned to N * sizeof(G) bytes, which is 8, 16 or 32).
template <class G, int N>
__device__ __forceinline__ void store_vec(G* dst, const float* f) {
  G tmp[N];
#pragma unroll
  for (int i = 0; i < N; ++i) tmp[i] = from_f<G>(f[i]);
  constexpr int bytes = N * static_cast<int>(sizeof(G));
  if constexpr (bytes == 8) {
    uint2 v;
    memcpy(&v, tmp, 8);
    *reinterpret_cast<uint2*>(dst) = v;
  } else {
#pragma unroll
    for (int b = 0; b < bytes / 16; ++b) {
      uint4 v;
      memcpy(&v, reinterpret_cast<const char*>(tmp) + 16 * b, 16);
      reinterpret_cast<uint4*>(dst)[b] = v;
    }
  }
}

/// Online softmax state in log2 units: max m, sum s = sum 2^(z - m), t = sum 2^(z - m) (z - m),
/// and q = sum 2^(2 (z - m)) (kept only with SumP2; 0 otherwise).
struct online {
  float m, s, t, q;
};

template <bool SumP2 = false>
__device__ __forceinline__ online merge(online a, online b) {
  const float M = fmaxf(a.m, b.m);
  if (M == -INFINITY) return {-INFINITY, 0.f, 0.f, 0.f};
  const float ea = ex2(a.m - M), eb = ex2(b.m - M);
  online r;
  r.s = ea * a.s + eb * b.s;
  r.t = (a.s > 0.f ? ea * (a.t + (a.m - M) * a.s) : 0.f) + (b.s > 0.f ? eb * (b.t + (b.m - M) * b.s) : 0.f);
  r.q = SumP2 ? (ea * ea) * a.q + (eb * eb) * b.q : 0.f;
  r.m = M;
  return r;
}

/// Adds n values z (log2 units) to the state: one rescale at most, one ex2 per value.
template <bool Entropy, int N, bool SumP2 = false>
__device__ __forceinline__ void accumulate(online& st, const float* z) {
  float mx = z[0];
#pragma unroll
  for (int i = 1; i < N; ++i) mx = fmaxf(mx, z[i]);
  if (mx > st.m) {
    const float a = ex2(st.m - mx);
    if constexpr (Entropy) st.t = st.s > 0.f ? a * (st.t + (st.m - mx) * st.s) : 0.f;
    if constexpr (SumP2) st.q *= a * a;
    st.s *= a;
    st.m = mx;
  }
  if (st.m == -INFINITY) return; // every value so far is -inf: nothing to add (and -inf - -inf is NaN)
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float d = z[i] - st.m;
    const float e = ex2(d);
    st.s += e;
    if constexpr (Entropy) st.t += e > 0.f ? e * d : 0.f;
    if constexpr (SumP2) st.q = fmaf(e, e, st.q);
  }
}

template <int Threads, bool SumP2 = false>
__device__ __forceinline__ online block_merge(online v) {
  __shared__ online sh[Threads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    online w{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o), __shfl_xor_sync(0xffffffffu, v.t, o),
             SumP2 ? __shfl_xor_sync(0xffffffffu, v.q, o) : 0.f};
    v = merge<SumP2>(v, w);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  online r = sh[0];
#pragma unroll
  for (int i = 1; i < Threads / 32; ++i) r = merge<SumP2>(r, sh[i]);
  __syncthreads(); // sh may be reused
  return r;
}

template <int Threads>
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float sh[Threads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  float r = 0.f;
#pragma unroll
  for (int i = 0; i < Threads / 32; ++i) r += sh[i];
  __syncthreads();
  return r;
}

/// Forward statistics of one row (all threads of the block return the same state); q only with SumP2.
template <class T, bool Entropy, int Threads, bool SumP2 = false, int Unroll = 4>
__device__ __forceinline__ online row_forward(const T* __restrict__ x, std::int64_t cols, float k) {
  constexpr int VE = vec_elems<T>;
  online st{-INFINITY, 0.f, 0.f, 0.f};
  const bool aligned = (reinterpret_cast<std::uintptr_t>(x) & 15u) == 0;
  std::int64_t done = 0;
  if (aligned) {
    const std::int64_t nvec = cols / VE;
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    for (std::int64_t i = threadIdx.x; i < nvec; i += static_cast<std::int64_t>(Threads) * Unroll) {
      uint4 u[Unroll];
#pragma unroll
      for (int r = 0; r < Unroll; ++r) {
        const std::int64_t j = i + static_cast<std::int64_t>(r) * Threads;
        u[r] = j < nvec ? xv[j] : make_uint4(0xff800000u, 0xff800000u, 0xff800000u, 0xff800000u);
      }
#pragma unroll
      for (int r = 0; r < Unroll; ++r) {
        if (i + static_cast<std::int64_t>(r) * Threads >= nvec) break;
        float z[VE];
        unpack<T>(u[r], z);
#pragma unroll
        for (int e = 0; e < VE; ++e) z[e] *= k;
        accumulate<Entropy, VE, SumP2>(st, z);
      }
    }
    done = nvec * VE;
  }
  for (std::int64_t j = done + threadIdx.x; j < cols; j += Threads) {
    const float z = to_f<T>(x[j]) * k;
    accumulate<Entropy, 1, SumP2>(st, &z);
  }
  return block_merge<Threads, SumP2>(st);
}

/// What a block's backward sweep accumulates over j != y: sum p_j and (Entropy) sum p_j log2 p_j.
struct row_rest {
  float p, plog2p;
};

/// -p (a + b d) with d = log2 p (clamped so that a -inf logit gives 0, not 0 * inf); without
/// Entropy b = 0 and the value is -a p.
template <bool Entropy>
__device__ __forceinline__ float grad_entry(float d, float p, float na, float nb) {
  if constexpr (Entropy) return p * fmaf(fmaxf(d, -256.f), nb, na);
  else return na * p;
}

/// Writes g = -p (a + b log2 p) over the row (p from lse2 = lse * log2 e as hi + lo; b = 0
/// without Entropy) and returns the block's sums over j != y.
template <class T, class G, int Threads, bool Entropy, int Unroll = 2>
__device__ __forceinline__ row_rest row_backward(const T* x, G* g, std::int64_t cols, std::int64_t y, float k, float c_hi, float c_lo,
                                                 float a, float b) {
  constexpr int VE = vec_elems<T>;
  const float na = -a, nb = -b;
  float rest = 0.f, restq = 0.f;
  const bool aligned = ((reinterpret_cast<std::uintptr_t>(x) | reinterpret_cast<std::uintptr_t>(g)) & 15u) == 0;
  std::int64_t done = 0;
  if (aligned) {
    const std::int64_t nvec = cols / VE;
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    for (std::int64_t i = threadIdx.x; i < nvec; i += static_cast<std::int64_t>(Threads) * Unroll) {
      uint4 u[Unroll];
#pragma unroll
      for (int r = 0; r < Unroll; ++r) {
        const std::int64_t j = i + static_cast<std::int64_t>(r) * Threads;
        if (j < nvec) u[r] = xv[j];
      }
#pragma unroll
      for (int r = 0; r < Unroll; ++r) {
        const std::int64_t j = i + static_cast<std::int64_t>(r) * Threads;
        if (j >= nvec) break;
        float f[VE];
        unpack<T>(u[r], f);
#pragma unroll
        for (int e = 0; e < VE; ++e) {
          const float d = fmaf(f[e], k, -c_hi) - c_lo;
          const float p = ex2(d);
          const bool other = j * VE + e != y;
          rest += other ? p : 0.f;
          if constexpr (Entropy) restq += other && p > 0.f ? p * d : 0.f;
          f[e] = grad_entry<Entropy>(d, p, na, nb);
        }
        store_vec<G, VE>(g + j * VE, f);
      }
    }
    done = nvec * VE;
  }
  for (std::int64_t j = done + threadIdx.x; j < cols; j += Threads) {
    const float d = fmaf(to_f<T>(x[j]), k, -c_hi) - c_lo;
    const float p = ex2(d);
    rest += j == y ? 0.f : p;
    if constexpr (Entropy) restq += j != y && p > 0.f ? p * d : 0.f;
    g[j] = from_f<G>(grad_entry<Entropy>(d, p, na, nb));
  }
  row_rest r{block_sum<Threads>(rest), 0.f};
  if constexpr (Entropy) r.plog2p = block_sum<Threads>(restq);
  return r;
}

template <class G, int Threads>
__device__ __forceinline__ void row_zero(G* g, std::int64_t cols) {
  for (std::int64_t j = threadIdx.x; j < cols; j += Threads) g[j] = from_f<G>(0.f);
}

/// ent is written with Entropy, sp2 (sum_v p_v^2) with SumP2 (null otherwise).
template <class T, bool Entropy, bool SumP2, int Threads>
__global__ void __launch_bounds__(Threads) forward_kernel(const T* __restrict__ x, std::int64_t cols, std::int64_t ld,
                                                           const std::int64_t* __restrict__ tgt, const std::uint8_t* __restrict__ skip,
                                                           float inv_t, float* logp, double* lse, float* ent, float* sp2) {
  const std::int64_t row = blockIdx.x;
  const std::int64_t y = tgt[row];
  if (y < 0 || (skip && skip[row] == 0)) {
    if (threadIdx.x == 0) {
      logp[row] = 0.f;
      if (lse) lse[row] = 0.0;
      if (ent) ent[row] = 0.f;
      if (sp2) sp2[row] = 0.f;
    }
    return;
  }
  if (y >= cols) { // out-of-range target: flagged as NaN (the launcher cannot scan device targets)
    if (threadIdx.x == 0) {
      logp[row] = NAN;
      if (lse) lse[row] = NAN;
      if (ent) ent[row] = NAN;
      if (sp2) sp2[row] = NAN;
    }
    return;
  }
  const T* xr = x + row * ld;
  const online st = row_forward<T, Entropy, Threads, SumP2>(xr, cols, inv_t * kLog2e);
  if (threadIdx.x == 0) {
    if (!(st.s > 0.f)) {
      logp[row] = -INFINITY;
      if (lse) lse[row] = -HUGE_VAL;
      if (ent) ent[row] = 0.f;
      if (sp2) sp2[row] = 0.f;
      return;
    }
    const double l = kLn2 * (static_cast<double>(st.m) + log2(static_cast<double>(st.s)));
    logp[row] = static_cast<float>(static_cast<double>(to_f<T>(xr[y])) * inv_t - l);
    if (lse) lse[row] = l;
    if (ent) ent[row] = static_cast<float>(kLn2 * (log2(static_cast<double>(st.s)) - static_cast<double>(st.t) / st.s));
    if constexpr (SumP2) sp2[row] = static_cast<float>(static_cast<double>(st.q) / (static_cast<double>(st.s) * st.s));
  }
}

/// Shared tail of the backward kernels: the sweep, then the target entry (logit_grad.hpp).
/// gh: upstream gradient of the entropy H (Entropy only).
template <class T, class G, int Threads, bool Entropy>
__device__ __forceinline__ void backward_body(const T* xr, G* gr, std::int64_t cols, std::int64_t y, double l, float gy, float gh,
                                              float H, float inv_t, float xy) {
  const double c = l * static_cast<double>(kLog2e);
  const float c_hi = static_cast<float>(c), c_lo = static_cast<float>(c - static_cast<double>(c_hi));
  const kernels::logit_grad_coeffs co = kernels::logit_grad_coefficients(gy, gh, H, inv_t);
  const row_rest rest = row_backward<T, G, Threads, Entropy>(xr, gr, cols, y, inv_t * kLog2e, c_hi, c_lo,
                                                             Entropy ? static_cast<float>(co.a) : gy * inv_t,
                                                             Entropy ? static_cast<float>(co.b) : 0.f);
  if (threadIdx.x == 0) {
    const double v = kernels::target_logit_grad(gy, gh, H, inv_t, static_cast<double>(xy) * inv_t - l, rest.p,
                                                kLn2 * static_cast<double>(rest.plog2p));
    gr[y] = from_f<G>(static_cast<float>(v));
  }
}

/// grad_logp may be null (= 0); entropy and grad_entropy are read only with Entropy.
template <class T, class G, int Threads, bool Entropy>
__global__ void __launch_bounds__(Threads) backward_kernel(const T* x, std::int64_t cols, std::int64_t ld, const std::int64_t* tgt,
                                                            const double* lse, const float* grad_logp, const float* entropy,
                                                            const float* grad_entropy, float inv_t, G* g, std::int64_t ldg) {
  const std::int64_t row = blockIdx.x;
  const std::int64_t y = tgt[row];
  G* gr = g + row * ldg;
  const float gy = grad_logp ? grad_logp[row] : 0.f;
  const float gh = Entropy ? grad_entropy[row] : 0.f;
  const double l = lse[row];
  if (y < 0 || y >= cols || (gy == 0.f && gh == 0.f) || !(l > -HUGE_VAL)) {
    row_zero<G, Threads>(gr, cols);
    return;
  }
  const T* xr = x + row * ld;
  __shared__ float xy_sh;
  if (threadIdx.x == 0) xy_sh = to_f<T>(xr[y]);
  __syncthreads(); // x[y] is read before any thread may overwrite it (in place)
  backward_body<T, G, Threads, Entropy>(xr, gr, cols, y, l, gy, gh, Entropy ? entropy[row] : 0.f, inv_t, xy_sh);
}

template <class T, class G, int Threads>
__global__ void __launch_bounds__(Threads) fwd_bwd_kernel(const T* x, std::int64_t cols, std::int64_t ld, const std::int64_t* tgt,
                                                           const float* grad_logp, float inv_t, float* logp, double* lse, G* g,
                                                           std::int64_t ldg) {
  extern __shared__ unsigned char occupancy_pad[]; // sized by the launcher to set blocks per SM
  (void)occupancy_pad;
  const std::int64_t row = blockIdx.x;
  const std::int64_t y = tgt[row];
  G* gr = g + row * ldg;
  const float gy = grad_logp[row];
  if (y < 0 || y >= cols) {
    if (threadIdx.x == 0) {
      logp[row] = y < 0 ? 0.f : NAN;
      if (lse) lse[row] = y < 0 ? 0.0 : NAN;
    }
    row_zero<G, Threads>(gr, cols);
    return;
  }
  const T* xr = x + row * ld;
  const float xy = to_f<T>(xr[y]);
  const online st = row_forward<T, false, Threads>(xr, cols, inv_t * kLog2e); // ends with __syncthreads
  const double l = st.s > 0.f ? kLn2 * (static_cast<double>(st.m) + log2(static_cast<double>(st.s))) : -HUGE_VAL;
  if (threadIdx.x == 0) {
    logp[row] = st.s > 0.f ? static_cast<float>(static_cast<double>(xy) * inv_t - l) : -INFINITY;
    if (lse) lse[row] = l;
  }
  if (gy == 0.f || !(l > -HUGE_VAL)) {
    row_zero<G, Threads>(gr, cols);
    return;
  }
  backward_body<T, G, Threads, false>(xr, gr, cols, y, l, gy, 0.f, 0.f, inv_t, xy);
}

template <class T>
inline bool valid_common(const T* x, std::int64_t rows, std::int64_t cols, std::int64_t ld, const std::int64_t* tgt, float temperature) {
  return rows >= 0 && cols >= 1 && ld >= cols && (rows == 0 || (x && tgt)) && temperature > 0.f && temperature < INFINITY;
}

} // namespace detail

/// Launch configuration of the fused forward+backward kernel.
struct fwd_bwd_config {
  bool one_block_per_sm = true; ///< pad shared memory so one 1024-thread block runs per SM (rows stay in L2)
};

template <class T>
inline constexpr bool is_cuda_logit_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

/// True when the forward launcher accepts these arguments.
template <class T>
bool can_implement_forward(const T* x, std::int64_t rows, std::int64_t cols, std::int64_t ld, const std::int64_t* tgt, float temperature,
                           const float* logp) noexcept {
  return detail::valid_common(x, rows, cols, ld, tgt, temperature) && (rows == 0 || logp) && rows <= 0x7fffffff;
}

/// Per-row outputs of the forward (device pointers, one entry per row). logp is required; the
/// others are optional (null = not computed).
struct forward_outputs {
  float* logp = nullptr;
  double* lse = nullptr;     ///< log-sum-exp of x / T (what the backward reads)
  float* entropy = nullptr;  ///< entropy of softmax(x / T)
  float* sum_p2 = nullptr;   ///< sum_v p_v^2 of p = softmax(x / T) (optimal token baseline)
};

/// The forward with every optional output: out.logp[i] = log softmax(x_i / T)[t_i], and lse,
/// entropy, sum_p2 where given. skip (optional, uint8 0/1): rows with 0 are not read.
template <class T>
status selective_log_softmax_forward(const T* logits, std::int64_t rows, std::int64_t cols, std::int64_t ld, const std::int64_t* targets,
                                     float temperature, const forward_outputs& out, const std::uint8_t* skip = nullptr,
                                     cudaStream_t stream = nullptr) noexcept {
  static_assert(is_cuda_logit_type_v<T>, "logits must be float, __nv_bfloat16 or __half");
  if (!can_implement_forward(logits, rows, cols, ld, targets, temperature, out.logp)) return status::invalid_argument;
  if (rows == 0) return status::success;
  constexpr int threads = 256;
  const float inv_t = 1.0f / temperature;
  const auto blocks = static_cast<unsigned>(rows);
  if (out.entropy && out.sum_p2)
    detail::forward_kernel<T, true, true, threads><<<blocks, threads, 0, stream>>>(logits, cols, ld, targets, skip, inv_t, out.logp,
                                                                                  out.lse, out.entropy, out.sum_p2);
  else if (out.sum_p2)
    detail::forward_kernel<T, false, true, threads><<<blocks, threads, 0, stream>>>(logits, cols, ld, targets, skip, inv_t, out.logp,
                                                                                   out.lse, nullptr, out.sum_p2);
  else if (out.entropy)
    detail::forward_kernel<T, true, false, threads><<<blocks, threads, 0, stream>>>(logits, cols, ld, targets, skip, inv_t, out.logp,
                                                                                   out.lse, out.entropy, nullptr);
  else
    detail::forward_kernel<T, false, false, threads><<<blocks, threads, 0, stream>>>(logits, cols, ld, targets, skip, inv_t, out.logp,
                                                                                    out.lse, nullptr, nullptr);
  return cudaGetLastError() == cudaSuccess ? status::success : status::launch_failed;
}

/// logp[i] = log softmax(x_i / T)[t_i]; lse (double, optional) and entropy (optional) per row.
/// skip (optional, uint8 0/1): rows with 0 are not read.
template <class T>
status selective_log_softmax_forward(const T* logits, std::int64_t rows, std::int64_t cols, std::int64_t ld, const std::int64_t* targets,
                                     float temperature, float* logp, double* lse, float* entropy, const std::uint8_t* skip = nullptr,
                                     cudaStream_t stream = nullptr) noexcept {
  return selective_log_softmax_forward<T>(logits, rows, cols, ld, targets, temperature, forward_outputs{logp, lse, entropy, nullptr}, skip,
                                          stream);
}

/// What the backward reads besides the logits (device pointers; msrl::backward_arrays).
using backward_inputs = msrl::backward_arrays;

/// grad[i, :] = grad_logp[i] (onehot(t_i) - p_i) / T - grad_entropy[i] p_i (log p_i + H_i) / T with
/// p_i = softmax(x_i / T). grad may equal logits (same type and ld) for in place.
template <class T, class G>
status selective_log_softmax_backward(const T* logits, std::int64_t rows, std::int64_t cols, std::int64_t ld, const std::int64_t* targets,
                                      float temperature, const backward_inputs& in, G* grad, std::int64_t ldg,
                                      cudaStream_t stream = nullptr) noexcept {
  static_assert(is_cuda_logit_type_v<T> && is_cuda_logit_type_v<G>, "logits / grad must be float, __nv_bfloat16 or __half");
  if (!detail::valid_common(logits, rows, cols, ld, targets, temperature) || ldg < cols ||
      (rows && (!in.lse || !grad || (in.grad_entropy && !in.entropy))))
    return status::invalid_argument;
  if (rows > 0x7fffffff) return status::unsupported;
  if (rows == 0) return status::success;
  constexpr int threads = 256;
  const auto blocks = static_cast<unsigned>(rows);
  if (in.grad_entropy)
    detail::backward_kernel<T, G, threads, true><<<blocks, threads, 0, stream>>>(logits, cols, ld, targets, in.lse, in.grad_logp, in.entropy,
                                                                                 in.grad_entropy, 1.0f / temperature, grad, ldg);
  else
    detail::backward_kernel<T, G, threads, false><<<blocks, threads, 0, stream>>>(logits, cols, ld, targets, in.lse, in.grad_logp, nullptr,
                                                                                  nullptr, 1.0f / temperature, grad, ldg);
  return cudaGetLastError() == cudaSuccess ? status::success : status::launch_failed;
}

/// grad[i, :] = grad_logp[i] (onehot(t_i) - softmax(x_i / T)) / T, with lse from the forward.
/// grad may equal logits (same type and ld) for in place.
template <class T, class G>
status selective_log_softmax_backward(const T* logits, std::int64_t rows, std::int64_t cols, std::int64_t ld, const std::int64_t* targets,
                                      float temperature, const double* lse, const float* grad_logp, G* grad, std::int64_t ldg,
                                      cudaStream_t stream = nullptr) noexcept {
  if (rows && !grad_logp) return status::invalid_argument;
  return selective_log_softmax_backward<T, G>(logits, rows, cols, ld, targets, temperature, backward_inputs{lse, grad_logp, nullptr, nullptr},
                                              grad, ldg, stream);
}

/// Forward and backward in one kernel when the upstream gradient per token is known up front
/// (e.g. a loss linear in logp, or the second step of a two-step loss). lse optional.
template <class T, class G>
status selective_log_softmax_fwd_bwd(const T* logits, std::int64_t rows, std::int64_t cols, std::int64_t ld, const std::int64_t* targets,
                                     float temperature, const float* grad_logp, float* logp, double* lse, G* grad, std::int64_t ldg,
                                     fwd_bwd_config cfg = {}, cudaStream_t stream = nullptr) noexcept {
  static_assert(is_cuda_logit_type_v<T> && is_cuda_logit_type_v<G>, "logits / grad must be float, __nv_bfloat16 or __half");
  if (!detail::valid_common(logits, rows, cols, ld, targets, temperature) || ldg < cols || (rows && (!logp || !grad_logp || !grad)))
    return status::invalid_argument;
  if (rows > 0x7fffffff) return status::unsupported;
  if (rows == 0) return status::success;
  constexpr int threads = 1024;
  auto kern = detail::fwd_bwd_kernel<T, G, threads>;
  int smem = 0;
  if (cfg.one_block_per_sm) {
    int dev = 0, per_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) != cudaSuccess)
      return status::launch_failed;
    smem = per_sm / 2 + 1024; // two blocks no longer fit
    if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess) return status::launch_failed;
  }
  kern<<<static_cast<unsigned>(rows), threads, static_cast<std::size_t>(smem), stream>>>(logits, cols, ld, targets, grad_logp,
                                                                                       1.0f / temperature, logp, lse, grad, ldg);
  return cudaGetLastError() == cudaSuccess ? status::success : status::launch_failed;
}

} // namespace msrl::cuda
