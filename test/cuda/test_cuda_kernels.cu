// CUDA selective log-softmax, fused forward+backward, backward with the entropy gradient, fused linear (cuBLAS) and GRPO
// loss from logits against the double-precision reference and the core's host path (kernels/gpu_lab.cuh). Skipped (77) without a GPU.
#define BOOST_TEST_MODULE cuda_kernels
#include "../support/cuda_test_main.hpp"

#include <cstdlib>

#include "gpu_lab.cuh"

namespace lab = msrl::lab;
namespace mc = msrl::cuda;

template <class T>
void forward_case(std::size_t N, std::size_t V, std::size_t ld, float temp, std::size_t stride) {
  const auto e = lab::check_forward<T>(N, V, ld, temp, stride, 1);
  BOOST_TEST_INFO(lab::dtype_name<T>() << " N " << N << " V " << V);
  BOOST_TEST((e.st == mc::status::success));
  BOOST_TEST(e.all_written);
  BOOST_TEST(e.logp <= 1e-5);
  BOOST_TEST(e.lse <= 1e-5);
  BOOST_TEST(e.entropy <= 1e-4);
}

BOOST_AUTO_TEST_CASE(forward_matches_double_reference) {
  forward_case<float>(64, 151936, 151936, 1.0f, 1);
  forward_case<__nv_bfloat16>(64, 151936, 151936, 1.0f, 1);
  forward_case<__half>(64, 1001, 1001, 0.7f, 1);
  forward_case<float>(40, 5003, 5120, 0.7f, 1);
  forward_case<float>(70000, 130, 130, 1.0f, 997); // N >= 65,536
}

template <class T, class G>
void backward_case(bool fused, bool in_place, std::size_t N, std::size_t V) {
  const auto e = lab::check_backward<T, G>(N, V, 1.0f, fused, in_place, 5);
  BOOST_TEST_INFO(lab::dtype_name<T>() << " -> " << lab::dtype_name<G>() << " fused " << fused << " in place " << in_place << " V " << V);
  BOOST_TEST((e.st == mc::status::success));
  BOOST_TEST(e.all_written);
  BOOST_TEST(e.logp <= 1e-5);
  BOOST_TEST(e.grad <= (sizeof(G) == 4 ? 2e-6 : 1e-5));
}

BOOST_AUTO_TEST_CASE(backward_and_fused_match_reference) {
  for (bool fused : {false, true}) {
    backward_case<float, float>(fused, false, 16, 151936);
    backward_case<__nv_bfloat16, __nv_bfloat16>(fused, true, 16, 151936);
    backward_case<__half, float>(fused, false, 33, 1001);
  }
}

template <class T, class G>
void entropy_backward_case(bool in_place, std::size_t N, std::size_t V, float temp) {
  const auto e = lab::check_entropy_backward<T, G>(N, V, temp, in_place, 7);
  BOOST_TEST_INFO(lab::dtype_name<T>() << " -> " << lab::dtype_name<G>() << " in place " << in_place << " V " << V << " T " << temp);
  BOOST_TEST((e.st == mc::status::success));
  BOOST_TEST(e.all_written); // finite everywhere, exactly 0 at -inf logits, all -inf rows and ignored rows
  BOOST_TEST(e.entropy <= 1e-4);
  BOOST_TEST(e.grad <= (sizeof(G) == 4 ? 2e-6 : 1e-5));
}

// Not run on the machine this was written on (no GPU): compiled for sm_80 / sm_90 only.
BOOST_AUTO_TEST_CASE(entropy_backward_matches_reference) {
  entropy_backward_case<float, float>(false, 16, 151936, 1.0f);
  entropy_backward_case<float, float>(false, 24, 1001, 0.7f); // V not a multiple of the 4-element vectors
  entropy_backward_case<__nv_bfloat16, __nv_bfloat16>(true, 16, 151936, 1.0f);
  entropy_backward_case<__nv_bfloat16, float>(false, 16, 4099, 1.3f);
  entropy_backward_case<__half, __half>(false, 16, 1003, 0.8f);
}

// sum_v p_v^2 of softmax(x / T) (forward_outputs::sum_p2, for the optimal token baseline) against
// the double-precision reference on the host: softmax, then the sum of squares.
double ref_sum_p2(const std::vector<double>& x, double temp) {
  double m = -HUGE_VAL;
  for (double v : x) m = std::max(m, v / temp);
  if (m == -HUGE_VAL) return 0.0;
  double s = 0.0, s2 = 0.0;
  for (double v : x) {
    const double e = std::exp(v / temp - m);
    s += e;
    s2 += e * e;
  }
  return s2 / (s * s);
}

