#pragma once
/// \file The clipped-ratio GRPO policy loss with an optional KL penalty, its aggregation over
/// tokens and sequences, its closed-form gradient with respect to every token's log-prob, and
/// the training metrics. One algorithm, any backend (see backend/concept.hpp).
///
///   loss = scale * sum_{i,t} w_{i,t} * ( surrogate(rho_{i,t}, A_{i,t}) + beta * KL_{i,t} )
///
/// where rho is the token ratio exp(logp - old_logp) or the GSPO sequence ratio, the surrogate is
/// math::clipped_surrogate, KL is math::kl_penalty, and the weights w come from the aggregation
/// (docs/grpo-math.md). The gradient d loss / d logp is written to a caller buffer.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../backend/concept.hpp"
#include "../backend/reference.hpp"
#include "../core/error.hpp"
#include "../core/simd.hpp"
#include "../core/token_layout.hpp"
#include "scalar_math.hpp"

namespace msrl::grpo {

/// Which importance ratio the surrogate uses.
enum class ratio_level : std::uint8_t {
  token,          ///< rho_t = exp(logp_t - old_t)                                  (PPO/GRPO)
  sequence,       ///< GSPO: s_i = exp(mean_t (logp - old)), gradient through the mean (TRL "sequence")
  sequence_token, ///< GSPO-token: exp(logp_t - sg(logp_t) + sg(log s_i)) (verl gspo, ms-swift "sequence_token")
};

/// How per-token losses become one number.  m = mask, L_i = tokens of row i, S = sequence count.
enum class aggregation : std::uint8_t {
  token_mean,              ///< sum m*l / N_tokens            (TRL dapo/bnpo, verl token-mean, OpenRLHF token)
  seq_mean_token_mean,     ///< mean_i [sum_t m*l / L_i]      (TRL/ms-swift grpo, verl seq-mean-token-mean)
  seq_mean_token_sum,      ///< mean_i [sum_t m*l]            (verl seq-mean-token-sum)
  seq_mean_token_sum_norm, ///< mean_i [sum_t m*l] / C        (Dr.GRPO; TRL dr_grpo, verl ...-norm)
  token_sum,               ///< sum m*l                       (verl token-sum)
};

/// Guard on a row's token count in seq_mean_token_mean.
enum class length_guard : std::uint8_t {
  clamp_one, ///< L_i -> max(L_i, 1)   (TRL, ms-swift, Liger)
  add_eps,   ///< L_i -> L_i + eps     (verl, OpenRLHF: 1e-8)
};

struct loss_options {
  // --- importance ratio
  ratio_level level = ratio_level::token;
  double log_ratio_clamp = math::inf;        ///< token log-ratio clamped to [-c, c] before exp (verl 20)
  double sequence_log_ratio_max = math::inf; ///< GSPO: log s_i capped at this value (verl 10)
  // --- clipping
  double clip_low = 0.2;         ///< epsilon_low
  double clip_high = 0.2;        ///< epsilon_high (clip-higher: 0.28)
  double dual_clip = math::inf;  ///< c > 1 (verl 3.0); inf disables
  double delta = math::inf;      ///< two-sided clip delta > 1; inf disables
  // --- KL to the reference policy
  double beta = 0.0;
  kl_estimator kl = kl_estimator::k3;
  bool kl_straight_through = false;
  double kl_log_ratio_clamp = math::inf; ///< verl/ms-swift k3: 20
  double kl_value_clamp = math::inf;     ///< verl/ms-swift k3: 10; OpenRLHF: 10 for every estimator
  // --- aggregation
  aggregation agg = aggregation::seq_mean_token_mean;
  bool count_empty_sequences = true; ///< fully masked rows count in S (TRL) or are excluded (verl, OpenRLHF)
  length_guard guard = length_guard::clamp_one;
  double length_eps = 1e-8;           ///< for length_guard::add_eps
  double constant_normalizer = 0.0;   ///< C for seq_mean_token_sum_norm (max_completion_length)
};

/// Normalisers that make gradient accumulation and data parallelism exact. Unset counts fall back
/// to the local micro-batch. `scale` multiplies the loss (e.g. 1/GA for TRL's grpo mode, or the
/// data-parallel world size for verl's global-batch semantics).
struct loss_normalizer {
  std::optional<double> global_tokens;    ///< N in token_mean (sum of the mask over the optimizer step and ranks)
  std::optional<double> global_sequences; ///< S in the seq_mean_* modes
  double scale = 1.0;
};

/// The per-token inputs. All arrays live in the backend's memory space.
template <class T, class M = std::uint8_t>
struct loss_inputs {
  token_layout layout;            ///< padded [B, T] or packed offsets
  std::span<const T> logp;        ///< log pi_theta(y_t), one per token
  std::span<const T> old_logp;    ///< log pi_old; empty = on-policy (old = logp, detached)
  std::span<const T> ref_logp;    ///< log pi_ref; required when beta != 0
  std::span<const T> advantages;  ///< one per sequence [B] or one per token (read per sequence when B == N)
  std::span<const M> mask;        ///< 0/1 per token; empty = all tokens count
};

struct loss_metrics {
  double tokens = 0;             ///< masked tokens in this call
  double sequences = 0;          ///< non-empty sequences in this call
  double clip_fraction_low = 0;  ///< over masked tokens: ratio < 1-eps_lo with A < 0
  double clip_fraction_high = 0; ///< ratio > 1+eps_hi with A > 0
  double clip_fraction = 0;      ///< low + high
  double dual_clip_fraction = 0; ///< A < 0 and the dual-clip bound active
  double ratio_mean = 0;         ///< mean ratio over masked tokens
  double kl_mean = 0;            ///< mean KL estimate over masked tokens (0 when beta == 0 and no ref)
  double policy_loss = 0;        ///< the surrogate part of the loss (aggregated, scaled)
  double kl_loss = 0;            ///< beta * KL part of the loss (aggregated, scaled)
  double normalizer = 0;         ///< the N, S or S*C the aggregation divided by
};

struct loss_result {
  double loss = 0;
  loss_metrics metrics;
};

namespace detail_loss {

enum stat : int { s_loss, s_pg, s_kl, s_tok, s_ratio, s_klsum, s_low, s_high, s_dual, s_count };

template <class M>
MSRL_HOST_DEVICE inline double mask_at(const M* mask, std::size_t t) {
  return mask ? static_cast<double>(mask[t]) : 1.0;
}

MSRL_HOST_DEVICE inline bool finite(double x) { return x == x && x != HUGE_VAL && x != -HUGE_VAL; }

// Aggregation weight of a masked-in token of a row with L tokens.
struct weight_fn {
  aggregation agg;
  double scale; // normalizer.scale / denominator
  bool clamp_one;
  double length_eps;
  MSRL_HOST_DEVICE double operator()(double L) const {
    if (agg == aggregation::seq_mean_token_mean) return scale / (clamp_one ? (L > 1.0 ? L : 1.0) : L + length_eps);
    return scale;
  }
};

// Pass 1 over the tokens of one lane group: counts, log-ratio sum and input validation.
template <class V>
struct seq_acc {
  V len{}, slr{}, bad_mask{}, bad_val{};
};
template <class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE void seq_math(V m, V l, V o, V r, V a, seq_acc<V>& acc) {
  using simd::mand;
  using simd::mnot;
  using simd::select;
  using simd::splat;
  const V zero = splat<V>(0.0), one = splat<V>(1.0);
  const auto on = m == one;
  const auto valid = simd::mor(m == zero, on);
  // x - x == 0 exactly when x is finite (inf - inf and NaN - NaN are NaN).
  const auto fin = mand(mand(l - l == zero, o - o == zero), mand(r - r == zero, a - a == zero));
  acc.bad_mask = acc.bad_mask + select(valid, zero, one);
  acc.bad_val = acc.bad_val + select(mand(on, mnot(fin)), one, zero);
  acc.len = acc.len + select(on, one, zero);
  acc.slr = acc.slr + select(on, l - o, zero);
}

// Pass 1, one task per sequence: L_i, mean log-ratio (GSPO) and validation counts.
template <class T, class M>
struct seq_pass {
  token_layout lay;
  const T *lp, *old, *ref, *adv;
  const M* mask;
  bool adv_per_token;
  double *seq_len, *seq_lr;

