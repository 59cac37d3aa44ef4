#pragma once
/// \file Fused linear log-prob on the host (component msrl::eigen): hidden [N, H] x lm_head [V, H]
/// -> per-token log-probs, the GRPO loss and the gradients (d hidden, d W), in token chunks, so no
/// [N, V] logits tensor exists (workspace: one fp32 chunk x V block).
///
///   forward   per chunk: logits = h_c W^T (GEMM) -> selective log-softmax forward        2NHV
///   backward  per chunk: recompute logits -> d logits (in place) -> d h_c = dL W,
///             d W += dL^T h_c                                                           6NHV
///   GRPO loss (token level) per chunk: logits -> each row's log-prob, loss term and
///             d logits in place -> d h_c, d W: one sweep, no recompute                   6NHV
/// fp32 throughout. The GEMM is detail::host_gemm: the system BLAS's SGEMM when the target links
/// msrl::blas (MSRL_HAS_BLAS; its threads are the BLAS library's), otherwise Eigen's GEMM split
/// over `threads` std::threads. The log-softmax sweeps always use `threads`.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../backend/host_threads.hpp"
#include "../grpo/policy_loss.hpp"
#include "detail/host_gemm.hpp"
#include "detail/kept_row.hpp"
#include "detail/zero_fill.hpp"
#include "selective_log_softmax.hpp"

