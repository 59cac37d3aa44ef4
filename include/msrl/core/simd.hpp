#pragma once
/// \file Lane types for msrl's formulas. Every formula in grpo/scalar_math.hpp is a template over
/// a lane type V: `double` (one lane; host and device) or, on GCC/Clang x86-64 host builds, a
/// vector `lanes<E, W>` of W elements of type E (float or double) in one native register (GCC
/// vector extensions wrapped so that double constants and scalars mix with float lanes). Masks
/// are `bool` for double and an integer vector (all-ones / zero per lane) for `lanes`.
///
/// Which vector type runs is chosen at run time (core/cpu_isa.hpp): a pass is written once as a
/// template over its vector lane type VL, and `host_lanes` calls it with the type of the ISA the
/// CPU has (through a function compiled for that ISA), `double` elsewhere. fp32 inputs get fp32
/// lanes (16 per AVX-512 register), everything else double lanes (8).
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "cpu_isa.hpp"

// Vector lanes need the optimiser: they rely on the lane bodies being inlined into the function
// compiled for their ISA (at -O0 every formula would be a call across ISAs). Unoptimised builds run
// the scalar lanes.
#if defined(MSRL_X86_DISPATCH) && !defined(__CUDACC__) && !defined(MSRL_NO_VECTOR_LANES) && defined(__OPTIMIZE__)
#define MSRL_HAS_VECTOR_LANES 1
#include <immintrin.h>
#endif


// Vector lane types are passed by value only between always-inline functions, inside functions
// compiled for their ISA: GCC's note that their ABI differs without that ISA does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace msrl::simd {

template <class V>
struct lane_traits;

template <>
struct lane_traits<double> {
  static constexpr int width = 1;
  using elem = double;
  using mask = bool;
  using int_type = std::int64_t;
};

#ifdef MSRL_HAS_VECTOR_LANES
template <class E>
using int_of = std::conditional_t<sizeof(E) == 8, std::int64_t, std::int32_t>;

/// W lanes of E in one register (`lanes`), and the integer lanes of the same shape (`ilanes`: the
/// masks, all-ones / zero per lane, and the bit patterns of exp). Arithmetic with another vector or
/// with a scalar (converted to E), comparisons giving the mask, element reads. Every operation on
/// the register is a member compiled for the ISA of its width (64 bytes: AVX-512, 32: AVX2): GCC
/// lowers vector comparisons and conditions lane by lane when they are written in a function
/// compiled for a narrower ISA, even when it is inlined into one for the right ISA.
template <class E, int W, int Bytes = static_cast<int>(sizeof(E)) * W>
struct lanes;
template <class E, int W, int Bytes = static_cast<int>(sizeof(E)) * W>
struct ilanes;

