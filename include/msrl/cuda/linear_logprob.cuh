#pragma once
/// \file Fused linear log-prob on a CUDA device (component msrl::cuda, which links cuBLAS): hidden
/// [N, H] x lm_head [V, H] -> per-token log-probs, the GRPO loss and the gradients (d hidden,
/// d W), in token chunks, so no [N, V] logits tensor exists (workspace: chunk x V of T).
///
///   forward   per chunk: logits_c = h_c W^T (cublasGemmEx, fp32 accumulation, stored as T)
///             -> selective_log_softmax_forward                                          2NHV
///   backward  per chunk: recompute logits_c -> d logits in place over them (stored as T)
///             -> d h_c = dL W (fp32), d W += dL^T h_c (fp32)                              6NHV
///
/// T is float, __nv_bfloat16 or __half for hidden, weight and the logits chunk; the gradients are
/// fp32 (d W accumulates over chunks and calls). fp32 inputs use full fp32 GEMMs (no TF32).
/// The host twin is msrl/kernels/linear_logprob_eigen.hpp (same chunking, same formulas).
///
/// Launchers are noexcept and return a status (invalid_argument for null pointers, extents < 1,
/// strides below H; unsupported for an extent over cuBLAS's int range; runtime_error for a cuBLAS
/// or allocation failure). They run on `stream`: the cuBLAS handle's stream is set to it for the
/// call and restored after; the handle must use host pointer mode (cuBLAS's default).
#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../grpo/policy_loss.hpp"
#include "device_backend.cuh"
#include "grpo_loss.cuh"
#include "selective_log_softmax.cuh"

namespace msrl::cuda {

struct linear_options {
  float temperature = 1.0f;
  std::int64_t chunk = 4096;       ///< tokens per GEMM chunk (workspace chunk x V of T)
  cublasHandle_t handle = nullptr; ///< required
  cudaStream_t stream = nullptr;
  /// d W of the backward ops: false adds to linear_grads::d_weight, true overwrites it (the first
  /// chunk's GEMM runs with beta = 0, so d_weight need not hold valid numbers).
  bool overwrite_d_weight = false;
};

/// Device-resident operands: hidden [rows, hidden_size] and weight [vocab, hidden_size], row-major
/// with row strides ld_hidden / ld_weight in elements (0 = hidden_size); targets [rows].
template <class T>
struct linear_operands {
  const T* hidden = nullptr;
  std::int64_t rows = 0;
  std::int64_t hidden_size = 0;
  std::int64_t ld_hidden = 0;
  const T* weight = nullptr;
  std::int64_t vocab = 0;
  std::int64_t ld_weight = 0;
  const std::int64_t* targets = nullptr;
};

/// Where the backward writes (device, fp32, row-major; leading dimensions 0 = hidden_size):
/// d_hidden [rows, H] is overwritten, d_weight [V, H] accumulated into (or overwritten with
/// linear_options::overwrite_d_weight). Either may be null to skip it.
struct linear_grads {
  float* d_hidden = nullptr;
  std::int64_t ld_d_hidden = 0;
  float* d_weight = nullptr;
  std::int64_t ld_d_weight = 0;
};

namespace detail {

template <class T>
constexpr cudaDataType_t cublas_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return CUDA_R_16BF;
  else return CUDA_R_16F;
}

/// The handle's stream set to `s` for one scope.
class cublas_stream_scope {
public:
  cublas_stream_scope(cublasHandle_t h, cudaStream_t s) : h_(h) {
    ok_ = cublasGetStream(h_, &old_) == CUBLAS_STATUS_SUCCESS && cublasSetStream(h_, s) == CUBLAS_STATUS_SUCCESS;
  }
  ~cublas_stream_scope() {
    if (ok_) cublasSetStream(h_, old_);
  }
  cublas_stream_scope(const cublas_stream_scope&) = delete;
  cublas_stream_scope& operator=(const cublas_stream_scope&) = delete;
  bool ok() const noexcept { return ok_; }

private:
  cublasHandle_t h_;
  cudaStream_t old_ = nullptr;
  bool ok_ = false;
};

/// Column-major C[m, n] = alpha op(A) op(B) + beta C with fp32 accumulation (row-major callers
/// pass the transposed problem).
inline bool gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, std::int64_t m, std::int64_t n, std::int64_t k, const void* a,
                 cudaDataType_t at, std::int64_t lda, const void* b, cudaDataType_t bt, std::int64_t ldb, float beta, void* c,
                 cudaDataType_t ct, std::int64_t ldc) noexcept {
  const float alpha = 1.0f;
  return cublasGemmEx(h, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha, a, at, static_cast<int>(lda), b,
                      bt, static_cast<int>(ldb), &beta, c, ct, static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) ==
         CUBLAS_STATUS_SUCCESS;
}