  MSRL_HOST_DEVICE sums<4> operator()(std::size_t i) const {
    seq_acc<double> acc;
    const std::size_t b = lay.begin(i), e = lay.end(i);
    std::size_t t = b;
#ifdef MSRL_HAS_VECTOR_LANES
    {
      using V = simd::vdouble;
      constexpr int W = simd::vector_width;
      seq_acc<V> vacc;
      for (; t + W <= e; t += W) {
        const V m = mask ? simd::load(mask + t) : simd::splat<V>(1.0);
        const V l = simd::load(lp + t), o = simd::load(old + t), r = simd::load(ref + t);
        const V a = adv_per_token ? simd::load(adv + t) : simd::splat<V>(0.0);
        seq_math(m, l, o, r, a, vacc);
      }
      for (int j = 0; j < W; ++j) {
        acc.len += vacc.len[j];
        acc.slr += vacc.slr[j];
        acc.bad_mask += vacc.bad_mask[j];
        acc.bad_val += vacc.bad_val[j];
      }
    }
#endif
    for (; t < e; ++t)
      seq_math<double>(mask ? static_cast<double>(mask[t]) : 1.0, static_cast<double>(lp[t]),
                       static_cast<double>(old[t]), static_cast<double>(ref[t]),
                       adv_per_token ? static_cast<double>(adv[t]) : 0.0, acc);
    if (!adv_per_token && acc.len > 0.0 && !finite(static_cast<double>(adv[i]))) acc.bad_val += 1.0;
    seq_len[i] = acc.len;
    seq_lr[i] = acc.slr / (acc.len > 1.0 ? acc.len : 1.0);
    sums<4> s{};
    s[0] = acc.len;
    s[1] = acc.len > 0.0 ? 1.0 : 0.0;
    s[2] = acc.bad_mask;
    s[3] = acc.bad_val;
    return s;
  }
};

// Accumulators of the token pass, one lane each.
template <class V>
struct token_acc {
  V pg{}, kl{}, tok{}, rsum{}, klsum{}, low{}, high{}, dual{};
};

// One lane group of tokens: loss terms, metrics and gradient. `on` masks tokens out (their inputs
// were already replaced by 0, so -inf/NaN at masked positions never reach the arithmetic).
template <ratio_level Level, class V>
MSRL_HOST_DEVICE MSRL_FORCEINLINE V token_math(simd::mask_t<V> on, V l, V o, V r, V a, V w, V srho, V sdrho,
                                               V gseq, const math::clip_params& cp, const math::kl_params& kp,
                                               double beta, double log_ratio_clamp, bool has_kl, token_acc<V>& acc) {
  using simd::select;
  using simd::splat;
  const V zero = splat<V>(0.0), one = splat<V>(1.0);
  V rho = srho, drho = sdrho;
  if constexpr (Level == ratio_level::token) {
    const math::value_grad<V> q = math::ratio(l, o, log_ratio_clamp);
    rho = q.value;
    drho = q.grad;
  }
  const math::surrogate<V> sur = math::clipped_surrogate(rho, a, cp);
  // Without ref_logp there is no KL term at all (skips an exp per token).
  const math::value_grad<V> k = has_kl ? math::kl_penalty(l, r, kp) : math::value_grad<V>{zero, zero};
  V g = Level == ratio_level::sequence ? gseq : w * sur.dratio * drho;
  g = g + w * beta * k.grad;
  acc.pg = acc.pg + select(on, w * sur.value, zero);
  acc.kl = acc.kl + select(on, w * beta * k.value, zero);
  acc.tok = acc.tok + select(on, one, zero);
  acc.rsum = acc.rsum + select(on, rho, zero);
  acc.klsum = acc.klsum + select(on, k.value, zero);
  acc.low = acc.low + select(simd::mand(on, sur.clipped_low), one, zero);
  acc.high = acc.high + select(simd::mand(on, sur.clipped_high), one, zero);
  acc.dual = acc.dual + select(simd::mand(on, sur.dual_clipped), one, zero);
  return select(on, g, zero);
}

// The token pass over one block of tokens [bi*blk, min(N, (bi+1)*blk)). The block is split at
// sequence boundaries; within a sequence, host builds run groups of simd::vector_width tokens
// through token_math on vector lanes and the tail on scalar lanes (device code: scalar only).
// When the caller passes no old_logp that pointer aliases logp (ratio = 1, on-policy); without
// ref_logp the KL term is skipped.
template <ratio_level Level, bool AdvPerToken, bool HasMask, class T, class M, class G>
struct token_pass {
  token_layout lay;
  const T *lp, *old, *ref, *adv;
  const M* mask;
  G* grad;
  const double *seq_len, *seq_lr, *seq_coef;
  weight_fn weight;
  math::clip_params cp;
  math::kl_params kp;
  double beta, log_ratio_clamp, smax;
  std::size_t n, blk;
  bool has_kl;

