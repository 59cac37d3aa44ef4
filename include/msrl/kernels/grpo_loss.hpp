#pragma once
/// \file Fused GRPO policy loss from logits on the host: one call takes logits [N, V], target ids,
/// old / ref log-probs, advantages, mask and the core's loss options, and returns the loss, the
/// metrics and (optionally) d loss / d logits. No [N, V] temporary is made.
///
///   pass 1  selective log-softmax forward (one read of each unmasked row) -> logp, lse   [N] fp32
///   core    msrl::grpo::policy_loss on logp -> loss, metrics, d loss / d logp            [N]
///   pass 2  d logits = (d loss / d logp) (onehot - softmax) / T (one read + one write per row;
///           masked rows are written as zeros without being read)
///
/// When each token's term needs only its own log-prob (the token ratio level with any form but
/// the row forms VESPO / GMPO), the three steps run row by row instead (grpo::policy_loss_swept):
/// a row's forward, its term and its backward follow each other while the row is in cache, so the
/// logits are read from memory once. The core's weights come from the mask before the sweep.
/// A row keeps its softmax numerators in an fp32 scratch row between its forward and backward
/// (detail/kept_row.hpp): one exponential per element instead of two.
///
/// The per-token GRPO math is the core's (grpo/policy_loss.hpp, grpo/scalar_math.hpp): every
/// ratio level, clip, KL estimator, aggregation and normaliser behaves exactly as there.
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <string>
#include <vector>

#include "../backend/host_threads.hpp"
#include "../grpo/policy_loss.hpp"
#include "detail/kept_row.hpp"
#include "selective_log_softmax.hpp"

namespace msrl::kernels {

/// Inputs of the fused loss. Per-token arrays have one entry per logits row (N = layout.total_tokens).
template <class T, class M = std::uint8_t>
struct logits_loss_inputs {
  token_layout layout;
  matrix_view<const T> logits;           ///< [N, V]
  std::span<const std::int64_t> targets; ///< [N]; must be in [0, V) at unmasked tokens
  std::span<const float> old_logp;       ///< [N] or empty (on-policy)
  std::span<const float> ref_logp;       ///< [N]; required when beta != 0
  std::span<const float> advantages;     ///< [B] or [N]
  std::span<const M> mask;               ///< [N] 0/1 or empty
  std::span<const float> is_weights = {}; ///< [B] or [N] rollout IS weights, or empty (grpo::loss_inputs)
  std::span<const M> policy_mask = {};    ///< [N] 0/1 on the surrogate only, or empty (grpo::loss_inputs)

