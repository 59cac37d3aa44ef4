#pragma once
/// \file Fused linear log-prob on the host (component msrl::eigen): hidden [N, H] x lm_head [V, H]
/// -> per-token log-probs, the GRPO loss and the gradients (d hidden, d W), in token chunks, so no
/// [N, V] logits tensor exists (workspace: one fp32 chunk x V block).
///
///   forward   per chunk: logits = h_c W^T (Eigen GEMM) -> selective log-softmax forward   2NHV
///   backward  per chunk: recompute logits -> d logits (in place) -> d h_c = dL W,
///             d W += dL^T h_c                                                           6NHV
/// fp32 throughout. The GEMMs are split over `threads` std::threads by vocabulary rows (logits,
/// d W) and by tokens (d hidden); each part is one Eigen GEMM.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "../grpo/policy_loss.hpp"
#include "selective_log_softmax.hpp"

namespace msrl::kernels {

struct linear_options {
  double temperature = 1.0;
  std::size_t chunk = 1024; ///< tokens per GEMM chunk (workspace chunk x V fp32)
  unsigned threads = 0;     ///< threads of the log-softmax sweeps
};

namespace detail {

using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using cmap = Eigen::Map<const row_major, 0, Eigen::OuterStride<>>;
using mmap = Eigen::Map<row_major, 0, Eigen::OuterStride<>>;

inline cmap as_map(const matrix_view<const float>& m) {
  return cmap(m.data, static_cast<Eigen::Index>(m.rows), static_cast<Eigen::Index>(m.cols),
              Eigen::OuterStride<>(static_cast<Eigen::Index>(m.ld())));
}
inline mmap as_map(const matrix_view<float>& m) {
  return mmap(m.data, static_cast<Eigen::Index>(m.rows), static_cast<Eigen::Index>(m.cols),
              Eigen::OuterStride<>(static_cast<Eigen::Index>(m.ld())));
}

/// Calls f(lo, hi) on `parts` contiguous pieces of [0, n) in parallel.
template <class F>
void parallel_parts(unsigned threads, std::size_t n, F f) {
  const backend::host_threads pool{threads, 1};
  const std::size_t parts = std::max<std::size_t>(1, std::min<std::size_t>(pool.effective_threads(n), n));
  pool.for_each_n(parts, [&](std::size_t p) { f(n * p / parts, n * (p + 1) / parts); });
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

} // namespace detail

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
  detail::row_major logits(static_cast<Eigen::Index>(std::min(N, o.chunk)), static_cast<Eigen::Index>(V));
  const auto H = detail::as_map(hidden);
  const auto W = detail::as_map(weight);
  for (std::size_t c0 = 0; c0 < N; c0 += o.chunk) {
    const std::size_t C = std::min(o.chunk, N - c0);
    auto L = logits.topRows(static_cast<Eigen::Index>(C));
    const auto Hc = H.middleRows(static_cast<Eigen::Index>(c0), static_cast<Eigen::Index>(C));
    detail::parallel_parts(o.threads, V, [&](std::size_t v0, std::size_t v1) {
      const auto a = static_cast<Eigen::Index>(v0), b = static_cast<Eigen::Index>(v1 - v0);
      L.middleCols(a, b).noalias() = Hc * W.middleRows(a, b).transpose();
    });
    const std::span<double> l = lse.empty() ? std::span<double>(lse_buf).first(C) : lse.subspan(c0, C);
    selective_log_softmax<float>({logits.data(), C, V}, targets.subspan(c0, C), {logp.subspan(c0, C), l, {}},
                                 {.temperature = o.temperature, .threads = o.threads});
  }
}

/// d hidden = (d loss / d logits) W and d weight += (d loss / d logits)^T hidden for the loss whose
/// gradient with respect to logp is grad_logp; logits are recomputed chunk by chunk.
/// d_hidden is overwritten; d_weight is accumulated into (zero it first for a fresh gradient).
inline void linear_selective_log_softmax_backward(const matrix_view<const float>& hidden, const matrix_view<const float>& weight,
                                                  std::span<const std::int64_t> targets, std::span<const double> lse,
                                                  std::span<const float> grad_logp, const matrix_view<float>& d_hidden,
                                                  const matrix_view<float>& d_weight, const linear_options& o = {}) {
  constexpr const char* where = "msrl::kernels::linear_selective_log_softmax_backward";
  detail::check_linear(hidden, weight, targets, o, where);
  const std::size_t N = hidden.rows, V = weight.rows;
  require<shape_error>(lse.size() == N && grad_logp.size() == N, where, "lse/grad_logp", "must have one entry per token");
  require<shape_error>(d_hidden.data && d_hidden.rows == N && d_hidden.cols == hidden.cols, where, "d_hidden", "must have the shape of hidden");
  require<shape_error>(d_weight.data && d_weight.rows == V && d_weight.cols == weight.cols, where, "d_weight", "must have the shape of weight");
  detail::row_major logits(static_cast<Eigen::Index>(std::min(N, o.chunk)), static_cast<Eigen::Index>(V));
  const auto H = detail::as_map(hidden);
  const auto W = detail::as_map(weight);
  auto dH = detail::as_map(d_hidden);
  auto dW = detail::as_map(d_weight);
  for (std::size_t c0 = 0; c0 < N; c0 += o.chunk) {
    const std::size_t C = std::min(o.chunk, N - c0);
    const auto rows = [&](auto& m) { return m.middleRows(static_cast<Eigen::Index>(c0), static_cast<Eigen::Index>(C)); };
    auto L = logits.topRows(static_cast<Eigen::Index>(C));
    const auto Hc = rows(H);
    detail::parallel_parts(o.threads, V, [&](std::size_t v0, std::size_t v1) {
      const auto a = static_cast<Eigen::Index>(v0), b = static_cast<Eigen::Index>(v1 - v0);
      L.middleCols(a, b).noalias() = Hc * W.middleRows(a, b).transpose();
    });
    // d logits in place over the chunk's logits
    selective_log_softmax_backward<float, float>({logits.data(), C, V}, targets.subspan(c0, C), lse.subspan(c0, C),
                                                 grad_logp.subspan(c0, C), matrix_view<float>{logits.data(), C, V},
                                                 {.temperature = o.temperature, .threads = o.threads});
    auto dHc = rows(dH);
    detail::parallel_parts(o.threads, C, [&](std::size_t r0, std::size_t r1) {
      const auto a = static_cast<Eigen::Index>(r0), b = static_cast<Eigen::Index>(r1 - r0);
      dHc.middleRows(a, b).noalias() = L.middleRows(a, b) * W;
    });
    detail::parallel_parts(o.threads, V, [&](std::size_t v0, std::size_t v1) {
      const auto a = static_cast<Eigen::Index>(v0), b = static_cast<Eigen::Index>(v1 - v0);
      dW.middleRows(a, b).noalias() += L.middleCols(a, b).transpose() * Hc;
    });
  }
}

/// The GRPO loss of msrl::grpo::policy_loss from hidden states and the lm_head, with d hidden and
/// d weight (accumulated). Two chunked sweeps: forward (logp), core loss, backward (recompute).
template <class M = std::uint8_t>
grpo::loss_result linear_grpo_loss(const matrix_view<const float>& hidden, const matrix_view<const float>& weight,
                                   std::span<const std::int64_t> targets, const token_layout& layout, std::span<const float> old_logp,
                                   std::span<const float> ref_logp, std::span<const float> advantages, std::span<const M> mask,
                                   const grpo::loss_options& opt, const grpo::loss_normalizer& norm, const matrix_view<float>& d_hidden,
                                   const matrix_view<float>& d_weight, const linear_options& o = {}) {
  constexpr const char* where = "msrl::kernels::linear_grpo_loss";
  const std::size_t N = hidden.rows;
  require<shape_error>(layout.total_tokens == N, where, "layout.total_tokens", "must equal the number of hidden rows");
  std::vector<float> logp(N), dlogp(N);
  std::vector<double> lse(N);
  linear_selective_log_softmax(hidden, weight, targets, logp, o, lse);
  const grpo::loss_inputs<float, M> li{layout, logp, old_logp, ref_logp, advantages, mask};
  const grpo::loss_result res = grpo::policy_loss(backend::host_threads{o.threads, 4096}, li, opt, norm, std::span<float>(dlogp));
  if (d_hidden.data || d_weight.data)
    linear_selective_log_softmax_backward(hidden, weight, targets, lse, dlogp, d_hidden, d_weight, o);
  return res;
}

} // namespace msrl::kernels
