#pragma once
/// \file libtorch autograd ops over msrl's fused kernels (component msrl::torch):
///
///   msrl::torch_ops::selective_log_softmax(logits, targets, T)  -> logp [N] fp32, differentiable
///   msrl::torch_ops::selective_log_softmax_with_entropy(logits, targets, T) -> (logp, entropy), both
///       differentiable (an entropy bonus / penalty trains through the fused backward)
///   msrl::torch_ops::grpo_loss(logits, targets, old, ref, adv, mask, options, ...) -> scalar loss
///   msrl::torch_ops::linear_selective_log_softmax(hidden, weight, targets, T, chunk) -> logp, chunked
///
/// so an existing libtorch trainer calls them and `backward()` works. Logits are [N, V] or
/// [B, T, V] (fp32 / bf16 / fp16); targets int64 of the leading shape. The GRPO op forms
/// d loss / d logits in its forward (one extra [N, V] buffer in the logits' dtype, kept until
/// backward, which only scales it), so the whole step reads the logits twice and writes once.
///
/// Devices: CPU tensors run msrl::kernels. CUDA tensors run msrl::cuda once the program has
/// installed the CUDA kernel set (msrl/torch/cuda_kernel_set.cuh, compiled by nvcc in one .cu
/// file: `msrl::torch_ops::install_cuda_kernels()`); before that they are refused with an error
/// saying so. Every tensor of a call must be on the logits' device. The ops only check and
/// reshape tensors; the kernels behind them are a msrl::torch_ops::kernel_set (kernel_set.hpp).
/// With a CUDA libtorch define MSRL_TORCH_CUDA (the msrl::torch CMake component does) so the
/// kernels run on torch's current stream; without it they use the legacy default stream.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>

#include <torch/torch.h>
#if defined(MSRL_TORCH_CUDA)
#include <c10/cuda/CUDAStream.h>
#endif

#include "../core/error.hpp"
#include "../grpo/loss_types.hpp"
#include "kernel_set.hpp"

namespace msrl::torch_ops {

/// The kernel set installed for x's device, or null (a device other than CPU / CUDA, or CUDA
/// before install_cuda_kernels()).
inline const kernel_set* kernels_for(const at::Tensor& x) {
  if (x.device().is_cpu()) return installed_kernels(device_kind::cpu);
  if (x.device().is_cuda()) return installed_kernels(device_kind::cuda);
  return nullptr;
}

namespace detail {

/// The kernel set and context for tensors on x's device; every tensor of the call must be there.
struct route {
  const kernel_set* kernels;
  device_context ctx;
};

inline void require_kernel_device(const at::Tensor& x, const char* where, const char* arg) {
  require(x.device().is_cpu() || x.device().is_cuda(), where, arg, "must be a CPU or CUDA tensor, got device " + x.device().str());
}

inline route route_for(const at::Tensor& x, const char* where, const char* arg) {
  require_kernel_device(x, where, arg);
  const bool cuda = x.device().is_cuda();
  const kernel_set* set = kernels_for(x);
  require(set != nullptr, where, arg,
          "is a CUDA tensor but no CUDA kernels are installed: compile msrl/torch/cuda_kernel_set.cuh into one .cu file of the "
          "program and call msrl::torch_ops::install_cuda_kernels() once");
  device_context ctx{cuda ? static_cast<int>(x.get_device()) : -1, nullptr, static_cast<unsigned>(std::max(1, at::get_num_threads()))};
#if defined(MSRL_TORCH_CUDA)
  if (cuda) ctx.stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(x.get_device())).stream();
#endif
  return {set, ctx};
}

inline void require_same_device(const at::Tensor& t, const at::Tensor& x, const char* where, const char* name) {
  require(!t.defined() || t.numel() == 0 || t.device() == x.device(), where, name,
          std::string("must be on the logits' device (") + x.device().str() + "), got " + t.device().str());
}

/// Host kernels check target ranges while they read; on a device the check is one reduction here.
inline void require_targets_in_range(const at::Tensor& y, std::int64_t V, const char* where) {
  if (!y.device().is_cuda() || y.numel() == 0) return;
  require<value_error>(!y.ge(V).any().item<bool>(), where, "targets", "must be < V = " + std::to_string(V) + " (or negative: ignored)");
}

inline void check_logits(const at::Tensor& x, const at::Tensor& y, const char* where) {
  require(x.defined() && y.defined(), where, "logits/targets", "must be defined tensors");
  require_kernel_device(x, where, "logits");
  require_same_device(y, x, where, "targets");
  require<shape_error>(x.dim() >= 2, where, "logits", "must have shape [..., V]");
  require<shape_error>(y.sizes() == x.sizes().slice(0, x.dim() - 1), where, "targets", "must have the leading shape of logits");
  require(y.scalar_type() == at::kLong, where, "targets", "must be int64");
  const auto t = x.scalar_type();
  require(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, where, "logits", "must be float32, bfloat16 or float16");
  require_targets_in_range(y, x.size(-1), where);
}

inline logit_dtype dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
  case at::kBFloat16: return logit_dtype::bf16;
  case at::kHalf: return logit_dtype::f16;
  default: return logit_dtype::f32;
  }
}

