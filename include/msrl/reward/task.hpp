#pragma once
/// \file Task recognition (MSRL plugin `msrl_task_reward`).
///
/// Normaliser applied to the completion and to the gold `task_type`: lower-case; the `<type>`
/// content if non-empty, else the whole text; `_` and `-` become spaces; whitespace runs collapse
/// to one space and the ends are stripped. `value` (0.2 in the paper) on a non-empty exact match.
/// `image_understanding`, `Image Understanding` and `image-understanding` all normalise to
/// `image understanding`.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sample.hpp"
#include "tags.hpp"

namespace msrl::reward {

namespace detail_task {
// Calls emit(c) for each byte of the normalised text; stops early when emit returns false.
template <class Emit>
inline bool walk(std::string_view text, Emit emit) {
  const std::string_view typed = extract_tag(text, "type");
  const std::string_view src = typed.empty() ? text : typed;
  bool pending_space = false, any = false;
  for (char ch : src) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '_' || c == '-') c = ' ';
    if (detail_tags::is_space(c)) {
      pending_space = any;
      continue;
    }
    if (pending_space && !emit(' ')) return false;
    pending_space = false;
    any = true;
    if (!emit(static_cast<char>(detail_tags::lower(c)))) return false;
  }
  return true;
}
} // namespace detail_task

/// The MSRL task normaliser (see the file comment).
inline std::string normalize_task(std::string_view text) {
  std::string out;
  detail_task::walk(text, [&out](char c) { out.push_back(c); return true; });
  return out;
}

/// normalize_task(text) == normalised, without building the normalised text (stops at the first difference).
inline bool task_matches(std::string_view text, std::string_view normalised) {
  std::size_t i = 0;
  const bool done = detail_task::walk(text, [&](char c) {
    if (i >= normalised.size() || normalised[i] != c) return false;
    ++i;
    return true;
  });
  return done && i == normalised.size();
}

/// The task types of the MSRL data.
enum class task_kind : std::uint8_t { image_understanding, image_generation, video_understanding, video_generation, text };

inline constexpr std::array<std::string_view, 5> task_names = {"image_understanding", "image_generation",
                                                               "video_understanding", "video_generation", "text"};

inline constexpr std::string_view task_name(task_kind k) noexcept { return task_names[static_cast<std::size_t>(k)]; }

/// The task named by `text` (after normalize_task), or nullopt.
inline std::optional<task_kind> parse_task(std::string_view text) {
  const std::string n = normalize_task(text);
  for (std::size_t i = 0; i < task_names.size(); ++i)
    if (normalize_task(task_names[i]) == n) return static_cast<task_kind>(i);
  return std::nullopt;
}

/// Task-recognition reward: `value` when normalize_task(completion) == normalize_task(task_type) != "".
struct task_reward {
  double value = 0.2;
  double operator()(const sample& s) const {
    const std::string g = normalize_task(s.task_type);
    if (g.empty()) return 0.0;
    return task_matches(s.completion, g) ? value : 0.0;
  }
};

} // namespace msrl::reward
