#pragma once
// The kernel lab's CUDA checks and timings, shared by the Boost test (test/cuda) and the plain
// gpu_check binary (kernels/gpu_check.cu, for machines without Boost). The backward is checked
// with and without the entropy gradient. Every check compares the
// device result with the double-precision reference (kernels/reference.hpp) or the core's
// host path (msrl::grpo::policy_loss on double reference log-probs).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <msrl/cuda/grpo_loss.cuh>
#include <msrl/cuda/linear_logprob.cuh>
#include <msrl/cuda/selective_log_softmax.cuh>
#include <msrl/grpo.hpp>

#include "reference.hpp"

namespace msrl::lab {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error at %s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

template <class T>
inline const char* dtype_name() {
  return sizeof(T) == 4 ? "fp32" : (std::is_same_v<T, __nv_bfloat16> ? "bf16" : "fp16");
}
template <class T>
inline T host_from(float v) {
  if constexpr (sizeof(T) == 4) return v;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else return __float2half_rn(v);
}
template <class T>
inline double host_to(T v) {
  if constexpr (sizeof(T) == 4) return v;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return static_cast<double>(__bfloat162float(v));
  else return static_cast<double>(__half2float(v));
}

template <class T>
struct dev {
  T* p = nullptr;
  std::size_t n = 0;
  explicit dev(std::size_t k) : n(k) { cuda_ok(cudaMalloc(&p, std::max<std::size_t>(k, 1) * sizeof(T)), "cudaMalloc"); }
  dev(const std::vector<T>& h) : dev(h.size()) { cuda_ok(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), "H2D"); }
  ~dev() { cudaFree(p); }
  dev(const dev&) = delete;
  std::vector<T> host() const {
    std::vector<T> h(n);
    cuda_ok(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "D2H");
    return h;
  }
};

template <class T>
struct logits_problem {
  std::size_t N, V, ld;
  std::vector<T> x;
  std::vector<std::int64_t> y;
};

template <class T>
logits_problem<T> make_logits(std::size_t N, std::size_t V, std::size_t ld, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 3.f);
  logits_problem<T> p{N, V, ld, std::vector<T>(N * ld), std::vector<std::int64_t>(N)};
  for (std::size_t i = 0; i < N * ld; ++i) p.x[i] = host_from<T>(nd(rng) + (i % 997 == 3 ? 15.f : 0.f));
  for (std::size_t i = 0; i < N; ++i) p.y[i] = static_cast<std::int64_t>(rng() % V);
  return p;
}

template <class T>
std::vector<double> row_of(const logits_problem<T>& p, std::size_t i) {
  std::vector<double> r(p.V);
  for (std::size_t j = 0; j < p.V; ++j) r[j] = host_to(p.x[i * p.ld + j]);
  return r;
}

struct errors {
  double logp = 0, lse = 0, entropy = 0, grad = 0; // grad: max |g - ref| / max |ref| per row
  bool all_written = true;
  cuda::status st = cuda::status::success;
};

/// Forward (+ entropy) on rows sampled every `stride` rows; -inf logits and ignored targets planted.
template <class T>
errors check_forward(std::size_t N, std::size_t V, std::size_t ld, float temp, std::size_t stride, unsigned seed) {
  auto p = make_logits<T>(N, V, ld, seed);
  if (N > 2) {
    for (std::size_t j = 0; j < V; j += 5) p.x[1 * ld + j] = host_from<T>(-INFINITY);
    p.y[1] = 0;
    p.x[1 * ld + 0] = host_from<T>(1.f);
    p.y[2] = -100;
  }
  dev<T> x(p.x);
  dev<std::int64_t> y(p.y);
  dev<float> lp(N), en(N);
  dev<double> ls(N);
  errors e;
  e.st = cuda::selective_log_softmax_forward<T>(x.p, static_cast<std::int64_t>(N), static_cast<std::int64_t>(V), static_cast<std::int64_t>(ld),
                                                y.p, temp, lp.p, ls.p, en.p);
  cuda_ok(cudaDeviceSynchronize(), "forward");
  auto hl = lp.host(), he = en.host();
  auto hs = ls.host();
  for (std::size_t i = 0; i < N; i += (i < 4 ? 1 : stride)) {
    const auto row = row_of(p, i);
    const ref_row r = ref_forward(row.data(), V, p.y[i], temp);
    e.logp = std::max(e.logp, std::abs(hl[i] - r.logp));
    e.lse = std::max(e.lse, std::abs(hs[i] - r.lse) / std::max(1.0, std::abs(r.lse)));
    e.entropy = std::max(e.entropy, std::abs(he[i] - r.entropy) / std::max(1.0, std::abs(r.entropy)));
    if (!(std::isfinite(hl[i]) && std::isfinite(he[i]))) e.all_written = false;
  }
  return e;
}

