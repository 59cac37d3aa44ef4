#pragma once
/// \file Lane types for msrl's formulas. Every formula in grpo/scalar_math.hpp is a template over
/// a lane type V: `double` (one lane; host and device) or, on GCC/Clang host builds, a vector of
/// doubles as wide as the target's registers (GCC vector extensions). The vector type is lowered to whatever the target has
/// (SSE2, AVX2, AVX-512), so one source gives vector code without relying on auto-vectorisation.
/// Masks are `bool` for double and a vector of int64 (all-ones / zero) for the vector type.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "config.hpp"

// Vector lanes where the target has 256- or 512-bit double registers (AVX/AVX2/AVX-512); on
// plain SSE2 targets scalar lanes are faster than emulated 64-bit integer vector operations.
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && !defined(__HIPCC__) && \
    !defined(MSRL_NO_VECTOR_LANES) && (defined(__AVX__) || defined(__AVX512F__))
#define MSRL_HAS_VECTOR_LANES 1
#endif

namespace msrl::simd {

template <class V>
struct lane_traits;

template <>
struct lane_traits<double> {
  static constexpr int width = 1;
  using mask = bool;
  using int_type = std::int64_t;
};

#ifdef MSRL_HAS_VECTOR_LANES
// One native register of doubles: the widest the target was compiled for.
#if defined(__AVX512F__)
inline constexpr int vector_width = 8;
#else
inline constexpr int vector_width = 4;
#endif
using vdouble = double __attribute__((vector_size(8 * vector_width)));
using vint = std::int64_t __attribute__((vector_size(8 * vector_width)));
template <>
struct lane_traits<vdouble> {
  static constexpr int width = vector_width;
  using mask = vint;
  using int_type = vint;
};
#endif

template <class V>
using mask_t = typename lane_traits<V>::mask;

#ifdef MSRL_HAS_VECTOR_LANES
/// Loads vector_width contiguous elements of p as double lanes (one vector conversion for float,
/// double and byte inputs; element by element otherwise).
template <class T>
MSRL_FORCEINLINE vdouble load(const T* p) {
  constexpr int W = vector_width;
  if constexpr (std::is_same_v<T, double>) {
    vdouble v{};
    std::memcpy(&v, p, sizeof v);
    return v;
  } else if constexpr (std::is_same_v<T, float>) {
    using F = float __attribute__((vector_size(4 * W)));
    F f{};
    std::memcpy(&f, p, sizeof f);
    return __builtin_convertvector(f, vdouble);
  } else if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, bool>) {
    using U = std::uint8_t __attribute__((vector_size(W)));
    U u{};
    std::memcpy(&u, p, sizeof u);
    return __builtin_convertvector(u, vdouble);
  } else {
    vdouble v{};
    for (int j = 0; j < W; ++j) v[j] = static_cast<double>(p[j]);
    return v;
  }
}
/// Stores double lanes to vector_width contiguous elements of p, converting to G.
template <class G>
MSRL_FORCEINLINE void store(G* p, vdouble v) {
  constexpr int W = vector_width;
  if constexpr (std::is_same_v<G, double>) {
    std::memcpy(p, &v, sizeof v);
  } else if constexpr (std::is_same_v<G, float>) {
    using F = float __attribute__((vector_size(4 * W)));
    const F f = __builtin_convertvector(v, F);
    std::memcpy(p, &f, sizeof f);
  } else {
    for (int j = 0; j < W; ++j) p[j] = static_cast<G>(v[j]);
  }
}
#endif

/// Broadcast a scalar to every lane.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V splat(double x) {
  if constexpr (lane_traits<V>::width == 1) return x;
  else return V{} + x;
}

/// Per-lane choice: m ? a : b.
template <class M, class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V select(M m, V a, V b) {
  return m ? a : b;
}

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
/// A mask with every lane set to b.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE mask_t<V> mask_of(bool b) {
  if constexpr (lane_traits<V>::width == 1) return b;
  else return mask_t<V>{} + (b ? -1 : 0);
}

/// Reinterpret the bits of a double lane type as int64 and back.
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE typename lane_traits<V>::int_type to_bits(V x) {
  return std::bit_cast<typename lane_traits<V>::int_type>(x);
}
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V from_bits(typename lane_traits<V>::int_type x) {
  return std::bit_cast<V>(x);
}

/// Reads one lane group starting at p as lane type V: p[0] as a double for V = double, vector_width
/// contiguous elements for the vector type.
template <class V, class T>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V load_as(const T* p) {
  if constexpr (lane_traits<V>::width == 1) return static_cast<double>(*p);
#ifdef MSRL_HAS_VECTOR_LANES
  else return load(p);
#endif
}
/// Writes one lane group of V to p, converting to G (the counterpart of load_as).
template <class G, class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE void store_as(G* p, V v) {
  if constexpr (lane_traits<V>::width == 1) *p = static_cast<G>(v);
#ifdef MSRL_HAS_VECTOR_LANES
  else store(p, v);
#endif
}

/// The lane loop of every host pass. Acc is an accumulator template over the lane type whose
/// `fields()` returns a std::tie of its members. for_lanes(begin, end, acc, body) calls
/// body(t, a) for t in [begin, end): on host builds with vector lanes first for whole groups of
/// vector_width tokens with `a` an Acc<vdouble> (then added into `acc` lane by lane, member by
/// member), then token by token with `a` = acc (Acc<double>); elsewhere (device code, scalar
/// builds) token by token only. The body is one generic callable, written once for both lane
/// types with load_as / store_as / splat / select.
template <template <class> class Acc, class Body>
MSRL_HOST_DEVICE MSRL_FORCEINLINE void for_lanes(std::size_t begin, std::size_t end, Acc<double>& acc, Body&& body) {
  std::size_t t = begin;
#ifdef MSRL_HAS_VECTOR_LANES
  constexpr std::size_t W = vector_width;
  if (t + W <= end) {
    Acc<vdouble> v{};
    for (; t + W <= end; t += W) body(t, v);
    auto dst = acc.fields();
    auto src = v.fields();
    auto add_lanes = [](double& d, vdouble x) {
      for (int j = 0; j < vector_width; ++j) d += x[j];
    };
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (add_lanes(std::get<I>(dst), std::get<I>(src)), ...);
    }(std::make_index_sequence<std::tuple_size_v<decltype(dst)>>{});
  }
#endif
  for (; t < end; ++t) body(t, acc);
}

} // namespace msrl::simd
