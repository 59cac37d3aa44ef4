#pragma once
/// \file Eigen backend (component msrl::eigen): reductions are evaluated block by block into an
/// Eigen array and summed with Eigen's vectorised column reductions; `as_span` turns contiguous
/// Eigen objects into the spans msrl's algorithms take.
#include <Eigen/Core>
#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "blocked.hpp"
#include "concept.hpp"
#include "host_buffer.hpp"

namespace msrl::backend {

struct eigen {
  using memory_space = host_space;
  template <class T>
  using buffer = backend_detail::host_buffer<T>;

  /// Rows evaluated per block before Eigen reduces them.
  std::size_t block = 1024;

  template <class F>
  void for_each_n(std::size_t n, F f) const {
    for (std::size_t i = 0; i < n; ++i) f(i);
  }

  template <class F, class S>
  S reduce_n(std::size_t n, F f, S init) const {
    constexpr int K = sums_size_v<S> > 0 ? sums_size_v<S> : 1;
    const std::size_t blk = block ? block : 1024;
    Eigen::Array<double, Eigen::Dynamic, K> tile(static_cast<Eigen::Index>(blk), K);
    return backend_detail::blocked_reduce(
        n, blk, f, init, [&](std::size_t j, int k, double v) { tile(static_cast<Eigen::Index>(j), k) = v; },
        [&](std::size_t m) {
          const Eigen::Array<double, 1, K> col = tile.topRows(static_cast<Eigen::Index>(m)).colwise().sum();
          S r{};
          if constexpr (sums_size_v<S> > 0)
            for (int k = 0; k < K; ++k) r[k] = col(k);
          return r;
        });
  }
};

static_assert(msrl::execution_backend<eigen>);

} // namespace msrl::backend

namespace msrl::eigen {

/// A read-only span over a contiguous Eigen object (any storage order; elements in memory order).
template <class Derived>
std::span<const typename Derived::Scalar> as_span(const Eigen::PlainObjectBase<Derived>& x) {
  return {x.data(), static_cast<std::size_t>(x.size())};
}
/// A mutable span over a contiguous Eigen object.
template <class Derived>
std::span<typename Derived::Scalar> as_span(Eigen::PlainObjectBase<Derived>& x) {
  return {x.data(), static_cast<std::size_t>(x.size())};
}
/// A span over an Eigen::Map or Eigen::Ref; throws msrl::shape_error unless it is contiguous.
template <class Derived>
std::span<typename Derived::Scalar> as_span(const Eigen::MapBase<Derived, Eigen::WriteAccessors>& x) {
  require<shape_error>(x.innerStride() == 1 && (x.outerStride() == x.innerSize() || x.outerSize() <= 1),
                       "msrl::eigen::as_span", "x", "must be contiguous (inner stride 1, no padding)");
  return {const_cast<typename Derived::Scalar*>(x.data()), static_cast<std::size_t>(x.size())};
}

} // namespace msrl::eigen
