// The host_threads backend: every index visited exactly once, exceptions from tasks reach the
// caller and leave the pool usable, nested calls do not deadlock, reductions are deterministic.
#define BOOST_TEST_MODULE host_threads
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <stdexcept>
#include <vector>

#include <msrl/backend/host_threads.hpp>

using msrl::sums;
using msrl::backend::host_threads;

BOOST_AUTO_TEST_CASE(each_index_exactly_once) {
  for (unsigned t : {1u, 2u, 3u, 7u}) {
    std::vector<std::atomic<int>> hits(10007);
    host_threads{.threads = t, .grain = 1}.for_each_n(hits.size(), [&](std::size_t i) { hits[i]++; });
    for (auto& h : hits) BOOST_TEST(h.load() == 1);
    // sum of i = n(n-1)/2
    auto s = host_threads{.threads = t, .grain = 1}.reduce_n(
        10007, [](std::size_t i) { sums<1> r{}; r[0] = double(i); return r; }, sums<1>{});
    BOOST_TEST(s[0] == 10007.0 * 10006.0 / 2.0);
  }
}

BOOST_AUTO_TEST_CASE(exceptions_propagate_and_pool_survives) {
  host_threads ex{.threads = 4, .grain = 1};
  BOOST_CHECK_THROW(ex.for_each_n(1000, [](std::size_t i) {
    if (i == 999) throw std::runtime_error("task failed");
  }), std::runtime_error);
  std::atomic<int> n{0};
  ex.for_each_n(1000, [&](std::size_t) { n++; });
  BOOST_TEST(n.load() == 1000);
}

BOOST_AUTO_TEST_CASE(nested_calls_run_serially) {
  host_threads ex{.threads = 4, .grain = 1};
  std::atomic<int> n{0};
  ex.for_each_n(8, [&](std::size_t) { ex.for_each_n(100, [&](std::size_t) { n++; }); });
  BOOST_TEST(n.load() == 800);
}

BOOST_AUTO_TEST_CASE(deterministic_for_a_thread_count) {
  auto f = [](std::size_t i) { sums<1> r{}; r[0] = 1.0 / double(i + 1); return r; };
  const double a = host_threads{.threads = 3, .grain = 1}.reduce_n(100000, f, sums<1>{})[0];
  const double b = host_threads{.threads = 3, .grain = 1}.reduce_n(100000, f, sums<1>{})[0];
  BOOST_TEST(a == b);
}
