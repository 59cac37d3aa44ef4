#pragma once
/// \file Fused GRPO loss from logits on a CUDA device: selective log-softmax forward (masked rows
/// not read) -> the core's msrl::grpo::policy_loss on the device backend (every mode and preset,
/// the same per-token math as the host) -> backward writing d logits (masked rows written as
/// zeros without being read). Traffic: one read for the forward, one read + one write for the
/// gradient; per-token intermediates are fp32 / fp64 [N]. noexcept, returns a status.
#include <cstdint>
#include <exception>
#include <string>

#include "../grpo/loss_types.hpp"
#include "../grpo/policy_loss.hpp"
#include "device_backend.cuh"
#include "selective_log_softmax.cuh"

namespace msrl::cuda {

/// Device-resident inputs (every pointer is device memory; loss.layout.offsets too when packed).
template <class T>
struct grpo_logits_inputs {
  const T* logits = nullptr;
  std::int64_t cols = 0; ///< vocabulary size V
  std::int64_t ld = 0;   ///< row stride in elements (0 = cols)
  const std::int64_t* targets = nullptr;
  grpo::loss_arrays<float> loss; ///< layout, old / ref log-probs, advantages, mask
};

/// A CUDA launch or synchronisation failed (the noexcept launcher reports launch_failed).
class launch_error : public msrl::error {
public:
  using msrl::error::error;
};

/// The loss as host API: throws msrl::error types (the core loss's messages name the argument;
/// launch_error for a failed launch). grpo_loss_from_logits below is the noexcept form returning a
/// status; kernel sets and other throwing callers use this one.
template <class T, class G>
grpo::loss_result grpo_loss_from_logits_or_throw(const grpo_logits_inputs<T>& in, const grpo::loss_options& opt,
                                                 const grpo::loss_normalizer& norm, float temperature, G* grad, std::int64_t ldg,
                                                 float* logp_out, cudaStream_t stream) {
  constexpr const char* where = "msrl::cuda::grpo_loss_from_logits";
  const std::int64_t N = static_cast<std::int64_t>(in.loss.layout.total_tokens);
  const std::int64_t ld = in.ld ? in.ld : in.cols;
  auto check = [&](status st, const char* step) {
    if (st == status::success) return;
    const std::string why = std::string(step) + " returned " + to_string(st) + " (" + cudaGetErrorString(cudaGetLastError()) + ")";
    if (st == status::invalid_argument) throw msrl::invalid_argument(msrl::detail::format_error(where, "logits/targets", why));
    throw launch_error(msrl::detail::format_error(where, "launch", why));
  };
  require(detail::valid_common(in.logits, N, in.cols, ld, in.targets, temperature), where, "logits/targets/temperature",
          "need device pointers, cols >= 1, ld >= cols and a finite temperature > 0");
  require(in.loss.advantages != nullptr, where, "advantages", "must be given");
  require(N <= 0x7fffffff, where, "layout.total_tokens", "must be below 2^31 (one block per row on grid.x)");
  const std::size_t n = static_cast<std::size_t>(N);
  device_buffer<float> logp_buf(logp_out ? 0 : n), dlogp(grad ? n : 0);
  device_buffer<double> lse(n);
  float* logp = logp_out ? logp_out : logp_buf.data();
  check(selective_log_softmax_forward<T>(in.logits, N, in.cols, ld, in.targets, temperature, logp, lse.data(), nullptr, in.loss.mask, stream),
        "selective_log_softmax_forward");
  const grpo::loss_result res = grpo::policy_loss(device_exec{stream}, in.loss.inputs(logp), opt, norm, std::span<float>(dlogp.data(), dlogp.size()));
  if (grad) {
    check(selective_log_softmax_backward<T, G>(in.logits, N, in.cols, ld, in.targets, temperature, lse.data(), dlogp.data(), grad,
                                               ldg ? ldg : in.cols, stream),
          "selective_log_softmax_backward");
    if (cudaStreamSynchronize(stream) != cudaSuccess) check(status::launch_failed, "cudaStreamSynchronize"); // workspaces are freed on return
  }
  return res;
}

/// Loss, metrics into *result; d logits into grad (may equal logits for in place; null = no gradient);
/// logp_out (device, optional) receives the per-token log-probs.
template <class T, class G = T>
status grpo_loss_from_logits(const grpo_logits_inputs<T>& in, const grpo::loss_options& opt, const grpo::loss_normalizer& norm,
                             float temperature, grpo::loss_result* result, G* grad = nullptr, std::int64_t ldg = 0,
                             float* logp_out = nullptr, cudaStream_t stream = nullptr) noexcept {
  if (!result) return status::invalid_argument;
  if (in.loss.layout.total_tokens > 0x7fffffffu) return status::unsupported; // the rest is checked (and thrown) below
  try {
    *result = grpo_loss_from_logits_or_throw<T, G>(in, opt, norm, temperature, grad, ldg, logp_out, stream);
    return status::success;
  } catch (const msrl::invalid_argument&) {
    return status::invalid_argument;
  } catch (const launch_error&) {
    return status::launch_failed;
  } catch (...) {
    return status::runtime_error;
  }
}

} // namespace msrl::cuda
