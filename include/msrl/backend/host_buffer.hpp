#pragma once
/// \file A minimal owning host buffer used by the host backends.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <span>

namespace msrl::backend_detail {

template <class T>
class host_buffer {
public:
  host_buffer() = default;
  explicit host_buffer(std::size_t n) : data_(n ? std::make_unique<T[]>(n) : nullptr), size_(n) {}
  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  void copy_from_host(std::span<const T> in) { std::copy_n(in.begin(), std::min(in.size(), size_), data_.get()); }
  void copy_to_host(std::span<T> out) const { std::copy_n(data_.get(), std::min(out.size(), size_), out.begin()); }

private:
  std::unique_ptr<T[]> data_;
  std::size_t size_ = 0;
};

} // namespace msrl::backend_detail
