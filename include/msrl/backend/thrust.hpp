#pragma once
/// \file Thrust backend (component msrl::thrust). Runs wherever THRUST_DEVICE_SYSTEM points:
/// CUDA (compile with nvcc --extended-lambda), or the host with THRUST_DEVICE_SYSTEM_CPP / _OMP.
/// With CUDA every pointer handed to msrl must be device memory.
#include <cstddef>
#include <span>
#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include "concept.hpp"

namespace msrl::backend {

namespace thrust_detail {
template <class T>
class buffer {
public:
  buffer() = default;
  explicit buffer(std::size_t n) : v_(n, T{}) {}
  T* data() { return thrust::raw_pointer_cast(v_.data()); }
  std::size_t size() const { return v_.size(); }
  void copy_from_host(std::span<const T> in) { thrust::copy(in.begin(), in.end(), v_.begin()); }
  void copy_to_host(std::span<T> out) const { thrust::copy(v_.begin(), v_.begin() + static_cast<long>(out.size()), out.begin()); }

private:
  thrust::device_vector<T> v_;
};
} // namespace thrust_detail

struct thrust_device {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
  using memory_space = device_space;
#else
  using memory_space = host_space;
#endif
  template <class T>
  using buffer = thrust_detail::buffer<T>;

  template <class F>
  void for_each_n(std::size_t n, F f) const {
    if (n == 0) return;
    thrust::for_each_n(thrust::device, thrust::counting_iterator<std::size_t>(0), n, f);
  }
  template <class F, class S>
  S reduce_n(std::size_t n, F f, S init) const {
    if (n == 0) return init;
    return thrust::transform_reduce(thrust::device, thrust::counting_iterator<std::size_t>(0),
                                    thrust::counting_iterator<std::size_t>(n), f, init, thrust::plus<S>());
  }
};

static_assert(msrl::execution_backend<thrust_device>);

} // namespace msrl::backend