// Rows 1-4: a fifth of the logits -inf, an ignored target, only -inf logits (sum_p2 = 0), one
// finite logit (sum_p2 = 1). With and without the entropy; logp / lse / entropy must not move.
template <class T>
void sum_p2_case(std::size_t N, std::size_t V, std::size_t ld, float temp, unsigned seed) {
  auto p = lab::make_logits<T>(N, V, ld, seed);
  for (std::size_t j = 0; j < V; j += 5) p.x[1 * ld + j] = lab::host_from<T>(-INFINITY);
  p.x[1 * ld + 0] = lab::host_from<T>(1.f);
  p.y[1] = 0;
  p.y[2] = -100;
  for (std::size_t j = 0; j < V; ++j) p.x[3 * ld + j] = lab::host_from<T>(-INFINITY);
  p.y[3] = 0;
  for (std::size_t j = 0; j < V; ++j) p.x[4 * ld + j] = lab::host_from<T>(j == V / 2 ? 2.5f : -INFINITY);
  lab::dev<T> x(p.x);
  lab::dev<std::int64_t> y(p.y);
  lab::dev<float> lp(N), en(N), q2(N), lp0(N), en0(N), q2b(N), lp1(N);
  lab::dev<double> ls(N), ls0(N);
  const auto n = static_cast<std::int64_t>(N), v = static_cast<std::int64_t>(V), l = static_cast<std::int64_t>(ld);
  const mc::status s1 = mc::selective_log_softmax_forward<T>(x.p, n, v, l, y.p, temp, mc::forward_outputs{lp.p, ls.p, en.p, q2.p});
  const mc::status s2 = mc::selective_log_softmax_forward<T>(x.p, n, v, l, y.p, temp, mc::forward_outputs{lp1.p, nullptr, nullptr, q2b.p});
  const mc::status s3 = mc::selective_log_softmax_forward<T>(x.p, n, v, l, y.p, temp, lp0.p, ls0.p, en0.p);
  lab::cuda_ok(cudaDeviceSynchronize(), "sum_p2 forward");
  BOOST_TEST_INFO(lab::dtype_name<T>() << " N " << N << " V " << V << " T " << temp);
  BOOST_TEST((s1 == mc::status::success && s2 == mc::status::success && s3 == mc::status::success));
  const auto hq = q2.host(), hq2 = q2b.host(), hl = lp.host(), hl0 = lp0.host(), hl1 = lp1.host(), he = en.host(), he0 = en0.host();
  const auto hs = ls.host(), hs0 = ls0.host();
  double worst = 0.0;
  bool same = true;
  for (std::size_t i = 0; i < N; ++i) {
    const double want = p.y[i] < 0 ? 0.0 : ref_sum_p2(lab::row_of(p, i), temp);
    for (float got : {hq[i], hq2[i]}) {
      if (!std::isfinite(got)) worst = HUGE_VAL;
      else if (want > 0.0) worst = std::max(worst, std::abs(got - want) / want);
      else if (got != 0.f) worst = HUGE_VAL;
    }
    auto eq = [](double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); };
    same = same && eq(hl[i], hl0[i]) && eq(hl1[i], hl0[i]) && eq(hs[i], hs0[i]) && eq(he[i], he0[i]);
  }
  BOOST_TEST(worst <= 2e-5); // ex2.approx: ~2 ulp per exponential
  BOOST_TEST(same);          // the other outputs are those of the forward without sum_p2
  BOOST_TEST(hq[2] == 0.f);  // ignored target
  BOOST_TEST(hq[3] == 0.f);  // every logit -inf
  BOOST_TEST(std::abs(hq[4] - 1.f) <= 1e-6f);
}

// Not run on the machine this was written on (no GPU): compiled for sm_80 / sm_90 only.
BOOST_AUTO_TEST_CASE(sum_p2_matches_double_reference) {
  for (float temp : {1.0f, 0.7f}) {
    sum_p2_case<float>(16, 151936, 151936, temp, 21);
    sum_p2_case<float>(24, 5003, 5120, temp, 22); // ragged V, padded rows
    sum_p2_case<__nv_bfloat16>(16, 151936, 151936, temp, 23);
    sum_p2_case<__half>(24, 1001, 1001, temp, 24);
    sum_p2_case<float>(8, 3, 3, temp, 25); // V below one 16-byte vector
  }
}

BOOST_AUTO_TEST_CASE(grpo_loss_matches_core_path_for_every_preset) {
  for (const msrl::grpo::preset* p : msrl::grpo::presets::all) {
    auto o = p->loss;
    o.beta = 0.04;
    const auto e = lab::check_grpo<float>(o, 6, 7, 3001, 9);
    BOOST_TEST_INFO(p->name);
    BOOST_TEST((e.st == mc::status::success));
    BOOST_TEST(std::abs(e.loss - e.loss_ref) <= 1e-5 * std::max(1.0, std::abs(e.loss_ref)));
    BOOST_TEST(e.grad <= 5e-5); // GSPO averages the ~2e-6 logp errors of ex2.approx over a sequence
  }
}

