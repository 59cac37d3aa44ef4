#pragma once
/// \file One entry point over every advantage estimator, chosen by the name a peer's users know,
/// with the KL penalty in the reward applied where that peer applies it. The output is always per
/// token (0 outside the mask), ready for loss_inputs::advantages.
///
///   name                          peer                                  formula (estimators.hpp)
///   grpo                          TRL / ms-swift / verl / OpenRLHF      advantages() with the given options
///   verl_reinforce_pp_baseline    verl reinforce_plus_plus_baseline     reinforce_pp_baseline
///   verl_reinforce_pp             verl reinforce_plus_plus              reinforce_pp (gamma)
///   verl_opo                      verl opo                              opo_advantages (L_i = tokens of row i)
///   verl_gpg                      verl gpg                              gpg_advantages
///   verl_passk                    verl grpo_passk                       passk_advantages
///   ms_swift_reinforce_pp         ms-swift reinforce_plus_plus          swift_reinforce_pp (batch std)
///   verl_gdpo                     verl gdpo                             gdpo_verl over inputs.columns (the
///                                                                       reward columns; scores when none)
///   openrlhf_reinforce, _rloo, _reinforce_baseline, _group_norm, _dr_grpo
///                                 OpenRLHF --algo.advantage.estimator   openrlhf_advantages
///
/// KL in the reward (`options.kl.beta != 0`, needs old_logp and ref_logp): the row estimators
/// (grpo, verl_* except verl_reinforce_pp, ms_swift_*) subtract beta * sum_t m_t kl_t from each
/// score first (kl_reward_rows: ms-swift's rule, and verl's, whose outcome estimators sum the token
/// rewards); verl_reinforce_pp takes kl_reward_tokens into its return-to-go; OpenRLHF's estimators
/// apply kl_reward_tokens with their reward clip. Pick the options with kl_reward_options::ms_swift,
/// ::verl or ::openrlhf. ReMax is not offered here: it needs a greedy rollout's reward per row
/// (remax_advantages takes it).
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../backend/concept.hpp"
#include "../core/error.hpp"
#include "../core/token_layout.hpp"
#include "advantages.hpp"
#include "estimators.hpp"
#include "kl_reward.hpp"

