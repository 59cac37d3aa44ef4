#pragma once
/// \file Length and truncation shaping: the overlong penalties, the cosine length reward and the
/// stop-properly penalty. L is the completion's token count (token_count(sample): the sample's
/// `completion_tokens`, else the size of its `completion_ids`); a functor that needs L and gets
/// an unknown count returns NaN ("could not score": reward_set's total and the GRPO core skip
/// the term, as ms-swift's nansum does). Options are checked by `validate()`, which
/// reward_set::add calls and every call repeats; violations throw msrl::invalid_argument.
///
/// The functors (E = L_max − B for the buffer, E = L_max − C for the soft punishment):
///
///   overlong_buffer_reward, verl      min(−(L − E)/B · f, 0), uncapped
///                                     (verl `workers/reward_manager/dapo.py`, `overlong_buffer_cfg`)
///   overlong_buffer_reward, openrlhf  −min(L − E, B)/B · f when L > E, else 0 (floor −f)
///                                     (OpenRLHF `trainer/ppo_utils/length_penalty.py`, `apply_overlong_penalty`)
///   soft_overlong_reward, trl         0 if L ≤ E; (E − L)/C if L ≤ L_max; −1 beyond
///                                     (TRL `trl/rewards/other_rewards.py`, `get_soft_overlong_punishment`)
///   soft_overlong_reward, swift       min(−(L − E)/C, 0), uncapped (ms-swift `swift/rewards/orm.py`, `SoftOverlong`)
///   trl_cosine_reward                 lo + (hi − lo)(1 + cos(π·min(L/L_max, 1)))/2
///                                     (TRL `trl/rewards/accuracy_rewards.py`, `get_cosine_scaled_reward`)
///   swift_cosine_reward               hi − (hi − lo)(1 − cos(πL/L_max))/2, L not clamped
///                                     (ms-swift `swift/rewards/orm.py`, `CosineReward`)
///   stop_properly_reward              truncated rows: r ← c·r (0 ≤ c ≤ 1) or r ← c (c < 0)
///                                     (OpenRLHF `length_penalty.py`, `apply_stop_properly_penalty`)
///
/// The additive penalties are separate reward terms: with weight 1 in a reward_set, the total is
/// the peers' r + penalty. TRL's soft punishment is OpenRLHF's buffer with f = 1, and verl's
/// buffer is ms-swift's soft overlong with f = 1; the forms differ only in what they accept.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <numbers>
#include <optional>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "accuracy.hpp"
#include "compose.hpp"
#include "sample.hpp"

namespace msrl::reward {

namespace detail_length {
inline constexpr double nan = std::numeric_limits<double>::quiet_NaN();
inline double positive_zero(double p) noexcept { return p < 0.0 ? p : 0.0; } // min(p, 0) without −0
} // namespace detail_length

/// Which peer's DAPO overlong buffer (the file comment has both formulas).
enum class overlong_form : std::uint8_t {
  verl,     ///< min(−(L − E)/B · f, 0): keeps falling past L_max
  openrlhf, ///< −min(L − E, B)/B · f when positive: −f from L_max on
};

/// DAPO's overlong buffer (arXiv 2503.14476 eq. 13) as an additive reward term. With E =
/// max_length − buffer_length, rows up to E get 0 and rows in (E, max_length] fall linearly to
/// −penalty_factor; beyond max_length verl keeps falling and OpenRLHF stays at −penalty_factor.
///
///   overlong_buffer_reward{.max_length = 1024, .buffer_length = 256}  // verl; L = 896 → −0.5
///
/// Accepts 0 < buffer_length ≤ max_length and a finite penalty_factor ≥ 0 (verl only warns when
/// the buffer exceeds the maximum; OpenRLHF asserts max_new_tokens ≥ overlong_buffer_len).
struct overlong_buffer_reward {
  std::size_t max_length = 0;    ///< L_max: verl `max_resp_len`, OpenRLHF `max_new_tokens`
  std::size_t buffer_length = 0; ///< B: verl `overlong_buffer.len`, OpenRLHF `--reward.overlong_buffer_len`
  double penalty_factor = 1.0;   ///< f: `overlong_buffer.penalty_factor` / `--reward.overlong_penalty_factor`
  overlong_form form = overlong_form::verl;

  void validate() const {
    constexpr const char* where = "msrl::reward::overlong_buffer_reward";
    require(max_length > 0, where, "max_length", "must be > 0");
    require(buffer_length > 0, where, "buffer_length", "must be > 0");
    require(buffer_length <= max_length, where, "buffer_length", "must be <= max_length");
    require(std::isfinite(penalty_factor) && penalty_factor >= 0.0, where, "penalty_factor", "must be finite and >= 0");
  }

