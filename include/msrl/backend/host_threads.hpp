#pragma once
/// \file A multi-threaded host backend on std::thread: contiguous chunks, one per thread.
/// Reductions combine per-thread partials in thread order, so results are deterministic for a
/// given thread count.
#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

#include "concept.hpp"
#include "host_buffer.hpp"

namespace msrl::backend {

struct host_threads {
  using memory_space = host_space;
  template <class T>
  using buffer = backend_detail::host_buffer<T>;

  /// Number of threads; 0 means std::thread::hardware_concurrency().
  unsigned threads = 0;
  /// Below this many items per thread the work runs on the calling thread only.
  std::size_t grain = 4096;

  unsigned effective_threads(std::size_t n) const {
    unsigned t = threads ? threads : std::max(1u, std::thread::hardware_concurrency());
    std::size_t by_grain = grain ? (n + grain - 1) / grain : n;
    return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(t, by_grain)));
  }

  template <class F>
  void for_each_n(std::size_t n, F f) const {
    reduce_n(n, [f](std::size_t i) { f(i); return sums<1>{}; }, sums<1>{});
  }

  template <class F, class S>
  S reduce_n(std::size_t n, F f, S init) const {
    const unsigned t = effective_threads(n);
    auto run = [&](std::size_t lo, std::size_t hi) {
      S acc{};
      for (std::size_t i = lo; i < hi; ++i) acc = acc + f(i);
      return acc;
    };
    if (t <= 1) return init + run(0, n);
    std::vector<S> part(t);
    std::vector<std::exception_ptr> err(t);
    std::vector<std::thread> pool;
    pool.reserve(t - 1);
    const std::size_t chunk = (n + t - 1) / t;
    for (unsigned k = 1; k < t; ++k) {
      pool.emplace_back([&, k] {
        try {
          part[k] = run(std::min(n, k * chunk), std::min(n, (k + 1) * chunk));
        } catch (...) {
          err[k] = std::current_exception();
        }
      });
    }
    try {
      part[0] = run(0, std::min(n, chunk));
    } catch (...) {
      err[0] = std::current_exception();
    }
    for (auto& th : pool) th.join();
    for (auto& e : err)
      if (e) std::rethrow_exception(e);
    for (auto& p : part) init = init + p;
    return init;
  }
};

static_assert(msrl::execution_backend<host_threads>);

} // namespace msrl::backend