namespace detail {
// Bytes (masks) to float / double lanes with the x86 widening instructions.
typedef float raw_f32x16 __attribute__((vector_size(64), aligned(16)));
typedef double raw_f64x8 __attribute__((vector_size(64), aligned(16)));
typedef float raw_f32x8 __attribute__((vector_size(32), aligned(16)));
typedef double raw_f64x4 __attribute__((vector_size(32), aligned(16)));
MSRL_TARGET_AVX512 inline void load_bytes(const std::uint8_t* p, raw_f32x16& r) {
  r = __builtin_bit_cast(raw_f32x16, _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepu8_epi32(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
}
MSRL_TARGET_AVX512 inline void load_bytes(const std::uint8_t* p, raw_f64x8& r) {
  r = __builtin_bit_cast(raw_f64x8, _mm512_maskz_cvtepi32_pd(0xff, _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
}
MSRL_TARGET_AVX2 inline void load_bytes(const std::uint8_t* p, raw_f32x8& r) {
  r = __builtin_bit_cast(raw_f32x8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
}
MSRL_TARGET_AVX2 inline void load_bytes(const std::uint8_t* p, raw_f64x4& r) {
  std::int32_t four;
  std::memcpy(&four, p, 4);
  r = __builtin_bit_cast(raw_f64x4, _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(four))));
}
// The vector {0, 1, ..., W - 1}.
template <class R, int W, std::size_t... J>
constexpr R iota_of(std::index_sequence<J...>) {
  return R{static_cast<std::remove_reference_t<decltype(R{}[0])>>(J)...};
}
template <class R, int W>
constexpr R iota() {
  return iota_of<R, W>(std::make_index_sequence<W>{});
}

// A row's tail: the first n lanes loaded (the rest 0) or stored, in registers (no buffer, so the
// pass stays one flattened function). Returns false for the types not covered here.
MSRL_TARGET_AVX512 inline bool load_first(const float* p, int n, raw_f32x16& r) {
  r = __builtin_bit_cast(raw_f32x16, _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p));
  return true;
}
MSRL_TARGET_AVX512 inline bool load_first(const double* p, int n, raw_f64x8& r) {
  r = __builtin_bit_cast(raw_f64x8, _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p));
  return true;
}
MSRL_TARGET_AVX512 inline bool load_first(const std::uint8_t* p, int n, raw_f32x16& r) {
  const __m128i b = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1u), p);
  r = __builtin_bit_cast(raw_f32x16, _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepu8_epi32(0xffff, b)));
  return true;
}
MSRL_TARGET_AVX512 inline bool load_first(const std::uint8_t* p, int n, raw_f64x8& r) {
  const __m128i b = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1u), p);
  r = __builtin_bit_cast(raw_f64x8, _mm512_maskz_cvtepi32_pd(0xff, _mm256_cvtepu8_epi32(b)));
  return true;
}
MSRL_TARGET_AVX512 inline bool store_first(float* p, int n, raw_f32x16 v) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), __builtin_bit_cast(__m512, v));
  return true;
}
MSRL_TARGET_AVX512 inline bool store_first(double* p, int n, raw_f64x8 v) {
  _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), __builtin_bit_cast(__m512d, v));
  return true;
}
MSRL_TARGET_AVX2 inline __m256i first_lanes32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
MSRL_TARGET_AVX2 inline __m256i first_lanes64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
MSRL_TARGET_AVX2 inline std::uint64_t first_bytes(const std::uint8_t* p, int n) {
  std::uint64_t b = 0;
  for (int j = 0; j < n; ++j) b |= static_cast<std::uint64_t>(p[j]) << (8 * j);
  return b;
}
MSRL_TARGET_AVX2 inline bool load_first(const float* p, int n, raw_f32x8& r) {
  r = __builtin_bit_cast(raw_f32x8, _mm256_maskload_ps(p, first_lanes32(n)));
  return true;
}
MSRL_TARGET_AVX2 inline bool load_first(const double* p, int n, raw_f64x4& r) {
  r = __builtin_bit_cast(raw_f64x4, _mm256_maskload_pd(p, first_lanes64(n)));
  return true;
}
MSRL_TARGET_AVX2 inline bool load_first(const std::uint8_t* p, int n, raw_f32x8& r) {
  const __m128i b = _mm_cvtsi64_si128(static_cast<long long>(first_bytes(p, n)));
  r = __builtin_bit_cast(raw_f32x8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
  return true;
}
MSRL_TARGET_AVX2 inline bool load_first(const std::uint8_t* p, int n, raw_f64x4& r) {
  const __m128i b = _mm_cvtsi32_si128(static_cast<int>(first_bytes(p, n)));
  r = __builtin_bit_cast(raw_f64x4, _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(b)));
  return true;
}
MSRL_TARGET_AVX2 inline bool store_first(float* p, int n, raw_f32x8 v) {
  _mm256_maskstore_ps(p, first_lanes32(n), __builtin_bit_cast(__m256, v));
  return true;
}
MSRL_TARGET_AVX2 inline bool store_first(double* p, int n, raw_f64x4 v) {
  _mm256_maskstore_pd(p, first_lanes64(n), __builtin_bit_cast(__m256d, v));
  return true;
}

MSRL_TARGET_AVX512 inline bool any_bits(__m512i v) { return _mm512_test_epi32_mask(v, v) != 0; }
MSRL_TARGET_AVX2 inline bool any_bits(__m256i v) { return !_mm256_testz_si256(v, v); }
// The number of set lanes of a mask whose lanes are all ones or all zeros (S: the lane's bytes).
template <int S>
MSRL_TARGET_AVX512 inline int count_lanes(__m512i v) {
  if constexpr (S == 4) return __builtin_popcount(static_cast<unsigned>(_mm512_movepi32_mask(v)));
  else return __builtin_popcount(static_cast<unsigned>(_mm512_movepi64_mask(v)));
}
template <int S>
MSRL_TARGET_AVX2 inline int count_lanes(__m256i v) {
  if constexpr (S == 4) return __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(v))));
  else return __builtin_popcount(static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(v))));
}
} // namespace detail

