#pragma once
/// \file xtensor backend (component msrl::xtensor): reductions are evaluated block by block into an
/// xtensor and summed with xt::sum; `as_span` turns contiguous row-major xtensor containers into
/// the spans msrl's algorithms take. Uses the flat include paths of xtensor 0.24.
#include <cstddef>
#include <span>
#include <xtensor/xreducer.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "../core/error.hpp"
#include "blocked.hpp"
#include "concept.hpp"
#include "host_buffer.hpp"

namespace msrl::backend {

struct xtensor {
  using memory_space = host_space;
  template <class T>
  using buffer = backend_detail::host_buffer<T>;

  std::size_t block = 1024;

  template <class F>
  void for_each_n(std::size_t n, F f) const {
    for (std::size_t i = 0; i < n; ++i) f(i);
  }

  template <class F, class S>
  S reduce_n(std::size_t n, F f, S init) const {
    constexpr std::size_t K = sums_size_v<S> > 0 ? static_cast<std::size_t>(sums_size_v<S>) : 1;
    const std::size_t blk = block ? block : 1024;
    xt::xtensor<double, 2> tile = xt::zeros<double>({blk, K});
    return backend_detail::blocked_reduce(
        n, blk, f, init, [&](std::size_t j, int k, double v) { tile(j, static_cast<std::size_t>(k)) = v; },
        [&](std::size_t m) {
          const xt::xtensor<double, 1> col = xt::sum(xt::view(tile, xt::range(0, m), xt::all()), {0});
          S r{};
          if constexpr (sums_size_v<S> > 0)
            for (std::size_t k = 0; k < K; ++k) r[static_cast<int>(k)] = col(k);
          return r;
        });
  }
};

static_assert(msrl::execution_backend<xtensor>);

} // namespace msrl::backend

namespace msrl::xtensor {

/// A span over a contiguous row-major xtensor container (xt::xtensor / xt::xarray).
template <class E>
auto as_span(E& x) -> std::span<std::remove_reference_t<decltype(*x.data())>> {
  require<shape_error>(x.layout() == xt::layout_type::row_major, "msrl::xtensor::as_span", "x",
                       "must be a contiguous row-major container");
  return {x.data(), x.size()};
}

} // namespace msrl::xtensor
