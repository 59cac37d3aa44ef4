#pragma once
/// \file Entry point for the GRPO math: `#include <msrl/grpo.hpp>`. No third-party dependency.
///
///   msrl::grpo::advantages(exec, rewards, group_size, out, options)      -> advantage_stats
///   msrl::grpo::policy_loss(exec, inputs, options, normalizer, grad)     -> loss_result
///   msrl::grpo::policy_loss(exec, form, inputs, options, normalizer, grad) (any surrogate_form)
///   msrl::grpo::aggregate_tokens(layout, x, mask, options, normalizer, grad)
///   msrl::grpo::rollout_correction(...), rollout_rejection_mask(...)      (rollout/training mismatch)
///   msrl::grpo::presets::{msrl_release, ms_swift_default, trl_default, verl_default, dr_grpo, ...}
///
/// `exec` is any msrl::execution_backend (backend/concept.hpp); omit it to use the reference backend.
#include "backend/concept.hpp"
#include "backend/host_threads.hpp"
#include "backend/reference.hpp"
#include "core/error.hpp"
#include "core/token_layout.hpp"
#include "grpo/advantages.hpp"
#include "grpo/aggregate.hpp"
#include "grpo/loss_types.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/presets.hpp"
#include "grpo/rejection_mask.hpp"
#include "grpo/rollout_correction.hpp"
#include "grpo/token_masks.hpp"
#include "grpo/cov_selection.hpp"
#include "grpo/fipo.hpp"
#include "grpo/token_shaping.hpp"
#include "grpo/estimators.hpp"
#include "grpo/otb.hpp"
#include "grpo/kl_reward.hpp"
#include "grpo/estimate.hpp"
#include "grpo/group_filter.hpp"
#include "grpo/scalar_math.hpp"
#include "grpo/surrogate.hpp"
