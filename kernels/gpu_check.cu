// GPU validation and timing in one plain binary (no Boost): prints JSON lines, one per check or
// measurement, and exits non-zero when a check fails. Run by scripts/gpu_check.sh.
//   gpu_check [--quick]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_lab.cuh"

namespace lab = msrl::lab;
namespace mc = msrl::cuda;

static int failures = 0;

static void check_line(const char* name, const char* dtype, std::size_t N, std::size_t V, const lab::errors& e, double tol_logp,
                       double tol_grad, bool has_grad) {
  const bool ok = e.st == mc::status::success && e.all_written && e.logp <= tol_logp && e.lse <= 1e-5 && e.entropy <= 1e-4 &&
                  (!has_grad || e.grad <= tol_grad);
  failures += ok ? 0 : 1;
  std::printf("{\"check\":\"%s\",\"dtype\":\"%s\",\"shape\":[%zu,%zu],\"status\":\"%s\",\"logp_max_abs_err\":%.3e,\"lse_rel_err\":%.3e,"
              "\"entropy_rel_err\":%.3e,\"grad_err_rel_rowmax\":%.3e,\"all_written\":%s,\"pass\":%s}\n",
              name, dtype, N, V, mc::to_string(e.st), e.logp, e.lse, e.entropy, e.grad, e.all_written ? "true" : "false",
              ok ? "true" : "false");
  std::fflush(stdout);
}

template <class T>
static void forward_checks() {
  for (std::size_t V : {std::size_t{151936}, std::size_t{1001}, std::size_t{7}}) {
    const std::size_t N = V > 100000 ? 64 : 300;
    check_line("forward", lab::dtype_name<T>(), N, V, lab::check_forward<T>(N, V, V, 1.0f, 1, 1), 1e-5, 0, false);
  }
  check_line("forward_T0.7_strided", lab::dtype_name<T>(), 40, 5003, lab::check_forward<T>(40, 5003, 5120, 0.7f, 1, 2), 1e-5, 0, false);
  // N >= 65,536: rows on grid.x only
  check_line("forward_many_rows", lab::dtype_name<T>(), 70000, 130, lab::check_forward<T>(70000, 130, 130, 1.0f, 997, 3), 1e-5, 0, false);
}

template <class T, class G>
static void backward_checks(const char* gname) {
  const double tol = sizeof(G) == 4 ? 2e-6 : 1e-5;
  for (int mode = 0; mode < 3; ++mode) {
    const bool fused = mode >= 1, in_place = mode == 2 && std::is_same_v<T, G>;
    if (mode == 2 && !in_place) continue;
    std::string name = std::string(fused ? "fwd_bwd" : "backward") + (in_place ? "_in_place" : "") + "_grad_" + gname;
    check_line(name.c_str(), lab::dtype_name<T>(), 16, 151936, lab::check_backward<T, G>(16, 151936, 1.0f, fused, in_place, 5), 1e-5, tol,
               true);
    check_line((name + "_ragged").c_str(), lab::dtype_name<T>(), 33, 1001,
               lab::check_backward<T, G>(33, 1001, 0.8f, fused, in_place, 6), 1e-5, tol, true);
  }
}

template <class T, class G>
static void entropy_backward_checks(const char* gname) {
  const double tol = sizeof(G) == 4 ? 2e-6 : 1e-5;
  for (bool in_place : {false, true}) {
    if (in_place && !std::is_same_v<T, G>) continue;
    const std::string name = std::string("backward_entropy") + (in_place ? "_in_place" : "") + "_grad_" + gname;
    check_line(name.c_str(), lab::dtype_name<T>(), 16, 151936, lab::check_entropy_backward<T, G>(16, 151936, 1.0f, in_place, 7), 1e-5, tol,
               true);
    check_line((name + "_ragged").c_str(), lab::dtype_name<T>(), 24, 1001, lab::check_entropy_backward<T, G>(24, 1001, 0.7f, in_place, 8),
               1e-5, tol, true);
  }
}

