#pragma once
/// \file Configuration macros shared by host and device code.

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MSRL_HOST_DEVICE __host__ __device__
#define MSRL_DEVICE_COMPILE 1
#else
#define MSRL_HOST_DEVICE
#endif

// Force inlining of small formulas so that the loops calling them vectorise.
#if defined(__CUDACC__)
#define MSRL_FORCEINLINE __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define MSRL_FORCEINLINE inline __attribute__((always_inline))
#else
#define MSRL_FORCEINLINE inline
#endif

// The same for a lambda, placed after its parameter list (lane bodies: inlined whatever the size
// of the frame they bring, so that a pass compiled for an ISA stays one function).
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define MSRL_LAMBDA_INLINE __attribute__((always_inline))
#else
#define MSRL_LAMBDA_INLINE
#endif

// `#pragma omp simd` on hot host loops when the build enables OpenMP SIMD (-fopenmp-simd, set by
// the msrl::msrl CMake target as MSRL_OMP_SIMD). Without it the loops are plain scalar code.
#if defined(MSRL_OMP_SIMD) && !defined(__CUDA_ARCH__)
#define MSRL_PRAGMA(x) _Pragma(#x)
#define MSRL_SIMD_REDUCE(...) MSRL_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define MSRL_SIMD_REDUCE(...)
#endif

// `#pragma GCC unroll n` on host loops where g++ compiles them; nvcc's front end does not know the
// pragma (host kernels included in a .cu file then go without the hint).
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define MSRL_UNROLL_PRAGMA(x) _Pragma(#x)
#define MSRL_UNROLL(n) MSRL_UNROLL_PRAGMA(GCC unroll n)
#else
#define MSRL_UNROLL(n)
#endif

#define MSRL_VERSION_MAJOR 0
#define MSRL_VERSION_MINOR 1
#define MSRL_VERSION_PATCH 0
