#pragma once
/// \file The clipped-ratio GRPO policy loss with an optional KL penalty, aggregated over tokens and
/// sequences, its closed-form gradient with respect to every token's log-prob, and the training
/// metrics. One algorithm, any backend (backend/concept.hpp), any loss form (surrogate.hpp).
///
///   loss = scale * sum_{i,t} w_{i,t} * ( surrogate(rho_{i,t}, A_{i,t}) + beta * KL_{i,t} )
///
/// where rho is the token ratio exp(logp - old_logp) or the GSPO sequence ratio, the surrogate is
/// the loss form (clipped_ratio unless given), KL is math::kl_penalty, and the weights w come from
/// the aggregation (aggregate.hpp; docs/grpo-math.md). The gradient d loss / d logp is written to
/// a caller buffer: a std::span or any contiguous range of the element type. On the host, fp32
/// inputs run in fp32 vector lanes and fp64 inputs in double lanes of the CPU's ISA, chosen at run
/// time (core/simd.hpp; docs/grpo-math.md section 8). Bad shapes, options, masks and weights throw
/// before anything is written; non-finite log-probs at unmasked positions are found by the token
/// pass, so that error leaves the gradient buffer partly written.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "../backend/concept.hpp"
#include "../backend/reference.hpp"
#include "../core/error.hpp"
#include "../core/ranges.hpp"
#include "../core/token_layout.hpp"
#include "aggregate.hpp"
#include "detail/loss_passes.hpp"
#include "loss_types.hpp"
#include "scalar_math.hpp"
#include "surrogate.hpp"