#define MSRL_DEFINE_LANES(BYTES, TGT, ITYPE)                                                                                \
  template <class E, int W>                                                                                          \
  struct ilanes<E, W, BYTES> {                                                                                       \
    using I = int_of<E>;                                                                                             \
    typedef I raw __attribute__((vector_size(BYTES), aligned(16)));                                                               \
    raw v;                                                                                                           \
    TGT inline friend ilanes operator&(ilanes a, ilanes b) { return {a.v & b.v}; }                         \
    TGT inline friend ilanes operator|(ilanes a, ilanes b) { return {a.v | b.v}; }                         \
    TGT inline ilanes operator~() const { return {~v}; }                                                   \
    TGT inline friend ilanes operator+(ilanes a, ilanes b) { return {a.v + b.v}; }                         \
    TGT inline friend ilanes operator-(ilanes a, ilanes b) { return {a.v - b.v}; }                         \
    TGT inline friend ilanes operator+(ilanes a, std::int64_t b) { return {a.v + static_cast<I>(b)}; }    \
    TGT inline friend ilanes operator-(ilanes a, std::int64_t b) { return {a.v - static_cast<I>(b)}; }    \
    TGT inline friend ilanes operator<<(ilanes a, int b) { return {a.v << b}; }                            \
    TGT inline friend ilanes operator>>(ilanes a, int b) { return {a.v >> b}; }                            \
    /* whether any lane is set */                                                                                    \
    TGT inline bool any() const {                                                                                    \
      return detail::any_bits(__builtin_bit_cast(ITYPE, v));                                                         \
    }                                                                                                                \
    /* the number of set lanes */                                                                                    \
    TGT inline int count() const {                                                                                   \
      return detail::count_lanes<static_cast<int>(sizeof(I))>(__builtin_bit_cast(ITYPE, v));                         \
    }                                                                                                                \
  };                                                                                                                 \
  template <class E, int W>                                                                                          \
  struct lanes<E, W, BYTES> {                                                                                        \
    typedef E raw __attribute__((vector_size(BYTES), aligned(16)));                                                               \
    using mask = ilanes<E, W>;                                                                                       \
    raw v;                                                                                                           \
    TGT inline friend lanes operator+(lanes a, lanes b) { return {a.v + b.v}; }                            \
    TGT inline friend lanes operator-(lanes a, lanes b) { return {a.v - b.v}; }                            \
    TGT inline friend lanes operator*(lanes a, lanes b) { return {a.v * b.v}; }                            \
    TGT inline friend lanes operator/(lanes a, lanes b) { return {a.v / b.v}; }                            \
    TGT inline friend lanes operator+(lanes a, double b) { return {a.v + static_cast<E>(b)}; }             \
    TGT inline friend lanes operator-(lanes a, double b) { return {a.v - static_cast<E>(b)}; }             \
    TGT inline friend lanes operator*(lanes a, double b) { return {a.v * static_cast<E>(b)}; }             \
    TGT inline friend lanes operator/(lanes a, double b) { return {a.v / static_cast<E>(b)}; }             \
    TGT inline friend lanes operator+(double a, lanes b) { return {static_cast<E>(a) + b.v}; }             \
    TGT inline friend lanes operator-(double a, lanes b) { return {static_cast<E>(a) - b.v}; }             \
    TGT inline friend lanes operator*(double a, lanes b) { return {static_cast<E>(a) * b.v}; }             \
    TGT inline friend lanes operator/(double a, lanes b) { return {static_cast<E>(a) / b.v}; }             \
    TGT inline lanes operator-() const { return {-v}; }                                                    \
    TGT inline friend mask operator<(lanes a, lanes b) { return {a.v < b.v}; }                             \
    TGT inline friend mask operator<=(lanes a, lanes b) { return {a.v <= b.v}; }                           \
    TGT inline friend mask operator>(lanes a, lanes b) { return {a.v > b.v}; }                             \
    TGT inline friend mask operator>=(lanes a, lanes b) { return {a.v >= b.v}; }                           \
    TGT inline friend mask operator==(lanes a, lanes b) { return {a.v == b.v}; }                           \
    TGT inline friend mask operator!=(lanes a, lanes b) { return {a.v != b.v}; }                           \
    TGT inline E operator[](int j) const { return v[j]; }                                                  \
    TGT static inline lanes blend(mask m, lanes a, lanes b) { return {m.v ? a.v : b.v}; }                  \
    TGT static inline mask bits(lanes a) { return {__builtin_bit_cast(typename mask::raw, a.v)}; }              \
    TGT static inline lanes from_bits(mask m) { return {__builtin_bit_cast(raw, m.v)}; }                        \
    /* W contiguous elements of p converted to E (one vector conversion for float, double, bytes) */                 \
    template <class T>                                                                                               \
    TGT static inline lanes load(const T* p) {                                                             \
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::uint8_t> ||     \
                    std::is_same_v<T, bool>) {                                                                       \
        using U = std::conditional_t<std::is_same_v<T, bool>, std::uint8_t, T>;                                      \
        typedef U S __attribute__((vector_size(sizeof(U) * W)));                                                     \
        S s;                                                                                                         \
        std::memcpy(&s, p, sizeof s);                                                                                \
        if constexpr (std::is_same_v<U, E>) {                                                                      \
          return {s};                                                                                                \
        } else if constexpr (std::is_same_v<U, std::uint8_t>) { /* GCC 12 widens bytes lane by lane */             \
          raw r;                                                                                                     \
          detail::load_bytes(reinterpret_cast<const std::uint8_t*>(p), r);                                           \
          return {r};                                                                                                \
        } else {                                                                                                     \
          return {__builtin_convertvector(s, raw)};                                                                  \
        }                                                                                                            \
      } else {                                                                                                       \
        raw r{};                                                                                                     \
        for (int j = 0; j < W; ++j) r[j] = static_cast<E>(static_cast<double>(p[j]));                               \
        return {r};                                                                                                  \
      }                                                                                                              \
    }                                                                                                                \
    template <class G>                                                                                               \
    TGT inline void store(G* p) const {                                                                    \
      if constexpr (std::is_same_v<G, float> || std::is_same_v<G, double>) {                                         \
        typedef G S __attribute__((vector_size(sizeof(G) * W)));                                                     \
        if constexpr (std::is_same_v<G, E>) {                                                                      \
          std::memcpy(p, &v, sizeof v);                                                                              \
        } else {                                                                                                     \
          const S s = __builtin_convertvector(v, S);                                                                 \
          std::memcpy(p, &s, sizeof s);                                                                              \
        }                                                                                                            \
      } else {                                                                                                       \
        for (int j = 0; j < W; ++j) p[j] = static_cast<G>(v[j]);                                                     \
      }                                                                                                              \
    }                                                                                                                \
    /* the first n < W elements of p, the other lanes 0 (a row's tail): in registers for float, double */        \
    /* and byte arrays; other element types go through a buffer in a function of its own */                        \
    template <class T>                                                                                               \
    TGT inline static lanes load_n(const T* p, int n) {                                                              \
      using U = std::conditional_t<std::is_same_v<T, bool>, std::uint8_t, T>;                                        \
      if constexpr (std::is_same_v<U, E> || std::is_same_v<U, std::uint8_t>) {                                       \
        raw r;                                                                                                       \
        detail::load_first(reinterpret_cast<const U*>(p), n, r);                                                     \
        return {r};                                                                                                  \
      } else {                                                                                                       \
        return load_n_buffered(p, n);                                                                                \
      }                                                                                                              \
    }                                                                                                                \
    template <class T>                                                                                               \
    TGT __attribute__((noinline)) static lanes load_n_buffered(const T* p, int n) {                                  \
      T buf[W] = {};                                                                                                 \
      std::memcpy(buf, p, sizeof(T) * static_cast<std::size_t>(n));                                                 \
      return load(buf);                                                                                              \
    }                                                                                                                \
    template <class G>                                                                                               \
    TGT inline void store_n(G* p, int n) const {                                                                     \
      if constexpr (std::is_same_v<G, E>) detail::store_first(p, n, v);                                              \
      else store_n_buffered(p, n);                                                                                   \
    }                                                                                                                \
    template <class G>                                                                                               \
    TGT __attribute__((noinline)) void store_n_buffered(G* p, int n) const {                                         \
      G buf[W];                                                                                                      \
      store(buf);                                                                                                    \
      std::memcpy(p, buf, sizeof(G) * static_cast<std::size_t>(n));                                                  \
    }                                                                                                                \
    /* lanes j < n set */                                                                                            \
    TGT static inline mask first(int n) {                                                                            \
      /* a constant: a call to iota from here would cross the ISA boundary (another return ABI) */                   \
      static constexpr typename mask::raw idx = detail::iota<typename mask::raw, W>();                               \
      return {idx < static_cast<typename mask::I>(n)};                                                               \
    }                                                                                                                \
    /* f lane by lane */                                                                                             \
    template <class F>                                                                                               \
    TGT inline lanes map(F f) const {                                                                      \
      raw r = v;                                                                                                     \
      for (int j = 0; j < W; ++j) r[j] = static_cast<E>(f(static_cast<double>(v[j])));                              \
      return {r};                                                                                                    \
    }                                                                                                                \
    /* the sum of the lanes, in double */                                                                            \
    TGT inline double sum() const {                                                                        \
      double d = 0.0;                                                                                                \
      for (int j = 0; j < W; ++j) d += v[j];                                                                         \
      return d;                                                                                                      \
    }                                                                                                                \
    /* d + x for double lanes; for float lanes (d has W / 2 doubles) d + x's two halves in double */                 \
    template <class D>                                                                                               \
    TGT static inline void widen_add(D& d, lanes x) {                                                      \
      if constexpr (std::is_same_v<D, lanes>) {                                                                      \
        d.v = d.v + x.v;                                                                                             \
      } else {                                                                                                       \
        typedef E half __attribute__((vector_size(BYTES / 2)));                                                      \
        half lo, hi;                                                                                                 \
        std::memcpy(&lo, &x.v, sizeof lo);                                                                           \
        std::memcpy(&hi, reinterpret_cast<const char*>(&x.v) + sizeof lo, sizeof hi);                                \
        d.v = d.v + __builtin_convertvector(lo, typename D::raw) + __builtin_convertvector(hi, typename D::raw);      \
      }                                                                                                              \
    }                                                                                                                \
  };