  double operator()(const sample& s) const {
    validate();
    const std::optional<std::size_t> n = token_count(s);
    if (!n) return detail_length::nan;
    const double L = static_cast<double>(*n), B = static_cast<double>(buffer_length);
    const double exceed = L - (static_cast<double>(max_length) - B);
    if (form == overlong_form::verl) return detail_length::positive_zero(-exceed / B * penalty_factor);
    const double capped = std::min(exceed, B);
    return capped > 0.0 ? -capped / B * penalty_factor : 0.0;
  }
};

/// Which peer's soft overlong punishment.
enum class soft_overlong_form : std::uint8_t {
  trl,   ///< piecewise, −1 beyond max_length; accepts cache_length = 0 (a hard −1 past max_length)
  swift, ///< min(−(L − E)/C, 0), uncapped; needs 0 < cache_length < max_length (ms-swift asserts C < L_max)
};

/// The soft overlong punishment (DAPO eq. 13) with the TRL / ms-swift parameter names: E =
/// max_length − cache_length; rows up to E get 0, rows in (E, max_length] fall linearly to −1,
/// rows beyond get −1 (TRL) or keep falling (ms-swift).
///
///   soft_overlong_reward{.max_length = 100, .cache_length = 20}  // TRL; L = 90 → −0.5, L = 130 → −1
struct soft_overlong_reward {
  std::size_t max_length = 0;   ///< L_max: TRL `max_completion_len`, ms-swift `soft_max_length`
  std::size_t cache_length = 0; ///< C: TRL `soft_punish_cache`, ms-swift `soft_cache_length`
  soft_overlong_form form = soft_overlong_form::trl;

  void validate() const {
    constexpr const char* where = "msrl::reward::soft_overlong_reward";
    require(max_length > 0, where, "max_length", "must be > 0");
    if (form == soft_overlong_form::trl) {
      require(cache_length <= max_length, where, "cache_length", "must be <= max_length");
    } else {
      require(cache_length > 0, where, "cache_length", "must be > 0 (ms-swift form)");
      require(cache_length < max_length, where, "cache_length", "must be < max_length (ms-swift form)");
    }
  }

  double operator()(const sample& s) const {
    validate();
    const std::optional<std::size_t> n = token_count(s);
    if (!n) return detail_length::nan;
    const double L = static_cast<double>(*n), C = static_cast<double>(cache_length);
    const double E = static_cast<double>(max_length) - C;
    if (form == soft_overlong_form::swift) return detail_length::positive_zero(-(L - E) / C);
    if (L <= E) return 0.0;
    if (L <= static_cast<double>(max_length)) return (E - L) / C;
    return -1.0;
  }
};

namespace detail_length {
inline void validate_cosine(const char* where, std::size_t max_length, std::initializer_list<double> values,
                            const std::function<double(const sample&)>& accuracy) {
  require(max_length > 0, where, "max_length", "must be > 0");
  for (double v : values) require(std::isfinite(v), where, "value", "must be finite");
  require(static_cast<bool>(accuracy), where, "accuracy", "must not be empty");
}
} // namespace detail_length

/// TRL's cosine length reward (arXiv 2502.03373 appendix C.1; `get_cosine_scaled_reward`, TRL's
/// parameter names and defaults). A row is correct when `accuracy` is non-zero (Python truth);
/// a NaN accuracy (TRL's None, an unparsable gold) gives NaN. With p = min(L/max_length, 1):
/// correct rows get min_value_correct + (max_value_correct − min_value_correct)(1 + cos πp)/2
/// (1.0 at L = 0 down to 0.5 at max_length), wrong rows max_value_wrong + (min_value_wrong −
/// max_value_wrong)(1 + cos πp)/2 (−1.0 at L = 0 up to −0.5). Constant past max_length.
struct trl_cosine_reward {
  std::size_t max_length = 0;
  double min_value_wrong = -1.0;                                     ///< wrong, L = 0
  double max_value_wrong = -0.5;                                     ///< wrong, L ≥ max_length
  double min_value_correct = 0.5;                                    ///< correct, L ≥ max_length
  double max_value_correct = 1.0;                                    ///< correct, L = 0
  std::function<double(const sample&)> accuracy = accuracy_reward{}; ///< TRL: math_verify's accuracy_reward

  void validate() const {
    detail_length::validate_cosine("msrl::reward::trl_cosine_reward", max_length,
                                   {min_value_wrong, max_value_wrong, min_value_correct, max_value_correct}, accuracy);
  }