namespace msrl::grpo {

namespace detail {
/// The token pass run by the backend over blocks of tokens, in the CPU's vector lanes on hosts.
struct backend_sweep {};

template <msrl::execution_backend Backend, surrogate_form Form, class T, class M, class G, class Sweep>
loss_result policy_loss_impl(const Backend& exec, const Form& form, const loss_inputs<T, M>& in, const loss_options& opt,
                             const loss_normalizer& norm, std::span<G> grad_logp, Sweep&& sweep);
} // namespace detail

/// Computes the aggregated loss under a given loss form, the metrics and (when grad_logp is
/// non-empty) d loss / d logp. The options' clip fields are the built-in form's and unused here.
template <msrl::execution_backend Backend, surrogate_form Form, class T, class M, class G = T>
loss_result policy_loss(const Backend& exec, const Form& form, const loss_inputs<T, M>& in, const loss_options& opt,
                        const loss_normalizer& norm = {}, std::span<G> grad_logp = {}) {
  return detail::policy_loss_impl(exec, form, in, opt, norm, grad_logp, detail::backend_sweep{});
}

/// policy_loss with its token pass driven by the caller, for kernels that produce each token's
/// log-prob just before its term is needed (kernels/grpo_loss.hpp computes a row's log-prob, its
/// term and its logits' gradient while the row is in cache). `sweep(pass)` must call `pass(t)` once
/// for every unmasked token t, in any order and from any threads: with `pass.blk` set to 1,
/// `pass(t)` reads in.logp[t] (and the other inputs at t), writes grad_logp[t] and returns the
/// token's sums; sweep returns their total (sums<detail::s_count>). Masked tokens may be skipped,
/// and then their grad_logp entries must be set to 0 by the sweep. Before the sweep nothing reads
/// in.logp, so the sweep may fill it as it goes. Only the token ratio level and forms without a
/// row statistic qualify (the sequence levels and row forms need every log-prob of a row first).
template <msrl::execution_backend Backend, surrogate_form Form, class T, class M, class G, class Sweep>
loss_result policy_loss_swept(const Backend& exec, const Form& form, const loss_inputs<T, M>& in, const loss_options& opt,
                              const loss_normalizer& norm, std::span<G> grad_logp, Sweep&& sweep) {
  static_assert(!row_form<Form>, "policy_loss_swept: row forms (vespo, gmpo) need the whole row's log-probs first");
  require(opt.level == ratio_level::token, "msrl::grpo::policy_loss_swept", "options.level",
          "must be the token ratio level (the sequence levels need a row's log-probs first)");
  return detail::policy_loss_impl(exec, form, in, opt, norm, grad_logp, std::forward<Sweep>(sweep));
}

namespace detail {

template <msrl::execution_backend Backend, surrogate_form Form, class T, class M, class G, class Sweep>
loss_result policy_loss_impl(const Backend& exec, const Form& form, const loss_inputs<T, M>& in, const loss_options& opt,
                             const loss_normalizer& norm, std::span<G> grad_logp, Sweep&& sweep) {
  constexpr bool swept = !std::is_same_v<std::decay_t<Sweep>, backend_sweep>;
  (void)sweep;
  constexpr const char* where = "msrl::grpo::policy_loss";
  const token_layout lay = in.layout;
  const std::size_t B = lay.num_sequences, N = lay.total_tokens;

  // ---- shapes and options
  require<shape_error>(!lay.is_packed() || B >= 1 || N == 0, where, "layout.offsets", "must hold B + 1 entries");
  require<shape_error>(in.logp.size() == N, where, "logp",
                       "must have one element per token (" + std::to_string(N) + "), got " +
                           std::to_string(in.logp.size()));
  require<shape_error>(in.old_logp.empty() || in.old_logp.size() == N, where, "old_logp",
                       "must be empty or match logp");
  require<shape_error>(in.ref_logp.empty() || in.ref_logp.size() == N, where, "ref_logp",
                       "must be empty or match logp");
  require<shape_error>(in.mask.empty() || in.mask.size() == N, where, "mask", "must be empty or match logp");
  require<shape_error>(in.advantages.size() == B || in.advantages.size() == N, where, "advantages",
                       "must have one element per sequence (" + std::to_string(B) + ") or per token (" +
                           std::to_string(N) + ")");
  require<shape_error>(in.is_weights.empty() || in.is_weights.size() == B || in.is_weights.size() == N, where,
                       "is_weights",
                       "must be empty or have one element per sequence (" + std::to_string(B) + ") or per token (" +
                           std::to_string(N) + ")");
  require<shape_error>(in.policy_mask.empty() || in.policy_mask.size() == N, where, "policy_mask",
                       "must be empty or match logp");
  require<shape_error>(grad_logp.empty() || grad_logp.size() == N, where, "grad_logp", "must be empty or match logp");
  detail::check_loss_options(opt, norm, where);
  require(opt.beta == 0.0 || !in.ref_logp.empty(), where, "ref_logp", "is required when options.beta != 0");

  // Absent old / ref arrays alias logp: on-policy ratio 1, no KL term (has_kl below).
  const T* lp = in.logp.data();
  const T* old = in.old_logp.empty() ? lp : in.old_logp.data();
  const bool has_ref = !in.ref_logp.empty();
  const T* ref = has_ref ? in.ref_logp.data() : lp;
  const T* adv = in.advantages.data();
  const bool adv_per_token = in.advantages.size() != B; // when B == N both readings agree for padded rows of length 1
  const M* mask = in.mask.empty() ? nullptr : in.mask.data();
  const T* isw = in.is_weights.empty() ? nullptr : in.is_weights.data();
  const bool isw_per_token = isw && in.is_weights.size() != B;
  const M* pmask = in.policy_mask.empty() ? nullptr : in.policy_mask.data();

  // ---- packed offsets: 0 = o_0 <= o_1 <= ... <= o_B = N (they may live on the device)
  detail::require_packed_offsets(exec, lay, where);

  // ---- pass 1, per row: token count, mean log-ratio (GSPO), input validation
  typename Backend::template buffer<double> seq_len_buf(B), seq_lr_buf(B), seq_coef_buf(B), seq_klc_buf(B);
  double* seq_len = seq_len_buf.data();
  double* seq_lr = seq_lr_buf.data();
  double* seq_coef = seq_coef_buf.data();
  double* seq_klc = seq_klc_buf.data();
  // Host backends run the lane passes in the vector lanes of the CPU's ISA (core/simd.hpp).
  auto reduce_lanes = [&](std::size_t n, const auto& fn, auto init) {
    if constexpr (is_host_backend_v<Backend>)
      return simd::host_lanes<T>(fn, [&](const auto& f) { return exec.reduce_n(n, f, init); });
    else
      return exec.reduce_n(n, fn, init);
  };
  auto p1 = reduce_lanes(
      B,
      detail::seq_pass<T, M>{lay, lp, old, adv, mask, adv_per_token, seq_len, seq_lr, isw, isw_per_token, pmask,
                             opt.level != ratio_level::token},
      sums<6>{});
  constexpr const char* finite_names = "logp/old_logp/ref_logp/advantages";
  constexpr const char* finite_rule = "must be finite (not NaN or +-inf) at unmasked positions";
  require<value_error>(p1[2] == 0.0, where, "mask", "values must be 0 or 1");
  require<value_error>(p1[5] == 0.0, where, "policy_mask", "values must be 0 or 1");
  require<value_error>(p1[3] == 0.0, where, finite_names, finite_rule);
  require<value_error>(p1[4] == 0.0, where, "is_weights", "must be finite and >= 0 at unmasked positions");
  const double local_tokens = p1[0], nonempty = p1[1];

  // ---- the weights
  const double denom = detail::denominator(opt, norm, local_tokens, B, nonempty, where);
  const detail::weight_fn weight = detail::weights(opt, norm, denom);
  const math::kl_params kp{opt.kl, opt.kl_straight_through, opt.kl_log_ratio_clamp, opt.kl_value_clamp};
  const double smax = opt.sequence_log_ratio_max;

  // ---- pass 2 (GSPO sequence level only): c_i = sum_t w_t * d surrogate / d s_i
  if (opt.level == ratio_level::sequence)
    exec.for_each_n(B, detail::seq_coef_pass<T, M, Form>{.lay = lay,
                                                         .lp = lp,
                                                         .ref = ref,
                                                         .adv = adv,
                                                         .mask = mask,
                                                         .adv_per_token = adv_per_token,
                                                         .seq_len = seq_len,
                                                         .seq_lr = seq_lr,
                                                         .seq_coef = seq_coef,
                                                         .seq_klc = seq_klc,
                                                         .weight = weight,
                                                         .form = form,
                                                         .smax = smax,
                                                         .isw = isw,
                                                         .isw_per_token = isw_per_token,
                                                         .is_weight_kl = opt.is_weight_kl,
                                                         .kl_corrected = opt.kl_is_corrected && has_ref,
                                                         .kp = kp,
                                                         .beta = opt.beta,
                                                         .pmask = pmask});

  // ---- row forms (VESPO, GMPO): each row's coefficients and what empty rows add
  double empty_rows = 0.0;
  typename Backend::template buffer<double> seq_row_buf(row_form<Form> ? B : 0),
      seq_row_grad_buf(row_form<Form> ? B : 0);
  if constexpr (row_form<Form>) {
    require(!adv_per_token, where, "advantages",
            "must have one element per sequence for a row loss form (vespo, gmpo)");
    empty_rows = exec.reduce_n(B,
                               detail::row_pass<T, M, Form>{.lay = lay,
                                                            .lp = lp,
                                                            .old = old,
                                                            .adv = adv,
                                                            .mask = mask,
                                                            .seq_len = seq_len,
                                                            .seq_row = seq_row_buf.data(),
                                                            .seq_row_grad = seq_row_grad_buf.data(),
                                                            .weight = weight,
                                                            .form = form,
                                                            .isw = isw,
                                                            .isw_per_token = isw_per_token,
                                                            .pmask = pmask},
                               sums<1>{})[0];
  }

  // ---- pass 3, per token: loss, metrics and gradient in one sweep over token blocks
  const std::size_t blk = detail::token_block<Backend>();
  const std::size_t nblocks = (N + blk - 1) / blk;
  typename Backend::template buffer<G> scratch(grad_logp.empty() ? N : 0); // gradient sink when none is wanted
  G* gout = grad_logp.empty() ? scratch.data() : grad_logp.data();
  sums<detail::s_count> tot{};
  auto run = [&](auto level_c) {
    const detail::token_pass<decltype(level_c)::value, T, M, G, Form> fn{.lay = lay,
                                                                        .lp = lp,
                                                                        .old = old,
                                                                        .ref = ref,
                                                                        .adv = adv,
                                                                        .mask = mask,
                                                                        .grad = gout,
                                                                        .seq_len = seq_len,
                                                                        .seq_lr = seq_lr,
                                                                        .seq_coef = seq_coef,
                                                                        .seq_klc = seq_klc,
                                                                        .weight = weight,
                                                                        .form = form,
                                                                        .kp = kp,
                                                                        .beta = opt.beta,
                                                                        .log_ratio_clamp = opt.log_ratio_clamp,
                                                                        .smax = smax,
                                                                        .n = N,
                                                                        .blk = blk,
                                                                        .has_kl = has_ref,
                                                                        .adv_per_token = adv_per_token,
                                                                        .isw = isw,
                                                                        .isw_per_token = isw_per_token,
                                                                        .is_weight_kl = opt.is_weight_kl,
                                                                        .kl_corrected = opt.kl_is_corrected && has_ref,
                                                                        .pmask = pmask,
                                                                        .seq_row = seq_row_buf.data(),
                                                                        .seq_row_grad = seq_row_grad_buf.data()};
    if constexpr (!swept)
      tot = reduce_lanes(nblocks, fn, sums<detail::s_count>{});
    else if constexpr (decltype(level_c)::value == ratio_level::token)
      tot = sweep(fn);
  };
  switch (opt.level) {
  case ratio_level::token:
    run(std::integral_constant<ratio_level, ratio_level::token>{});
    break;
  case ratio_level::sequence:
    run(std::integral_constant<ratio_level, ratio_level::sequence>{});
    break;
  case ratio_level::sequence_token:
    run(std::integral_constant<ratio_level, ratio_level::sequence_token>{});
    break;
  }

  using detail::stat;
  // The token pass validated the log-probs and per-token advantages; on this error the gradient
  // buffer holds whatever the pass wrote.
  require<value_error>(tot[stat::s_bad] == 0.0, where, finite_names, finite_rule);
  loss_result res;
  res.loss = tot[stat::s_loss] + empty_rows;
  loss_metrics& mt = res.metrics;
  const double n = tot[stat::s_tok];
  mt.tokens = n;
  mt.sequences = nonempty;
  mt.normalizer = denom;
  mt.policy_loss = tot[stat::s_pg] + empty_rows;
  mt.kl_loss = tot[stat::s_kl];
  if (n > 0) {
    mt.clip_fraction_low = tot[stat::s_low] / n;
    mt.clip_fraction_high = tot[stat::s_high] / n;
    mt.clip_fraction = (tot[stat::s_low] + tot[stat::s_high]) / n;
    mt.dual_clip_fraction = tot[stat::s_dual] / n;
    mt.ratio_mean = tot[stat::s_ratio] / n;
    mt.kl_mean = tot[stat::s_klsum] / n;
    mt.log_ratio_mean = tot[stat::s_lr] / n;
  }
  return res;
}

} // namespace detail

/// The loss under the built-in form the options name (loss_options::form: the clipped ratio,
/// CISPO, SAPO, REINFORCE, with their parameters): every preset of presets.hpp.
template <msrl::execution_backend Backend, class T, class M, class G = T>
loss_result policy_loss(const Backend& exec, const loss_inputs<T, M>& in, const loss_options& opt,
                        const loss_normalizer& norm = {}, std::span<G> grad_logp = {}) {
  return with_loss_form(opt, [&](const auto& form) { return policy_loss(exec, form, in, opt, norm, grad_logp); });
}

/// The same with the gradient written to any writable contiguous range (std::vector<float>, ...).
template <msrl::execution_backend Backend, class T, class M, msrl::output_range R>
loss_result policy_loss(const Backend& exec, const loss_inputs<T, M>& in, const loss_options& opt,
                        const loss_normalizer& norm, R&& grad_logp) {
  return policy_loss(exec, in, opt, norm, msrl::as_span(grad_logp));
}
template <msrl::execution_backend Backend, surrogate_form Form, class T, class M, msrl::output_range R>
loss_result policy_loss(const Backend& exec, const Form& form, const loss_inputs<T, M>& in, const loss_options& opt,
                        const loss_normalizer& norm, R&& grad_logp) {
  return policy_loss(exec, form, in, opt, norm, msrl::as_span(grad_logp));
}

/// Overloads without a backend: run on the reference backend.
template <class T, class M, class G = T>
loss_result policy_loss(const loss_inputs<T, M>& in, const loss_options& opt, const loss_normalizer& norm = {},
                        std::span<G> grad_logp = {}) {
  return policy_loss(backend::reference{}, in, opt, norm, grad_logp);
}
template <class T, class M, msrl::output_range R>
loss_result policy_loss(const loss_inputs<T, M>& in, const loss_options& opt, const loss_normalizer& norm,
                        R&& grad_logp) {
  return policy_loss(backend::reference{}, in, opt, norm, msrl::as_span(grad_logp));
}

} // namespace msrl::grpo
