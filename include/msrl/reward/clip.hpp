#pragma once
/// \file Reward clipping (OpenRLHF `--reward.clip_range`, default (−10, 10)) as a combinator:
/// clipped(f, low, high) (a clipped_reward) returns clamp(f(s), low, high); NaN stays NaN.
///
/// Where it applies: OpenRLHF clamps in `compute_reward` (`openrlhf/models/utils.py`), after the
/// advantage estimator has subtracted its baseline (`rloo`, `reinforce_baseline`, `dr_grpo`,
/// `group_norm` in `experience_maker.py`). Wrapping a reward function clamps the raw reward
/// instead, so it reproduces OpenRLHF only for the estimators without a baseline (`reinforce`,
/// `gae`); clamping the shaped reward belongs with the advantages.
#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "../core/error.hpp"
#include "sample.hpp"

namespace msrl::reward {

template <reward_function F>
struct clipped_reward {
  F inner;
  double low = -10.0; ///< may be -inf (no lower bound)
  double high = 10.0; ///< may be +inf (no upper bound)

  void validate() const {
    constexpr const char* where = "msrl::reward::clipped_reward";
    require(!std::isnan(low) && !std::isnan(high), where, "low, high", "must not be NaN");
    require(low <= high, where, "low", "must be <= high");
    if constexpr (requires { inner.validate(); }) inner.validate();
  }

  double operator()(const sample& s) const {
    const double v = static_cast<double>(std::invoke(inner, s));
    if (std::isnan(v)) return v;
    validate();
    return std::clamp(v, low, high);
  }
};

template <class F>
clipped_reward(F) -> clipped_reward<F>;
template <class F>
clipped_reward(F, double) -> clipped_reward<F>;
template <class F>
clipped_reward(F, double, double) -> clipped_reward<F>;

/// clipped_reward<F>{inner, low, high} without naming F (see stop_properly in length.hpp).
template <reward_function F>
clipped_reward<F> clipped(F inner, double low = -10.0, double high = 10.0) {
  return clipped_reward<F>{.inner = std::move(inner), .low = low, .high = high};
}

} // namespace msrl::reward
