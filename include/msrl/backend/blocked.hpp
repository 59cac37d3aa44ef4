#pragma once
/// \file Block-wise reductions shared by the library-backed host backends (Eigen, xtensor): the
/// functor's results for one block of indices are written into a tile owned by the library, which
/// then sums the tile's columns with its own (vectorised) reduction.
#include <cstddef>

#include "concept.hpp"

namespace msrl::backend_detail {

/// init + f(0) + ... + f(n-1) for S = msrl::sums<K>, block by block: set(j, k, value) stores one
/// entry of the tile, reduce(m) returns the column sums of its first m rows as a msrl::sums<K>.
/// Other reduction types are summed with a plain loop.
template <class F, class S, class Set, class Reduce>
S blocked_reduce(std::size_t n, std::size_t block, F f, S init, Set set, Reduce reduce) {
  constexpr int K = sums_size_v<S>;
  if constexpr (K == 0) {
    for (std::size_t i = 0; i < n; ++i) init = init + f(i);
    return init;
  } else {
    for (std::size_t lo = 0; lo < n; lo += block) {
      const std::size_t m = n - lo < block ? n - lo : block;
      for (std::size_t j = 0; j < m; ++j) {
        const S v = f(lo + j);
        for (int k = 0; k < K; ++k) set(j, k, v[k]);
      }
      init = init + reduce(m);
    }
    return init;
  }
}

} // namespace msrl::backend_detail
