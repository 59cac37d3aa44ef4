#pragma once
/// \file A multi-threaded host backend. Work is split into one contiguous chunk per thread and run
/// on a persistent pool (threads are started once per process, not per call); the calling thread
/// takes the first chunk. Reductions combine per-chunk partials in chunk order, so results are
/// deterministic for a given thread count. Calls made from inside a pool task run serially.
/// Idle workers spin for up to 50 microseconds before they sleep on the condition variable (and
/// the caller spins as long for the last chunk), so that back-to-back calls, such as the passes
/// of one policy_loss, do not pay a futex wake-up (tens of microseconds on a VM) each.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "concept.hpp"
#include "host_buffer.hpp"

namespace msrl::backend {

namespace threads_detail {

/// A fixed pool of worker threads running one job (a set of chunk indices) at a time.
class pool {
public:
  static pool& instance() {
    static pool p;
    return p;
  }
  unsigned workers() const { return static_cast<unsigned>(threads_.size()); }
  /// True on a pool worker thread (nested parallel calls then run serially).
  static bool& inside() {
    thread_local bool flag = false;
    return flag;
  }

  /// Runs task(k) for k in [1, chunks) on the workers and task(0) on the caller; returns when all
  /// are done. The first exception is rethrown on the caller.
  void run(unsigned chunks, const std::function<void(unsigned)>& task) {
    std::unique_lock<std::mutex> job_lock(job_mutex_); // one job at a time
    {
      std::lock_guard<std::mutex> lk(m_);
      task_ = &task;
      next_ = 1;
      chunks_ = chunks;
      pending_ = chunks - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    // The caller counts as inside the pool while it runs its chunk, so a nested parallel call
    // from that chunk runs serially instead of waiting for the job it is part of.
    struct flag_guard {
      bool old = inside();
      flag_guard() { inside() = true; }
      ~flag_guard() { inside() = old; }
    };
    try {
      flag_guard g;
      task(0);
    } catch (...) {
      std::lock_guard<std::mutex> lk(m_);
      if (!error_) error_ = std::current_exception();
    }
    spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [&] { return pending_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

  ~pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      stop_flag_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

private:
  pool() {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 1; i < hw; ++i) threads_.emplace_back([this] { loop(); });
  }
  void loop() {
    inside() = true;
    unsigned long seen = 0;
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      if (!(stop_ || generation_ != seen)) { // a hint only: the wait below decides under the lock
        lk.unlock();
        spin_until([&] { return generation_.load(std::memory_order_acquire) != seen || stop_flag_.load(); });
        lk.lock();
      }
      cv_.wait(lk, [&] { return stop_ || (generation_ != seen && task_ && next_ < chunks_); });
      if (stop_) return;
      while (task_ && next_ < chunks_) {
        const unsigned k = next_++;
        const std::function<void(unsigned)>* task = task_;
        lk.unlock();
        std::exception_ptr err;
        try {
          (*task)(k);
        } catch (...) {
          err = std::current_exception();
        }
        lk.lock();
        if (err && !error_) error_ = err;
        if (--pending_ == 0) done_.notify_one();
      }
      seen = generation_;
    }
  }

  // Spins (with a pause hint) until done() or 50 microseconds have passed.
  template <class Done>
  static void spin_until(Done done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (unsigned i = 1; !done(); ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if (i % 64 == 0 && std::chrono::steady_clock::now() > until) return;
    }
  }

  std::vector<std::thread> threads_;
  std::mutex job_mutex_, m_;
  std::condition_variable cv_, done_;
  const std::function<void(unsigned)>* task_ = nullptr;
  unsigned next_ = 0, chunks_ = 0;
  // Written under m_; atomic so that the spins may read them without it.
  std::atomic<unsigned> pending_{0};
  std::atomic<unsigned long> generation_{0};
  std::atomic<bool> stop_flag_{false};
  std::exception_ptr error_;
  bool stop_ = false;
};

} // namespace threads_detail

struct host_threads {
  using memory_space = host_space;
  template <class T>
  using buffer = backend_detail::host_buffer<T>;

  /// Number of chunks run concurrently; 0 means std::thread::hardware_concurrency(). More chunks
  /// than the pool has threads are queued on it.
  unsigned threads = 0;
  /// Fewest items per chunk: smaller ranges use fewer chunks. msrl's passes hand out coarse items
  /// (a sequence, a group, a block of 512 tokens), so a small grain suffices.
  std::size_t grain = 16;

  unsigned effective_threads(std::size_t n) const {
    if (threads_detail::pool::inside()) return 1;
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
    const std::size_t chunk = (n + t - 1) / t;
    threads_detail::pool::instance().run(t, [&](unsigned k) {
      part[k] = run(std::min(n, k * chunk), std::min(n, (k + 1) * chunk));
    });
    for (auto& p : part) init = init + p;
    return init;
  }
};

static_assert(msrl::execution_backend<host_threads>);

} // namespace msrl::backend
