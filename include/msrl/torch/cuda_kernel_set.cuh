#pragma once
/// \file The CUDA kernels behind the libtorch ops: msrl::cuda's selective log-softmax and GRPO loss
/// as a msrl::torch_ops::kernel_set. Compile this header in one .cu file of the program (nvcc, no
/// torch headers needed) and call install_cuda_kernels() once before the first op on CUDA tensors:
///
///   // torch_cuda_kernels.cu
///   #include <msrl/torch/cuda_kernel_set.cuh>
///   void use_msrl_cuda_kernels() { msrl::torch_ops::install_cuda_kernels(); }
///
/// Calls run on ctx.index's device (set and restored) and on ctx.stream; the libtorch ops pass
/// torch's current stream when msrl was built against a CUDA libtorch (MSRL_TORCH_CUDA), otherwise
/// the legacy default stream, which torch itself uses unless a stream is set.
#include <string>

#include "../cuda/grpo_loss.cuh"
#include "../cuda/selective_log_softmax.cuh"
#include "kernel_set.hpp"

namespace msrl::torch_ops {

namespace detail {
/// Makes `index` the current device for a scope (no-op for index < 0).
class cuda_device_scope {
public:
  explicit cuda_device_scope(int index) {
    if (index < 0) return;
    if (cudaGetDevice(&previous_) != cudaSuccess || cudaSetDevice(index) != cudaSuccess)
      throw msrl::error(msrl::detail::format_error("msrl::torch_ops (CUDA)", "device", "cannot select CUDA device " + std::to_string(index)));
    active_ = true;
  }
  ~cuda_device_scope() {
    if (active_) cudaSetDevice(previous_);
  }
  cuda_device_scope(const cuda_device_scope&) = delete;
  cuda_device_scope& operator=(const cuda_device_scope&) = delete;

private:
  int previous_ = 0;
  bool active_ = false;
};

/// Calls f with a null pointer of the CUDA storage type of dtype.
template <class F>
decltype(auto) with_cuda_type(logit_dtype t, F&& f) {
  switch (t) {
  case logit_dtype::bf16: return f(static_cast<__nv_bfloat16*>(nullptr));
  case logit_dtype::f16: return f(static_cast<__half*>(nullptr));
  default: return f(static_cast<float*>(nullptr));
  }
}

inline void check_status(cuda::status st, const char* where) {
  if (st == cuda::status::success) return;
  const std::string why = std::string("returned ") + cuda::to_string(st) + " (" + cudaGetErrorString(cudaGetLastError()) + ")";
  if (st == cuda::status::invalid_argument || st == cuda::status::unsupported)
    throw msrl::invalid_argument(msrl::detail::format_error(where, "logits/targets", why));
  throw msrl::error(msrl::detail::format_error(where, "launch", why));
}
} // namespace detail

/// msrl::cuda on device memory.
class cuda_kernel_set final : public kernel_set {
public:
  const char* name() const noexcept override { return "cuda (msrl::cuda)"; }

  void forward(const device_context& ctx, const logits_ref& x, const std::int64_t* targets, double temperature, float* logp,
               double* lse, float* entropy) const override {
    const detail::cuda_device_scope scope(ctx.index);
    detail::with_cuda_type(x.dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const auto cols = static_cast<std::int64_t>(x.cols);
      detail::check_status(cuda::selective_log_softmax_forward<T>(static_cast<const T*>(x.data), static_cast<std::int64_t>(x.rows), cols,
                                                                  cols, targets, static_cast<float>(temperature), logp, lse, entropy,
                                                                  nullptr, stream(ctx)),
                           "msrl::cuda::selective_log_softmax_forward");
    });
  }

  void backward(const device_context& ctx, const logits_ref& x, const std::int64_t* targets, double temperature,
                const backward_arrays& in, void* grad) const override {
    const detail::cuda_device_scope scope(ctx.index);
    detail::with_cuda_type(x.dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const auto cols = static_cast<std::int64_t>(x.cols);
      detail::check_status(cuda::selective_log_softmax_backward<T, T>(
                               static_cast<const T*>(x.data), static_cast<std::int64_t>(x.rows), cols, cols, targets,
                               static_cast<float>(temperature), cuda::backward_inputs{in.lse, in.grad_logp, in.entropy, in.grad_entropy},
                               static_cast<T*>(grad), cols, stream(ctx)),
                           "msrl::cuda::selective_log_softmax_backward");
    });
  }

  grpo::loss_result grpo_loss(const device_context& ctx, const logits_ref& x, const std::int64_t* targets,
                              const grpo::loss_arrays<float>& in, const grpo::loss_options& opt,
                              const grpo::loss_normalizer& norm, double temperature, void* grad) const override {
    const detail::cuda_device_scope scope(ctx.index);
    return detail::with_cuda_type(x.dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const cuda::grpo_logits_inputs<T> li{static_cast<const T*>(x.data), static_cast<std::int64_t>(x.cols), 0, targets, in};
      return cuda::grpo_loss_from_logits_or_throw<T, T>(li, opt, norm, static_cast<float>(temperature), static_cast<T*>(grad), 0,
                                                                nullptr, stream(ctx));
    });
  }

private:
  static cudaStream_t stream(const device_context& ctx) { return static_cast<cudaStream_t>(ctx.stream); }
};

/// The process's CUDA kernel set.
inline const cuda_kernel_set& cuda_kernels() {
  static const cuda_kernel_set set;
  return set;
}

/// Makes the libtorch ops run msrl::cuda on CUDA tensors; returns the set it replaced (or null).
inline const kernel_set* install_cuda_kernels() { return install_kernels(device_kind::cuda, &cuda_kernels()); }

} // namespace msrl::torch_ops
