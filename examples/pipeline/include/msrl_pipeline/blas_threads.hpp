#pragma once
/// \file The BLAS library's own thread count. libtorch's intra-op threads (`threads`) do not reach
/// the BLAS: OpenBLAS (Debian's default libblas.so.3 for libtorch) starts its own pool of one
/// thread per core, whose threads spin after each GEMM and compete with libtorch's. The setter is
/// looked up at run time, so msrl-train links against whichever BLAS the system provides.
#include <cstdint>

#include <dlfcn.h>

namespace msrl_pipeline {

/// Sets the loaded BLAS's thread count to n >= 1 through OpenBLAS's `openblas_set_num_threads` or
/// BLIS's `bli_thread_set_num_threads`, whichever the process has; returns the library's name, or
/// nullptr when neither is loaded (the request then has no effect).
inline const char* set_blas_threads(int n) {
  if (auto f = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    f(n);
    return "OpenBLAS";
  }
  if (auto f = reinterpret_cast<void (*)(std::int64_t)>(dlsym(RTLD_DEFAULT, "bli_thread_set_num_threads"))) {
    f(n);
    return "BLIS";
  }
  return nullptr;
}

} // namespace msrl_pipeline