/// Extents and strides with the defaults resolved; chunk clamped to the number of rows (>= 1).
struct linear_plan {
  std::int64_t N, H, V, ldh, ldw, chunk;
};

/// Checks the operands; fills the plan on success.
template <class T>
status check_linear(const linear_operands<T>& op, const linear_options& o, linear_plan& p) noexcept {
  p = {op.rows, op.hidden_size, op.vocab, op.ld_hidden ? op.ld_hidden : op.hidden_size, op.ld_weight ? op.ld_weight : op.hidden_size,
       o.chunk};
  if (p.N < 0 || p.H < 1 || p.V < 1 || p.ldh < p.H || p.ldw < p.H || p.chunk < 1 || !o.handle || !(o.temperature > 0.f) ||
      !(o.temperature < INFINITY) || !op.weight || (p.N > 0 && (!op.hidden || !op.targets)))
    return status::invalid_argument;
  p.chunk = std::min(p.chunk, std::max<std::int64_t>(p.N, 1));
  if (p.H > INT_MAX || p.V > INT_MAX || p.ldh > INT_MAX || p.ldw > INT_MAX || p.chunk > INT_MAX || p.N > 0x7fffffff)
    return status::unsupported;
  return status::success;
}

/// logits[C, V] (row-major, ld V) = hidden rows [c0, c0 + C) x W^T.
template <class T>
bool chunk_logits(const linear_operands<T>& op, const linear_plan& p, std::int64_t c0, std::int64_t C, T* logits,
                  cublasHandle_t h) noexcept {
  constexpr cudaDataType_t t = cublas_type<T>();
  return gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, p.V, C, p.H, op.weight, t, p.ldw, op.hidden + c0 * p.ldh, t, p.ldh, 0.0f, logits, t, p.V);
}

} // namespace detail

/// logp[i] = log softmax(h_i W^T / T)[t_i] (device, fp32) and optionally lse (device, double).
/// skip (optional, uint8 0/1 per row): rows with 0 are not read. workspace: chunk x V of T
/// (null: allocated for the call).
template <class T>
status linear_selective_log_softmax(const linear_operands<T>& op, float* logp, double* lse, const linear_options& o,
                                    const std::uint8_t* skip = nullptr, T* workspace = nullptr) noexcept {
  static_assert(is_cuda_logit_type_v<T>, "hidden / weight must be float, __nv_bfloat16 or __half");
  detail::linear_plan p{};
  if (status st = detail::check_linear(op, o, p); st != status::success) return st;
  if (p.N > 0 && !logp) return status::invalid_argument;
  if (p.N == 0) return status::success;
  try {
    device_buffer<T> ws(workspace ? 0 : static_cast<std::size_t>(p.chunk * p.V));
    device_buffer<double> lse_buf(lse ? 0 : static_cast<std::size_t>(p.chunk));
    T* logits = workspace ? workspace : ws.data();
    const detail::cublas_stream_scope scope(o.handle, o.stream);
    if (!scope.ok()) return status::runtime_error;
    for (std::int64_t c0 = 0; c0 < p.N; c0 += p.chunk) {
      const std::int64_t C = std::min(p.chunk, p.N - c0);
      if (!detail::chunk_logits(op, p, c0, C, logits, o.handle)) return status::runtime_error;
      const status st = selective_log_softmax_forward<T>(logits, C, p.V, p.V, op.targets + c0, o.temperature, logp + c0,
                                                         lse ? lse + c0 : lse_buf.data(), nullptr, skip ? skip + c0 : nullptr, o.stream);
      if (st != status::success) return st;
    }
    // the workspaces are freed on return: wait for the kernels that use them
    return cudaStreamSynchronize(o.stream) == cudaSuccess ? status::success : status::launch_failed;
  } catch (...) {
    return status::runtime_error;
  }
}