/// Where a backward writes d logits [N, V]: a buffer poisoned with 0x7f bytes (so an entry the
/// kernel skips shows up as huge), or the logits themselves (in place).
template <class T, class G>
struct grad_target {
  dev<G> buf;
  G* out;
  std::size_t n;
  grad_target(dev<T>& x, std::size_t N, std::size_t V, bool in_place) : buf(in_place ? 1 : N * V), n(N * V) {
    if (!in_place) cuda_ok(cudaMemset(buf.p, 0x7f, n * sizeof(G)), "poison");
    out = in_place ? reinterpret_cast<G*>(x.p) : buf.p;
  }
  std::vector<G> host() const {
    std::vector<G> h(n);
    cuda_ok(cudaMemcpy(h.data(), out, n * sizeof(G), cudaMemcpyDeviceToHost), "D2H grad");
    return h;
  }
};

/// Relative rounding of one gradient entry stored as G (0 for fp32: compared exactly).
template <class G>
constexpr double storage_eps() {
  return sizeof(G) == 4 ? 0.0 : (std::is_same_v<G, __nv_bfloat16> ? 0x1p-8 : 0x1p-11);
}

/// Backward (separate kernel or fused fwd_bwd, optionally in place) against the reference.
template <class T, class G>
errors check_backward(std::size_t N, std::size_t V, float temp, bool fused, bool in_place, unsigned seed) {
  auto p = make_logits<T>(N, V, V, seed);
  std::vector<float> gl(N);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& g : gl) g = nd(rng);
  if (N > 1) gl[1] = 0.f;
  dev<T> x(p.x);
  dev<std::int64_t> y(p.y);
  dev<float> lp(N), g(gl);
  dev<double> ls(N);
  grad_target<T, G> gt(x, N, V, in_place);
  G* out = gt.out;
  errors e;
  const auto n = static_cast<std::int64_t>(N), v = static_cast<std::int64_t>(V);
  if (fused) {
    e.st = cuda::selective_log_softmax_fwd_bwd<T, G>(x.p, n, v, v, y.p, temp, g.p, lp.p, ls.p, out, v);
  } else {
    e.st = cuda::selective_log_softmax_forward<T>(x.p, n, v, v, y.p, temp, lp.p, ls.p, nullptr);
    if (e.st == cuda::status::success) e.st = cuda::selective_log_softmax_backward<T, G>(x.p, n, v, v, y.p, temp, ls.p, g.p, out, v);
  }
  cuda_ok(cudaDeviceSynchronize(), "backward");
  const std::vector<G> hg = gt.host();
  auto hl = lp.host();
  std::vector<double> ref;
  const double fmt = storage_eps<G>();
  for (std::size_t i = 0; i < N; ++i) {
    const auto row = row_of(p, i);
    e.logp = std::max(e.logp, std::abs(hl[i] - ref_forward(row.data(), V, p.y[i], temp).logp));
    ref_backward(row.data(), V, p.y[i], temp, gl[i], ref);
    double mx = 0, err = 0;
    for (std::size_t j = 0; j < V; ++j) {
      const double got = host_to(hg[i * V + j]);
      if (!std::isfinite(got)) e.all_written = false;
      mx = std::max(mx, std::abs(ref[j]));
      err = std::max(err, std::abs(got - ref[j]) - fmt * std::abs(ref[j]));
    }
    e.grad = std::max(e.grad, mx > 0 ? err / mx : err);
  }
  return e;
}

