#pragma once
/// \file The host CPU's vector instruction set, chosen at run time: every host kernel and pass
/// that has vector code (the selective log-softmax rows, the GRPO core's token passes) asks
/// active_isa() and calls the code compiled for that ISA with a target attribute, so a trainer
/// built with plain -O2 (no -march flags) runs at the machine's full width.
///
/// MSRL_ISA=scalar|avx2|avx512 in the environment (older name: MSRL_KERNELS_ISA) caps the choice;
/// set_isa_cap does the same from code (tests and benchmarks cover each path this way).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string_view>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__HIPCC__)
#define MSRL_X86_DISPATCH 1
/// Function attributes that compile one function for an ISA.
#define MSRL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define MSRL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
/// AVX-512 with the AVX512_BF16 conversions (one instruction from fp32 to bf16).
#define MSRL_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx512bf16")))
/// The same, with every call inside inlined (recursively), so that generic code reached from the
/// function (the lane formulas) is compiled for its ISA too.
#define MSRL_FLATTEN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"), flatten))
#define MSRL_FLATTEN_AVX2 __attribute__((target("avx2,fma,f16c"), flatten))
#endif

namespace msrl {

/// Instruction sets of the host code paths.
enum class cpu_isa { scalar, avx2, avx512 };

inline const char* to_string(cpu_isa i) {
  return i == cpu_isa::avx512 ? "avx512" : (i == cpu_isa::avx2 ? "avx2" : "scalar");
}

/// The best ISA this CPU (and its operating system) supports, capped by MSRL_ISA when set.
inline cpu_isa detected_isa() {
  static const cpu_isa isa = [] {
    cpu_isa best = cpu_isa::scalar;
#ifdef MSRL_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = cpu_isa::avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
      best = cpu_isa::avx512;
#endif
    const char* cap = std::getenv("MSRL_ISA");
    if (!cap) cap = std::getenv("MSRL_KERNELS_ISA");
    if (cap) {
      const std::string_view c(cap);
      if (c == "scalar") best = cpu_isa::scalar;
      else if (c == "avx2" && best == cpu_isa::avx512) best = cpu_isa::avx2;
    }
    return best;
  }();
  return isa;
}

namespace detail {
inline std::atomic<int>& isa_cap() {
  static std::atomic<int> cap{-1};
  return cap;
}
} // namespace detail

/// Caps the ISA the host code uses from now on; an ISA the CPU lacks falls back to the best one it
/// has below the cap.
inline void set_isa_cap(cpu_isa cap) { detail::isa_cap().store(static_cast<int>(cap)); }
inline void clear_isa_cap() { detail::isa_cap().store(-1); }

/// The ISA the host code uses now.
inline cpu_isa active_isa() {
  const int cap = detail::isa_cap().load(std::memory_order_relaxed);
  const cpu_isa best = detected_isa();
  return cap < 0 ? best : static_cast<cpu_isa>(std::min(cap, static_cast<int>(best)));
}

/// Whether the CPU has AVX512_BF16 (fp32 -> bf16 in one instruction); the host kernels use it
/// only while active_isa() is avx512.
inline bool has_avx512_bf16() {
  static const bool has = [] {
#ifdef MSRL_X86_DISPATCH
    __builtin_cpu_init();
    return detected_isa() == cpu_isa::avx512 && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
  }();
  return has;
}

} // namespace msrl
