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
    constexpr int K = sums_size_v<S>;
    if constexpr (K == 0) {
      for (std::size_t i = 0; i < n; ++i) init = init + f(i);
      return init;
    } else {
      const std::size_t blk = block ? block : 1024;
      xt::xtensor<double, 2> tile = xt::zeros<double>({blk, static_cast<std::size_t>(K)});
      xt::xtensor<double, 1> acc = xt::zeros<double>({static_cast<std::size_t>(K)});
      for (std::size_t lo = 0; lo < n; lo += blk) {
        const std::size_t m = n - lo < blk ? n - lo : blk;
        for (std::size_t j = 0; j < m; ++j) {
          const S v = f(lo + j);
          for (int k = 0; k < K; ++k) tile(j, static_cast<std::size_t>(k)) = v[k];
        }
        acc += xt::sum(xt::view(tile, xt::range(0, m), xt::all()), {0});
      }
      S r{};
      for (int k = 0; k < K; ++k) r[k] = acc(static_cast<std::size_t>(k));
      return init + r;
    }
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