  MSRL_HOST_DEVICE sums<s_count> operator()(std::size_t bi) const {
    token_acc<double> acc;
    const std::size_t t0 = bi * blk, t1 = t0 + blk < n ? t0 + blk : n;
    std::size_t i = lay.sequence_of(t0);
    for (std::size_t ta = t0; ta < t1;) {
      while (lay.end(i) <= ta) ++i;
      const std::size_t tb = lay.end(i) < t1 ? lay.end(i) : t1;
      const double w = weight(seq_len[i]);
      const double len1 = seq_len[i] > 1.0 ? seq_len[i] : 1.0;
      const double lr = seq_lr[i];
      const double adv_seq = AdvPerToken ? 0.0 : static_cast<double>(adv[i]);
      // GSPO: the sequence ratio, its token derivative and (direct form) the token gradient are
      // constant over the row.
      const double srho = Level == ratio_level::token ? 1.0 : math::exp(lr < smax ? lr : smax);
      const double sdrho = lr <= smax ? srho : 0.0;
      const double gseq = Level == ratio_level::sequence ? (lr <= smax ? srho / len1 : 0.0) * seq_coef[i] : 0.0;
      std::size_t t = ta;
#ifdef MSRL_HAS_VECTOR_LANES
      if constexpr (simd::lane_traits<simd::vdouble>::width > 1) {
        using V = simd::vdouble;
        constexpr int W = simd::vector_width;
        token_acc<V> vacc;
        for (; t + W <= tb; t += W) {
          // Contiguous vector loads; masked lanes are replaced by 0 before any arithmetic.
          const V mv = HasMask ? simd::load(mask + t) : simd::splat<V>(1.0);
          const simd::vint on = mv != simd::splat<V>(0.0);
          const V zero = simd::splat<V>(0.0);
          const V l = simd::select(on, simd::load(lp + t), zero);
          const V o = simd::select(on, simd::load(old + t), zero);
          const V r = simd::select(on, simd::load(ref + t), zero);
          const V a = AdvPerToken ? simd::select(on, simd::load(adv + t), zero) : simd::splat<V>(adv_seq);
          const V g = token_math<Level, V>(on, l, o, r, a, simd::splat<V>(w), simd::splat<V>(srho),
                                           simd::splat<V>(sdrho), simd::splat<V>(gseq), cp, kp, beta,
                                           log_ratio_clamp, has_kl, vacc);
          simd::store(grad + t, g);
        }
        for (int j = 0; j < W; ++j) {
          acc.pg += vacc.pg[j];
          acc.kl += vacc.kl[j];
          acc.tok += vacc.tok[j];
          acc.rsum += vacc.rsum[j];
          acc.klsum += vacc.klsum[j];
          acc.low += vacc.low[j];
          acc.high += vacc.high[j];
          acc.dual += vacc.dual[j];
        }
      }
#endif
      for (; t < tb; ++t) {
        const bool m = HasMask ? mask[t] != M(0) : true;
        const double l = m ? static_cast<double>(lp[t]) : 0.0;
        const double o = m ? static_cast<double>(old[t]) : 0.0;
        const double r = m ? static_cast<double>(ref[t]) : 0.0;
        const double a = AdvPerToken ? (m ? static_cast<double>(adv[t]) : 0.0) : adv_seq;
        grad[t] = static_cast<G>(
            token_math<Level, double>(m, l, o, r, a, w, srho, sdrho, gseq, cp, kp, beta, log_ratio_clamp, has_kl, acc));
      }
      ta = tb;
    }
    sums<s_count> s{};
    s[s_pg] = acc.pg;
    s[s_kl] = acc.kl;
    s[s_loss] = acc.pg + acc.kl;
    s[s_tok] = acc.tok;
    s[s_ratio] = acc.rsum;
    s[s_klsum] = acc.klsum;
    s[s_low] = acc.low;
    s[s_high] = acc.high;
    s[s_dual] = acc.dual;
    return s;
  }
};

// Tokens per task of the token pass: a backend may say (member `token_block`); otherwise host
// backends take 512-token blocks and device backends one token per task.
template <class Backend>
constexpr std::size_t token_block() {
  if constexpr (requires { Backend::token_block; }) return Backend::token_block;
  else if constexpr (is_host_backend_v<Backend>) return 512;
  else return 1;
}

// The N, S or S*C the aggregation divides by (before loss_normalizer::scale).
inline double denominator(const loss_options& opt, const loss_normalizer& norm, double local_tokens, std::size_t B, double nonempty,
                          const char* where) {
  double denom = 1.0;
  switch (opt.agg) {
  case aggregation::token_mean:
    denom = norm.global_tokens.value_or(local_tokens);
    require(denom > 0.0, where, "normalizer.global_tokens", "token count is zero: no unmasked token and no global count");
    break;
  case aggregation::seq_mean_token_mean:
  case aggregation::seq_mean_token_sum:
  case aggregation::seq_mean_token_sum_norm:
    denom = norm.global_sequences.value_or(opt.count_empty_sequences ? static_cast<double>(B) : nonempty);
    require(denom > 0.0, where, "normalizer.global_sequences", "sequence count is zero");
    if (opt.agg == aggregation::seq_mean_token_sum_norm) denom *= opt.constant_normalizer;
    break;
  case aggregation::token_sum:
    denom = 1.0;
    break;
  }
  return denom;
}

} // namespace detail_loss

/// Computes the aggregated loss, metrics and (when grad_logp is non-empty) d loss / d logp.
template <msrl::execution_backend Backend, class T, class M, class G = T>
loss_result policy_loss(const Backend& exec, const loss_inputs<T, M>& in, const loss_options& opt,
                        const loss_normalizer& norm = {}, std::span<G> grad_logp = {}) {
  using namespace detail_loss;
  constexpr const char* where = "msrl::grpo::policy_loss";
  const token_layout lay = in.layout;
  const std::size_t B = lay.num_sequences, N = lay.total_tokens;

  // ---- shapes
  require<shape_error>(!lay.is_packed() || B >= 1 || N == 0, where, "layout.offsets", "must hold B + 1 entries");
  require<shape_error>(in.logp.size() == N, where, "logp",
                       "must have one element per token (" + std::to_string(N) + "), got " + std::to_string(in.logp.size()));
  require<shape_error>(in.old_logp.empty() || in.old_logp.size() == N, where, "old_logp", "must be empty or match logp");
  require<shape_error>(in.ref_logp.empty() || in.ref_logp.size() == N, where, "ref_logp", "must be empty or match logp");
  require<shape_error>(in.mask.empty() || in.mask.size() == N, where, "mask", "must be empty or match logp");
  require<shape_error>(in.advantages.size() == B || in.advantages.size() == N, where, "advantages",
                       "must have one element per sequence (" + std::to_string(B) + ") or per token (" +
                           std::to_string(N) + ")");
  require<shape_error>(grad_logp.empty() || grad_logp.size() == N, where, "grad_logp", "must be empty or match logp");
  // ---- options
  auto nonneg = [](double x) { return x >= 0.0 && x == x; };
  require(nonneg(opt.clip_low) && std::isfinite(opt.clip_low), where, "options.clip_low", "must be finite and >= 0");
  require(nonneg(opt.clip_high) && std::isfinite(opt.clip_high), where, "options.clip_high", "must be finite and >= 0");
  require(opt.dual_clip > 1.0, where, "options.dual_clip", "must be > 1 (inf disables it)");
  require(opt.delta > 1.0, where, "options.delta", "must be > 1 (inf disables it)");
  require(opt.log_ratio_clamp > 0.0, where, "options.log_ratio_clamp", "must be > 0 (inf disables it)");
  require(opt.sequence_log_ratio_max == opt.sequence_log_ratio_max, where, "options.sequence_log_ratio_max", "must not be NaN");
  require(nonneg(opt.beta) && std::isfinite(opt.beta), where, "options.beta", "must be finite and >= 0");
  require(opt.kl_log_ratio_clamp > 0.0, where, "options.kl_log_ratio_clamp", "must be > 0 (inf disables it)");
  require(opt.kl_value_clamp > 0.0, where, "options.kl_value_clamp", "must be > 0 (inf disables it)");
  require(nonneg(opt.length_eps) && std::isfinite(opt.length_eps), where, "options.length_eps", "must be finite and >= 0");
  require(opt.agg != aggregation::seq_mean_token_sum_norm ||
              (opt.constant_normalizer > 0.0 && std::isfinite(opt.constant_normalizer)),
          where, "options.constant_normalizer", "must be finite and > 0 for seq_mean_token_sum_norm");
  require(std::isfinite(norm.scale), where, "normalizer.scale", "must be finite");
  require(opt.beta == 0.0 || !in.ref_logp.empty(), where, "ref_logp", "is required when options.beta != 0");
  if (norm.global_tokens)
    require(*norm.global_tokens > 0.0 && std::isfinite(*norm.global_tokens), where, "normalizer.global_tokens",
            "must be finite and > 0 (token count zero)");
  if (norm.global_sequences)
    require(*norm.global_sequences > 0.0 && std::isfinite(*norm.global_sequences), where,
            "normalizer.global_sequences", "must be finite and > 0");

  const T* lp = in.logp.data();
  const T* old = in.old_logp.empty() ? nullptr : in.old_logp.data();
  const T* ref = in.ref_logp.empty() ? nullptr : in.ref_logp.data();
  const T* adv = in.advantages.data();
  const bool adv_per_token = in.advantages.size() != B; // when B == N both readings agree for padded rows of length 1
  const M* mask = in.mask.empty() ? nullptr : in.mask.data();
  G* grad = grad_logp.empty() ? nullptr : grad_logp.data();

  // ---- layout validity (packed offsets: 0 = o_0 <= o_1 <= ... <= o_B = N)
  if (lay.is_packed()) {
    const std::int64_t* off = lay.offsets;
    auto bad = exec.reduce_n(B + 1, [=] MSRL_HOST_DEVICE(std::size_t i) {
      sums<1> s{};
      const std::int64_t o = off[i];
      bool ok = o >= 0 && static_cast<std::size_t>(o) <= N;
      if (i == 0) ok = ok && o == 0;
      if (i == B) ok = ok && static_cast<std::size_t>(o) == N;
      if (i > 0) ok = ok && off[i - 1] <= o;
      s[0] = ok ? 0.0 : 1.0;
      return s;
    }, sums<1>{});
    require<shape_error>(bad[0] == 0.0, where, "layout.offsets",
                         "must start at 0, be non-decreasing and end at the token count (" + std::to_string(N) + ")");
  }

  // ---- pass 1, per sequence: token count, mean log-ratio (GSPO), input validation
  typename Backend::template buffer<double> seq_len_buf(B), seq_lr_buf(B), seq_coef_buf(B);
  double* seq_len = seq_len_buf.data();
  double* seq_lr = seq_lr_buf.data();
  double* seq_coef = seq_coef_buf.data();
  const bool need_ref = ref != nullptr; // a given ref_logp feeds the KL term and metric: validate it
  const detail_loss::seq_pass<T, M> p1fn{lay, lp, old ? old : lp, need_ref ? ref : lp, adv, mask, adv_per_token,
                                          seq_len, seq_lr};
  auto p1 = exec.reduce_n(B, p1fn, sums<4>{});
  require<value_error>(p1[2] == 0.0, where, "mask", "values must be 0 or 1");
  require<value_error>(p1[3] == 0.0, where, "logp/old_logp/ref_logp/advantages",
                       "must be finite (not NaN or +-inf) at unmasked positions");
  const double local_tokens = p1[0], nonempty = p1[1];

  // ---- normaliser
  const double denom = detail_loss::denominator(opt, norm, local_tokens, B, nonempty, where);
  const double scale = norm.scale / denom;
  const detail_loss::weight_fn weight{opt.agg, scale, opt.guard == length_guard::clamp_one, opt.length_eps};
  const math::clip_params cp{opt.clip_low, opt.clip_high, opt.dual_clip, opt.delta};
  const math::kl_params kp{opt.kl, opt.kl_straight_through, opt.kl_log_ratio_clamp, opt.kl_value_clamp};
  const double beta = opt.beta, lrc = opt.log_ratio_clamp, smax = opt.sequence_log_ratio_max;
  const ratio_level level = opt.level;

  // ---- pass 2 (GSPO sequence level only): c_i = sum_t w_t * d surrogate / d s_i
  if (level == ratio_level::sequence) {
    exec.for_each_n(B, [=] MSRL_HOST_DEVICE(std::size_t i) {
      const double L = seq_len[i];
      const double s = math::exp(seq_lr[i] < smax ? seq_lr[i] : smax);
      const double w = weight(L);
      double c = 0.0;
      for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
        if (mask_at(mask, t) == 0.0) continue;
        c += w * math::clipped_surrogate(s, static_cast<double>(adv[adv_per_token ? t : i]), cp).dratio;
      }
      seq_coef[i] = c;
    });
  }