static void grpo_checks() {
  for (const msrl::grpo::preset* p : msrl::grpo::presets::all) {
    msrl::grpo::loss_options o = p->loss;
    o.beta = 0.04;
    const auto e = lab::check_grpo<float>(o, 6, 7, 3001, 9);
    const bool ok = e.st == mc::status::success && std::abs(e.loss - e.loss_ref) <= 1e-5 * std::max(1.0, std::abs(e.loss_ref)) &&
                    e.grad <= 5e-5 && e.clip_fraction <= 1e-12; // GSPO averages the ~2e-6 logp errors of ex2.approx over a sequence
    failures += ok ? 0 : 1;
    std::printf("{\"check\":\"grpo_loss_from_logits\",\"preset\":\"%.*s\",\"status\":\"%s\",\"loss\":%.9g,\"loss_core\":%.9g,"
                "\"grad_err_rel_rowmax\":%.3e,\"pass\":%s}\n",
                static_cast<int>(p->name.size()), p->name.data(), mc::to_string(e.st), e.loss, e.loss_ref, e.grad, ok ? "true" : "false");
  }
}

template <class T>
static void linear_checks() {
  struct shape {
    std::size_t N, H, V;
    std::int64_t chunk;
    float temp;
    bool grpo;
  };
  // ragged last chunk, V not a multiple of any tile, one chunk holding every row, the GRPO loss
  for (const shape c : {shape{150, 96, 5003, 64, 1.0f, false}, shape{37, 64, 1001, 4096, 0.7f, false}, shape{96, 64, 3001, 40, 1.0f, true}}) {
    const auto e = lab::check_linear<T>(c.N, c.H, c.V, c.chunk, c.temp, c.grpo, 11);
    const bool loss_ok = !c.grpo || std::abs(e.loss - e.loss_ref) <= e.tol_logp * std::max(1.0, std::abs(e.loss_ref));
    const bool ok = e.st == mc::status::success && e.all_written && e.logp <= e.tol_logp && e.d_hidden <= e.tol_grad &&
                    e.d_weight <= e.tol_grad && loss_ok;
    failures += ok ? 0 : 1;
    std::printf("{\"check\":\"%s\",\"dtype\":\"%s\",\"shape\":[%zu,%zu,%zu],\"chunk\":%lld,\"status\":\"%s\",\"logp_max_abs_err\":%.3e,"
                "\"d_hidden_rel_err\":%.3e,\"d_weight_rel_err\":%.3e,\"loss\":%.9g,\"loss_core\":%.9g,\"tol_logp\":%.1e,\"tol_grad\":%.1e,"
                "\"pass\":%s}\n",
                c.grpo ? "linear_grpo_loss" : "linear_logprob_fwd_bwd", lab::dtype_name<T>(), c.N, c.H, c.V, static_cast<long long>(c.chunk),
                mc::to_string(e.st), e.logp, e.d_hidden, e.d_weight, e.loss, e.loss_ref, e.tol_logp, e.tol_grad, ok ? "true" : "false");
    std::fflush(stdout);
  }
}

// ------------------------------------------------------------------------------------- timing
template <class F>
static double median_ms(F f, int reps = 15) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  f();
  f(); // warm-up
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    lab::cuda_ok(cudaEventSynchronize(b), "timing");
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

__global__ void read_kernel(const uint4* p, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc; // keeps the loads
}

static double peak_read = 0, peak_copy = 0;

static void bench_line(const char* op, const char* dtype, std::size_t N, std::size_t V, double ms, double bytes, const char* traffic) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("{\"bench\":\"%s\",\"dtype\":\"%s\",\"shape\":[%zu,%zu],\"time_ms_median\":%.4f,\"model_bytes\":%.0f,\"traffic\":\"%s\","
              "\"GBps\":%.1f,\"pct_measured_read_bw\":%.1f}\n",
              op, dtype, N, V, ms, bytes, traffic, gbs, 100.0 * gbs / peak_read);
  std::fflush(stdout);
}