MSRL_DEFINE_LANES(64, MSRL_TARGET_AVX512, __m512i)
MSRL_DEFINE_LANES(32, MSRL_TARGET_AVX2, __m256i)
#undef MSRL_DEFINE_LANES

template <class E, int W, int B>
struct lane_traits<lanes<E, W, B>> {
  static constexpr int width = W;
  using elem = E;
  using mask = ilanes<E, W>;
  using int_type = ilanes<E, W>;
};

/// The lane types of the two x86 ISAs.
using f64x8 = lanes<double, 8>;
using f32x16 = lanes<float, 16>;
using f64x4 = lanes<double, 4>;
using f32x8 = lanes<float, 8>;
#endif

template <class V>
using mask_t = typename lane_traits<V>::mask;
template <class V>
using elem_t = typename lane_traits<V>::elem;
/// True for lane types whose arithmetic is single precision.
template <class V>
inline constexpr bool single_v = std::is_same_v<elem_t<V>, float>;

/// Broadcast a scalar to every lane.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V splat(double x) {
  if constexpr (lane_traits<V>::width == 1) return x;
  else return x - V{}; // x - 0 is x for every x (also -0), so this folds to a broadcast; 0 + x would not
}

/// Per-lane choice: m ? a : b.
template <class M, class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V select(M m, V a, V b) {
  return m ? a : b;
}
#ifdef MSRL_HAS_VECTOR_LANES
template <class E, int W, int B>
MSRL_FORCEINLINE lanes<E, W, B> select(ilanes<E, W> m, lanes<E, W, B> a, lanes<E, W, B> b) {
  return lanes<E, W, B>::blend(m, a, b);
}
#endif