/// A contiguous 2-D tensor as the kernels' view.
inline logits_ref ref_of(const at::Tensor& x2d) {
  return {x2d.data_ptr(), dtype_of(x2d), static_cast<std::size_t>(x2d.size(0)), static_cast<std::size_t>(x2d.size(1))};
}

/// Pointer to a defined float32 tensor's data, or null.
inline const float* f32_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

struct logprob_fn : public torch::autograd::Function<logprob_fn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets, double temperature) {
    const at::Tensor x = logits.reshape({-1, logits.size(-1)}).contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    const auto N = x.size(0);
    at::Tensor logp = at::empty({N}, x.options().dtype(at::kFloat));
    at::Tensor lse = at::empty({N}, x.options().dtype(at::kDouble));
    const route r = route_for(x, "msrl::torch_ops::selective_log_softmax", "logits");
    r.kernels->forward(r.ctx, ref_of(x), y.data_ptr<std::int64_t>(), temperature, logp.data_ptr<float>(), lse.data_ptr<double>(), nullptr);
    ctx->save_for_backward({x, y, lse});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["shape"] = logits.sizes().vec();
    return logp.reshape(targets.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list go) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1], &lse = saved[2];
    const at::Tensor g = go[0].reshape({-1}).to(at::kFloat).contiguous();
    at::Tensor gx = at::empty_like(x);
    const route r = route_for(x, "msrl::torch_ops::selective_log_softmax (backward)", "logits");
    r.kernels->backward(r.ctx, ref_of(x), y.data_ptr<std::int64_t>(), ctx->saved_data["temperature"].toDouble(),
                        {lse.data_ptr<double>(), g.data_ptr<float>(), nullptr, nullptr}, gx.data_ptr());
    return {gx.reshape(ctx->saved_data["shape"].toIntVector()), at::Tensor(), at::Tensor()};
  }
};

/// (logp, entropy) with one backward for both: d logits = g (onehot - p) / T - h p (log p + H) / T.
struct logprob_entropy_fn : public torch::autograd::Function<logprob_entropy_fn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                                                double temperature) {
    const at::Tensor x = logits.reshape({-1, logits.size(-1)}).contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    at::Tensor logp = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
    at::Tensor ent = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
    at::Tensor lse = at::empty({x.size(0)}, x.options().dtype(at::kDouble));
    const route r = route_for(x, "msrl::torch_ops::selective_log_softmax_with_entropy", "logits");
    r.kernels->forward(r.ctx, ref_of(x), y.data_ptr<std::int64_t>(), temperature, logp.data_ptr<float>(), lse.data_ptr<double>(),
                       ent.data_ptr<float>());
    ctx->save_for_backward({x, y, lse, ent.clone()}); // the returned entropy may be changed in place by the caller
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["shape"] = logits.sizes().vec();
    ctx->set_materialize_grads(false); // an unused output's gradient stays undefined (and costs nothing)
    return {logp.reshape(targets.sizes()), ent.reshape(targets.sizes())};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list go) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1], &lse = saved[2], &ent = saved[3];
    auto f32 = [](const at::Tensor& t) { return t.defined() ? t.reshape({-1}).to(at::kFloat).contiguous() : at::Tensor(); };
    const at::Tensor gl = f32(go[0]), gh = f32(go[1]);
    at::Tensor gx = at::empty_like(x);
    const route r = route_for(x, "msrl::torch_ops::selective_log_softmax_with_entropy (backward)", "logits");
    r.kernels->backward(r.ctx, ref_of(x), y.data_ptr<std::int64_t>(), ctx->saved_data["temperature"].toDouble(),
                        {lse.data_ptr<double>(), f32_or_null(gl), gh.defined() ? ent.data_ptr<float>() : nullptr, f32_or_null(gh)},
                        gx.data_ptr());
    return {gx.reshape(ctx->saved_data["shape"].toIntVector()), at::Tensor(), at::Tensor()};
  }
};

