#pragma once
/// \file Rejection masks of the rollout/training mismatch (verl `algorithm.rollout_correction.rollout_rs`,
/// rollout_corr_helper.py compute_rollout_rejection_mask): tokens or whole rows whose divergence
/// between the training engine's log-probs (old) and the sampler's (rollout) is too large are
/// removed from the loss mask, so the aggregation's token and row counts change with them.
///
/// Per unmasked token, r_t = clamp(old_t - rollout_t, +-20) and the divergences
///
///   k1 = -r_t           k2 = r_t^2 / 2           k3 = e^{r_t} - 1 - r_t
///
/// A criterion takes one of them at one scope: `token` (the token's own value), `seq_sum` (the row's
/// sum over its unmasked tokens), `seq_mean` (that sum / (L_i + 1e-8), verl's masked_mean) or `seq_max`
/// (the row's largest; 0 for a row without tokens). k1 keeps ln(lower) <= stat <= ln(upper) (the
/// bounds are ratios, verl's "lo_hi"); k2 and k3 keep stat <= upper. A token survives when every
/// criterion keeps it (a sequence criterion keeps or drops its whole row). The kept mask is the
/// input mask times the verdict. Named settings: `parse_rollout_rs` reads verl's two config strings.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../backend/concept.hpp"
#include "../backend/reference.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/ranges.hpp"
#include "../core/token_layout.hpp"
#include "aggregate.hpp"
#include "rollout_correction.hpp"
#include "scalar_math.hpp"

namespace msrl::grpo {

/// The divergence estimate a rejection criterion thresholds (file comment).
enum class divergence : std::uint8_t { k1, k2, k3 };
/// Where it is measured: the token itself, or the row's sum, mean or maximum.
enum class rejection_scope : std::uint8_t { token, seq_sum, seq_mean, seq_max };

struct rejection_criterion {
  rejection_scope scope = rejection_scope::token;
  divergence est = divergence::k1;
  double lower = 0.5; ///< k1 only: the lower ratio bound (> 0); keep iff ln(lower) <= stat
  double upper = 2.0; ///< k1: the upper ratio bound (keep iff stat <= ln(upper)); k2, k3: keep iff stat <= upper
};

/// At most this many criteria per call (verl offers eleven distinct ones).
inline constexpr std::size_t max_rejection_criteria = 12;

/// Over the unmasked tokens of the input mask (verl's metric names in brackets).
struct rejection_metrics {
  double tokens = 0;              ///< unmasked tokens in
  double kept_tokens = 0;         ///< of them kept by every criterion
  double masked_fraction = 0;     ///< rejected share of the tokens [rollout_rs_masked_fraction]
  double seq_masked_fraction = 0; ///< rows with a rejected token / all rows [rollout_rs_seq_masked_fraction]
  /// Per criterion, in the order given: the share of tokens it rejects [rollout_rs_<option>_masked_fraction].
  std::array<double, max_rejection_criteria> criterion_masked_fraction{};
};

namespace detail {

struct rejection_set { // plain arrays: the row pass runs in device code too
  rejection_criterion c[max_rejection_criteria];
  std::size_t n = 0;
};

MSRL_HOST_DEVICE inline double divergence_of(divergence d, double r) {
  switch (d) {
  case divergence::k1:
    return -r;
  case divergence::k2:
    return 0.5 * r * r;
  case divergence::k3:
    return math::exp(r) - 1.0 - r;
  }
  return 0.0;
}

MSRL_HOST_DEVICE inline bool keeps(const rejection_criterion& c, double stat) {
  if (c.est == divergence::k1) return stat >= math::log(c.lower) && stat <= math::log(c.upper);
  return stat <= c.upper;
}

// Statistics per row: [0, n) the rejected counts per criterion, n the row's rejected tokens,
// n + 1 whether the row lost a token, n + 2 its unmasked tokens, n + 3 the invalid inputs.
inline constexpr int rj_slots = static_cast<int>(max_rejection_criteria) + 4;

template <class T, class M, class MO>
struct rejection_row_pass {
  token_layout lay;
  const T *old, *roll;
  const M* mask;
  MO* out;
  rejection_set set;

  MSRL_HOST_DEVICE static double r_at(const T* old, const T* roll, std::size_t t) {
    return math::clamp(static_cast<double>(old[t]) - static_cast<double>(roll[t]), -20.0, 20.0);
  }