namespace msrl::grpo {

enum class estimator : std::uint8_t {
  grpo,
  verl_reinforce_pp_baseline,
  verl_reinforce_pp,
  verl_opo,
  verl_gpg,
  verl_passk,
  ms_swift_reinforce_pp,
  openrlhf_reinforce,
  openrlhf_rloo,
  openrlhf_reinforce_baseline,
  openrlhf_group_norm,
  openrlhf_dr_grpo,
  verl_gdpo,
};

inline constexpr std::array<std::pair<std::string_view, estimator>, 13> estimator_names{{
    {"grpo", estimator::grpo},
    {"verl_reinforce_pp_baseline", estimator::verl_reinforce_pp_baseline},
    {"verl_reinforce_pp", estimator::verl_reinforce_pp},
    {"verl_opo", estimator::verl_opo},
    {"verl_gpg", estimator::verl_gpg},
    {"verl_passk", estimator::verl_passk},
    {"ms_swift_reinforce_pp", estimator::ms_swift_reinforce_pp},
    {"openrlhf_reinforce", estimator::openrlhf_reinforce},
    {"openrlhf_rloo", estimator::openrlhf_rloo},
    {"openrlhf_reinforce_baseline", estimator::openrlhf_reinforce_baseline},
    {"openrlhf_group_norm", estimator::openrlhf_group_norm},
    {"openrlhf_dr_grpo", estimator::openrlhf_dr_grpo},
    {"verl_gdpo", estimator::verl_gdpo},
}};

/// The estimator of a name (table above); throws msrl::invalid_argument naming `key`.
inline estimator parse_estimator(std::string_view name, const char* where = "msrl::grpo::parse_estimator",
                                 const std::string& key = "name") {
  std::string all;
  for (const auto& [n, e] : estimator_names) {
    if (n == name) return e;
    all += (all.empty() ? "" : ", ") + std::string(n);
  }
  throw invalid_argument(std::string(where) + ": argument '" + key + "' must be one of " + all + " (got '" +
                         std::string(name) + "')");
}
inline std::string_view estimator_name(estimator e) {
  for (const auto& [n, x] : estimator_names)
    if (x == e) return n;
  return "?";
}
/// True for the estimators whose output depends on the whole batch, not only on each group
/// (token or batch whitening, GPG's alpha): split a batch across calls and the numbers change.
inline bool estimator_is_batch_level(estimator e) {
  return e != estimator::grpo && e != estimator::verl_opo && e != estimator::verl_passk && e != estimator::verl_gdpo &&
         e != estimator::openrlhf_rloo && e != estimator::openrlhf_group_norm && e != estimator::openrlhf_dr_grpo;
}

struct estimate_options {
  advantage_options group = {}; ///< estimator::grpo
  double gamma = 1.0;           ///< verl_reinforce_pp, openrlhf_reinforce
  bool no_std_norm = false;     ///< OpenRLHF --algo.advantage.no_std_norm
  kl_reward_options kl = {};    ///< beta 0: no KL in the reward (reward clip: OpenRLHF only)
};

template <class T, class L, class M>
struct estimate_inputs {
  token_layout layout;
  std::span<const T> scores;  ///< one per row, rows grouped consecutively
  std::size_t group_size = 1;
  std::span<const M> mask;    ///< one per token, 0/1
  std::span<const L> old_logp = {}; ///< the sampling policy's log-probs (KL in the reward only)
  std::span<const L> ref_logp = {}; ///< the reference's
  /// verl_gdpo: the reward columns, row-major [rows, num_columns], with their weights (empty = 1);
  /// no columns: the scores as one column. The KL in the reward does not apply to it (verl's GDPO
  /// reads the per-component scores).
  std::span<const T> columns = {};
  std::size_t num_columns = 0;
  reward_weights column_weights = {};
};

namespace detail_estimate {
// The zero-std statistics of the scores (group options), for estimators that do not use them.
template <class Backend, class T>
advantage_stats zero_std(const Backend& exec, std::span<const T> scores, std::size_t G, const advantage_options& o) {
  typename Backend::template buffer<double> tmp(scores.size());
  return advantages(exec, reward_matrix<T>{scores, 1, {}}, G, std::span<double>(tmp.data(), scores.size()), o);
}
} // namespace detail_estimate

struct estimate_stats {
  advantage_stats group;  ///< estimator::grpo (num_groups, zero_std_* for every estimator)
  kl_reward_stats kl;     ///< the KL in the reward (zeros without it)
  double gpg_alpha = 0.0; ///< verl_gpg
};

/// Runs `e` (file comment) into `out`, one advantage per token.
template <msrl::execution_backend Backend, class T, class L, class M, class U>
estimate_stats estimate_advantages(const Backend& exec, estimator e, const estimate_inputs<T, L, M>& in, std::span<U> out,
                                   const estimate_options& opt = {}) {
  constexpr const char* where = "msrl::grpo::estimate_advantages";
  const token_layout& lay = in.layout;
  const std::size_t N = lay.num_sequences, G = in.group_size;
  require<shape_error>(in.scores.size() == N, where, "scores", "must have one element per row (" + std::to_string(N) + ")");
  require(G >= 1, where, "group_size", "must be at least 1");
  require<shape_error>(N % G == 0, where, "group_size", "must divide the number of rows (" + std::to_string(N) + ")");
  require<shape_error>(in.mask.size() == lay.total_tokens, where, "mask",
                       "must have one element per token (" + std::to_string(lay.total_tokens) + ")");
  require<shape_error>(out.size() == lay.total_tokens, where, "out",
                       "must have one element per token (" + std::to_string(lay.total_tokens) + ")");
  const bool kl = opt.kl.beta != 0.0;
  require(!kl || (in.old_logp.size() == lay.total_tokens && in.ref_logp.size() == lay.total_tokens), where,
          "old_logp/ref_logp", "must have one element per token when options.kl.beta is not 0");
  estimate_stats st;
  const M* m = in.mask.data();
  U* o = out.data();
  if (e == estimator::verl_gdpo) {
    require(!kl, where, "options.kl.beta", "must be 0 for verl_gdpo (verl applies no KL to the reward columns)");
    const bool cols = !in.columns.empty();
    require<shape_error>(!cols || (in.num_columns >= 1 && in.columns.size() == N * in.num_columns), where, "columns",
                         "must hold rows x num_columns values");
    st.group = detail_estimate::zero_std(exec, in.scores, G, opt.group);
    gdpo_verl(exec, lay, reward_matrix<T>{cols ? in.columns : in.scores, cols ? in.num_columns : 1, in.column_weights}, G,
              in.mask, out);
    return st;
  }
  if (e >= estimator::openrlhf_reinforce) {
    openrlhf_options oo;
    oo.estimator = e == estimator::openrlhf_reinforce    ? openrlhf_estimator::reinforce
                   : e == estimator::openrlhf_rloo       ? openrlhf_estimator::rloo
                   : e == estimator::openrlhf_group_norm ? openrlhf_estimator::group_norm
                   : e == estimator::openrlhf_dr_grpo    ? openrlhf_estimator::dr_grpo
                                                         : openrlhf_estimator::reinforce_baseline;
    oo.gamma = opt.gamma;
    oo.no_std_norm = opt.no_std_norm;
    oo.kl = opt.kl;
    st.group = detail_estimate::zero_std(exec, in.scores, G, opt.group);
    st.kl = openrlhf_advantages(exec, lay, in.scores, G, kl ? in.old_logp : std::span<const L>(),
                                     kl ? in.ref_logp : std::span<const L>(), in.mask, out, oo);
    return st;
  }
  if (e == estimator::verl_reinforce_pp) {
    kl_reward_options k = opt.kl;
    k.reward_clip_low = -math::inf;
    k.reward_clip_high = math::inf;
    st.group = detail_estimate::zero_std(exec, in.scores, G, opt.group);
    st.kl = kl_reward_tokens(exec, lay, in.scores, kl ? in.old_logp : std::span<const L>(), kl ? in.ref_logp : std::span<const L>(),
                             in.mask, k, out);
    reinforce_pp(exec, lay, std::span<const U>(o, out.size()), in.mask, opt.gamma, out);
    return st;
  }
  // the row estimators: scores shifted by the KL first when asked
  typename Backend::template buffer<double> shifted(N), rows(N);
  std::span<double> sh(shifted.data(), N), rs(rows.data(), N);
  if (kl) {
    st.kl = kl_reward_rows(exec, lay, in.scores, in.old_logp, in.ref_logp, in.mask, opt.kl, sh);
  } else {
    const T* r = in.scores.data();
    double* d = shifted.data();
    exec.for_each_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) { d[i] = static_cast<double>(r[i]); });
  }
  const std::span<const double> sc(shifted.data(), N);
  if (e == estimator::grpo) {
    st.group = advantages(exec, reward_matrix<double>{sc, 1, {}}, G, rs, opt.group);
  } else {
    st.group = detail_estimate::zero_std(exec, sc, G, opt.group);
  }
  switch (e) {
  case estimator::verl_reinforce_pp_baseline:
    reinforce_pp_baseline(exec, lay, sc, G, in.mask, out);
    return st;
  case estimator::verl_opo: {
    const token_layout l2 = lay;
    typename Backend::template buffer<double> lens(N); // L_i: the row's unmasked tokens
    double* ln = lens.data();
    exec.for_each_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
      double n = 0.0;
      for (std::size_t t = l2.begin(i); t < l2.end(i); ++t) n += static_cast<double>(m[t]) != 0.0 ? 1.0 : 0.0;
      ln[i] = n;
    });
    opo_advantages(exec, sc, std::span<const double>(ln, N), G, rs);
    break;
  }
  case estimator::verl_gpg: st.gpg_alpha = gpg_advantages(exec, sc, G, rs); break;
  case estimator::verl_passk: passk_advantages(exec, sc, G, rs); break;
  case estimator::ms_swift_reinforce_pp: swift_reinforce_pp(exec, sc, G, rs, std_scaling::batch); break;
  default: break; // grpo: rs holds the advantages
  }
  const double* a = rows.data();
  const token_layout l2 = lay;
  exec.for_each_n(N, [=] MSRL_HOST_DEVICE(std::size_t i) {
    for (std::size_t t = l2.begin(i); t < l2.end(i); ++t) o[t] = static_cast<U>(static_cast<double>(m[t]) != 0.0 ? a[i] : 0.0);
  });
  return st;
}

} // namespace msrl::grpo
