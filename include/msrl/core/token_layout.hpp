#pragma once
/// \file How per-token arrays map to sequences: padded [B, T] (row-major) or packed sequences
/// delimited by cu_seqlens-style offsets (offsets[0] = 0, offsets[B] = total tokens).
#include <cstddef>
#include <cstdint>
#include <span>

#include "config.hpp"

namespace msrl {

/// A trivially copyable description of the token layout, usable in device code.
/// The offsets pointer (packed layout) must live in the backend's memory space.
struct token_layout {
  std::size_t num_sequences = 0;
  std::size_t padded_length = 0;         ///< T for the padded layout; 0 for packed
  const std::int64_t* offsets = nullptr; ///< B + 1 entries for the packed layout; null for padded
  std::size_t total_tokens = 0;          ///< B*T (padded) or offsets[B] (packed, given by the caller)

  /// Padded [batch, length] row-major token arrays.
  static token_layout padded(std::size_t batch, std::size_t length) {
    return token_layout{batch, length, nullptr, batch * length};
  }
  /// Packed sequences: sequence i owns tokens [offsets[i], offsets[i+1]). `total_tokens` is
  /// offsets.back(); it is passed explicitly so the layout can describe device-resident offsets.
  static token_layout packed(std::span<const std::int64_t> offsets, std::size_t total_tokens) {
    return token_layout{offsets.empty() ? 0 : offsets.size() - 1, 0, offsets.data(), total_tokens};
  }
  /// Packed sequences with host-resident offsets (total read from offsets.back()).
  static token_layout packed(std::span<const std::int64_t> offsets) {
    const std::size_t n = offsets.empty() ? 0 : static_cast<std::size_t>(offsets.back() < 0 ? 0 : offsets.back());
    return packed(offsets, n);
  }

  MSRL_HOST_DEVICE bool is_packed() const { return offsets != nullptr; }
  MSRL_HOST_DEVICE std::size_t begin(std::size_t seq) const {
    return offsets ? static_cast<std::size_t>(offsets[seq]) : seq * padded_length;
  }
  MSRL_HOST_DEVICE std::size_t end(std::size_t seq) const {
    return offsets ? static_cast<std::size_t>(offsets[seq + 1]) : (seq + 1) * padded_length;
  }
  /// The sequence that owns token i (binary search over offsets for the packed layout).
  MSRL_HOST_DEVICE std::size_t sequence_of(std::size_t i) const {
    if (!offsets) return padded_length ? i / padded_length : 0;
    std::size_t lo = 0, hi = num_sequences; // invariant: offsets[lo] <= i < offsets[hi]
    while (hi - lo > 1) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (static_cast<std::size_t>(offsets[mid]) <= i) lo = mid; else hi = mid;
    }
    return lo;
  }
};

} // namespace msrl
