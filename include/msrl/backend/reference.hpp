#pragma once
/// \file The reference backend: plain sequential loops. It is the oracle every other backend is
/// tested against, and the default when no backend is named.
#include <cstddef>

#include "concept.hpp"
#include "host_buffer.hpp"

namespace msrl::backend {

struct reference {
  using memory_space = host_space;
  template <class T>
  using buffer = backend_detail::host_buffer<T>;

  template <class F>
  void for_each_n(std::size_t n, F f) const {
    for (std::size_t i = 0; i < n; ++i) f(i);
  }
  template <class F, class S>
  S reduce_n(std::size_t n, F f, S init) const {
    for (std::size_t i = 0; i < n; ++i) init = init + f(i);
    return init;
  }
};

static_assert(msrl::execution_backend<reference>);

} // namespace msrl::backend