  // ---- pass 3, per token: loss, metrics and gradient in one sweep over token blocks.
  const std::size_t blk = detail_loss::token_block<Backend>();
  const std::size_t nblocks = (N + blk - 1) / blk;
  typename Backend::template buffer<G> scratch(grad ? 0 : N); // gradient sink when none is wanted
  G* gout = grad ? grad : scratch.data();
  const T* oldp = old ? old : lp;
  const T* refp = ref ? ref : lp;
  sums<s_count> tot{};
  auto run = [&](auto level_c, auto apt_c, auto mask_c) {
    detail_loss::token_pass<decltype(level_c)::value, decltype(apt_c)::value, decltype(mask_c)::value, T, M, G> fn{
        lay, lp, oldp, refp, adv, mask, gout, seq_len, seq_lr, seq_coef, weight, cp, kp, beta, lrc, smax, N, blk, ref != nullptr};
    tot = exec.reduce_n(nblocks, fn, sums<s_count>{});
  };
  auto with_mask = [&](auto level_c, auto apt_c) {
    if (mask) run(level_c, apt_c, std::true_type{}); else run(level_c, apt_c, std::false_type{});
  };
  auto with_adv = [&](auto level_c) {
    if (adv_per_token) with_mask(level_c, std::true_type{}); else with_mask(level_c, std::false_type{});
  };
  switch (level) {
  case ratio_level::token: with_adv(std::integral_constant<ratio_level, ratio_level::token>{}); break;
  case ratio_level::sequence: with_adv(std::integral_constant<ratio_level, ratio_level::sequence>{}); break;
  case ratio_level::sequence_token: with_adv(std::integral_constant<ratio_level, ratio_level::sequence_token>{}); break;
  }

