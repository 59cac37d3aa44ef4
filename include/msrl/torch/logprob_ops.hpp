#pragma once
/// \file libtorch autograd ops over msrl's fused host kernels (component msrl::torch):
///
///   msrl::torch_ops::selective_log_softmax(logits, targets, T)  -> logp [N] fp32, differentiable
///   msrl::torch_ops::selective_log_softmax_with_entropy(logits, targets, T) -> (logp, entropy), both
///       differentiable (an entropy bonus / penalty trains through the fused backward)
///   msrl::torch_ops::grpo_loss(logits, targets, old, ref, adv, mask, options, ...) -> scalar loss
///   msrl::torch_ops::linear_selective_log_softmax(hidden, weight, targets, T, chunk) -> logp, chunked
///
/// so an existing libtorch trainer calls them and `backward()` works. Logits are [N, V] or
/// [B, T, V] (fp32 / bf16 / fp16, CPU); targets int64 of the leading shape. The GRPO op forms
/// d loss / d logits in its forward (one extra [N, V] buffer in the logits' dtype, kept until
/// backward, which only scales it), so the whole step reads the logits twice and writes once.
/// CUDA tensors are rejected with a clear error; the device kernels are msrl/cuda/*.cuh.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <tuple>

#include <torch/torch.h>

#include "../core/error.hpp"
#include "../grpo/policy_loss.hpp"
#include "../kernels/grpo_loss.hpp"
#include "../kernels/selective_log_softmax.hpp"

namespace msrl::torch_ops {

namespace detail {

inline void check_logits(const at::Tensor& x, const at::Tensor& y, const char* where) {
  require(x.defined() && y.defined(), where, "logits/targets", "must be defined tensors");
  require(x.device().is_cpu() && y.device().is_cpu(), where, "logits",
          "must be a CPU tensor (CUDA tensors: use the msrl/cuda launchers)");
  require<shape_error>(x.dim() >= 2, where, "logits", "must have shape [..., V]");
  require<shape_error>(y.sizes() == x.sizes().slice(0, x.dim() - 1), where, "targets", "must have the leading shape of logits");
  require(y.scalar_type() == at::kLong, where, "targets", "must be int64");
  const auto t = x.scalar_type();
  require(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, where, "logits", "must be float32, bfloat16 or float16");
}

template <class F>
decltype(auto) dispatch(at::ScalarType t, F&& f) {
  switch (t) {
  case at::kBFloat16: return f(kernels::bf16{});
  case at::kHalf: return f(kernels::f16{});
  default: return f(float{});
  }
}

template <class T>
kernels::matrix_view<const T> view(const at::Tensor& x2d) {
  return {reinterpret_cast<const T*>(x2d.data_ptr()), static_cast<std::size_t>(x2d.size(0)), static_cast<std::size_t>(x2d.size(1))};
}

inline unsigned threads() { return static_cast<unsigned>(std::max(1, at::get_num_threads())); }

struct logprob_fn : public torch::autograd::Function<logprob_fn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets, double temperature) {
    const at::Tensor x = logits.reshape({-1, logits.size(-1)}).contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    const auto N = x.size(0);
    at::Tensor logp = at::empty({N}, x.options().dtype(at::kFloat));
    at::Tensor lse = at::empty({N}, x.options().dtype(at::kDouble));
    dispatch(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      kernels::selective_log_softmax(view<T>(x), {y.data_ptr<std::int64_t>(), static_cast<std::size_t>(N)},
                                     {{logp.data_ptr<float>(), static_cast<std::size_t>(N)}, {lse.data_ptr<double>(), static_cast<std::size_t>(N)}, {}},
                                     {.temperature = temperature, .threads = threads()});
    });
    ctx->save_for_backward({x, y, lse});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["shape"] = logits.sizes().vec();
    return logp.reshape(targets.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list go) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1], &lse = saved[2];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const auto N = static_cast<std::size_t>(x.size(0)), V = static_cast<std::size_t>(x.size(1));
    const at::Tensor g = go[0].reshape({-1}).to(at::kFloat).contiguous();
    at::Tensor gx = at::empty_like(x);
    dispatch(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      kernels::selective_log_softmax_backward<T, T>(view<T>(x), {y.data_ptr<std::int64_t>(), N}, {lse.data_ptr<double>(), N},
                                                    {g.data_ptr<float>(), N}, {reinterpret_cast<T*>(gx.data_ptr()), N, V},
                                                    {.temperature = temperature, .threads = threads()});
    });
    return {gx.reshape(ctx->saved_data["shape"].toIntVector()), at::Tensor(), at::Tensor()};
  }
};

