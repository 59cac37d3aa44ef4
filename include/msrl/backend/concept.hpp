#pragma once
/// \file The one concept a backend implements. This is the only header a third-party backend needs.
///
/// A backend is an execution policy object (it may carry threads, a stream, a handle). msrl's
/// algorithms are written once against three primitives:
///
///   b.for_each_n(n, f)            calls f(i) exactly once for every i in [0, n), in any order,
///                                 possibly concurrently. f is MSRL_HOST_DEVICE and trivially copyable.
///   b.reduce_n(n, f, init) -> S   returns init + f(0) + f(1) + ... + f(n-1) for a trivially copyable
///                                 S with an associative MSRL_HOST_DEVICE operator+ (msrl::sums<K>).
///                                 f(i) is called exactly once per i and may write to memory it
///                                 owns exclusively (msrl uses this to emit gradients in the same pass).
///   B::buffer<T>                  an owning, contiguous buffer of n value-initialised T in the memory
///                                 the backend computes on: buffer<T>(n), .data(), .size(), and
///                                 copy_from_host(std::span<const T>) and copy_to_host(std::span<T>).
///
/// and a tag `memory_space` (host_space or device_space) saying where the pointers it is given live.
/// Everything else (advantages, policy loss, KL, aggregation, validation) is composed from these.
#include <concepts>
#include <cstddef>
#include <type_traits>

#include "../core/config.hpp"

namespace msrl {

struct host_space {};
struct device_space {};

/// A fixed set of K double accumulators: the value type of every msrl reduction.
template <int K>
struct sums {
  double v[K];
  MSRL_HOST_DEVICE constexpr double& operator[](int i) { return v[i]; }
  MSRL_HOST_DEVICE constexpr const double& operator[](int i) const { return v[i]; }
  MSRL_HOST_DEVICE friend constexpr sums operator+(const sums& a, const sums& b) {
    sums r{};
    for (int i = 0; i < K; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
};

namespace detail {
struct probe_index_fn {
  MSRL_HOST_DEVICE void operator()(std::size_t) const {}
};
struct probe_sum_fn {
  MSRL_HOST_DEVICE sums<2> operator()(std::size_t) const { return sums<2>{}; }
};
} // namespace detail

/// The backend concept (see the file comment for the semantics each expression must have).
template <class B>
concept execution_backend = std::copy_constructible<B> &&
  requires { typename B::memory_space; } &&
  (std::same_as<typename B::memory_space, host_space> || std::same_as<typename B::memory_space, device_space>) &&
  requires(const B& b, std::size_t n, detail::probe_index_fn f, detail::probe_sum_fn g) {
    b.for_each_n(n, f);
    { b.reduce_n(n, g, sums<2>{}) } -> std::same_as<sums<2>>;
    typename B::template buffer<double>;
  } &&
  requires(typename B::template buffer<double> buf, std::size_t n) {
    { typename B::template buffer<double>(n) };
    { buf.data() } -> std::same_as<double*>;
    { buf.size() } -> std::convertible_to<std::size_t>;
  };

/// True when the backend computes on pointers the host can dereference.
template <class B>
inline constexpr bool is_host_backend_v = std::is_same_v<typename B::memory_space, host_space>;

} // namespace msrl

namespace msrl {
/// Number of accumulators of a msrl::sums type (0 for other reduction types).
template <class S>
inline constexpr int sums_size_v = 0;
template <int K>
inline constexpr int sums_size_v<sums<K>> = K;
} // namespace msrl