  loss_result res;
  res.loss = tot[s_loss];
  loss_metrics& mt = res.metrics;
  const double n = tot[s_tok];
  mt.tokens = n;
  mt.sequences = nonempty;
  mt.normalizer = denom;
  mt.policy_loss = tot[s_pg];
  mt.kl_loss = tot[s_kl];
  if (n > 0) {
    mt.clip_fraction_low = tot[s_low] / n;
    mt.clip_fraction_high = tot[s_high] / n;
    mt.clip_fraction = (tot[s_low] + tot[s_high]) / n;
    mt.dual_clip_fraction = tot[s_dual] / n;
    mt.ratio_mean = tot[s_ratio] / n;
    mt.kl_mean = tot[s_klsum] / n;
  }
  return res;
}

/// The loss's aggregation applied to any other per-token quantity x (an entropy bonus, a length
/// penalty): returns sum_t w_t m_t x_t with the weights policy_loss gives each token under
/// `opt` (agg, guard, count_empty_sequences, constant_normalizer) and `norm`, and writes
/// d result / d x_t = w_t m_t into grad_x when it is given. Host memory, one sweep.
///   verl's entropy bonus:  loss = policy_loss(...) - entropy_coeff * aggregate_tokens(layout, entropy, mask, opt, norm)
template <class T, class M = std::uint8_t, class G = T>
double aggregate_tokens(const token_layout& layout, std::type_identity_t<std::span<const T>> x, std::type_identity_t<std::span<const M>> mask,
                        const loss_options& opt, const loss_normalizer& norm = {}, std::type_identity_t<std::span<G>> grad_x = {}) {
  constexpr const char* where = "msrl::grpo::aggregate_tokens";
  const std::size_t B = layout.num_sequences, N = layout.total_tokens;
  require<shape_error>(x.size() == N, where, "x", "must have one element per token (" + std::to_string(N) + "), got " + std::to_string(x.size()));
  require<shape_error>(mask.empty() || mask.size() == N, where, "mask", "must be empty or match x");
  require<shape_error>(grad_x.empty() || grad_x.size() == N, where, "grad_x", "must be empty or match x");
  require(std::isfinite(norm.scale), where, "normalizer.scale", "must be finite");
  require(opt.agg != aggregation::seq_mean_token_sum_norm || (opt.constant_normalizer > 0.0 && std::isfinite(opt.constant_normalizer)),
          where, "options.constant_normalizer", "must be finite and > 0 for seq_mean_token_sum_norm");
  require(opt.length_eps >= 0.0 && std::isfinite(opt.length_eps), where, "options.length_eps", "must be finite and >= 0");
  std::vector<double> len(B, 0.0);
  double tokens = 0, nonempty = 0;
  for (std::size_t i = 0; i < B; ++i) {
    if (layout.is_packed())
      require<shape_error>(layout.offsets[0] == 0 && layout.offsets[i] <= layout.offsets[i + 1] &&
                               static_cast<std::size_t>(layout.offsets[B]) == N,
                           where, "layout.offsets", "must start at 0, be non-decreasing and end at the token count (" + std::to_string(N) + ")");
    for (std::size_t t = layout.begin(i), e = layout.end(i); t < e; ++t) {
      const double m = mask.empty() ? 1.0 : static_cast<double>(mask[t]);
      require<value_error>(m == 0.0 || m == 1.0, where, "mask", "values must be 0 or 1");
      require<value_error>(m == 0.0 || std::isfinite(static_cast<double>(x[t])), where, "x", "must be finite at unmasked positions");
      len[i] += m;
    }
    tokens += len[i];
    nonempty += len[i] > 0.0 ? 1.0 : 0.0;
  }
  const double denom = detail_loss::denominator(opt, norm, tokens, B, nonempty, where);
  const detail_loss::weight_fn weight{opt.agg, norm.scale / denom, opt.guard == length_guard::clamp_one, opt.length_eps};
  double total = 0;
  for (std::size_t i = 0; i < B; ++i) {
    const double w = weight(len[i]);
    for (std::size_t t = layout.begin(i), e = layout.end(i); t < e; ++t) {
      const double wm = (mask.empty() || mask[t]) ? w : 0.0;
      if (wm != 0.0) total += wm * static_cast<double>(x[t]);
      if (!grad_x.empty()) grad_x[t] = static_cast<G>(wm);
    }
  }
  return total;
}

/// Overload without a backend: runs on the reference backend.
template <class T, class M, class G = T>
loss_result policy_loss(const loss_inputs<T, M>& in, const loss_options& opt, const loss_normalizer& norm = {},
                        std::span<G> grad_logp = {}) {
  return policy_loss(backend::reference{}, in, opt, norm, grad_logp);
}

} // namespace msrl::grpo