/// Backward with the entropy term (grad_logp and grad_entropy per row, rows mixing both, either or
/// neither; -inf logits, a row of only -inf logits, a -inf target logit and ignored targets
/// planted) against the double reference. grad: the max over entries of
/// (|g - ref| - fmt |ref|) / (max_j |ref_j| + p_j (|gl| + |gh| (|log p_j| + H + |lse| + 1)) / T):
/// the second term is the size of the entry before log p_j + H cancels, with |lse| standing for
/// the fp32 rounding of the forward's log2-unit row max (lse carries ~2^-24 |max / T|).
template <class T, class G>
errors check_entropy_backward(std::size_t N, std::size_t V, float temp, bool in_place, unsigned seed) {
  auto p = make_logits<T>(N, V, V, seed);
  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> gl(N), gh(N);
  for (std::size_t i = 0; i < N; ++i) {
    gl[i] = nd(rng);
    gh[i] = nd(rng);
    if (i % 4 == 1) gl[i] = 0.f; // entropy only
    if (i % 4 == 2) gh[i] = 0.f; // log-prob only
    if (i % 8 == 3) gl[i] = gh[i] = 0.f;
  }
  if (N > 6) {
    for (std::size_t j = 0; j < V; j += 3) p.x[0 * V + j] = host_from<T>(-INFINITY); // a third banned
    p.y[0] = 1;
    for (std::size_t j = 0; j < V; ++j) p.x[4 * V + j] = host_from<T>(-INFINITY); // every logit -inf
    p.x[5 * V + 7] = host_from<T>(-INFINITY);                                     // p(target) = 0
    p.y[5] = 7;
    p.y[6] = -100; // ignored
  }
  dev<T> x(p.x);
  dev<std::int64_t> y(p.y);
  dev<float> lp(N), en(N), g(gl), h(gh);
  dev<double> ls(N);
  grad_target<T, G> gt(x, N, V, in_place);
  G* out = gt.out;
  errors e;
  const auto n = static_cast<std::int64_t>(N), v = static_cast<std::int64_t>(V);
  e.st = cuda::selective_log_softmax_forward<T>(x.p, n, v, v, y.p, temp, lp.p, ls.p, en.p);
  if (e.st == cuda::status::success)
    e.st = cuda::selective_log_softmax_backward<T, G>(x.p, n, v, v, y.p, temp, cuda::backward_inputs{ls.p, g.p, en.p, h.p}, out, v);
  cuda_ok(cudaDeviceSynchronize(), "entropy backward");
  const std::vector<G> hg = gt.host();
  const auto he = en.host();
  const double fmt = storage_eps<G>();
  const double floor16 = sizeof(G) == 4 ? 0.0 : 0x1p-24; // fp16 subnormals
  std::vector<double> ref;
  for (std::size_t i = 0; i < N; ++i) {
    const auto row = row_of(p, i);
    const ref_row r = ref_forward(row.data(), V, p.y[i], temp);
    e.entropy = std::max(e.entropy, std::abs(he[i] - r.entropy) / std::max(1.0, std::abs(r.entropy)));
    ref_backward(row.data(), V, p.y[i], temp, gl[i], gh[i], ref);
    double mx = 0;
    for (std::size_t j = 0; j < V; ++j) mx = std::max(mx, std::abs(ref[j]));
    for (std::size_t j = 0; j < V; ++j) {
      const double got = host_to(hg[i * V + j]);
      if (!std::isfinite(got)) e.all_written = false;
      // -inf logits (but a -inf target, which gets gl / T), all -inf rows and ignored rows: exactly 0
      if ((!std::isfinite(row[j]) && static_cast<std::int64_t>(j) != p.y[i]) || p.y[i] < 0 || !(r.lse > -HUGE_VAL)) {
        if (got != 0.0) e.all_written = false;
        continue;
      }
      const double lpj = (row[j] / temp - r.zmax) - r.lse_rest, pj = std::exp(lpj);
      const double size =
          mx + pj * (std::abs(gl[i]) + std::abs(gh[i]) * (std::abs(lpj) + r.entropy + std::abs(r.lse) + 1.0)) / temp;
      const double err = std::max(0.0, std::abs(got - ref[j]) - fmt * std::abs(ref[j]) - floor16);
      if (err > 0.0) e.grad = std::max(e.grad, size > 0.0 ? err / size : HUGE_VAL);
    }
  }
  return e;
}

/// The device GRPO loss against the core's host path on double reference log-probs.
struct grpo_errors {
  double loss = 0, loss_ref = 0, grad = 0, clip_fraction = 0;
  cuda::status st = cuda::status::success;
};