/// d hidden = (d loss / d logits) W and d weight += (d loss / d logits)^T hidden for the loss whose
/// gradient with respect to logp is grad_logp (device, fp32 [rows]); lse from the forward. The
/// logits are recomputed chunk by chunk and turned into d logits in place.
template <class T>
status linear_selective_log_softmax_backward(const linear_operands<T>& op, const double* lse, const float* grad_logp,
                                             const linear_grads& g, const linear_options& o, T* workspace = nullptr) noexcept {
  static_assert(is_cuda_logit_type_v<T>, "hidden / weight must be float, __nv_bfloat16 or __half");
  detail::linear_plan p{};
  if (status st = detail::check_linear(op, o, p); st != status::success) return st;
  const std::int64_t ldd = g.ld_d_hidden ? g.ld_d_hidden : p.H, lddw = g.ld_d_weight ? g.ld_d_weight : p.H;
  if (ldd < p.H || lddw < p.H || (p.N > 0 && (!lse || !grad_logp))) return status::invalid_argument;
  if (ldd > INT_MAX || lddw > INT_MAX) return status::unsupported;
  if (p.N == 0 && g.d_weight && o.overwrite_d_weight) // no tokens: the fresh gradient is 0
    return cudaMemset2DAsync(g.d_weight, static_cast<std::size_t>(lddw) * sizeof(float), 0, static_cast<std::size_t>(p.H) * sizeof(float),
                             static_cast<std::size_t>(p.V), o.stream) == cudaSuccess && cudaStreamSynchronize(o.stream) == cudaSuccess
               ? status::success
               : status::launch_failed;
  if (p.N == 0 || (!g.d_hidden && !g.d_weight)) return status::success;
  try {
    device_buffer<T> ws(workspace ? 0 : static_cast<std::size_t>(p.chunk * p.V));
    T* logits = workspace ? workspace : ws.data();
    const detail::cublas_stream_scope scope(o.handle, o.stream);
    if (!scope.ok()) return status::runtime_error;
    constexpr cudaDataType_t t = detail::cublas_type<T>();
    for (std::int64_t c0 = 0; c0 < p.N; c0 += p.chunk) {
      const std::int64_t C = std::min(p.chunk, p.N - c0);
      if (!detail::chunk_logits(op, p, c0, C, logits, o.handle)) return status::runtime_error;
      const status st = selective_log_softmax_backward<T, T>(logits, C, p.V, p.V, op.targets + c0, o.temperature, lse + c0,
                                                              grad_logp + c0, logits, p.V, o.stream);
      if (st != status::success) return st;
      // d h_c [C, H] = dL [C, V] W [V, H]   (column-major: dh' [H, C] = W' [H, V] dL' [V, C])
      if (g.d_hidden && !detail::gemm(o.handle, CUBLAS_OP_N, CUBLAS_OP_N, p.H, C, p.V, op.weight, t, p.ldw, logits, t, p.V, 0.0f,
                                      g.d_hidden + c0 * ldd, CUDA_R_32F, ldd))
        return status::runtime_error;
      // d W [V, H] += dL^T [V, C] h_c [C, H]   (column-major: dW' [H, V] += h' [H, C] dL'^T [C, V]);
      // the first chunk overwrites it with overwrite_d_weight
      const float beta_w = o.overwrite_d_weight && c0 == 0 ? 0.0f : 1.0f;
      if (g.d_weight && !detail::gemm(o.handle, CUBLAS_OP_N, CUBLAS_OP_T, p.H, p.V, C, op.hidden + c0 * p.ldh, t, p.ldh, logits, t, p.V,
                                      beta_w, g.d_weight, CUDA_R_32F, lddw))
        return status::runtime_error;
    }
    return cudaStreamSynchronize(o.stream) == cudaSuccess ? status::success : status::launch_failed;
  } catch (...) {
    return status::runtime_error;
  }
}

/// Device-resident GRPO inputs besides the operands: grpo::loss_arrays (null old_logp =
/// on-policy; ref_logp required when beta != 0; mask rows with 0 are not read).
using linear_grpo_inputs = grpo::loss_arrays<float>;

/// The GRPO loss of msrl::grpo::policy_loss from hidden states and the lm_head, with d hidden and
/// d weight (accumulated, or overwritten with linear_options::overwrite_d_weight): chunked
/// forward (logp), the core loss on the device backend, chunked
/// backward (recompute). logp_out (device, optional) receives the per-token log-probs.
template <class T>
status linear_grpo_loss(const linear_operands<T>& op, const linear_grpo_inputs& in, const grpo::loss_options& opt,
                        const grpo::loss_normalizer& norm, grpo::loss_result* result, const linear_grads& g, const linear_options& o,
                        float* logp_out = nullptr) noexcept {
  if (!result || !in.advantages || in.layout.total_tokens != static_cast<std::size_t>(std::max<std::int64_t>(op.rows, 0)))
    return status::invalid_argument;
  try {
    detail::linear_plan p{};
    if (status st = detail::check_linear(op, o, p); st != status::success) return st;
    const std::size_t n = static_cast<std::size_t>(p.N);
    device_buffer<T> ws(static_cast<std::size_t>(p.chunk * p.V));
    device_buffer<float> logp_buf(logp_out ? 0 : n), dlogp(n);
    device_buffer<double> lse(n);
    float* logp = logp_out ? logp_out : logp_buf.data();
    status st = linear_selective_log_softmax<T>(op, logp, lse.data(), o, in.mask, ws.data());
    if (st != status::success) return st;
    *result = grpo::policy_loss(device_exec{o.stream}, in.inputs(logp), opt, norm, std::span<float>(dlogp.data(), dlogp.size()));
    return linear_selective_log_softmax_backward<T>(op, lse.data(), dlogp.data(), g, o, ws.data());
  } catch (const msrl::invalid_argument&) {
    return status::invalid_argument;
  } catch (...) {
    return status::runtime_error;
  }
}

} // namespace msrl::cuda