static void bench_bandwidth() {
  const std::size_t bytes = std::size_t{4} << 30;
  lab::dev<unsigned char> a(bytes), b(bytes);
  lab::dev<unsigned> sink(1);
  cudaMemset(a.p, 1, bytes);
  const double tr = median_ms([&] { read_kernel<<<132 * 8, 512>>>(reinterpret_cast<const uint4*>(a.p), bytes / 16, sink.p); });
  const double tc = median_ms([&] { cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice); });
  peak_read = static_cast<double>(bytes) / (tr * 1e-3) / 1e9;
  peak_copy = 2.0 * static_cast<double>(bytes) / (tc * 1e-3) / 1e9;
  std::printf("{\"bench\":\"measured_read_bandwidth\",\"bytes\":%zu,\"time_ms_median\":%.4f,\"GBps\":%.1f}\n", bytes, tr, peak_read);
  std::printf("{\"bench\":\"measured_copy_bandwidth_read_plus_write\",\"bytes\":%zu,\"time_ms_median\":%.4f,\"GBps\":%.1f}\n", bytes, tc,
              peak_copy);
}

// Random logits filled on the device (a host generator would take tens of seconds at 1.2 G elements):
// a hashed index mapped to roughly N(0, 3) by summing four uniforms.
template <class T>
__global__ void fill_kernel(T* x, std::size_t n, unsigned seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ static_cast<unsigned>(i >> 32) ^ seed;
    float s = 0.f;
    for (int k = 0; k < 4; ++k) {
      h ^= h >> 16;
      h *= 0x7feb352du;
      h ^= h >> 15;
      h *= 0x846ca68bu;
      h ^= h >> 16;
      s += static_cast<float>(h) * 0x1p-32f;
    }
    x[i] = msrl::cuda::detail::from_f<T>((s - 2.f) * 5.2f);
  }
}