  /// The checked span form of the pointer form the CUDA kernels and torch ops share.
  static logits_loss_inputs of(matrix_view<const T> logits, const std::int64_t* targets,
                               const grpo::loss_arrays<float, M>& a) {
    const std::size_t n = a.layout.total_tokens;
    const grpo::loss_inputs<float, M> s = a.inputs(nullptr);
    return {a.layout, logits, {targets, n}, s.old_logp, s.ref_logp, s.advantages, s.mask, s.is_weights, s.policy_mask};
  }
};

/// Optional outputs besides the loss: the gradient (may alias the logits for in-place) and the
/// per-token log-probs / lse / entropy the forward computed.
template <class G = float>
struct logits_loss_outputs {
  matrix_view<G> grad_logits{};
  std::span<float> logp{};
  std::span<double> lse{};
  std::span<float> entropy{};
};

template <class T, class M = std::uint8_t, class G = float>
grpo::loss_result grpo_loss_from_logits(const logits_loss_inputs<T, M>& in, const grpo::loss_options& opt,
                                        const grpo::loss_normalizer& norm = {}, const logits_loss_outputs<G>& out = {},
                                        const logprob_options& lopt = {}) {
  static_assert(is_logit_type_v<T> && is_logit_type_v<G>, "logits and gradients must be float, bf16 or f16");
  constexpr const char* where = "msrl::kernels::grpo_loss_from_logits";
  const std::size_t N = in.logits.rows;
  detail::check_logits(in.logits, where);
  detail::check_options(lopt, where);
  require<shape_error>(in.layout.total_tokens == N, where, "layout.total_tokens",
                       "must equal the number of logits rows (" + std::to_string(N) + ")");
  detail::check_targets(in.targets, N, in.logits.cols, where);
  require<shape_error>(in.mask.empty() || in.mask.size() == N, where, "mask", "must be empty or have one entry per row");
  detail::check_unmasked_targets(in.targets, in.mask, where);
  require<shape_error>(out.logp.empty() || out.logp.size() == N, where, "out.logp", "must be empty or have N entries");
  require<shape_error>(out.lse.empty() || out.lse.size() == N, where, "out.lse", "must be empty or have N entries");
  require<shape_error>(out.entropy.empty() || out.entropy.size() == N, where, "out.entropy", "must be empty or have N entries");
  const bool want_grad = out.grad_logits.data != nullptr;
  if (want_grad)
    require<shape_error>(out.grad_logits.rows == N && out.grad_logits.cols == in.logits.cols, where, "out.grad_logits",
                         "must be null or have the shape of logits");

  std::vector<float> logp_buf(out.logp.empty() ? N : 0), dlogp(want_grad ? N : 0);
  std::vector<double> lse_buf(out.lse.empty() ? N : 0);
  const std::span<float> logp = out.logp.empty() ? std::span<float>(logp_buf) : out.logp;
  const std::span<double> lse = out.lse.empty() ? std::span<double>(lse_buf) : out.lse;

  const grpo::loss_inputs<float, M> li{in.layout, logp, in.old_logp, in.ref_logp, in.advantages, in.mask, in.is_weights,
                                       in.policy_mask};
  const backend::host_threads exec{lopt.threads, 4096};
  const M* mask = in.mask.empty() ? nullptr : in.mask.data();
  const logprob_outputs fwd_out{logp, lse, out.entropy};

  // One pass when every token's term needs only its own log-prob (the token ratio level, a form
  // without a row statistic): each row's log-prob, its term and its gradient while it is in cache.
  if (want_grad && opt.level == grpo::ratio_level::token) {
    std::optional<grpo::loss_result> one;
    grpo::with_loss_form(opt, [&](const auto& form) {
      if constexpr (!grpo::row_form<std::decay_t<decltype(form)>>) {
        const detail::kept_row<T, G> rows(fwd_out, lopt, in.logits.cols);
        const auto sweep = [&](auto pass) {
          pass.blk = 1;
          using total = msrl::sums<grpo::detail::s_count>;
          return detail::row_pool(lopt.threads, in.logits.cols).reduce_n(N, [&](std::size_t i) {
            const T* row = in.logits.row(i);
            G* g = out.grad_logits.row(i);
            const std::int64_t y = in.targets[i];
            if (y < 0 || (mask && mask[i] == M(0))) { // not read: zero log-prob and gradient
              rows.skip(i, g);
              dlogp[i] = 0.0f;
              return total{};
            }
            const auto st = rows.forward(row, i, y, i + 1 < N ? in.logits.row(i + 1) : nullptr);
            const total s = pass(i);
            rows.backward(st, row, g, y, dlogp[i]);
            return s;
          }, total{});
        };
        one = grpo::policy_loss_swept(exec, form, li, opt, norm, std::span<float>(dlogp), sweep);
      }
    });
    if (one) return *one;
  }

  // pass 1: log-probs of the unmasked tokens (masked rows are not read)
  detail::forward_rows<T, M>(in.logits, in.targets.data(), fwd_out, lopt, mask);

  // the core's loss, metrics and d loss / d logp
  const grpo::loss_result res = grpo::policy_loss(exec, li, opt, norm, std::span<float>(dlogp));

  // pass 2: d logits
  if (want_grad) {
    selective_log_softmax_backward<T, G>(in.logits, in.targets, std::span<const double>(lse), std::span<const float>(dlogp),
                                         out.grad_logits, lopt);
  }
  return res;
}

} // namespace msrl::kernels