template <class T>
grpo_errors check_grpo(const grpo::loss_options& o, std::size_t B, std::size_t Tlen, std::size_t V, unsigned seed) {
  const std::size_t N = B * Tlen;
  auto p = make_logits<T>(N, V, V, seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<double> lp(N), dlp(N);
  std::vector<float> old(N), ref(N), adv(B);
  std::vector<std::uint8_t> mask(N);
  for (std::size_t i = 0; i < N; ++i) {
    const auto row = row_of(p, i);
    lp[i] = ref_forward(row.data(), V, p.y[i], 1.0).logp;
    old[i] = static_cast<float>(lp[i] + 0.3 * nd(rng));
    ref[i] = static_cast<float>(lp[i] + 0.5 * nd(rng));
    mask[i] = (i % Tlen) < 1 + (i / Tlen) % Tlen ? 1 : 0;
  }
  for (auto& a : adv) a = nd(rng);
  const std::vector<double> oldd(old.begin(), old.end()), refd(ref.begin(), ref.end()), advd(adv.begin(), adv.end());
  const auto lay = token_layout::padded(B, Tlen);
  const auto want = grpo::policy_loss(grpo::loss_inputs<double>{lay, lp, oldd, refd, advd, mask}, o, {}, std::span<double>(dlp));
  dev<T> x(p.x);
  dev<std::int64_t> y(p.y);
  dev<float> dold(old), dref(ref), dadv(adv);
  dev<std::uint8_t> dm(mask);
  dev<float> g(N * V);
  cuda::grpo_logits_inputs<T> in{x.p, static_cast<std::int64_t>(V), 0, y.p, {lay, dold.p, dref.p, dadv.p, B, dm.p}};
  grpo::loss_result got{};
  grpo_errors e;
  e.st = cuda::grpo_loss_from_logits<T, float>(in, o, {}, 1.0f, &got, g.p, 0);
  cuda_ok(cudaDeviceSynchronize(), "grpo");
  e.loss = got.loss;
  e.loss_ref = want.loss;
  e.clip_fraction = std::abs(got.metrics.clip_fraction - want.metrics.clip_fraction);
  auto hg = g.host();
  std::vector<double> r;
  for (std::size_t i = 0; i < N; ++i) {
    const auto row = row_of(p, i);
    ref_backward(row.data(), V, p.y[i], 1.0, mask[i] ? dlp[i] : 0.0, r);
    double mx = 0, err = 0;
    for (std::size_t j = 0; j < V; ++j) {
      mx = std::max(mx, std::abs(r[j]));
      err = std::max(err, std::abs(hg[i * V + j] - r[j]));
    }
    e.grad = std::max(e.grad, mx > 0 ? err / mx : err);
  }
  return e;
}

/// The fused linear log-prob (cuBLAS chunks) against the double-precision reference computed from
/// the same T-rounded hidden states and weights: logits in double, ref_forward / ref_backward per
/// row, d hidden = dL W and d W = dL^T h in double. With `grpo` the upstream gradient and the loss
/// come from the core's host policy_loss on the reference log-probs (a padded batch with a
/// ragged mask), and the device runs linear_grpo_loss; otherwise grad_logp is random.
/// Tolerances (returned with the errors) follow the storage type: fp32 inputs 1e-4 (log-prob,
/// absolute) and 1e-4 (gradients, relative to the largest entry); bf16 / fp16 logits are rounded
/// to the type before the softmax, so 2 eps max|z| / T + 1e-4 and 8 eps.
struct linear_errors {
  double logp = 0, d_hidden = 0, d_weight = 0, loss = 0, loss_ref = 0;
  double tol_logp = 0, tol_grad = 0;
  bool all_written = true;
  cuda::status st = cuda::status::success;
};

template <class T>
linear_errors check_linear(std::size_t N, std::size_t H, std::size_t V, std::int64_t chunk, float temp, bool grpo_loss, unsigned seed,
                           bool overwrite_d_weight = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<T> h(N * H), w(V * H);
  for (auto& x : h) x = host_from<T>(nd(rng));
  const float ws = 2.0f / std::sqrt(static_cast<float>(H)); // logits ~ N(0, 4)
  for (auto& x : w) x = host_from<T>(ws * nd(rng));
  std::vector<std::int64_t> y(N);
  for (auto& t : y) t = static_cast<std::int64_t>(rng() % V);
  if (N > 3 && !grpo_loss) y[3] = -100; // ignored
  std::vector<double> hd(N * H), wd(V * H);
  for (std::size_t i = 0; i < hd.size(); ++i) hd[i] = host_to(h[i]);
  for (std::size_t i = 0; i < wd.size(); ++i) wd[i] = host_to(w[i]);
  // reference forward
  std::vector<double> z(N * V), lp(N);
  double zmax = 0;
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t j = 0; j < V; ++j) {
      double s = 0;
      for (std::size_t k = 0; k < H; ++k) s += hd[i * H + k] * wd[j * H + k];
      z[i * V + j] = s;
      zmax = std::max(zmax, std::abs(s));
    }
  for (std::size_t i = 0; i < N; ++i) lp[i] = ref_forward(&z[i * V], V, y[i], temp).logp;
  // upstream gradient
  std::vector<double> g(N);
  linear_errors e;
  const std::size_t B = 4;
  std::vector<float> old(N), adv(B);
  std::vector<std::uint8_t> mask(N, 1);
  const auto lay = token_layout::padded(B, N / B);
  grpo::loss_options opt = grpo::presets::verl_default.loss;
  if (grpo_loss) {
    if (N % B != 0) std::exit(3); // a lab misuse
    for (std::size_t i = 0; i < N; ++i) {
      old[i] = static_cast<float>(lp[i] + 0.3 * nd(rng));
      mask[i] = (i % (N / B)) < (N / B) - (i / (N / B)) ? 1 : 0;
    }
    for (auto& a : adv) a = nd(rng);
    const std::vector<double> oldd(old.begin(), old.end()), advd(adv.begin(), adv.end());
    e.loss_ref = grpo::policy_loss(grpo::loss_inputs<double>{lay, lp, oldd, {}, advd, mask}, opt, {}, std::span<double>(g)).loss;
  } else {
    for (auto& x : g) x = nd(rng);
  }
  // reference backward
  std::vector<double> dh(N * H, 0.0), dw(V * H, 0.0), dl;
  for (std::size_t i = 0; i < N; ++i) {
    ref_backward(&z[i * V], V, y[i], temp, mask[i] ? g[i] : 0.0, dl);
    for (std::size_t j = 0; j < V; ++j) {
      if (dl[j] == 0.0) continue;
      for (std::size_t k = 0; k < H; ++k) {
        dh[i * H + k] += dl[j] * wd[j * H + k];
        dw[j * H + k] += dl[j] * hd[i * H + k];
      }
    }
  }
  // device
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) std::exit(2);
  dev<T> dhid(h), dwt(w);
  dev<std::int64_t> dy(y);
  dev<float> dlp(N), gh(N * H), gw(V * H);
  dev<double> dls(N);
  cuda_ok(cudaMemset(gh.p, 0xff, N * H * sizeof(float)), "poison d_hidden"); // NaN: every row must be written
  // d_weight: zeros to accumulate into, or NaN that overwrite_d_weight must replace everywhere
  cuda_ok(cudaMemset(gw.p, overwrite_d_weight ? 0xff : 0, V * H * sizeof(float)), "d_weight");
  const cuda::linear_operands<T> op{dhid.p, static_cast<std::int64_t>(N), static_cast<std::int64_t>(H), 0,
                                    dwt.p,  static_cast<std::int64_t>(V), 0,                             dy.p};
  const cuda::linear_options o{.temperature = temp, .chunk = chunk, .handle = handle, .overwrite_d_weight = overwrite_d_weight};
  const cuda::linear_grads grads{gh.p, 0, gw.p, 0};
  if (grpo_loss) {
    dev<float> dold(old), dadv(adv);
    dev<std::uint8_t> dm(mask);
    grpo::loss_result res{};
    e.st = cuda::linear_grpo_loss<T>(op, cuda::linear_grpo_inputs{lay, dold.p, nullptr, dadv.p, B, dm.p}, opt, {}, &res, grads, o, dlp.p);
    e.loss = res.loss;
  } else {
    std::vector<float> gf(g.begin(), g.end());
    dev<float> dg(gf);
    e.st = cuda::linear_selective_log_softmax<T>(op, dlp.p, dls.p, o);
    if (e.st == cuda::status::success) e.st = cuda::linear_selective_log_softmax_backward<T>(op, dls.p, dg.p, grads, o);
  }
  cuda_ok(cudaDeviceSynchronize(), "linear");
  cublasDestroy(handle);
  const auto hl = dlp.host(), hh = gh.host(), hw = gw.host();
  for (std::size_t i = 0; i < N; ++i)
    if (y[i] >= 0 && mask[i]) e.logp = std::max(e.logp, std::abs(hl[i] - lp[i]));
  auto rel = [&](const std::vector<float>& got, const std::vector<double>& ref) {
    double mx = 0, err = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      if (!std::isfinite(got[i])) e.all_written = false;
      mx = std::max(mx, std::abs(ref[i]));
      err = std::max(err, std::abs(got[i] - ref[i]));
    }
    return mx > 0 ? err / mx : err;
  };
  e.d_hidden = rel(hh, dh);
  e.d_weight = rel(hw, dw);
  const double eps = storage_eps<T>();
  e.tol_logp = 2.0 * eps * zmax / temp + 1e-4;
  e.tol_grad = sizeof(T) == 4 ? 1e-4 : 8.0 * eps;
  return e;
}

} // namespace msrl::lab