template <class T>
static void bench_logprob(std::size_t N, std::size_t V) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 3.f);
  lab::dev<T> x(N * V), gx(N * V);
  fill_kernel<T><<<132 * 16, 256>>>(x.p, N * V, 7u); // random data, not zeros
  lab::cuda_ok(cudaDeviceSynchronize(), "fill");
  std::vector<std::int64_t> hy(N);
  for (auto& t : hy) t = static_cast<std::int64_t>(rng() % V);
  std::vector<float> hg(N, 0.5f);
  lab::dev<std::int64_t> y(hy);
  lab::dev<float> lp(N), en(N), g(hg);
  lab::dev<double> ls(N);
  const auto n = static_cast<std::int64_t>(N), v = static_cast<std::int64_t>(V);
  const double row_bytes = static_cast<double>(N) * static_cast<double>(V) * sizeof(T);
  const char* dt = lab::dtype_name<T>();
  bench_line("forward", dt, N, V,
             median_ms([&] { mc::selective_log_softmax_forward<T>(x.p, n, v, v, y.p, 1.0f, lp.p, ls.p, nullptr); }), row_bytes, "1R");
  bench_line("forward_entropy", dt, N, V,
             median_ms([&] { mc::selective_log_softmax_forward<T>(x.p, n, v, v, y.p, 1.0f, lp.p, ls.p, en.p); }), row_bytes, "1R");
  bench_line("backward", dt, N, V,
             median_ms([&] { mc::selective_log_softmax_backward<T, T>(x.p, n, v, v, y.p, 1.0f, ls.p, g.p, gx.p, v); }), 2 * row_bytes,
             "1R+1W");
  std::vector<float> hh(N, -0.01f); // an entropy bonus, coefficient 0.01
  lab::dev<float> h(hh);
  mc::selective_log_softmax_forward<T>(x.p, n, v, v, y.p, 1.0f, lp.p, ls.p, en.p);
  bench_line("backward_entropy", dt, N, V, median_ms([&] {
               mc::selective_log_softmax_backward<T, T>(x.p, n, v, v, y.p, 1.0f, mc::backward_inputs{ls.p, g.p, en.p, h.p}, gx.p, v);
             }),
             2 * row_bytes, "1R+1W");
  bench_line("fwd_then_bwd_separate", dt, N, V, median_ms([&] {
               mc::selective_log_softmax_forward<T>(x.p, n, v, v, y.p, 1.0f, lp.p, ls.p, nullptr);
               mc::selective_log_softmax_backward<T, T>(x.p, n, v, v, y.p, 1.0f, ls.p, g.p, gx.p, v);
             }),
             2 * row_bytes, "model 1R+1W (kernels move 2R+1W)");
  bench_line("fwd_bwd_fused_1blk_per_sm", dt, N, V, median_ms([&] {
               mc::selective_log_softmax_fwd_bwd<T, T>(x.p, n, v, v, y.p, 1.0f, g.p, lp.p, ls.p, gx.p, v, {.one_block_per_sm = true});
             }),
             2 * row_bytes, "model 1R+1W");
  bench_line("fwd_bwd_fused_2blk_per_sm", dt, N, V, median_ms([&] {
               mc::selective_log_softmax_fwd_bwd<T, T>(x.p, n, v, v, y.p, 1.0f, g.p, lp.p, ls.p, gx.p, v, {.one_block_per_sm = false});
             }),
             2 * row_bytes, "model 1R+1W");
  // fused GRPO loss (verl preset, beta 0.04), 8 x (N/8) padded, all tokens unmasked, gradient written in place over a copy
  const std::size_t B = 8;
  std::vector<float> old(N), ref(N), adv(B);
  for (std::size_t i = 0; i < N; ++i) old[i] = ref[i] = -11.5f + 0.2f * nd(rng);
  for (auto& a : adv) a = nd(rng);
  lab::dev<float> dold(old), dref(ref), dadv(adv);
  auto o = msrl::grpo::presets::verl_default.loss;
  o.beta = 0.04;
  mc::grpo_logits_inputs<T> in{x.p, v, 0, y.p, {msrl::token_layout::padded(B, N / B), dold.p, dref.p, dadv.p, B, nullptr}};
  msrl::grpo::loss_result res{};
  bench_line("grpo_loss_fwd_bwd", dt, N, V, median_ms([&] { mc::grpo_loss_from_logits<T, T>(in, o, {}, 1.0f, &res, gx.p, v); }, 9),
             2 * row_bytes, "model 1R+1W (kernels move 2R+1W)");
}

