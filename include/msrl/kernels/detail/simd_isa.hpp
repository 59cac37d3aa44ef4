#pragma once
/// \file Vector instruction sets for the host logit kernels. Each ISA is a struct of static
/// functions compiled for that ISA with a GCC/Clang target attribute, so the library stays
/// header-only and runs on any x86-64 (runtime dispatch) without -march flags.
///
/// exp2 (the hot one): 2^d = 2^n 2^f, n = round(d), |f| <= 1/2, a degree-6 polynomial for 2^f and
/// 2^n from vscalefps (AVX-512) or the exponent bits (AVX2, scalar). The caller clamps d to
/// >= exp2_lo first; at exp2_lo the result is exactly 0, so -inf logits contribute exactly
/// nothing and never produce NaN. Callers pass d = (x - m) * (log2 e / T) with m a raw logit, so
/// the rounding of d is relative to |x - m| and small where softmax is large.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../half.hpp"

#include "../../core/cpu_isa.hpp"
#ifdef MSRL_X86_DISPATCH
#define MSRL_KERNELS_X86 1
#include <immintrin.h>
#endif

// GCC 12 flags the self-initialised "undefined" vectors inside its own AVX-512 intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace msrl::kernels::detail {

inline constexpr float log2e = 1.44269504088896341f;
/// 2^f on |f| <= 1/2: Taylor coefficients ln2^k / k!, degree 6 (truncation < 1.3e-7 relative).
inline constexpr float e2_c1 = 0.693147180559945309f, e2_c2 = 0.240226506959100712f, e2_c3 = 0.0555041086648215800f,
                       e2_c4 = 0.00961812910762847716f, e2_c5 = 0.00133335581464284434f, e2_c6 = 0.000154035303933816099f;

/// Portable scalar ISA (width 1): the fallback and the reference for the vector paths' structure.
struct isa_scalar {
  static constexpr int width = 1;
  using vec = float;
  using mask = bool;
  static vec set1(float x) { return x; }
  static vec add(vec a, vec b) { return a + b; }
  static vec sub(vec a, vec b) { return a - b; }
  static vec mul(vec a, vec b) { return a * b; }
  static vec fma(vec a, vec b, vec c) { return a * b + c; } // no libm call where FMA is absent
  static vec max(vec a, vec b) { return a > b ? a : b; }
  static mask gt(vec a, vec b) { return a > b; }
  static bool any(mask m) { return m; }
  static constexpr float exp2_lo = -127.0f;
  static vec exp2(vec d) {
    const float n = __builtin_nearbyintf(d), f = d - n;
    float p = e2_c6 * f + e2_c5;
    p = p * f + e2_c4;
    p = p * f + e2_c3;
    p = p * f + e2_c2;
    p = p * f + e2_c1;
    p = p * f + 1.0f;
    const std::int32_t e = (static_cast<std::int32_t>(n) + 127) << 23; // n = -127: +0.0
    float sc;
    std::memcpy(&sc, &e, 4);
    return p * sc;
  }
  template <class T>
  static vec load(const T* p) { return to_float(*p); }
  template <class G>
  static void store(G* p, vec v) { *p = from_float<G>(v); }
  /// The store that bypasses the caches (here: a plain store); p aligned to width * sizeof(G).
  template <class G>
  static void stream(G* p, vec v) { store<G>(p, v); }
  static void fence() {}
  static void lanes(vec v, float* out) { out[0] = v; }
};

#ifdef MSRL_KERNELS_X86