  MSRL_HOST_DEVICE sums<rj_slots> operator()(std::size_t i) const {
    sums<rj_slots> s{};
    const int n = static_cast<int>(set.n);
    // the row's statistics per sequence criterion
    bool row_keep[max_rejection_criteria] = {};
    double L = 0.0;
    for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
      const double m = mask ? static_cast<double>(mask[t]) : 1.0;
      if (m != 0.0 && m != 1.0) s[n + 3] += 1.0;
      if (m != 1.0) continue;
      const double raw = static_cast<double>(old[t]) - static_cast<double>(roll[t]);
      if (!(raw - raw == 0.0)) s[n + 3] += 1.0; // NaN or inf
      L += 1.0;
    }
    for (int c = 0; c < n; ++c) {
      const rejection_criterion& k = set.c[c];
      if (k.scope == rejection_scope::token) continue;
      double acc = 0.0;
      bool any = false;
      for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
        if ((mask ? static_cast<double>(mask[t]) : 1.0) != 1.0) continue;
        const double v = divergence_of(k.est, r_at(old, roll, t));
        if (k.scope == rejection_scope::seq_max)
          acc = any ? (v > acc ? v : acc) : v;
        else
          acc += v;
        any = true;
      }
      if (k.scope == rejection_scope::seq_mean) acc /= L + 1e-8;
      row_keep[c] = keeps(k, acc);
    }
    double rejected = 0.0;
    for (std::size_t t = lay.begin(i), e = lay.end(i); t < e; ++t) {
      if ((mask ? static_cast<double>(mask[t]) : 1.0) != 1.0) {
        out[t] = MO(0);
        continue;
      }
      const double r = r_at(old, roll, t);
      bool keep = true;
      for (int c = 0; c < n; ++c) {
        const rejection_criterion& k = set.c[c];
        const bool kc = k.scope == rejection_scope::token ? keeps(k, divergence_of(k.est, r)) : row_keep[c];
        if (!kc) s[c] += 1.0;
        keep = keep && kc;
      }
      if (!keep) rejected += 1.0;
      out[t] = keep ? MO(1) : MO(0);
    }
    s[n] = rejected;
    s[n + 1] = rejected > 0.0 ? 1.0 : 0.0;
    s[n + 2] = L;
    return s;
  }
};

inline void check_rejection_criteria(std::span<const rejection_criterion> criteria, const char* where) {
  require(!criteria.empty(), where, "criteria", "must name at least one rejection criterion");
  require(criteria.size() <= max_rejection_criteria, where, "criteria",
          "must hold at most " + std::to_string(max_rejection_criteria) + " criteria");
  for (const rejection_criterion& c : criteria) {
    require(c.est != divergence::k1 || c.scope != rejection_scope::seq_max, where, "criteria",
            "seq_max is defined for k2 and k3 only (as in verl)");
    if (c.est == divergence::k1) {
      require(c.lower > 0.0 && std::isfinite(c.lower), where, "criteria.lower", "must be finite and > 0 for k1");
      require(c.upper > 0.0 && !std::isnan(c.upper), where, "criteria.upper", "must be > 0 for k1");
      require(c.lower <= c.upper, where, "criteria.lower", "must not exceed criteria.upper");
    } else {
      require(c.upper > 0.0 && !std::isnan(c.upper), where, "criteria.upper", "must be > 0");
    }
  }
}

} // namespace detail

/// Writes the kept mask ([N]: the input mask times every criterion's verdict; 0/1) and returns
/// the metrics. old_logp: the training engine's log-probs of the sampled tokens; rollout_logp:
/// the sampler's. Every array has one entry per token, in the backend's memory.
template <msrl::execution_backend Backend, class T, class M, class MO>
rejection_metrics rollout_rejection_mask(const Backend& exec, const token_layout& lay, std::span<const T> old_logp,
                                         std::span<const T> rollout_logp, std::span<const M> mask,
                                         std::span<const rejection_criterion> criteria, std::span<MO> kept_mask) {
  constexpr const char* where = "msrl::grpo::rollout_rejection_mask";
  const std::size_t B = lay.num_sequences;
  detail::check_rejection_criteria(criteria, where);
  detail::check_mismatch_inputs(exec, lay, old_logp.size(), rollout_logp.size(), mask.size(), kept_mask.size(),
                                "kept_mask", where);
  detail::rejection_set set;
  std::copy(criteria.begin(), criteria.end(), set.c);
  set.n = criteria.size();
  const int n = static_cast<int>(set.n);
  const auto s =
      exec.reduce_n(B,
                    detail::rejection_row_pass<T, M, MO>{lay, old_logp.data(), rollout_logp.data(),
                                                         mask.empty() ? nullptr : mask.data(), kept_mask.data(), set},
                    sums<detail::rj_slots>{});
  require<value_error>(s[n + 3] == 0.0, where, "old_logp/rollout_logp/mask",
                       "log-probs must be finite at unmasked tokens and the mask 0 or 1");
  rejection_metrics mt;
  mt.tokens = s[n + 2];
  mt.kept_tokens = s[n + 2] - s[n];
  if (mt.tokens > 0) {
    mt.masked_fraction = s[n] / mt.tokens;
    for (int c = 0; c < n; ++c) mt.criterion_masked_fraction[static_cast<std::size_t>(c)] = s[c] / mt.tokens;
  }
  if (B > 0) mt.seq_masked_fraction = s[n + 1] / static_cast<double>(B);
  return mt;
}