struct grpo_fn : public torch::autograd::Function<grpo_fn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                            const at::Tensor& old_logp, const at::Tensor& ref_logp, const at::Tensor& advantages, const at::Tensor& mask,
                            const at::Tensor& offsets, const at::Tensor& is_weights, const at::Tensor& policy_mask,
                            const grpo::loss_options& opt,
                            const grpo::loss_normalizer& norm, double temperature, grpo::loss_metrics* metrics) {
    constexpr const char* where = "msrl::torch_ops::grpo_loss";
    const at::Tensor x = logits.reshape({-1, logits.size(-1)}).contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    const auto N = static_cast<std::size_t>(x.size(0));
    auto f32 = [&](const at::Tensor& t, const char* name) {
      if (!t.defined() || t.numel() == 0) return at::Tensor();
      require_same_device(t, x, where, name);
      return t.detach().reshape({-1}).to(at::kFloat).contiguous();
    };
    const at::Tensor old = f32(old_logp, "old_logp"), ref = f32(ref_logp, "ref_logp"), adv = f32(advantages, "advantages");
    const at::Tensor isw = f32(is_weights, "is_weights");
    require(adv.defined(), where, "advantages", "must be given (one per sequence or per token)");
    at::Tensor m;
    if (mask.defined() && mask.numel()) {
      require_same_device(mask, x, where, "mask");
      m = mask.detach().reshape({-1}).to(at::kByte).contiguous();
    }
    if (!x.device().is_cpu()) { // the host kernels check this while they read
      const at::Tensor neg = y.lt(0);
      require<value_error>(!(m.defined() ? neg.logical_and(m.ne(0)) : neg).any().item<bool>(), where, "targets",
                           "must be >= 0 at unmasked tokens");
    }
    at::Tensor off;
    grpo::loss_arrays<float> in;
    if (offsets.defined() && offsets.numel()) {
      require_same_device(offsets, x, where, "offsets");
      require(offsets.scalar_type() == at::kLong, where, "offsets", "must be int64 (cu_seqlens style, B + 1 entries)");
      off = offsets.contiguous();
      in.layout = token_layout::packed({off.data_ptr<std::int64_t>(), static_cast<std::size_t>(off.numel())}, N);
    } else {
      require<shape_error>(targets.dim() == 2, where, "targets", "must be [B, T] when no packed offsets are given");
      in.layout = token_layout::padded(static_cast<std::size_t>(targets.size(0)), static_cast<std::size_t>(targets.size(1)));
    }
    in.old_logp = f32_or_null(old);
    in.ref_logp = f32_or_null(ref);
    in.advantages = adv.data_ptr<float>();
    in.num_advantages = static_cast<std::size_t>(adv.numel());
    in.mask = m.defined() ? m.data_ptr<std::uint8_t>() : nullptr;
    in.is_weights = f32_or_null(isw);
    in.num_is_weights = isw.defined() ? static_cast<std::size_t>(isw.numel()) : 0;
    at::Tensor pm;
    if (policy_mask.defined() && policy_mask.numel()) {
      require_same_device(policy_mask, x, where, "policy_mask");
      pm = policy_mask.detach().reshape({-1}).to(at::kByte).contiguous();
      require<shape_error>(static_cast<std::size_t>(pm.numel()) == N, where, "policy_mask", "must have one entry per token");
    }
    in.policy_mask = pm.defined() ? pm.data_ptr<std::uint8_t>() : nullptr;
    at::Tensor gx = at::empty_like(x);
    const route r = route_for(x, where, "logits");
    const grpo::loss_result res = r.kernels->grpo_loss(r.ctx, ref_of(x), y.data_ptr<std::int64_t>(), in, opt, norm, temperature, gx.data_ptr());
    if (metrics) *metrics = res.metrics;
    ctx->save_for_backward({gx});
    ctx->saved_data["shape"] = logits.sizes().vec();
    return at::scalar_tensor(res.loss, x.options().dtype(at::kFloat));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list go) {
    const at::Tensor gx = ctx->get_saved_variables()[0];
    at::Tensor g = gx.mul(go[0].to(gx.scalar_type())).reshape(ctx->saved_data["shape"].toIntVector());
    torch::autograd::variable_list out(13);
    out[0] = g;
    return out;
  }
};

