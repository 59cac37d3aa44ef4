#pragma once
/// \file The kernels behind the libtorch ops (msrl/torch/logprob_ops.hpp), one set per device
/// type. The ops check and reshape tensors, then hand raw pointers to the kernel_set installed
/// for the tensors' device:
///
///   device_kind::cpu   host_kernel_set (this file, msrl::kernels), installed by default
///   device_kind::cuda  cuda_kernel_set (msrl/torch/cuda_kernel_set.cuh, msrl::cuda), installed by
///                      install_cuda_kernels() from a translation unit compiled by nvcc
///
/// This header needs neither libtorch nor CUDA, so the CUDA set is compiled without torch headers
/// and the ops without CUDA headers; they meet only through this interface. Every pointer a
/// kernel_set receives lives on its device; logits are row-major [rows, cols] with no padding.
/// A kernel_set throws msrl::error types (it is host API), never returns a status.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "../core/backward_arrays.hpp"
#include "../core/error.hpp"
#include "../core/token_layout.hpp"
#include "../grpo/loss_types.hpp"
#include "../kernels/grpo_loss.hpp"
#include "../kernels/selective_log_softmax.hpp"

namespace msrl::torch_ops {

enum class logit_dtype { f32, bf16, f16 };

/// Row-major [rows, cols] logits (or a gradient of the same shape and dtype).
struct logits_ref {
  const void* data = nullptr;
  logit_dtype dtype = logit_dtype::f32;
  std::size_t rows = 0;
  std::size_t cols = 0;
};

/// Where a call runs: the device index (CUDA; -1 on the host), the stream (a cudaStream_t; null =
/// the legacy default stream) and the host worker threads (0 = all cores).
struct device_context {
  int index = -1;
  void* stream = nullptr;
  unsigned threads = 0;
};

/// What the backward reads besides the logits, one entry per row (msrl::backward_arrays): lse from
/// the forward (required), d loss / d logp (null = 0), the forward's entropy and d loss / d entropy
/// (both or neither).
using msrl::backward_arrays;

/// The one interface a device's kernels implement for the libtorch ops.
class kernel_set {
public:
  virtual ~kernel_set() = default;
  virtual const char* name() const noexcept = 0;
  /// logp[i] = log softmax(x_i / T)[t_i] (rows with t_i < 0: 0), lse[i] (required), entropy[i]
  /// (null = not computed).
  virtual void forward(const device_context& ctx, const logits_ref& x, const std::int64_t* targets, double temperature, float* logp,
                       double* lse, float* entropy) const = 0;
  /// grad = grad_logp (onehot - p) / T - grad_entropy p (log p + H) / T, grad of x's shape and
  /// dtype; grad may equal x.data (in place).
  virtual void backward(const device_context& ctx, const logits_ref& x, const std::int64_t* targets, double temperature,
                        const backward_arrays& in, void* grad) const = 0;
  /// msrl::grpo::policy_loss from logits and target ids; the loss's arrays (grpo::loss_arrays,
  /// the packed layout's offsets on the device too); d loss / d logits into grad (x's dtype;
  /// null = none).
  virtual grpo::loss_result grpo_loss(const device_context& ctx, const logits_ref& x, const std::int64_t* targets,
                                      const grpo::loss_arrays<float>& in,
                                      const grpo::loss_options& opt, const grpo::loss_normalizer& norm, double temperature,
                                      void* grad) const = 0;
};

namespace detail {
/// Calls f with a value of the storage type of dtype (float, kernels::bf16, kernels::f16), which
/// is layout-compatible with torch's and CUDA's 16-bit types.
template <class F>
decltype(auto) with_host_type(logit_dtype t, F&& f) {
  switch (t) {
  case logit_dtype::bf16: return f(kernels::bf16{});
  case logit_dtype::f16: return f(kernels::f16{});
  default: return f(float{});
  }
}
} // namespace detail

/// msrl::kernels on host memory (SIMD, ctx.threads workers).
class host_kernel_set final : public kernel_set {
public:
  const char* name() const noexcept override { return "host (msrl::kernels)"; }

  void forward(const device_context& ctx, const logits_ref& x, const std::int64_t* targets, double temperature, float* logp,
               double* lse, float* entropy) const override {
    const std::size_t n = x.rows;
    detail::with_host_type(x.dtype, [&](auto tag) {
      using T = decltype(tag);
      kernels::selective_log_softmax<T>(view<T>(x), {targets, n}, {{logp, n}, {lse, n}, {entropy, entropy ? n : 0}},
                                        {.temperature = temperature, .threads = ctx.threads});
    });
  }

  void backward(const device_context& ctx, const logits_ref& x, const std::int64_t* targets, double temperature,
                const backward_arrays& in, void* grad) const override {
    const std::size_t n = x.rows;
    detail::with_host_type(x.dtype, [&](auto tag) {
      using T = decltype(tag);
      kernels::selective_log_softmax_backward<T, T>(view<T>(x), {targets, n}, kernels::logprob_backward_inputs::of(in, n),
                                                    {static_cast<T*>(grad), n, x.cols},
                                                    {.temperature = temperature, .threads = ctx.threads});
    });
  }

  grpo::loss_result grpo_loss(const device_context& ctx, const logits_ref& x, const std::int64_t* targets,
                              const grpo::loss_arrays<float>& in, const grpo::loss_options& opt,
                              const grpo::loss_normalizer& norm, double temperature, void* grad) const override {
    const std::size_t n = x.rows;
    return detail::with_host_type(x.dtype, [&](auto tag) {
      using T = decltype(tag);
      const auto li = kernels::logits_loss_inputs<T>::of(view<T>(x), targets, in);
      const kernels::logits_loss_outputs<T> out{{static_cast<T*>(grad), grad ? n : 0, grad ? x.cols : 0}};
      return kernels::grpo_loss_from_logits<T, std::uint8_t, T>(li, opt, norm, out, {.temperature = temperature, .threads = ctx.threads});
    });
  }

private:
  template <class T>
  static kernels::matrix_view<const T> view(const logits_ref& x) {
    return {static_cast<const T*>(x.data), x.rows, x.cols};
  }
};

enum class device_kind { cpu, cuda };

namespace detail {
inline const host_kernel_set& default_host_kernels() {
  static const host_kernel_set set;
  return set;
}
inline std::atomic<const kernel_set*>& kernel_slot(device_kind k) {
  static std::atomic<const kernel_set*> slots[2] = {&default_host_kernels(), nullptr};
  return slots[k == device_kind::cuda ? 1 : 0];
}
} // namespace detail

/// Installs the kernels the ops use for tensors on `kind` and returns the previous set. nullptr
/// restores the default (the host set for cpu, none for cuda). The set must outlive its use.
inline const kernel_set* install_kernels(device_kind kind, const kernel_set* set) {
  const kernel_set* def = kind == device_kind::cpu ? &detail::default_host_kernels() : nullptr;
  return detail::kernel_slot(kind).exchange(set ? set : def);
}

/// The set installed for `kind` (null when none: CUDA before install_cuda_kernels()).
inline const kernel_set* installed_kernels(device_kind kind) { return detail::kernel_slot(kind).load(); }

} // namespace msrl::torch_ops