/// Mask algebra that means the same for bool and vector masks.
template <class M>
MSRL_HOST_DEVICE MSRL_FORCEINLINE M mand(M a, M b) {
  if constexpr (sizeof(M) == sizeof(bool)) return a && b;
  else return a & b;
}
template <class M>
MSRL_HOST_DEVICE MSRL_FORCEINLINE M mor(M a, M b) {
  if constexpr (sizeof(M) == sizeof(bool)) return a || b;
  else return a | b;
}
template <class M>
MSRL_HOST_DEVICE MSRL_FORCEINLINE M mnot(M a) {
  if constexpr (sizeof(M) == sizeof(bool)) return !a;
  else return ~a;
}
/// Whether any lane of a mask is set.
template <class M>
MSRL_HOST_DEVICE MSRL_FORCEINLINE bool any(M m) {
  if constexpr (sizeof(M) == sizeof(bool)) return m;
  else return m.any();
}
/// The number of set lanes of a mask (0 or 1 for a bool).
template <class M>
MSRL_HOST_DEVICE MSRL_FORCEINLINE int count(M m) {
  if constexpr (sizeof(M) == sizeof(bool)) return m ? 1 : 0;
  else return m.count();
}
/// A mask with every lane set to b.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE mask_t<V> mask_of(bool b) {
  if constexpr (lane_traits<V>::width == 1) return b;
  else return mask_t<V>{} + (b ? -1 : 0);
}