/// Logits of one token chunk, [C, V] contiguous in the hidden states' dtype.
inline at::Tensor chunk_logits(const at::Tensor& h, const at::Tensor& w, std::int64_t c0, std::int64_t C) {
  return at::mm(h.narrow(0, c0, C), w.t()).contiguous();
}

struct linear_fn : public torch::autograd::Function<linear_fn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, double temperature, std::int64_t chunk) {
    const at::Tensor h = hidden.reshape({-1, hidden.size(-1)}).contiguous();
    const at::Tensor w = weight.contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    const auto N = h.size(0);
    at::Tensor logp = at::empty({N}, h.options().dtype(at::kFloat));
    at::Tensor lse = at::empty({N}, h.options().dtype(at::kDouble));
    const route r = route_for(h, "msrl::torch_ops::linear_selective_log_softmax", "hidden");
    for (std::int64_t c0 = 0; c0 < N; c0 += chunk) {
      const std::int64_t C = std::min(chunk, N - c0);
      const at::Tensor logits = chunk_logits(h, w, c0, C); // one chunk x V block
      r.kernels->forward(r.ctx, ref_of(logits), y.data_ptr<std::int64_t>() + c0, temperature, logp.data_ptr<float>() + c0,
                         lse.data_ptr<double>() + c0, nullptr);
    }
    ctx->save_for_backward({h, w, y, lse});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["shape"] = hidden.sizes().vec();
    return logp.reshape(targets.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list go) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &w = saved[1], &y = saved[2], &lse = saved[3];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const std::int64_t chunk = ctx->saved_data["chunk"].toInt();
    const at::Tensor g = go[0].reshape({-1}).to(at::kFloat).contiguous();
    const auto N = h.size(0);
    // d W accumulates over chunks in fp32 whatever the weights' dtype
    at::Tensor dh = at::empty_like(h), dw = at::zeros(w.sizes(), w.options().dtype(at::kFloat));
    const route r = route_for(h, "msrl::torch_ops::linear_selective_log_softmax (backward)", "hidden");
    for (std::int64_t c0 = 0; c0 < N; c0 += chunk) {
      const std::int64_t C = std::min(chunk, N - c0);
      at::Tensor logits = chunk_logits(h, w, c0, C); // recomputed, then overwritten by d logits
      r.kernels->backward(r.ctx, ref_of(logits), y.data_ptr<std::int64_t>() + c0, temperature,
                          {lse.data_ptr<double>() + c0, g.data_ptr<float>() + c0, nullptr, nullptr}, logits.data_ptr());
      dh.narrow(0, c0, C).copy_(at::mm(logits, w));
      dw.addmm_(logits.t().to(at::kFloat), h.narrow(0, c0, C).to(at::kFloat));
    }
    return {dh.reshape(ctx->saved_data["shape"].toIntVector()), dw.to(w.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

} // namespace detail

/// Fused linear log-prob: log softmax(hidden W^T / T)[targets] in token chunks (no [N, V] logits
/// tensor; workspace chunk x V in hidden's dtype), differentiable with respect to hidden and
/// weight (the backward recomputes each chunk's logits, overwrites them with d logits and
/// accumulates d W in fp32). hidden [..., H] and weight [V, H] of one dtype (fp32 / bf16 / fp16);
/// the chunk GEMMs are libtorch's (at::mm), the log-softmax sweeps msrl's.
inline at::Tensor linear_selective_log_softmax(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                               double temperature = 1.0, std::int64_t chunk = 1024) {
  constexpr const char* where = "msrl::torch_ops::linear_selective_log_softmax";
  require(hidden.defined() && weight.defined() && targets.defined(), where, "hidden/weight/targets", "must be defined tensors");
  detail::require_kernel_device(hidden, where, "hidden");
  detail::require_same_device(weight, hidden, where, "weight");
  detail::require_same_device(targets, hidden, where, "targets");
  const auto t = hidden.scalar_type();
  require(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, where, "hidden", "must be float32, bfloat16 or float16");
  require(weight.scalar_type() == t, where, "weight", "must have the dtype of hidden");
  require<shape_error>(weight.dim() == 2 && hidden.dim() >= 1 && hidden.size(-1) == weight.size(1), where, "weight",
                       "must be [V, H] with H = hidden.size(-1)");
  require<shape_error>(targets.sizes() == hidden.sizes().slice(0, hidden.dim() - 1), where, "targets",
                       "must have the leading shape of hidden");
  require(targets.scalar_type() == at::kLong, where, "targets", "must be int64");
  require(chunk >= 1, where, "chunk", "must be >= 1");
  require(std::isfinite(temperature) && temperature > 0.0, where, "temperature", "must be finite and > 0");
  detail::require_targets_in_range(targets, weight.size(0), where);
  return detail::linear_fn::apply(hidden, weight, targets, temperature, chunk);
}

/// Per-token log p(targets) under softmax(logits / T), fp32, with a fused backward.
inline at::Tensor selective_log_softmax(const at::Tensor& logits, const at::Tensor& targets, double temperature = 1.0) {
  constexpr const char* where = "msrl::torch_ops::selective_log_softmax";
  detail::check_logits(logits, targets, where);
  require(std::isfinite(temperature) && temperature > 0.0, where, "temperature", "must be finite and > 0");
  return detail::logprob_fn::apply(logits, targets, temperature);
}

/// Per-token (log p(targets), entropy) under softmax(logits / T), both fp32 of the leading shape,
/// with one fused backward for a loss that uses either or both: e.g. verl's
/// `pg_loss - entropy_coeff * masked_mean(entropy)`. Ignored targets (negative) give logp =
/// entropy = 0 and no gradient; a row of only -inf logits gives logp = -inf, entropy 0 and no
/// gradient; -inf logits get gradient 0.
inline std::tuple<at::Tensor, at::Tensor> selective_log_softmax_with_entropy(const at::Tensor& logits, const at::Tensor& targets,
                                                                             double temperature = 1.0) {
  constexpr const char* where = "msrl::torch_ops::selective_log_softmax_with_entropy";
  detail::check_logits(logits, targets, where);
  require(std::isfinite(temperature) && temperature > 0.0, where, "temperature", "must be finite and > 0");
  auto out = detail::logprob_entropy_fn::apply(logits, targets, temperature);
  return {out[0], out[1]};
}

/// The GRPO policy loss of msrl::grpo::policy_loss computed from logits, differentiable with
/// respect to the logits. targets [B, T] (padded) or [N] with `offsets` (packed, B + 1 int64);
/// old_logp / ref_logp / mask optional (undefined tensors), advantages [B] or per token;
/// is_weights: the rollout correction's detached weights (grpo/rollout_correction.hpp), [B] or
/// per token, optional; policy_mask: 0/1 per token on the surrogate only (grpo/token_masks.hpp),
/// optional.
inline at::Tensor grpo_loss(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& old_logp, const at::Tensor& ref_logp,
                            const at::Tensor& advantages, const at::Tensor& mask, const grpo::loss_options& options,
                            const grpo::loss_normalizer& normalizer = {}, double temperature = 1.0,
                            grpo::loss_metrics* metrics = nullptr, const at::Tensor& offsets = {},
                            const at::Tensor& is_weights = {}, const at::Tensor& policy_mask = {}) {
  constexpr const char* where = "msrl::torch_ops::grpo_loss";
  detail::check_logits(logits, targets, where);
  require(std::isfinite(temperature) && temperature > 0.0, where, "temperature", "must be finite and > 0");
  // optional tensors travel through autograd as empty (defined) tensors
  auto opt_t = [](const at::Tensor& t) { return t.defined() ? t : at::empty({0}); };
  return detail::grpo_fn::apply(logits, targets, opt_t(old_logp), opt_t(ref_logp), opt_t(advantages), opt_t(mask), opt_t(offsets),
                                opt_t(is_weights), opt_t(policy_mask), options, normalizer, temperature, metrics);
}

} // namespace msrl::torch_ops
