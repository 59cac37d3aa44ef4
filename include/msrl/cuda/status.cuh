#pragma once
/// \file Status codes of msrl's CUDA launchers. Launchers are noexcept: they check the arguments
/// (can_implement), launch, and report here instead of throwing.
#include <cuda_runtime.h>

namespace msrl::cuda {

enum class status : int {
  success = 0,
  invalid_argument, ///< a null pointer, a negative or zero extent, a stride below cols, temperature <= 0
  unsupported,      ///< the shape cannot be handled (e.g. an extent over the 64-bit index range)
  launch_failed,    ///< the CUDA runtime reported an error at launch (see cudaGetLastError)
  runtime_error,    ///< an error while running composed host logic (e.g. the core loss rejected its inputs)
};

inline const char* to_string(status s) noexcept {
  switch (s) {
  case status::success: return "success";
  case status::invalid_argument: return "invalid_argument";
  case status::unsupported: return "unsupported";
  case status::launch_failed: return "launch_failed";
  case status::runtime_error: return "runtime_error";
  }
  return "unknown";
}

} // namespace msrl::cuda
