#pragma once
/// \file What a reward function sees, and the one concept a reward function satisfies.
#include <concepts>
#include <string_view>
#include <type_traits>

namespace msrl::reward {

/// One sampled judgment with the dataset columns the rewards read. Views only: the caller owns
/// the bytes. An empty view means the column is missing (the MSRL plugin treats both alike).
struct sample {
  std::string_view completion; ///< the generated text
  std::string_view solution;   ///< gold label: `A`, `<answer>A</answer>`, `Image 1 is better`, `1`, ...
  std::string_view task_type;  ///< gold task: `image_understanding`, `Image Understanding`, ...
};

/// A reward function: any copyable callable that maps a `const sample&` to a number.
///
///   auto length_penalty = [](const msrl::reward::sample& s) { return s.completion.size() > 4096 ? -1.0 : 0.0; };
///   static_assert(msrl::reward::reward_function<decltype(length_penalty)>);
///
/// It must accept arbitrary bytes without undefined behaviour; NaN means "could not score"
/// (the weighted sum and the GRPO core skip NaN terms, as ms-swift's nansum does).
template <class F>
concept reward_function = std::copy_constructible<F> && std::invocable<const F&, const sample&> &&
                          std::convertible_to<std::invoke_result_t<const F&, const sample&>, double>;

} // namespace msrl::reward