/// Reinterpret the bits of a lane type as integers of the element's size, and back.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE typename lane_traits<V>::int_type to_bits(V x) {
  if constexpr (lane_traits<V>::width == 1) return std::bit_cast<std::int64_t>(x);
  else return V::bits(x);
}
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V from_bits(typename lane_traits<V>::int_type x) {
  if constexpr (lane_traits<V>::width == 1) return std::bit_cast<double>(x);
  else return V::from_bits(x);
}

/// f applied lane by lane (libm calls for the rare formulas that need them).
template <class V, class F>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V map(V x, F f) {
  if constexpr (lane_traits<V>::width == 1) {
    return f(x);
  } else {
    return x.map(f);
  }
}

/// Reads one lane group starting at p as lane type V: p[0] as a double for V = double, W
/// contiguous elements converted to E for lanes<E, W> (one vector conversion for float, double
/// and byte inputs; element by element otherwise).
template <class V, class T>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V load_as(const T* p) {
  if constexpr (lane_traits<V>::width == 1) return static_cast<double>(*p);
  else return V::load(p);
}
/// Writes one lane group of V to p, converting to G (the counterpart of load_as).
template <class G, class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE void store_as(G* p, V v) {
  if constexpr (lane_traits<V>::width == 1) *p = static_cast<G>(v);
  else v.store(p);
}

/// The lane count a for_lanes body receives: all_lanes<W> for a whole group (a compile-time
/// constant, so the calls below reduce to the plain ones), an int n < W for a row's tail.
template <int W>
using all_lanes = std::integral_constant<int, W>;
template <class N>
inline constexpr bool is_all_lanes_v = !std::is_same_v<N, int>;

/// load_as of the first n lanes (the others 0); store_as of the first n lanes; the mask of the
/// first n lanes.
template <class V, class T, class N>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V load_as(const T* p, N n) {
  if constexpr (is_all_lanes_v<N>) return load_as<V>(p);
  else return V::load_n(p, n);
}
template <class G, class V, class N>
MSRL_HOST_DEVICE MSRL_FORCEINLINE void store_as(G* p, V v, N n) {
  if constexpr (is_all_lanes_v<N>) store_as(p, v);
  else v.store_n(p, n);
}
template <class V, class N>
MSRL_HOST_DEVICE MSRL_FORCEINLINE mask_t<V> first_n(N n) {
  if constexpr (is_all_lanes_v<N>) return mask_of<V>(true);
  else return V::first(n);
}

#ifdef MSRL_HAS_VECTOR_LANES
namespace detail {
// Double lanes that accumulate a lane type's partial sums: itself for double lanes, half as many
// doubles for float lanes (each float vector is added as its two halves).
template <class VL>
using wide_t = lanes<double, static_cast<int>(lane_traits<VL>::width * sizeof(elem_t<VL>) / 8)>;

struct add_widened {
  template <class D, class VL>
  MSRL_FORCEINLINE void operator()(D& d, VL x) const {
    VL::widen_add(d, x);
  }
};
struct add_sum {
  template <class D>
  MSRL_FORCEINLINE void operator()(double& d, D x) const {
    d += x.sum();
  }
};

// f(std::get<k>(dst), std::get<k>(src)) for every member k of two std::tie tuples.
template <class Dst, class Src, class F, std::size_t... I>
MSRL_FORCEINLINE void each_field(Dst dst, Src src, F f, std::index_sequence<I...>) {
  (f(std::get<I>(dst), std::get<I>(src)), ...);
}
template <class Dst, class Src, class F>
MSRL_FORCEINLINE void each_field(Dst dst, Src src, F f) {
  each_field(dst, src, f, std::make_index_sequence<std::tuple_size_v<Dst>>{});
}
} // namespace detail
#endif