BOOST_AUTO_TEST_CASE(launchers_reject_bad_arguments) {
  float* lp = nullptr;
  cudaMalloc(&lp, 4 * sizeof(float));
  std::int64_t* y = nullptr;
  cudaMalloc(&y, 4 * sizeof(std::int64_t));
  float* x = nullptr;
  cudaMalloc(&x, 40 * sizeof(float));
  BOOST_TEST((mc::selective_log_softmax_forward<float>(x, 4, 10, 5, y, 1.f, lp, nullptr, nullptr) == mc::status::invalid_argument));
  BOOST_TEST((mc::selective_log_softmax_forward<float>(x, 4, 10, 10, y, 0.f, lp, nullptr, nullptr) == mc::status::invalid_argument));
  BOOST_TEST((mc::selective_log_softmax_forward<float>(nullptr, 4, 10, 10, y, 1.f, lp, nullptr, nullptr) == mc::status::invalid_argument));
  BOOST_TEST((mc::selective_log_softmax_backward<float, float>(x, 4, 10, 10, y, 1.f, nullptr, lp, x, 10) == mc::status::invalid_argument));
  double* lse = nullptr;
  cudaMalloc(&lse, 4 * sizeof(double));
  // grad_entropy without the forward's entropy
  BOOST_TEST((mc::selective_log_softmax_backward<float, float>(x, 4, 10, 10, y, 1.f, mc::backward_inputs{lse, lp, nullptr, lp}, x, 10) ==
              mc::status::invalid_argument));
  cudaFree(lse);
  cudaFree(lp);
  cudaFree(y);
  cudaFree(x);
}

template <class T>
void linear_case(std::size_t N, std::size_t H, std::size_t V, std::int64_t chunk, float temp, bool grpo, bool overwrite = false) {
  const auto e = lab::check_linear<T>(N, H, V, chunk, temp, grpo, 11, overwrite);
  BOOST_TEST_INFO(lab::dtype_name<T>() << " N " << N << " H " << H << " V " << V << " chunk " << chunk << " grpo " << grpo
                                       << " overwrite " << overwrite);
  BOOST_TEST((e.st == mc::status::success));
  BOOST_TEST(e.all_written);
  BOOST_TEST(e.logp <= e.tol_logp);
  BOOST_TEST(e.d_hidden <= e.tol_grad);
  BOOST_TEST(e.d_weight <= e.tol_grad);
  if (grpo) BOOST_TEST(std::abs(e.loss - e.loss_ref) <= e.tol_logp * std::max(1.0, std::abs(e.loss_ref)));
}

BOOST_AUTO_TEST_CASE(fused_linear_matches_double_reference) {
  linear_case<float>(150, 96, 5003, 64, 1.0f, false); // ragged last chunk, V not a tile multiple
  linear_case<float>(37, 64, 1001, 4096, 0.7f, false); // one chunk holds every row
  linear_case<float>(96, 64, 3001, 40, 1.0f, true);   // GRPO loss, ragged mask
  linear_case<__nv_bfloat16>(150, 96, 5003, 64, 1.0f, false);
  linear_case<__nv_bfloat16>(96, 64, 3001, 40, 1.0f, true);
  linear_case<__half>(37, 64, 1001, 16, 0.7f, false);
  // overwrite_d_weight: d_weight starts as NaN, the first chunk's GEMM (beta = 0) replaces it
  linear_case<float>(150, 96, 5003, 64, 1.0f, false, true);
  linear_case<float>(96, 64, 3001, 40, 1.0f, true, true);
}

BOOST_AUTO_TEST_CASE(fused_linear_rejects_bad_arguments) {
  cublasHandle_t handle = nullptr;
  BOOST_REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  lab::dev<float> h(4 * 8), w(10 * 8), lp(4);
  lab::dev<std::int64_t> y(4);
  const mc::linear_options o{.handle = handle};
  const mc::linear_operands<float> ok{h.p, 4, 8, 0, w.p, 10, 0, y.p};
  auto bad = ok;
  bad.ld_hidden = 4; // below H
  BOOST_TEST((mc::linear_selective_log_softmax<float>(bad, lp.p, nullptr, o) == mc::status::invalid_argument));
  bad = ok;
  bad.weight = nullptr;
  BOOST_TEST((mc::linear_selective_log_softmax<float>(bad, lp.p, nullptr, o) == mc::status::invalid_argument));
  BOOST_TEST((mc::linear_selective_log_softmax<float>(ok, nullptr, nullptr, o) == mc::status::invalid_argument));
  BOOST_TEST((mc::linear_selective_log_softmax<float>(ok, lp.p, nullptr, mc::linear_options{}) == mc::status::invalid_argument)); // no handle
  BOOST_TEST((mc::linear_selective_log_softmax<float>(ok, lp.p, nullptr, mc::linear_options{.chunk = 0, .handle = handle}) ==
              mc::status::invalid_argument));
  // the backward needs the forward's lse and grad_logp
  BOOST_TEST((mc::linear_selective_log_softmax_backward<float>(ok, nullptr, lp.p, mc::linear_grads{lp.p}, o) == mc::status::invalid_argument));
  cublasDestroy(handle);
}
