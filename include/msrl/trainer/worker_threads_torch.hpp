#pragma once
/// \file Worker threads that run libtorch with one intra-op thread each: the pool behind
/// sample_many (prompts on several threads) and micro_batch_backward (a step's micro-batches on
/// several threads). For a small model on a few cores, whole units of work per core beat each op
/// split over the cores, whose threads wait on each other around ops of a few hundred microseconds.
///
///   detail::run_workers(2, [&](std::size_t w, const std::atomic<bool>& stop) { ... });
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

#include <torch/torch.h>

namespace msrl::trainer::detail {

/// Calls body(w, stop) for w in [0, workers) on `workers` threads, each with one libtorch intra-op
/// thread (grad mode is per thread: set it in body). stop turns true once any body has thrown (or a
/// thread could not start), so the others can finish early. Returns after every thread has stopped,
/// with the caller's intra-op thread count restored; then rethrows the first error, if any.
template <class Body>
void run_workers(std::size_t workers, Body&& body) {
  std::exception_ptr failed;
  std::vector<std::exception_ptr> errors(workers);
  std::atomic<bool> stop{false};
  const int caller_threads = at::get_num_threads();
  std::vector<std::thread> pool;
  pool.reserve(workers);
  try {
    for (std::size_t w = 0; w < workers; ++w)
      pool.emplace_back([&, w] {
        try {
          at::set_num_threads(1);
          body(w, stop);
        } catch (...) {
          errors[w] = std::current_exception();
          stop = true;
        }
      });
  } catch (...) { // a thread that could not start: the started ones stop after their unit of work
    failed = std::current_exception();
    stop = true;
  }
  for (auto& t : pool) t.join();
  at::set_num_threads(caller_threads); // libtorch keeps the last count for threads it starts later
  for (auto& e : errors)
    if (e && !failed) failed = e;
  if (failed) std::rethrow_exception(failed);
}

} // namespace msrl::trainer::detail