  double operator()(const sample& s) const {
    validate();
    const std::optional<std::size_t> n = token_count(s);
    if (!n) return detail_length::nan;
    const double acc = accuracy(s);
    if (std::isnan(acc)) return detail_length::nan;
    const double progress = std::min(static_cast<double>(*n) / static_cast<double>(max_length), 1.0);
    const double cosine = std::cos(progress * std::numbers::pi);
    const bool correct = acc != 0.0;
    const double lo = correct ? min_value_correct : max_value_wrong;
    const double hi = correct ? max_value_correct : min_value_wrong;
    return lo + 0.5 * (hi - lo) * (1.0 + cosine);
  }
};

/// ms-swift's cosine length reward (`CosineReward`, ms-swift's `cosine_*` argument names and
/// defaults). A row is correct when `accuracy` ≥ 1 (NaN counts as wrong). cosfn(L, T, lo, hi) =
/// hi − (hi − lo)(1 − cos(πL/T))/2 with T = max_length; correct rows go from
/// min_len_value_correct (1.0 at L = 0) to max_len_value_correct (0.5 at T), wrong rows from
/// min_len_value_wrong (−0.5) to max_len_value_wrong (0.0). L is not clamped: past T the cosine
/// turns back (at L = 2T a row scores as at L = 0), as in ms-swift.
struct swift_cosine_reward {
  std::size_t max_length = 0;         ///< `cosine_max_len` (ms-swift defaults it to max_completion_length)
  double min_len_value_wrong = -0.5;  ///< `cosine_min_len_value_wrong`: wrong, L = 0
  double max_len_value_wrong = 0.0;   ///< `cosine_max_len_value_wrong`: wrong, L = T
  double min_len_value_correct = 1.0; ///< `cosine_min_len_value_correct`: correct, L = 0
  double max_len_value_correct = 0.5; ///< `cosine_max_len_value_correct`: correct, L = T
  std::function<double(const sample&)> accuracy = accuracy_reward{}; ///< ms-swift: `MathAccuracy`

  void validate() const {
    detail_length::validate_cosine(
        "msrl::reward::swift_cosine_reward", max_length,
        {min_len_value_wrong, max_len_value_wrong, min_len_value_correct, max_len_value_correct}, accuracy);
  }

  double operator()(const sample& s) const {
    validate();
    const std::optional<std::size_t> n = token_count(s);
    if (!n) return detail_length::nan;
    const bool correct = accuracy(s) >= 1.0;
    const double lo = correct ? max_len_value_correct : max_len_value_wrong; // the value at T
    const double hi = correct ? min_len_value_correct : min_len_value_wrong; // the value at 0
    const double t = static_cast<double>(*n), T = static_cast<double>(max_length);
    return hi - (hi - lo) * (1.0 - std::cos(t * std::numbers::pi / T)) / 2.0;
  }
};

/// ProRL's stop-properly penalty (OpenRLHF `--reward.stop_properly_penalty_coef`) as a
/// combinator: it transforms the value of the wrapped reward function `inner` on truncated rows
/// (`sample::truncated`): r ← coef·r for 0 ≤ coef ≤ 1, r ← coef for coef < 0; other rows keep r.
///
/// OpenRLHF applies it to the row's total reward, after the overlong penalty. Two ways to get that:
/// * wrap the whole set as one term — exact for every coef, one column:
///     reward_set r; r.add("reward", 1.0, stop_properly(dapo_preset(), -0.5));
/// * with_stop_properly(set, coef) for 0 ≤ coef ≤ 1 wraps each term and keeps the columns; the
///   weighted (nan)sum is linear, so the total is coef × the unwrapped total, OpenRLHF's value.
/// A design as an option of reward_set was rejected: the GRPO core rebuilds totals from the
/// columns and weights (reward_matrix), which a total-only rule would silently contradict.
template <reward_function F>
struct stop_properly_reward {
  F inner;
  double coef = 0.0; ///< c: in [0, 1] scales truncated rows, < 0 replaces them

  void validate() const {
    require(std::isfinite(coef) && coef <= 1.0, "msrl::reward::stop_properly_reward", "coef",
            "must be finite and <= 1 (in [0, 1] to scale, < 0 to replace)");
    if constexpr (requires { inner.validate(); }) inner.validate();
  }

  double operator()(const sample& s) const {
    if (!s.truncated) return static_cast<double>(std::invoke(inner, s));
    validate();
    if (coef < 0.0) return coef;
    return coef * static_cast<double>(std::invoke(inner, s));
  }
};

template <class F>
stop_properly_reward(F) -> stop_properly_reward<F>;
template <class F>
stop_properly_reward(F, double) -> stop_properly_reward<F>;

/// stop_properly_reward<F>{inner, coef} without naming F (compilers without class template
/// argument deduction for designated initializers, such as Clang before 17, need this or F).
template <reward_function F>
stop_properly_reward<F> stop_properly(F inner, double coef) {
  return stop_properly_reward<F>{.inner = std::move(inner), .coef = coef};
}

/// A copy of `set` with every term wrapped in stop_properly_reward{coef} (same names and
/// weights): OpenRLHF's rule on the total for 0 ≤ coef ≤ 1. A negative coef replaces the total,
/// which no per-term rule reproduces; wrap the whole set instead (see stop_properly_reward).
inline reward_set with_stop_properly(const reward_set& set, double coef) {
  require(std::isfinite(coef) && coef >= 0.0 && coef <= 1.0, "msrl::reward::with_stop_properly", "coef",
          "must be in [0, 1] (for coef < 0 wrap the whole set in stop_properly_reward)");
  reward_set out;
  for (const reward_set::term& t : set.terms())
    out.add(t.name, t.weight, stop_properly_reward<std::function<double(const sample&)>>{.inner = t.fn, .coef = coef});
  return out;
}

} // namespace msrl::reward
