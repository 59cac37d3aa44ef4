#pragma once
/// \file Mixed precision for a scope (`autocast_guard`): libtorch autocast around a training step's
/// forward passes (component msrl::torch).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "../core/error.hpp"

namespace msrl::trainer {

/// Mixed precision for a scope: the model's matrix products run in `dtype` (bf16, or fp16 on
/// CUDA) through libtorch's autocast while the weights, gradients and optimizer state stay fp32,
/// like torch.autocast around a training step's forward. Restores the previous state on exit.
class autocast_guard {
public:
  autocast_guard(c10::Device device, std::optional<at::ScalarType> dtype)
      : type_(device.is_cuda() ? at::kCUDA : at::kCPU), on_(dtype.has_value()) {
    if (!on_) return;
    constexpr const char* where = "msrl::trainer::autocast_guard";
    const bool cuda = type_ == at::kCUDA;
    require(*dtype == at::kBFloat16 || (cuda && *dtype == at::kHalf), where, "dtype",
            cuda ? "must be bfloat16 or float16" : "must be bfloat16 on the CPU");
    prev_enabled_ = enabled(type_);
    prev_dtype_ = get_dtype(type_);
    set(type_, true, *dtype);
    at::autocast::increment_nesting();
  }
  autocast_guard(const autocast_guard&) = delete;
  autocast_guard& operator=(const autocast_guard&) = delete;
  ~autocast_guard() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache(); // drop the cached bf16 weight copies
    set(type_, prev_enabled_, prev_dtype_);
  }

private:
  // libtorch 2.4 replaced the per-device functions by ones taking the device type.
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
  static bool enabled(at::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
  static at::ScalarType get_dtype(at::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
  static void set(at::DeviceType t, bool on, at::ScalarType dtype) {
    at::autocast::set_autocast_enabled(t, on);
    at::autocast::set_autocast_dtype(t, dtype);
  }
#else
  static bool enabled(at::DeviceType t) { return t == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
  static at::ScalarType get_dtype(at::DeviceType t) {
    return t == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
  }
  static void set(at::DeviceType t, bool on, at::ScalarType dtype) {
    if (t == at::kCUDA) {
      at::autocast::set_enabled(on);
      at::autocast::set_autocast_gpu_dtype(dtype);
    } else {
      at::autocast::set_cpu_enabled(on);
      at::autocast::set_autocast_cpu_dtype(dtype);
    }
  }
#endif
  at::DeviceType type_;
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

} // namespace msrl::trainer
