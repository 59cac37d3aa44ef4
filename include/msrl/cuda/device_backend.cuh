#pragma once
/// \file A minimal CUDA execution backend for msrl's algorithms (no Thrust, so translation units
/// compile quickly): for_each_n and reduce_n launch on a stream; reduce_n sums per-block partials
/// on the host in block order, so results are deterministic. Throws msrl::error on CUDA errors
/// (it is host API; the fused launchers catch and return a status).
#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "../backend/concept.hpp"
#include "../core/error.hpp"

namespace msrl::cuda {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw msrl::error(std::string("msrl::cuda: ") + what + ": " + cudaGetErrorString(e));
}

template <class T>
class device_buffer {
public:
  device_buffer() = default;
  explicit device_buffer(std::size_t n) : n_(n) {
    if (n) {
      check_cuda(cudaMalloc(&p_, n * sizeof(T)), "cudaMalloc");
      check_cuda(cudaMemset(p_, 0, n * sizeof(T)), "cudaMemset");
    }
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  device_buffer& operator=(device_buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~device_buffer() {
    if (p_) cudaFree(p_);
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  void copy_from_host(std::span<const T> in) {
    check_cuda(cudaMemcpy(p_, in.data(), std::min(in.size(), n_) * sizeof(T), cudaMemcpyHostToDevice), "copy_from_host");
  }
  void copy_to_host(std::span<T> out) const {
    check_cuda(cudaMemcpy(out.data(), p_, std::min(out.size(), n_) * sizeof(T), cudaMemcpyDeviceToHost), "copy_to_host");
  }

private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

namespace detail {
template <class F>
__global__ void for_each_kernel(std::size_t n, F f) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    f(i);
}

template <int Threads, class F, class S>
__global__ void reduce_kernel(std::size_t n, F f, S* partial) {
  __shared__ S sh[Threads];
  S acc{};
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(Threads) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * Threads)
    acc = acc + f(i);
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int s = Threads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] = sh[threadIdx.x] + sh[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}
} // namespace detail

/// Execution backend on one CUDA stream. Every pointer handed to msrl must be device memory.
struct device_exec {
  using memory_space = device_space;
  template <class T>
  using buffer = device_buffer<T>;
  cudaStream_t stream = nullptr;

  template <class F>
  void for_each_n(std::size_t n, F f) const {
    if (n == 0) return;
    const unsigned blocks = static_cast<unsigned>(std::min<std::size_t>((n + 255) / 256, 65536));
    detail::for_each_kernel<<<blocks, 256, 0, stream>>>(n, f);
    check_cuda(cudaGetLastError(), "for_each_n launch");
  }

  template <class F, class S>
  S reduce_n(std::size_t n, F f, S init) const {
    if (n == 0) return init;
    constexpr int threads = 128;
    const unsigned blocks = static_cast<unsigned>(std::min<std::size_t>((n + threads - 1) / threads, 1024));
    device_buffer<S> part(blocks);
    detail::reduce_kernel<threads><<<blocks, threads, 0, stream>>>(n, f, part.data());
    check_cuda(cudaGetLastError(), "reduce_n launch");
    std::vector<S> h(blocks);
    check_cuda(cudaMemcpyAsync(h.data(), part.data(), blocks * sizeof(S), cudaMemcpyDeviceToHost, stream), "reduce_n copy");
    check_cuda(cudaStreamSynchronize(stream), "reduce_n sync");
    for (const S& s : h) init = init + s;
    return init;
  }
};

static_assert(msrl::execution_backend<device_exec>);

} // namespace msrl::cuda
