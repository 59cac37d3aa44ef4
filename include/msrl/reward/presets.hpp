#pragma once
/// \file Named reward presets.
///
/// | name           | columns (weight x function value)                                  | source |
/// |----------------|---------------------------------------------------------------------|--------|
/// | paper          | 1 x format(msrl) + 1 x accuracy(msrl) + 1 x task(0.2)               | MSRL paper: r = r_format + r_accuracy + r_task |
/// | release        | 1 x accuracy(msrl) + 0.2 x format(msrl) + 0.2 x task(0.2)           | MSRL stage 2/3 scripts (task adds 0.04) |
/// | release-stage1 | 1 x accuracy(msrl) + 0.2 x format(msrl)                             | MSRL stage 1 GRPO script |
/// | paper-caption  | paper + 1 x caption_first(0.2)                                      | msrl addition for stage 3 |
/// | unifiedreward  | 1 x format(unifiedreward) + 1 x accuracy(exact)                     | UnifiedReward-Think GRPO |
/// | r1reward       | 0.5 x format(r1reward) + 1 x accuracy(label, numeric)               | R1-Reward without the consistency judge |
/// | dapo           | 1 x accuracy(msrl) + 0.2 x format(msrl) + 1 x overlong_buffer(verl, L_max 1024, B 256, f 1) | release-stage1 + DAPO's overlong buffer (verl `dapo.py`) |
/// | cosine         | 1 x cosine(ms-swift, msrl accuracy, L_max 1024) + 0.2 x format(msrl) + 1 x repetition(words, 3, -1) | ms-swift `--reward_funcs cosine repetition format` with msrl's accuracy and format |
///
/// L_max 1024 is the MSRL stage-1 `max_completion_length`; dapo_preset() and cosine_preset() take
/// other lengths. The length terms need the sample's token count (NaN, hence skipped, without it).
#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "accuracy.hpp"
#include "caption.hpp"
#include "compose.hpp"
#include "format.hpp"
#include "length.hpp"
#include "repetition.hpp"
#include "task.hpp"

namespace msrl::reward {

inline constexpr std::array<std::string_view, 8> preset_names = {
    "paper", "release", "release-stage1", "paper-caption", "unifiedreward", "r1reward", "dapo", "cosine"};

inline reward_set paper_preset() {
  reward_set r;
  r.add("format", 1.0, format_reward{}).add("accuracy", 1.0, accuracy_reward{}).add("task", 1.0, task_reward{});
  return r;
}

inline reward_set release_preset() {
  reward_set r;
  r.add("accuracy", 1.0, accuracy_reward{}).add("format", 0.2, format_reward{}).add("task", 0.2, task_reward{});
  return r;
}

inline reward_set release_stage1_preset() {
  reward_set r;
  r.add("accuracy", 1.0, accuracy_reward{}).add("format", 0.2, format_reward{});
  return r;
}

inline reward_set paper_caption_preset() {
  reward_set r = paper_preset();
  r.add("caption", 1.0, caption_first_reward{.value = 0.2});
  return r;
}

inline reward_set unifiedreward_preset() {
  reward_set r;
  r.add("format", 1.0, format_reward{.style = format_style::unifiedreward})
      .add("accuracy", 1.0, accuracy_reward{.style = accuracy_style::exact});
  return r;
}

inline reward_set r1reward_preset() {
  reward_set r;
  r.add("format", 0.5, format_reward{.style = format_style::r1reward})
      .add("accuracy", 1.0, accuracy_reward{.style = accuracy_style::label, .format = label_format::numeric});
  return r;
}

/// release-stage1 plus DAPO's overlong buffer: 1 x accuracy(msrl) + 0.2 x format(msrl) + 1 x
/// overlong_buffer_reward{max_length, buffer_length, penalty_factor 1, form}.
inline reward_set dapo_preset(std::size_t max_length = 1024, std::size_t buffer_length = 256,
                              overlong_form form = overlong_form::verl) {
  reward_set r;
  r.add("accuracy", 1.0, accuracy_reward{})
      .add("format", 0.2, format_reward{})
      .add("overlong", 1.0,
           overlong_buffer_reward{.max_length = max_length, .buffer_length = buffer_length, .form = form});
  return r;
}

/// ms-swift's length-aware trio on msrl's rules: 1 x swift_cosine_reward{max_length} (correctness
/// from accuracy_reward) + 0.2 x format(msrl) + 1 x repetition_penalty_reward{words, 3, -1}.
inline reward_set cosine_preset(std::size_t max_length = 1024) {
  reward_set r;
  r.add("cosine", 1.0, swift_cosine_reward{.max_length = max_length})
      .add("format", 0.2, format_reward{})
      .add("repetition", 1.0, repetition_penalty_reward{});
  return r;
}

/// The preset called `name` (table above); throws msrl::invalid_argument listing the names.
inline reward_set preset(std::string_view name) {
  if (name == "paper") return paper_preset();
  if (name == "release") return release_preset();
  if (name == "release-stage1") return release_stage1_preset();
  if (name == "paper-caption") return paper_caption_preset();
  if (name == "unifiedreward") return unifiedreward_preset();
  if (name == "r1reward") return r1reward_preset();
  if (name == "dapo") return dapo_preset();
  if (name == "cosine") return cosine_preset();
  std::string known;
  for (std::string_view n : preset_names) known.append(known.empty() ? "" : ", ").append(n);
  throw invalid_argument(detail::format_error("msrl::reward::preset", "name",
                                              "must be one of " + known + " (got '" + std::string(name.substr(0, 64)) + "')"));
}

} // namespace msrl::reward
