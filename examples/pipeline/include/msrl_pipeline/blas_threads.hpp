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

/// The loaded BLAS's thread count (OpenBLAS or BLIS), 0 when neither is loaded.
inline int blas_threads() {
  if (auto f = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) return f();
  if (auto f = reinterpret_cast<std::int64_t (*)()>(dlsym(RTLD_DEFAULT, "bli_thread_get_num_threads"))) return static_cast<int>(f());
  return 0;
}

/// The BLAS at n threads while it lives (when n >= 1 and a known BLAS is loaded), then at the
/// count it found. For code that runs its own threads, each calling the BLAS on small matrices.
class scoped_blas_threads {
public:
  explicit scoped_blas_threads(int n) : before_(n >= 1 ? blas_threads() : 0) {
    if (before_ > 0 && before_ != n) set_blas_threads(n);
    else before_ = 0;
  }
  ~scoped_blas_threads() {
    if (before_ > 0) set_blas_threads(before_);
  }
  scoped_blas_threads(const scoped_blas_threads&) = delete;
  scoped_blas_threads& operator=(const scoped_blas_threads&) = delete;

private:
  int before_;
};

} // namespace msrl_pipeline