/// The fused linear log-prob against cuBLAS's own GEMM rate on the same shapes: the logits GEMM
/// [N, H] x [H, V] alone (bf16 in, bf16 out, fp32 accumulation), then the chunked forward (2NHV
/// useful FLOPs) and forward + backward (6NHV useful; the recompute makes the GEMMs 8NHV).
template <class T>
static void bench_linear(std::size_t N, std::size_t H, std::size_t V, std::int64_t chunk) {
  lab::dev<T> hid(N * H), wt(V * H), logits(static_cast<std::size_t>(chunk) * V);
  fill_kernel<T><<<132 * 16, 256>>>(hid.p, N * H, 3u);
  fill_kernel<T><<<132 * 16, 256>>>(wt.p, V * H, 5u);
  lab::cuda_ok(cudaDeviceSynchronize(), "fill");
  std::mt19937 rng(2);
  std::vector<std::int64_t> hy(N);
  for (auto& t : hy) t = static_cast<std::int64_t>(rng() % V);
  std::vector<float> hg(N, -1.0f / static_cast<float>(N));
  lab::dev<std::int64_t> y(hy);
  lab::dev<float> lp(N), g(hg), dh(N * H), dw(V * H);
  lab::dev<double> ls(N);
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return;
  const auto n = static_cast<std::int64_t>(N), h = static_cast<std::int64_t>(H), v = static_cast<std::int64_t>(V);
  const double flop = 2.0 * static_cast<double>(N) * static_cast<double>(H) * static_cast<double>(V);
  const mc::linear_operands<T> op{hid.p, n, h, 0, wt.p, v, 0, y.p};
  const mc::linear_options o{.temperature = 1.0f, .chunk = chunk, .handle = handle};
  mc::detail::linear_plan plan{};
  if (mc::detail::check_linear(op, o, plan) != mc::status::success) return;
  const double t_gemm = median_ms([&] { // the fused op's own chunk GEMMs, nothing else
    for (std::int64_t c0 = 0; c0 < n; c0 += plan.chunk) mc::detail::chunk_logits(op, plan, c0, std::min(plan.chunk, n - c0), logits.p, handle);
  }, 9);
  const double gemm_tflops = flop / (t_gemm * 1e-3) / 1e12;
  const double t_fwd = median_ms([&] { mc::linear_selective_log_softmax<T>(op, lp.p, ls.p, o, nullptr, logits.p); }, 9);
  const double t_fb = median_ms([&] {
    mc::linear_selective_log_softmax<T>(op, lp.p, ls.p, o, nullptr, logits.p);
    mc::linear_selective_log_softmax_backward<T>(op, ls.p, g.p, mc::linear_grads{dh.p, 0, dw.p, 0}, o, logits.p);
  }, 9);
  cublasDestroy(handle);
  const char* dt = lab::dtype_name<T>();
  auto line = [&](const char* name, double ms, double useful) {
    const double tf = useful / (ms * 1e-3) / 1e12;
    std::printf("{\"bench\":\"%s\",\"dtype\":\"%s\",\"shape\":[%zu,%zu,%zu],\"chunk\":%lld,\"time_ms_median\":%.4f,\"useful_TFLOPs\":%.1f,"
                "\"cublas_gemm_TFLOPs\":%.1f,\"pct_of_cublas_rate\":%.1f}\n",
                name, dt, N, H, V, static_cast<long long>(chunk), ms, tf, gemm_tflops, 100.0 * tf / gemm_tflops);
    std::fflush(stdout);
  };
  line("cublas_logits_gemm_alone", t_gemm, flop);
  line("linear_logprob_forward", t_fwd, flop);
  line("linear_logprob_fwd_bwd", t_fb, 3.0 * flop);
}

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("{\"skip\":\"no CUDA device\"}\n");
    return 77;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("{\"device\":\"%s\",\"sm\":%d%d,\"multiprocessors\":%d,\"l2_bytes\":%d}\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  forward_checks<float>();
  forward_checks<__nv_bfloat16>();
  forward_checks<__half>();
  backward_checks<float, float>("fp32");
  backward_checks<__nv_bfloat16, __nv_bfloat16>("bf16");
  backward_checks<__half, __half>("fp16");
  backward_checks<__nv_bfloat16, float>("fp32");
  entropy_backward_checks<float, float>("fp32");
  entropy_backward_checks<__nv_bfloat16, __nv_bfloat16>("bf16");
  entropy_backward_checks<__half, __half>("fp16");
  entropy_backward_checks<__nv_bfloat16, float>("fp32");
  grpo_checks();
  linear_checks<float>();
  linear_checks<__nv_bfloat16>();
  linear_checks<__half>();
  std::printf("{\"checks_failed\":%d}\n", failures);
  std::fflush(stdout);
  if (!quick) {
    bench_bandwidth();
    bench_logprob<__nv_bfloat16>(8192, 151936);
    bench_logprob<float>(4096, 151936);
    bench_linear<__nv_bfloat16>(8192, 2048, 151936, 4096);
  }
  return failures ? 1 : 0;
}