/// The lane loop of every host pass. Acc is an accumulator template over the lane type whose
/// `fields()` returns a std::tie of its members. for_lanes<VL>(begin, end, acc, body) calls
/// body(t, a, n) for the tokens [begin, end): with a vector lane type VL for groups of W tokens
/// from t with `a` an Acc<VL> and n = all_lanes<W>, then once for the last n < W tokens with n an
/// int (loads, stores and masks then take n: load_as<V>(p, n), store_as(p, v, n), first_n<V>(n));
/// with VL = double token by token with `a` = acc (Acc<double>) and n = all_lanes<1>. So every token
/// goes through the same lane arithmetic wherever it sits in its row. Float lanes are summed into
/// double lanes every 8 groups, so a float partial sum never holds more than 8 terms. The body is
/// one generic callable, written once for both lane types with load_as / store_as / splat / select.
template <class VL, template <class> class Acc, class Body>
MSRL_HOST_DEVICE MSRL_FORCEINLINE void for_lanes(std::size_t begin, std::size_t end, Acc<double>& acc, Body&& body) {
  std::size_t t = begin;
#ifdef MSRL_HAS_VECTOR_LANES
  if constexpr (lane_traits<VL>::width > 1) {
    constexpr int Wi = lane_traits<VL>::width;
    constexpr std::size_t W = Wi;
    constexpr std::size_t chunk = single_v<VL> ? 8 * W : ~std::size_t{0} / 2;
    using D = detail::wide_t<VL>;
    if (t < end) {
      Acc<D> wide{};
      while (t < end) {
        Acc<VL> v{};
        const std::size_t stop = end - t > chunk ? t + chunk : end;
        for (; t + W <= stop; t += W) body(t, v, all_lanes<Wi>{});
        if (t < stop) { // the tail: stop == end here
          body(t, v, static_cast<int>(stop - t));
          t = stop;
        }
        detail::each_field(wide.fields(), v.fields(), detail::add_widened{});
      }
      detail::each_field(acc.fields(), wide.fields(), detail::add_sum{});
    }
    return;
  }
#endif
  for (; t < end; ++t) body(t, acc, all_lanes<1>{});
}

/// The vector lane type of element type T for an ISA (double where the ISA has none).
template <class T, cpu_isa I>
struct isa_lanes {
  using type = double;
};
#ifdef MSRL_HAS_VECTOR_LANES
template <class T>
struct isa_lanes<T, cpu_isa::avx512> {
  using type = std::conditional_t<std::is_same_v<T, float>, f32x16, f64x8>;
};
template <class T>
struct isa_lanes<T, cpu_isa::avx2> {
  using type = std::conditional_t<std::is_same_v<T, float>, f32x8, f64x4>;
};
#endif

/// A pass functor F (members `template <class VL> R run(std::size_t) const`) made callable as
/// f(i) by a backend, with run<VL> compiled for ISA I and flattened into one function.
template <cpu_isa I, class T, class F>
struct on_isa {
  F f;
  MSRL_FORCEINLINE auto operator()(std::size_t i) const { return f.template run<double>(i); }
};
#ifdef MSRL_HAS_VECTOR_LANES
template <class T, class F>
struct on_isa<cpu_isa::avx512, T, F> {
  F f;
  MSRL_FLATTEN_AVX512 auto operator()(std::size_t i) const {
    return f.template run<typename isa_lanes<T, cpu_isa::avx512>::type>(i);
  }
};
template <class T, class F>
struct on_isa<cpu_isa::avx2, T, F> {
  F f;
  MSRL_FLATTEN_AVX2 auto operator()(std::size_t i) const {
    return f.template run<typename isa_lanes<T, cpu_isa::avx2>::type>(i);
  }
};
#endif

/// Calls go(fn') with fn' = f wrapped for the ISA the host uses now (active_isa()) and lanes of
/// element type T (float: float lanes; anything else: double lanes); f itself (scalar double
/// lanes) without vector lanes.
template <class T, class F, class Go>
MSRL_FORCEINLINE decltype(auto) host_lanes(const F& f, Go&& go) {
#ifdef MSRL_HAS_VECTOR_LANES
  using E = std::conditional_t<std::is_same_v<T, float>, float, double>;
  switch (active_isa()) {
  case cpu_isa::avx512: return go(on_isa<cpu_isa::avx512, E, F>{f});
  case cpu_isa::avx2: return go(on_isa<cpu_isa::avx2, E, F>{f});
  default: break;
  }
#endif
  return go(on_isa<cpu_isa::scalar, T, F>{f});
}

} // namespace msrl::simd
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