/// The same with the kept mask written to any writable contiguous range.
template <msrl::execution_backend Backend, class T, class M, msrl::output_range R>
rejection_metrics rollout_rejection_mask(const Backend& exec, const token_layout& lay, std::span<const T> old_logp,
                                         std::span<const T> rollout_logp, std::span<const M> mask,
                                         std::span<const rejection_criterion> criteria, R&& kept_mask) {
  return rollout_rejection_mask(exec, lay, old_logp, rollout_logp, mask, criteria, msrl::as_span(kept_mask));
}

/// On the reference backend.
template <class T, class M, msrl::output_range R>
rejection_metrics rollout_rejection_mask(const token_layout& lay, std::span<const T> old_logp,
                                         std::span<const T> rollout_logp, std::span<const M> mask,
                                         std::span<const rejection_criterion> criteria, R&& kept_mask) {
  return rollout_rejection_mask(backend::reference{}, lay, old_logp, rollout_logp, mask, criteria,
                                msrl::as_span(kept_mask));
}

/// verl's configuration strings: `rollout_rs` a comma list of options (token_k1, token_k2,
/// token_k3, seq_sum_k1..k3, seq_mean_k1..k3, seq_max_k2, seq_max_k3; repeats dropped) and
/// `rollout_rs_threshold` one entry for all of them or one per option: "lo_hi" or "hi" (lo = 1/hi)
/// for k1 options, a single upper bound for the others. Throws msrl::invalid_argument naming the
/// bad part.
inline std::vector<rejection_criterion> parse_rollout_rs(std::string_view rollout_rs, std::string_view threshold) {
  constexpr const char* where = "msrl::grpo::parse_rollout_rs";
  auto split = [](std::string_view s) {
    std::vector<std::string_view> out;
    while (!s.empty()) {
      const std::size_t p = s.find(',');
      std::string_view part = s.substr(0, p);
      while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
      while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
      if (!part.empty()) out.push_back(part);
      if (p == std::string_view::npos) break;
      s.remove_prefix(p + 1);
    }
    return out;
  };
  auto number = [&](std::string_view s, const char* what) {
    std::string str(s.substr(0, 64));
    char* end = nullptr;
    const double v = std::strtod(str.c_str(), &end);
    require(!str.empty() && end == str.c_str() + str.size() && std::isfinite(v) && v > 0.0, where, what,
            "must hold positive numbers (got '" + str + "')");
    return v;
  };
  std::vector<std::string_view> names;
  for (std::string_view o : split(rollout_rs))
    if (std::find(names.begin(), names.end(), o) == names.end()) names.push_back(o);
  require(!names.empty(), where, "rollout_rs", "must name at least one option");
  require(names.size() <= max_rejection_criteria, where, "rollout_rs", "names too many options");
  std::vector<std::string_view> specs = split(threshold);
  require(specs.size() == 1 || specs.size() == names.size(), where, "rollout_rs_threshold",
          "must hold one threshold for every option or one per option (" + std::to_string(names.size()) + ")");
  std::vector<rejection_criterion> out;
  for (std::size_t k = 0; k < names.size(); ++k) {
    const std::string_view o = names[k], spec = specs.size() == 1 ? specs[0] : specs[k];
    rejection_criterion c;
    const std::string_view scopes[] = {"token_", "seq_sum_", "seq_mean_", "seq_max_"};
    bool found = false;
    for (std::size_t sc = 0; sc < 4 && !found; ++sc) {
      if (o.substr(0, scopes[sc].size()) != scopes[sc]) continue;
      const std::string_view est = o.substr(scopes[sc].size());
      if (est != "k1" && est != "k2" && est != "k3") break;
      c.scope = static_cast<rejection_scope>(sc);
      c.est = est == "k1" ? divergence::k1 : (est == "k2" ? divergence::k2 : divergence::k3);
      found = !(c.scope == rejection_scope::seq_max && c.est == divergence::k1);
    }
    require(found, where, "rollout_rs",
            "option '" + std::string(o.substr(0, 32)) +
                "' is not one of token_k1..k3, seq_sum_k1..k3, seq_mean_k1..k3, seq_max_k2, seq_max_k3");
    if (c.est == divergence::k1) {
      const std::size_t u = spec.find('_');
      c.upper = number(u == std::string_view::npos ? spec : spec.substr(u + 1), "rollout_rs_threshold");
      c.lower = u == std::string_view::npos ? 1.0 / c.upper : number(spec.substr(0, u), "rollout_rs_threshold");
      require(c.lower <= c.upper, where, "rollout_rs_threshold", "a k1 lower bound must not exceed its upper bound");
    } else {
      require(spec.find('_') == std::string_view::npos, where, "rollout_rs_threshold",
              "k2 and k3 options take a single upper bound (no '_')");
      c.upper = number(spec, "rollout_rs_threshold");
    }
    out.push_back(c);
  }
  return out;
}

} // namespace msrl::grpo