/// (logp, entropy) with one backward for both: d logits = g (onehot - p) / T - h p (log p + H) / T.
struct logprob_entropy_fn : public torch::autograd::Function<logprob_entropy_fn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                                                double temperature) {
    const at::Tensor x = logits.reshape({-1, logits.size(-1)}).contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    const auto N = static_cast<std::size_t>(x.size(0));
    at::Tensor logp = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
    at::Tensor ent = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
    at::Tensor lse = at::empty({x.size(0)}, x.options().dtype(at::kDouble));
    dispatch(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      kernels::selective_log_softmax(view<T>(x), {y.data_ptr<std::int64_t>(), N},
                                     {{logp.data_ptr<float>(), N}, {lse.data_ptr<double>(), N}, {ent.data_ptr<float>(), N}},
                                     {.temperature = temperature, .threads = threads()});
    });
    ctx->save_for_backward({x, y, lse, ent.clone()}); // the returned entropy may be changed in place by the caller
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["shape"] = logits.sizes().vec();
    ctx->set_materialize_grads(false); // an unused output's gradient stays undefined (and costs nothing)
    return {logp.reshape(targets.sizes()), ent.reshape(targets.sizes())};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list go) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1], &lse = saved[2], &ent = saved[3];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const auto N = static_cast<std::size_t>(x.size(0)), V = static_cast<std::size_t>(x.size(1));
    auto f32 = [](const at::Tensor& t) { return t.defined() ? t.reshape({-1}).to(at::kFloat).contiguous() : at::Tensor(); };
    const at::Tensor gl = f32(go[0]), gh = f32(go[1]);
    auto span_of = [N](const at::Tensor& t) {
      return t.defined() ? std::span<const float>(t.data_ptr<float>(), N) : std::span<const float>{};
    };
    at::Tensor gx = at::empty_like(x);
    dispatch(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      kernels::selective_log_softmax_backward<T, T>(
          view<T>(x), {y.data_ptr<std::int64_t>(), N},
          kernels::logprob_backward_inputs{{lse.data_ptr<double>(), N}, span_of(gl), {ent.data_ptr<float>(), N}, span_of(gh)},
          {reinterpret_cast<T*>(gx.data_ptr()), N, V}, {.temperature = temperature, .threads = threads()});
    });
    return {gx.reshape(ctx->saved_data["shape"].toIntVector()), at::Tensor(), at::Tensor()};
  }
};

struct grpo_fn : public torch::autograd::Function<grpo_fn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                            const at::Tensor& old_logp, const at::Tensor& ref_logp, const at::Tensor& advantages, const at::Tensor& mask,
                            const at::Tensor& offsets, const grpo::loss_options& opt, const grpo::loss_normalizer& norm,
                            double temperature, grpo::loss_metrics* metrics) {
    constexpr const char* where = "msrl::torch_ops::grpo_loss";
    const at::Tensor x = logits.reshape({-1, logits.size(-1)}).contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    const auto N = static_cast<std::size_t>(x.size(0)), V = static_cast<std::size_t>(x.size(1));
    auto f32 = [&](const at::Tensor& t, const char* name) {
      if (!t.defined() || t.numel() == 0) return at::Tensor();
      require(t.device().is_cpu(), where, name, "must be a CPU tensor");
      return t.detach().reshape({-1}).to(at::kFloat).contiguous();
    };
    const at::Tensor old = f32(old_logp, "old_logp"), ref = f32(ref_logp, "ref_logp"), adv = f32(advantages, "advantages");
    require(adv.defined(), where, "advantages", "must be given (one per sequence or per token)");
    at::Tensor m;
    if (mask.defined() && mask.numel()) m = mask.detach().reshape({-1}).to(at::kByte).contiguous();
    at::Tensor off;
    token_layout lay;
    if (offsets.defined() && offsets.numel()) {
      require(offsets.scalar_type() == at::kLong, where, "offsets", "must be int64 (cu_seqlens style, B + 1 entries)");
      off = offsets.contiguous();
      lay = token_layout::packed({off.data_ptr<std::int64_t>(), static_cast<std::size_t>(off.numel())}, N);
    } else {
      require<shape_error>(targets.dim() == 2, where, "targets", "must be [B, T] when no packed offsets are given");
      lay = token_layout::padded(static_cast<std::size_t>(targets.size(0)), static_cast<std::size_t>(targets.size(1)));
    }
    auto span_of = [](const at::Tensor& t) {
      return t.defined() ? std::span<const float>(t.data_ptr<float>(), static_cast<std::size_t>(t.numel())) : std::span<const float>{};
    };
    at::Tensor gx = at::empty_like(x);
    const grpo::loss_result res = dispatch(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      const kernels::logits_loss_inputs<T> in{lay,
                                               view<T>(x),
                                               {y.data_ptr<std::int64_t>(), N},
                                               span_of(old),
                                               span_of(ref),
                                               span_of(adv),
                                               m.defined() ? std::span<const std::uint8_t>(m.data_ptr<std::uint8_t>(), N)
                                                           : std::span<const std::uint8_t>{}};
      return kernels::grpo_loss_from_logits<T, std::uint8_t, T>(
          in, opt, norm, kernels::logits_loss_outputs<T>{{reinterpret_cast<T*>(gx.data_ptr()), N, V}},
          {.temperature = temperature, .threads = threads()});
    });
    if (metrics) *metrics = res.metrics;
    ctx->save_for_backward({gx});
    ctx->saved_data["shape"] = logits.sizes().vec();
    return at::scalar_tensor(res.loss, x.options().dtype(at::kFloat));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list go) {
    const at::Tensor gx = ctx->get_saved_variables()[0];
    at::Tensor g = gx.mul(go[0].to(gx.scalar_type())).reshape(ctx->saved_data["shape"].toIntVector());
    torch::autograd::variable_list out(11);
    out[0] = g;
    return out;
  }
};

