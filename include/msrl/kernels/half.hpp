#pragma once
/// \file 16-bit floating-point storage types for logits: bf16 and IEEE fp16, with exact
/// widening to float and round-to-nearest-even narrowing. Layout-compatible with
/// torch::kBFloat16 / torch::kHalf / __nv_bfloat16 / __half (one std::uint16_t).
#include <bit>
#include <cstdint>
#include <type_traits>

#include "../core/config.hpp"

namespace msrl::kernels {

/// bfloat16 storage (1 sign, 8 exponent, 7 mantissa bits).
struct bf16 {
  std::uint16_t bits;
};
/// IEEE 754 binary16 storage (1 sign, 5 exponent, 10 mantissa bits).
struct f16 {
  std::uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) { return std::bit_cast<float>(static_cast<std::uint32_t>(x.bits) << 16); }
inline float to_float(f16 x) {
  const std::uint32_t h = x.bits, sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  std::uint32_t u;
  if (e == 0x1f) {
    u = sign | 0x7f800000u | (m << 13); // inf / NaN
  } else if (e != 0) {
    u = sign | ((e + 112u) << 23) | (m << 13); // normal: rebias 15 -> 127
  } else if (m == 0) {
    u = sign; // +-0
  } else { // subnormal: m * 2^-24, exact in float
    const float v = static_cast<float>(m) * 0x1p-24f;
    u = sign | std::bit_cast<std::uint32_t>(v);
  }
  return std::bit_cast<float>(u);
}

/// Round-to-nearest-even float -> bf16 (NaN stays NaN).
inline bf16 to_bf16(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>(u >> 16)};
}

/// Round-to-nearest-even float -> fp16 with overflow to inf and gradual underflow.
inline f16 to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return f16{static_cast<std::uint16_t>(sign | 0x7e00u)}; // NaN
  if (a >= 0x477ff000u) return f16{static_cast<std::uint16_t>(sign | 0x7c00u)}; // rounds to >= 65520: inf
  if (a < 0x38800000u) { // below 2^-14: subnormal or zero; value = a_float * 2^24 rounded to integer
    const float v = std::bit_cast<float>(a) * 0x1p24f; // exact scaling
    // round half to even on the integer grid
    const float r = v + 0x1p23f - 0x1p23f;           // RNE to integer (v < 2^10 here, exact trick)
    return f16{static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(r))};
  }
  std::uint32_t e = ((a >> 23) - 112u) << 10, m = (a >> 13) & 0x3ffu;
  std::uint32_t h = e | m;
  const std::uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h; // carries into the exponent correctly
  return f16{static_cast<std::uint16_t>(sign | h)};
}

template <class T>
inline T from_float(float f);
template <>
inline float from_float<float>(float f) { return f; }
template <>
inline bf16 from_float<bf16>(float f) { return to_bf16(f); }
template <>
inline f16 from_float<f16>(float f) { return to_f16(f); }

/// Element types the logit kernels accept.
template <class T>
inline constexpr bool is_logit_type_v = std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

template <class T>
inline constexpr const char* type_name_v = std::is_same_v<T, float> ? "fp32" : (std::is_same_v<T, bf16> ? "bf16" : "fp16");

} // namespace msrl::kernels