namespace msrl::kernels {

struct linear_options {
  double temperature = 1.0;
  std::size_t chunk = 1024; ///< tokens per GEMM chunk (workspace chunk x V fp32)
  unsigned threads = 0;     ///< threads of the log-softmax sweeps (and of the Eigen GEMM without BLAS)
  /// The chunk's logits block, at least min(N, chunk) x V floats, kept by the caller across calls;
  /// empty: each call allocates its own. A fresh block costs its page faults on every call (about
  /// 45 ms for 128 x 151,936 on the 2-core VM, a quarter of the forward), which a reused one avoids.
  std::span<float> workspace = {};
  /// d weight of the backward ops: false adds this call's gradient to d_weight (d W += ..., as a
  /// trainer summing micro-batches wants); true overwrites d_weight with it, as autograd's fresh
  /// gradient (zeroed first with streaming stores on `threads` threads: detail/zero_fill.hpp; a
  /// caller's std::fill of a [151,936, 512] gradient costs 3.7x as much on the 2-core VM).
  bool overwrite_d_weight = false;
};

namespace detail {

inline gemm_operand operand(const matrix_view<const float>& m, bool trans = false) {
  return {m.data, m.rows, m.cols, m.ld(), trans};
}
/// Rows [r0, r0 + n) of m as a GEMM operand.
inline gemm_operand operand_rows(const matrix_view<const float>& m, std::size_t r0, std::size_t n) {
  return {m.row(r0), n, m.cols, m.ld(), false};
}

inline void check_linear(const matrix_view<const float>& h, const matrix_view<const float>& w, std::span<const std::int64_t> targets,
                         const linear_options& o, const char* where) {
  check_logits(h, where);
  require<shape_error>(w.rows >= 1 && w.data != nullptr, where, "weight", "must be [V, H] with V >= 1");
  require<shape_error>(w.cols == h.cols, where, "weight",
                       "must have as many columns as hidden (H = " + std::to_string(h.cols) + "), got " + std::to_string(w.cols));
  require<shape_error>(w.stride == 0 || w.stride >= w.cols, where, "weight.stride", "must be 0 or >= cols");
  require(o.chunk >= 1, where, "options.chunk", "must be >= 1");
  check_options(logprob_options{o.temperature, o.threads}, where);
  check_targets(targets, h.rows, w.rows, where);
}

/// d hidden and d weight given and shaped as hidden and weight.
inline void check_linear_grads(const matrix_view<const float>& h, const matrix_view<const float>& w, const matrix_view<float>& dh,
                               const matrix_view<float>& dw, const char* where) {
  require<shape_error>(dh.data && dh.rows == h.rows && dh.cols == h.cols, where, "d_hidden", "must have the shape of hidden");
  require<shape_error>(dw.data && dw.rows == w.rows && dw.cols == w.cols, where, "d_weight", "must have the shape of weight");
  require<shape_error>(dh.stride == 0 || dh.stride >= dh.cols, where, "d_hidden.stride", "must be 0 or >= cols");
  require<shape_error>(dw.stride == 0 || dw.stride >= dw.cols, where, "d_weight.stride", "must be 0 or >= cols");
}

/// With overwrite_d_weight, d_weight zeroed before the first chunk adds to it (the fresh gradient).
inline void start_d_weight(const linear_options& o, const matrix_view<float>& dw) {
  if (o.overwrite_d_weight) zero_matrix(dw.data, dw.rows, dw.cols, dw.ld(), o.threads);
}

/// The chunk x V logits block: the caller's workspace (checked) or a buffer of its own. The own
/// buffer is zero-filled on purpose: its pages are then faulted in by one sequential sweep (left
/// to the GEMM's threads, the faults made the backward 1.7x slower on the 2-core VM).
struct logits_block {
  std::vector<float> own;
  float* data = nullptr;
  std::size_t size = 0;
  logits_block(const linear_options& o, std::size_t N, std::size_t V, const char* where) : size(std::min(N, o.chunk) * V) {
    if (!o.workspace.empty()) {
      require<shape_error>(o.workspace.size() >= size, where, "options.workspace",
                           "must be empty or hold at least min(N, chunk) x V = " + std::to_string(size) + " floats, got " +
                               std::to_string(o.workspace.size()));
      data = o.workspace.data();
    } else {
      own.resize(size);
      data = own.data();
    }
  }
};

} // namespace detail

// The functions below call detail::host_gemm, whose body depends on MSRL_HAS_BLAS; they live in the
// same build-specific inline namespace, so a program may mix translation units built either way.
inline namespace MSRL_HOST_GEMM_NS {

/// logp[i] = log softmax(h_i W^T / T)[t_i] (and optionally lse, double).
inline void linear_selective_log_softmax(const matrix_view<const float>& hidden, const matrix_view<const float>& weight,
                                         std::span<const std::int64_t> targets, std::span<float> logp, const linear_options& o = {},
                                         std::span<double> lse = {}) {
  constexpr const char* where = "msrl::kernels::linear_selective_log_softmax";
  detail::check_linear(hidden, weight, targets, o, where);
  const std::size_t N = hidden.rows, V = weight.rows;
  require<shape_error>(logp.size() == N, where, "logp", "must have one entry per token");
  require<shape_error>(lse.empty() || lse.size() == N, where, "lse", "must be empty or have one entry per token");
  std::vector<double> lse_buf(lse.empty() ? std::min(N, o.chunk) : 0);
  const detail::logits_block logits(o, N, V, where);
  for (std::size_t c0 = 0; c0 < N; c0 += o.chunk) {
    const std::size_t C = std::min(o.chunk, N - c0);
    detail::host_gemm(detail::operand_rows(hidden, c0, C), detail::operand(weight, true), logits.data, V, false, o.threads);
    const std::span<double> l = lse.empty() ? std::span<double>(lse_buf).first(C) : lse.subspan(c0, C);
    selective_log_softmax<float>({logits.data, C, V}, targets.subspan(c0, C), {logp.subspan(c0, C), l, {}},
                                 {.temperature = o.temperature, .threads = o.threads});
  }
}

/// d hidden = (d loss / d logits) W and d weight += (d loss / d logits)^T hidden for the loss whose
/// gradient with respect to logp is grad_logp; logits are recomputed chunk by chunk.
/// d_hidden is overwritten; d_weight is accumulated into, or overwritten with
/// linear_options::overwrite_d_weight.
inline void linear_selective_log_softmax_backward(const matrix_view<const float>& hidden, const matrix_view<const float>& weight,
                                                  std::span<const std::int64_t> targets, std::span<const double> lse,
                                                  std::span<const float> grad_logp, const matrix_view<float>& d_hidden,
                                                  const matrix_view<float>& d_weight, const linear_options& o = {}) {
  constexpr const char* where = "msrl::kernels::linear_selective_log_softmax_backward";
  detail::check_linear(hidden, weight, targets, o, where);
  const std::size_t N = hidden.rows, V = weight.rows;
  require<shape_error>(lse.size() == N && grad_logp.size() == N, where, "lse/grad_logp", "must have one entry per token");
  detail::check_linear_grads(hidden, weight, d_hidden, d_weight, where);
  const detail::logits_block logits(o, N, V, where);
  detail::start_d_weight(o, d_weight);
  for (std::size_t c0 = 0; c0 < N; c0 += o.chunk) {
    const std::size_t C = std::min(o.chunk, N - c0);
    const auto Hc = detail::operand_rows(hidden, c0, C);
    detail::host_gemm(Hc, detail::operand(weight, true), logits.data, V, false, o.threads);
    // d logits in place over the chunk's logits
    selective_log_softmax_backward<float, float>({logits.data, C, V}, targets.subspan(c0, C), lse.subspan(c0, C),
                                                 grad_logp.subspan(c0, C), matrix_view<float>{logits.data, C, V},
                                                 {.temperature = o.temperature, .threads = o.threads});
    const detail::gemm_operand dL{logits.data, C, V, V};
    detail::host_gemm(dL, detail::operand(weight), d_hidden.row(c0), d_hidden.ld(), false, o.threads);
    detail::host_gemm({dL.data, C, V, V, true}, Hc, d_weight.data, d_weight.ld(), true, o.threads);
  }
}

/// The GRPO loss of msrl::grpo::policy_loss from hidden states and the lm_head, with d hidden and
/// d weight (both or neither; d_weight accumulated into, or overwritten with
/// linear_options::overwrite_d_weight).
///
/// When each token's term needs only its own log-prob (the token ratio level with any form but the
/// row forms VESPO / GMPO) and gradients are asked for, one chunked sweep does it all
/// (grpo::policy_loss_swept): per chunk, logits = h_c W^T, then each row's log-prob, its term and
/// its logits' gradient (in place, while the row is in cache), then d h_c = dL W and d W += dL^T h_c.
/// Three GEMMs (6NHV) instead of four: the logits are not recomputed. Otherwise two sweeps: forward
/// (logp), the core loss, backward (recomputing the logits).
template <class M = std::uint8_t>
grpo::loss_result linear_grpo_loss(const matrix_view<const float>& hidden, const matrix_view<const float>& weight,
                                   std::span<const std::int64_t> targets, const token_layout& layout, std::span<const float> old_logp,
                                   std::span<const float> ref_logp, std::span<const float> advantages, std::span<const M> mask,
                                   const grpo::loss_options& opt, const grpo::loss_normalizer& norm, const matrix_view<float>& d_hidden,
                                   const matrix_view<float>& d_weight, const linear_options& o = {}) {
  constexpr const char* where = "msrl::kernels::linear_grpo_loss";
  detail::check_linear(hidden, weight, targets, o, where);
  const std::size_t N = hidden.rows, V = weight.rows;
  require<shape_error>(layout.total_tokens == N, where, "layout.total_tokens", "must equal the number of hidden rows");
  require<shape_error>(mask.empty() || mask.size() == N, where, "mask", "must be empty or have one entry per token");
  detail::check_unmasked_targets(targets, mask, where);
  const bool want_grad = d_hidden.data || d_weight.data;
  if (want_grad) detail::check_linear_grads(hidden, weight, d_hidden, d_weight, where);
  std::vector<float> logp(N), dlogp(N);
  std::vector<double> lse(N);
  // one logits block for both sweeps (the caller's, or one made here)
  detail::logits_block block(o, N, V, where);
  linear_options ow = o;
  ow.workspace = std::span<float>(block.data, block.size);
  const grpo::loss_inputs<float, M> li{layout, logp, old_logp, ref_logp, advantages, mask};
  const backend::host_threads exec{o.threads, 4096};

  if (want_grad && opt.level == grpo::ratio_level::token) {
    std::optional<grpo::loss_result> one;
    grpo::with_loss_form(opt, [&](const auto& form) {
      if constexpr (!grpo::row_form<std::decay_t<decltype(form)>>) {
        const logprob_options lopt{o.temperature, o.threads};
        const detail::kept_row<float, float> rows(logprob_outputs{logp, lse, {}}, lopt, V);
        const M* mk = mask.empty() ? nullptr : mask.data();
        detail::start_d_weight(o, d_weight);
        const auto sweep = [&](auto pass) {
          pass.blk = 1;
          using total = msrl::sums<grpo::detail::s_count>;
          total acc{};
          for (std::size_t c0 = 0; c0 < N; c0 += o.chunk) {
            const std::size_t C = std::min(o.chunk, N - c0);
            const auto Hc = detail::operand_rows(hidden, c0, C);
            detail::host_gemm(Hc, detail::operand(weight, true), block.data, V, false, o.threads);
            // each row: its log-prob, its term, then d loss / d logits over the row
            acc = acc + detail::row_pool(o.threads, V).reduce_n(C, [&](std::size_t r) {
              const std::size_t i = c0 + r;
              float* row = block.data + r * V;
              if (mk && mk[i] == M(0)) { // not read: zero log-prob and gradient
                rows.skip(i, row);
                dlogp[i] = 0.0f;
                return total{};
              }
              const auto st = rows.forward(row, i, targets[i]);
              const total s = pass(i);
              rows.backward(st, row, row, targets[i], dlogp[i]);
              return s;
            }, total{});
            const detail::gemm_operand dL{block.data, C, V, V};
            detail::host_gemm(dL, detail::operand(weight), d_hidden.row(c0), d_hidden.ld(), false, o.threads);
            detail::host_gemm({dL.data, C, V, V, true}, Hc, d_weight.data, d_weight.ld(), true, o.threads);
          }
          return acc;
        };
        one = grpo::policy_loss_swept(exec, form, li, opt, norm, std::span<float>(dlogp), sweep);
      }
    });
    if (one) return *one;
  }

  linear_selective_log_softmax(hidden, weight, targets, logp, ow, lse);
  const grpo::loss_result res = grpo::policy_loss(exec, li, opt, norm, std::span<float>(dlogp));
  if (want_grad) linear_selective_log_softmax_backward(hidden, weight, targets, lse, dlogp, d_hidden, d_weight, ow);
  return res;
}

} // namespace MSRL_HOST_GEMM_NS
} // namespace msrl::kernels
