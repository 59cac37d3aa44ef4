#pragma once
/// \file What a reward function sees, and the one concept a reward function satisfies.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>

namespace msrl::reward {

/// One sampled judgment with the dataset columns the rewards read. Views only: the caller owns
/// the bytes. An empty view means the column is missing (the MSRL plugin treats both alike).
///
/// The generation facts after the text columns are optional, so `{.completion = ..., .solution =
/// ..., .task_type = ...}` still initialises a sample; the length rewards (length.hpp,
/// repetition.hpp) read them and return NaN ("could not score") when what they need is absent.
struct sample {
  std::string_view completion; ///< the generated text
  std::string_view solution;   ///< gold label: `A`, `<answer>A</answer>`, `Image 1 is better`, `1`, ...
  std::string_view task_type;  ///< gold task: `image_understanding`, `Image Understanding`, ...
  /// Number of generated tokens (the peers' response length: `len(completion_ids)` in TRL and
  /// ms-swift, the response mask sum in verl and OpenRLHF); nullopt when unknown.
  std::optional<std::size_t> completion_tokens = std::nullopt;
  /// Generation stopped at the length limit (vLLM `finish_reason == "length"`, OpenRLHF's
  /// `truncated`); false when it stopped on its own or when unknown.
  bool truncated = false;
  /// The generated token ids (TRL's `completion_ids`); empty when not given.
  std::span<const std::int64_t> completion_ids = {};
};

/// The completion's token count: `completion_tokens` when set, else the size of a non-empty
/// `completion_ids`, else nullopt (unknown).
inline std::optional<std::size_t> token_count(const sample& s) noexcept {
  if (s.completion_tokens) return s.completion_tokens;
  if (!s.completion_ids.empty()) return s.completion_ids.size();
  return std::nullopt;
}

/// A reward function: any copyable callable that maps a `const sample&` to a number.
///
///   auto length_penalty = [](const msrl::reward::sample& s) { return s.completion.size() > 4096 ? -1.0 : 0.0; };
///   static_assert(msrl::reward::reward_function<decltype(length_penalty)>);
///
/// It must accept arbitrary bytes without undefined behaviour; NaN means "could not score"
/// (the weighted sum and the GRPO core skip NaN terms, as ms-swift's nansum does).
///
/// A reward function with options may also offer `void validate() const`, throwing msrl's named
/// errors for invalid options; reward_set::add calls it, so a bad option fails when the set is
/// built rather than at the first score.
template <class F>
concept reward_function = std::copy_constructible<F> && std::invocable<const F&, const sample&> &&
                          std::convertible_to < std::invoke_result_t<const F&, const sample&>,
double > ;

} // namespace msrl::reward
