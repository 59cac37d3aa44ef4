#pragma once
/// \file Vector instruction sets for the host logit kernels. Each ISA is a struct of static
/// functions compiled for that ISA with a GCC/Clang target attribute, so the library stays
/// header-only and runs on any x86-64 (runtime dispatch) without -march flags.
///
/// exp: range reduction e^d = 2^n e^r, |r| <= ln2/2, with a degree-5 minimax polynomial for
/// e^r (the classic Cephes expf coefficients, ~1 ulp), and 2^n built in the exponent bits.
/// Inputs below -87.3 (where 2^n would leave the normal range) return exactly 0, so -inf logits
/// contribute exactly nothing and never produce NaN.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../half.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MSRL_KERNELS_X86 1
#include <immintrin.h>
#define MSRL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define MSRL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

// GCC 12 flags the self-initialised "undefined" vectors inside its own AVX-512 intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace msrl::kernels::detail {

inline constexpr float exp_lo = -87.3f;  ///< below this e^d is returned as exactly 0
inline constexpr float exp_p0 = 1.9875691500e-4f, exp_p1 = 1.3981999507e-3f, exp_p2 = 8.3334519073e-3f,
                       exp_p3 = 4.1665795894e-2f, exp_p4 = 1.6666665459e-1f, exp_p5 = 5.0000001201e-1f;
inline constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f, log2e = 1.44269504088896341f;

/// Portable scalar ISA (width 1): the fallback and the reference for the vector paths' structure.
struct isa_scalar {
  static constexpr int width = 1;
  using vec = float;
  using mask = bool;
  static vec set1(float x) { return x; }
  static vec add(vec a, vec b) { return a + b; }
  static vec sub(vec a, vec b) { return a - b; }
  static vec mul(vec a, vec b) { return a * b; }
  static vec fma(vec a, vec b, vec c) { return std::fma(a, b, c); }
  static vec max(vec a, vec b) { return a > b ? a : b; }
  static mask gt(vec a, vec b) { return a > b; }
  static bool any(mask m) { return m; }
  static vec exp(vec d) {
    if (!(d >= exp_lo)) return 0.0f;
    const float n = __builtin_nearbyintf(d * log2e);
    float r = std::fma(-n, ln2_hi, d);
    r = std::fma(-n, ln2_lo, r);
    float p = std::fma(exp_p0, r, exp_p1);
    p = std::fma(p, r, exp_p2);
    p = std::fma(p, r, exp_p3);
    p = std::fma(p, r, exp_p4);
    p = std::fma(p, r, exp_p5);
    p = std::fma(p * r, r, r + 1.0f);
    const std::int32_t e = (static_cast<std::int32_t>(n) + 127) << 23;
    float s;
    std::memcpy(&s, &e, 4);
    return p * s;
  }
  template <class T>
  static vec load(const T* p) { return to_float(*p); }
  template <class G>
  static void store(G* p, vec v) { *p = from_float<G>(v); }
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
  MSRL_TARGET_AVX512 static inline vec exp(vec d) {
    const mask under = _mm512_cmp_ps_mask(d, _mm512_set1_ps(exp_lo), _CMP_LT_OQ);
    d = _mm512_max_ps(d, _mm512_set1_ps(exp_lo));
    const vec n = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vec r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_hi), d);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_lo), r);
    vec p = _mm512_fmadd_ps(_mm512_set1_ps(exp_p0), r, _mm512_set1_ps(exp_p1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p5));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(static_cast<mask>(~under), p, _mm512_castsi512_ps(e));
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
  template <class G>
  MSRL_TARGET_AVX512 static inline void store(G* p, vec v) {
    if constexpr (std::is_same_v<G, float>) {
      _mm512_storeu_ps(p, v);
    } else if constexpr (std::is_same_v<G, bf16>) {
      // round to nearest even on the bit pattern (gradients are finite)
      __m512i u = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
  MSRL_TARGET_AVX512 static inline void lanes(vec v, float* out) { _mm512_storeu_ps(out, v); }
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
  MSRL_TARGET_AVX2 static inline vec exp(vec d) {
    const vec keep = _mm256_cmp_ps(d, _mm256_set1_ps(exp_lo), _CMP_GE_OQ);
    d = _mm256_max_ps(d, _mm256_set1_ps(exp_lo));
    const vec n = _mm256_round_ps(_mm256_mul_ps(d, _mm256_set1_ps(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vec r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_hi), d);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_lo), r);
    vec p = _mm256_fmadd_ps(_mm256_set1_ps(exp_p0), r, _mm256_set1_ps(exp_p1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p5));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
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
  template <class G>
  MSRL_TARGET_AVX2 static inline void store(G* p, vec v) {
    if constexpr (std::is_same_v<G, float>) {
      _mm256_storeu_ps(p, v);
    } else if constexpr (std::is_same_v<G, bf16>) {
      __m256i u = _mm256_castps_si256(v);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      u = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
      // pack 8 x u32 (< 65536) into 8 x u16
      const __m128i lo = _mm256_castsi256_si128(u), hi = _mm256_extracti128_si256(u, 1);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(lo, hi));
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
  MSRL_TARGET_AVX2 static inline void lanes(vec v, float* out) { _mm256_storeu_ps(out, v); }
};

#endif

} // namespace msrl::kernels::detail
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