struct linear_fn : public torch::autograd::Function<linear_fn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, double temperature, std::int64_t chunk) {
    const at::Tensor h = hidden.reshape({-1, hidden.size(-1)}).contiguous();
    const at::Tensor w = weight.contiguous();
    const at::Tensor y = targets.reshape({-1}).contiguous();
    const auto N = h.size(0), V = w.size(0);
    at::Tensor logp = at::empty({N}, h.options());
    at::Tensor lse = at::empty({N}, h.options().dtype(at::kDouble));
    for (std::int64_t c0 = 0; c0 < N; c0 += chunk) {
      const std::int64_t C = std::min(chunk, N - c0);
      const at::Tensor logits = at::mm(h.narrow(0, c0, C), w.t()).contiguous(); // one chunk x V block
      const auto n = static_cast<std::size_t>(C);
      kernels::selective_log_softmax<float>(view<float>(logits), {y.data_ptr<std::int64_t>() + c0, n},
                                            {{logp.data_ptr<float>() + c0, n}, {lse.data_ptr<double>() + c0, n}, {}},
                                            {.temperature = temperature, .threads = threads()});
    }
    (void)V;
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
    at::Tensor dh = at::empty_like(h), dw = at::zeros_like(w);
    for (std::int64_t c0 = 0; c0 < N; c0 += chunk) {
      const std::int64_t C = std::min(chunk, N - c0);
      const auto n = static_cast<std::size_t>(C);
      at::Tensor logits = at::mm(h.narrow(0, c0, C), w.t()).contiguous(); // recomputed
      const auto V = static_cast<std::size_t>(logits.size(1));
      kernels::selective_log_softmax_backward<float, float>(
          view<float>(logits), {y.data_ptr<std::int64_t>() + c0, n}, {lse.data_ptr<double>() + c0, n}, {g.data_ptr<float>() + c0, n},
          {logits.data_ptr<float>(), n, V}, {.temperature = temperature, .threads = threads()}); // d logits in place
      dh.narrow(0, c0, C).copy_(at::mm(logits, w));
      dw.addmm_(logits.t(), h.narrow(0, c0, C));
    }
    return {dh.reshape(ctx->saved_data["shape"].toIntVector()), dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

} // namespace detail

/// Fused linear log-prob: log softmax(hidden W^T / T)[targets] in token chunks (no [N, V] logits
/// tensor; workspace chunk x V fp32), differentiable with respect to hidden and weight (the
/// backward recomputes each chunk's logits). hidden [..., H] and weight [V, H] float32, CPU.
inline at::Tensor linear_selective_log_softmax(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                               double temperature = 1.0, std::int64_t chunk = 1024) {
  constexpr const char* where = "msrl::torch_ops::linear_selective_log_softmax";
  require(hidden.defined() && weight.defined() && targets.defined(), where, "hidden/weight/targets", "must be defined tensors");
  require(hidden.device().is_cpu() && weight.device().is_cpu() && targets.device().is_cpu(), where, "hidden/weight/targets",
          "must be CPU tensors");
  require(hidden.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, where, "hidden/weight", "must be float32");
  require<shape_error>(weight.dim() == 2 && hidden.dim() >= 1 && hidden.size(-1) == weight.size(1), where, "weight",
                       "must be [V, H] with H = hidden.size(-1)");
  require<shape_error>(targets.sizes() == hidden.sizes().slice(0, hidden.dim() - 1), where, "targets",
                       "must have the leading shape of hidden");
  require(targets.scalar_type() == at::kLong, where, "targets", "must be int64");
  require(chunk >= 1, where, "chunk", "must be >= 1");
  require(std::isfinite(temperature) && temperature > 0.0, where, "temperature", "must be finite and > 0");
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
/// old_logp / ref_logp / mask optional (undefined tensors), advantages [B] or per token.
inline at::Tensor grpo_loss(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& old_logp, const at::Tensor& ref_logp,
                            const at::Tensor& advantages, const at::Tensor& mask, const grpo::loss_options& options,
                            const grpo::loss_normalizer& normalizer = {}, double temperature = 1.0,
                            grpo::loss_metrics* metrics = nullptr, const at::Tensor& offsets = {}) {
  constexpr const char* where = "msrl::torch_ops::grpo_loss";
  detail::check_logits(logits, targets, where);
  require(std::isfinite(temperature) && temperature > 0.0, where, "temperature", "must be finite and > 0");
  // optional tensors travel through autograd as empty (defined) tensors
  auto opt_t = [](const at::Tensor& t) { return t.defined() ? t : at::empty({0}); };
  return detail::grpo_fn::apply(logits, targets, opt_t(old_logp), opt_t(ref_logp), opt_t(advantages), opt_t(mask), opt_t(offsets), options,
                                normalizer, temperature, metrics);
}

} // namespace msrl::torch_ops