struct isa_avx512 {
  static constexpr int width = 16;
  using vec = __m512;
  using mask = __mmask16;
  MSRL_TARGET_AVX512 static inline vec set1(float x) { return _mm512_set1_ps(x); }
  MSRL_TARGET_AVX512 static inline vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  MSRL_TARGET_AVX512 static inline vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  MSRL_TARGET_AVX512 static inline vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  MSRL_TARGET_AVX512 static inline vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  MSRL_TARGET_AVX512 static inline vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  MSRL_TARGET_AVX512 static inline mask gt(vec a, vec b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  MSRL_TARGET_AVX512 static inline bool any(mask m) { return m != 0; }
  static constexpr float exp2_lo = -150.0f; // 2^-150 rounds to +0
  MSRL_TARGET_AVX512 static inline vec exp2(vec d) {
    const vec n = _mm512_roundscale_ps(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vec f = _mm512_sub_ps(d, n);
    vec p = _mm512_fmadd_ps(_mm512_set1_ps(e2_c6), f, _mm512_set1_ps(e2_c5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(e2_c4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(e2_c3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(e2_c2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(e2_c1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
  }
  template <class T>
  MSRL_TARGET_AVX512 static inline vec load(const T* p) {
    if constexpr (std::is_same_v<T, float>) {
      return _mm512_loadu_ps(p);
    } else if constexpr (std::is_same_v<T, bf16>) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
  }
  /// The 16 lanes as bf16 / fp16 bits.
  template <class G>
  MSRL_TARGET_AVX512 static inline __m256i to_half(vec v) {
    if constexpr (std::is_same_v<G, bf16>) {
      // round to nearest even on the bit pattern (gradients are finite)
      __m512i u = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
      return _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16));
    } else {
      return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
  }
  template <class G>
  MSRL_TARGET_AVX512 static inline void store(G* p, vec v) {
    if constexpr (std::is_same_v<G, float>) _mm512_storeu_ps(p, v);
    else _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_half<G>(v));
  }
  /// A non-temporal store (no read for ownership, the caches bypassed); p aligned to 16 * sizeof(G).
  template <class G>
  MSRL_TARGET_AVX512 static inline void stream(G* p, vec v) {
    if constexpr (std::is_same_v<G, float>) _mm512_stream_ps(p, v);
    else _mm256_stream_si256(reinterpret_cast<__m256i*>(p), to_half<G>(v));
  }
  /// Orders the non-temporal stores before what follows.
  MSRL_TARGET_AVX512 static inline void fence() { _mm_sfence(); }
  MSRL_TARGET_AVX512 static inline void lanes(vec v, float* out) { _mm512_storeu_ps(out, v); }
};

/// AVX-512 whose bf16 stores take AVX512_BF16's conversion (vcvtneps2bf16: round to nearest
/// even, one instruction instead of five). It reads fp32 subnormals as zero, so a gradient below
/// 2^-126 in magnitude is stored as 0 where isa_avx512 keeps a bf16 subnormal; every other
/// finite value gets the same bits (test_selective_log_softmax compares the two).
struct isa_avx512_bf16 : isa_avx512 {
  template <class G>
  MSRL_TARGET_AVX512_BF16 static inline void store(G* p, vec v) {
    if constexpr (std::is_same_v<G, bf16>)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), __builtin_bit_cast(__m256i, _mm512_cvtneps_pbh(v)));
    else
      isa_avx512::store<G>(p, v);
  }
  template <class G>
  MSRL_TARGET_AVX512_BF16 static inline void stream(G* p, vec v) {
    if constexpr (std::is_same_v<G, bf16>)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(p), __builtin_bit_cast(__m256i, _mm512_cvtneps_pbh(v)));
    else
      isa_avx512::stream<G>(p, v);
  }
};

struct isa_avx2 {
  static constexpr int width = 8;
  using vec = __m256;
  using mask = __m256;
  MSRL_TARGET_AVX2 static inline vec set1(float x) { return _mm256_set1_ps(x); }
  MSRL_TARGET_AVX2 static inline vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  MSRL_TARGET_AVX2 static inline vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
  MSRL_TARGET_AVX2 static inline vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  MSRL_TARGET_AVX2 static inline vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  MSRL_TARGET_AVX2 static inline vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  MSRL_TARGET_AVX2 static inline mask gt(vec a, vec b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  MSRL_TARGET_AVX2 static inline bool any(mask m) { return _mm256_movemask_ps(m) != 0; }
  static constexpr float exp2_lo = -127.0f; // exponent field 0: +0
  MSRL_TARGET_AVX2 static inline vec exp2(vec d) {
    const vec n = _mm256_round_ps(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vec f = _mm256_sub_ps(d, n);
    vec p = _mm256_fmadd_ps(_mm256_set1_ps(e2_c6), f, _mm256_set1_ps(e2_c5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(e2_c4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(e2_c3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(e2_c2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(e2_c1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  template <class T>
  MSRL_TARGET_AVX2 static inline vec load(const T* p) {
    if constexpr (std::is_same_v<T, float>) {
      return _mm256_loadu_ps(p);
    } else if constexpr (std::is_same_v<T, bf16>) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
  }
  /// The 8 lanes as bf16 / fp16 bits.
  template <class G>
  MSRL_TARGET_AVX2 static inline __m128i to_half(vec v) {
    if constexpr (std::is_same_v<G, bf16>) {
      __m256i u = _mm256_castps_si256(v);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      u = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
      // pack 8 x u32 (< 65536) into 8 x u16
      return _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    } else {
      return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
  }
  template <class G>
  MSRL_TARGET_AVX2 static inline void store(G* p, vec v) {
    if constexpr (std::is_same_v<G, float>) _mm256_storeu_ps(p, v);
    else _mm_storeu_si128(reinterpret_cast<__m128i*>(p), to_half<G>(v));
  }
  /// A non-temporal store; p aligned to 8 * sizeof(G).
  template <class G>
  MSRL_TARGET_AVX2 static inline void stream(G* p, vec v) {
    if constexpr (std::is_same_v<G, float>) _mm256_stream_ps(p, v);
    else _mm_stream_si128(reinterpret_cast<__m128i*>(p), to_half<G>(v));
  }
  MSRL_TARGET_AVX2 static inline void fence() { _mm_sfence(); }
  MSRL_TARGET_AVX2 static inline void lanes(vec v, float* out) { _mm256_storeu_ps(out, v); }
};

#endif

} // namespace msrl::kernels::detail
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
