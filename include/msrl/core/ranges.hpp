#pragma once
/// \file Output arguments as ranges: msrl's algorithms write into a std::span<U>, and accept any
/// writable contiguous range of the element type (std::vector<float>, std::array, ...) in its place.
#include <ranges>
#include <span>
#include <type_traits>

namespace msrl {

/// A writable, sized, contiguous range.
template <class R>
concept output_range = std::ranges::contiguous_range<R> && std::ranges::sized_range<R> &&
    !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<R>>>;

/// The range as a span of its element type.
template <output_range R>
auto as_span(R&& r) {
  return std::span<std::remove_reference_t<std::ranges::range_reference_t<R>>>(std::ranges::data(r),
                                                                               std::ranges::size(r));
}

} // namespace msrl
