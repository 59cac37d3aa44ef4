#pragma once
/// \file The coefficient controllers of a GRPO run: small state objects the trainer steps once per
/// optimizer step and saves with its optimizer state, so a resumed run continues them.
///
///   kl_controller       verl / OpenRLHF AdaptiveKLController (arXiv 1909.08593): after each step,
///                       beta <- beta (1 + clip(kl / target - 1, -0.2, 0.2) n / horizon), kl the
///                       step's mean over rows of the masked-mean KL, n its rows; `horizon` 0 keeps
///                       beta fixed (FixedKLController).
///   entropy_controller  TRL `use_adaptive_entropy` (Skywork-OR1): the bonus applied in a step is
///                       coef when the previous step's entropy H <= target, else 0 (no bonus before
///                       the first measurement); after the step, coef <- clip(coef + delta, min, max)
///                       when H <= target, clip(coef - delta, min, max) otherwise. Not adaptive: the
///                       coefficient always applies and never changes.
///
/// Torch-free. Bad settings throw msrl::invalid_argument naming the field.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "../core/error.hpp"

namespace msrl::trainer {

struct kl_controller {
  double value = 0.0;   ///< the current coefficient (verl kl_ctrl.kl_coef, OpenRLHF --algo.kl.init_coef)
  double target = 0.1;  ///< target KL (verl target_kl 0.1; OpenRLHF --algo.kl.target)
  double horizon = 0.0; ///< 0: fixed (verl type "fixed"); verl's adaptive default 10000

  void validate(const char* where = "msrl::trainer::kl_controller") const {
    require(std::isfinite(value) && value >= 0.0, where, "value", "must be finite and >= 0");
    require(horizon >= 0.0 && std::isfinite(horizon), where, "horizon", "must be finite and >= 0 (0: fixed)");
    require(horizon == 0.0 || (target > 0.0 && std::isfinite(target)), where, "target",
            "must be finite and > 0 when horizon is set");
  }
  bool adaptive() const { return horizon > 0.0; }
  /// One update: `current_kl` the step's KL, `n_steps` the rows it was measured over.
  void update(double current_kl, double n_steps) {
    constexpr const char* where = "msrl::trainer::kl_controller::update";
    validate(where);
    if (!adaptive()) return;
    require(std::isfinite(current_kl), where, "current_kl", "must be finite");
    require(n_steps >= 0.0 && std::isfinite(n_steps), where, "n_steps", "must be finite and >= 0");
    const double err = std::clamp(current_kl / target - 1.0, -0.2, 0.2);
    value *= 1.0 + err * n_steps / horizon;
  }
};

struct entropy_controller {
  double coef = 0.0;       ///< TRL entropy_coef (the initial value when adaptive)
  bool adaptive = false;   ///< TRL use_adaptive_entropy
  double coef_min = 0.0;   ///< TRL entropy_coef_min
  double coef_max = 1.0;   ///< TRL entropy_coef_max
  double delta = 0.005;    ///< TRL entropy_coef_delta
  double target = 0.2;     ///< TRL entropy_target (nats per token)
  double last_entropy = std::numeric_limits<double>::infinity(); ///< the last step's measurement

  void validate(const char* where = "msrl::trainer::entropy_controller") const {
    require(std::isfinite(coef), where, "coef", "must be finite");
    if (!adaptive) return;
    require(std::isfinite(coef_min) && std::isfinite(coef_max) && coef_min <= coef_max, where, "coef_min",
            "must be finite and <= coef_max");
    require(std::isfinite(delta) && delta >= 0.0, where, "delta", "must be finite and >= 0");
    require(std::isfinite(target), where, "target", "must be finite");
  }
  /// Whether a step needs the entropy measured (for the bonus or for the update).
  bool active() const { return adaptive || coef != 0.0; }
  /// The coefficient of the bonus in the coming step.
  double applied() const { return !adaptive ? coef : (last_entropy <= target ? coef : 0.0); }
  /// After a step: `entropy` its mean per-token entropy over every rank.
  void update(double entropy) {
    constexpr const char* where = "msrl::trainer::entropy_controller::update";
    validate(where);
    if (!adaptive) return;
    require(std::isfinite(entropy), where, "entropy", "must be finite");
    coef = entropy <= target ? std::min(coef + delta, coef_max) : std::max(coef - delta, coef_min);
    last_entropy = entropy;
  }
};

/// Both controllers of a run, as the trainer saves them.
struct controllers {
  kl_controller kl;
  entropy_controller entropy;
};

} // namespace msrl::trainer
