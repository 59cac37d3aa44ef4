// Host kernel benchmarks, JSON lines: op, shape, dtype, threads, time_ms_median, baseline,
// baseline_ms_median, ratio (baseline / ours), GBps (model bytes: logits read once, gradient
// written once), pct_measured_read_bw. Baselines run in the same process: libtorch CPU
// (log_softmax + gather; eager GRPO loss with autograd backward; log-prob + entropy with autograd
// backward), msrl's own backward without the entropy term (for the backward with it) and a
// multi-threaded read of a buffer the size of the benchmark's logits, at least 256 MiB (the
// machine's memory-read bandwidth: the best of 9 passes, since a peak is a maximum).
//   bench_kernels [N=512] [V=151936] [reps=7]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <msrl/grpo.hpp>
#include <msrl/kernels/grpo_loss.hpp>
#include <msrl/kernels/selective_log_softmax.hpp>

#ifdef MSRL_BENCH_TORCH
#include <torch/torch.h>
#endif
#ifdef MSRL_BENCH_EIGEN
#include <msrl/kernels/linear_logprob_eigen.hpp>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MSRL_BENCH_AVX512 __attribute__((target("avx512f")))
#endif

namespace k = msrl::kernels;
namespace g = msrl::grpo;

#if defined(__GNUC__) || defined(__clang__)
// OpenBLAS's thread count, when OpenBLAS is the BLAS this process loaded (libtorch and the fused
// linear op both call it), so a row's "threads" holds for the GEMMs too. Other BLAS: left as is.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
#endif
#ifdef MSRL_BENCH_TORCH
// The baseline GRPO loss of the loss rows, on per-token log-probs l: clip 0.2 / 0.2, k3 KL (d
// clamped to [-20, 20], KL to [-10, 10]) with beta 0.04, mean over every token.
static torch::Tensor libtorch_grpo_loss(const torch::Tensor& l, const torch::Tensor& told, const torch::Tensor& tref,
                                        const torch::Tensor& tadv) {
  auto ratio = torch::exp(l - told);
  auto pg = -torch::minimum(ratio * tadv, torch::clamp(ratio, 0.8, 1.2) * tadv);
  auto d = (tref - l).clamp(-20, 20);
  auto kl = (torch::exp(d) - d - 1).clamp(-10, 10);
  return (pg + 0.04 * kl).mean();
}
#endif

static void set_blas_threads(unsigned threads) {
#if defined(__GNUC__) || defined(__clang__)
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(static_cast<int>(threads));
#else
  (void)threads;
#endif
}

template <class F>
static double median_ms(F f, int reps) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

#ifdef MSRL_BENCH_AVX512
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized" // GCC 12's own _mm512_setzero_ps
#endif
// The read-bandwidth probe uses the widest loads the kernels use (AVX-512 when present).
MSRL_BENCH_AVX512 static double sum_avx512(const float* p, std::size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  return static_cast<double>(_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))));
}
#endif

static double sum_range(const float* p, std::size_t n) {
#ifdef MSRL_BENCH_AVX512
  if (__builtin_cpu_supports("avx512f")) return sum_avx512(p, n);
#endif
  float acc[16] = {};
  for (std::size_t i = 0; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + static_cast<std::size_t>(j)];
  double s = 0;
  for (float a : acc) s += a;
  return s;
}

struct bandwidth {
  std::size_t bytes; ///< the buffer read
  double GBps;
};

static bandwidth read_bandwidth(unsigned threads, std::size_t bytes) {
  // The same size as the kernels' input (same page-table and prefetch behaviour), never small
  // enough to sit in a cache; each thread first-touches the part it reads.
  const std::size_t n = std::max<std::size_t>(bytes, std::size_t{256} << 20) / sizeof(float);
  std::unique_ptr<float[]> buf(new float[n]);
  std::vector<double> sink(threads);
  const auto each = [&](auto f) {
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back([&, t] { f(t, n * t / threads, n * (t + 1) / threads); });
    for (auto& th : pool) th.join();
  };
  each([&](unsigned, std::size_t lo, std::size_t hi) { std::fill(buf.get() + lo, buf.get() + hi, 1.0f); });
  double best = HUGE_VAL;
  for (int r = 0; r < 9; ++r) {
    const auto a = std::chrono::steady_clock::now();
    each([&](unsigned t, std::size_t lo, std::size_t hi) { sink[t] = sum_range(buf.get() + lo, hi - lo); });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  if (sink[0] < 0) std::printf("#");
  return {n * sizeof(float), static_cast<double>(n * sizeof(float)) / best / 1e9};
}

static void line(const char* op, std::size_t N, std::size_t V, const char* dtype, unsigned threads, double ms, const char* baseline,
                 double base_ms, double bytes, double peak) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("{\"op\":\"%s\",\"shape\":[%zu,%zu],\"dtype\":\"%s\",\"threads\":%u,\"isa\":\"%s\",\"time_ms_median\":%.3f,"
              "\"baseline\":\"%s\",\"baseline_ms_median\":%.3f,\"ratio\":%.2f,\"GBps\":%.2f,\"pct_measured_read_bw\":%.1f}\n",
              op, N, V, dtype, threads, k::to_string(k::active_isa()), ms, baseline, base_ms, base_ms > 0 ? base_ms / ms : 0.0, gbs,
              100.0 * gbs / peak);
  std::fflush(stdout);
}

// A positive decimal integer no larger than `max`, or 0 (rejected by the caller).
static unsigned long positive_arg(const char* s, unsigned long max) {
  char* end = nullptr;
  const unsigned long v = std::strtoul(s, &end, 10);
  return (end == s || *end != '\0' || s[0] == '-' || v > max) ? 0 : v;
}

int main(int argc, char** argv) {
  constexpr const char* usage = "usage: bench_kernels [N rows (512)] [V vocabulary (151936)] [repetitions (7)]\n";
  if (argc > 4 || (argc > 1 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h"))) {
    std::fputs(usage, argc > 4 ? stderr : stdout);
    return argc > 4 ? 2 : 0;
  }
  const std::size_t N = argc > 1 ? positive_arg(argv[1], 1ul << 20) : 512;
  const std::size_t V = argc > 2 ? positive_arg(argv[2], 1ul << 22) : 151936;
  const int reps = argc > 3 ? static_cast<int>(positive_arg(argv[3], 1000)) : 7;
  if (N == 0 || V == 0 || reps == 0 || N * V > (1ul << 31)) {
    std::fprintf(stderr, "bench_kernels: N, V and repetitions must be positive integers (N <= 2^20, V <= 2^22, N x V <= 2^31, "
                         "repetitions <= 1000)\n%s", usage);
    return 2;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<float> x(N * V);
  for (auto& v : x) v = nd(rng);
  std::vector<k::bf16> xb(N * V);
  for (std::size_t i = 0; i < N * V; ++i) xb[i] = k::to_bf16(x[i]);
  std::vector<std::int64_t> y(N);
  for (auto& t : y) t = static_cast<std::int64_t>(rng() % V);
  std::vector<float> lp(N), gl(N, 0.5f), gx(N * V), ent(N), gh(N, -0.01f); // gh: an entropy bonus, coefficient 0.01
  std::vector<double> lse(N);
  const std::size_t B = 8, T = N / B;
  std::vector<float> old(N), ref(N), adv(B);
  for (auto& a : adv) a = nd(rng) / 3.f;
  std::vector<std::uint8_t> mask(N, 1);

  // compute ceiling per ISA: two rows kept in cache, one thread (no DRAM traffic)
  for (k::cpu_isa isa : {k::cpu_isa::scalar, k::cpu_isa::avx2, k::cpu_isa::avx512}) {
    k::set_isa_cap(isa);
    const std::size_t R = 2;
    const k::matrix_view<const float> xv{x.data(), R, V};
    const std::span<const std::int64_t> yr(y.data(), R);
    const double tf = median_ms([&] { k::selective_log_softmax(xv, yr, {std::span(lp).first(R), std::span(lse).first(R), {}}, {.threads = 1}); }, 31);
    const double tb = median_ms([&] {
      k::selective_log_softmax_backward(xv, yr, std::span<const double>(lse).first(R), std::span<const float>(gl).first(R),
                                        k::matrix_view<float>{gx.data(), R, V}, {.threads = 1});
    }, 31);
    k::selective_log_softmax(xv, yr, {std::span(lp).first(R), std::span(lse).first(R), std::span(ent).first(R)}, {.threads = 1});
    const double tbe = median_ms([&] {
      k::selective_log_softmax_backward(xv, yr,
                                        {std::span<const double>(lse).first(R), std::span<const float>(gl).first(R),
                                         std::span<const float>(ent).first(R), std::span<const float>(gh).first(R)},
                                        k::matrix_view<float>{gx.data(), R, V}, {.threads = 1});
    }, 31);
    const double b = static_cast<double>(R * V * sizeof(float));
    std::printf("{\"op\":\"cache_resident_compute_ceiling\",\"shape\":[%zu,%zu],\"dtype\":\"fp32\",\"threads\":1,\"isa\":\"%s\","
                "\"forward_GBps\":%.2f,\"backward_GBps_read_plus_write\":%.2f,\"backward_entropy_GBps_read_plus_write\":%.2f}\n",
                R, V, k::to_string(k::active_isa()), b / (tf * 1e-3) / 1e9, 2 * b / (tb * 1e-3) / 1e9, 2 * b / (tbe * 1e-3) / 1e9);
  }
  k::clear_isa_cap();

  for (unsigned threads : {1u, 2u}) {
    const auto bw = read_bandwidth(threads, N * V * sizeof(float));
    const double peak = bw.GBps;
    std::printf("{\"op\":\"measured_read_bandwidth\",\"threads\":%u,\"bytes\":%zu,\"best_of\":9,\"GBps\":%.2f}\n", threads, bw.bytes,
                peak);
    const double fbytes = static_cast<double>(N * V * sizeof(float));
    const k::logprob_options o{.temperature = 1.0, .threads = threads};
    const k::matrix_view<const float> xv{x.data(), N, V};
    const double t_fwd = median_ms([&] { k::selective_log_softmax(xv, y, {lp, lse, {}}, o); }, reps);
    const double t_fwd_bf16 = median_ms(
        [&] { k::selective_log_softmax(k::matrix_view<const k::bf16>{xb.data(), N, V}, y, {lp, lse, {}}, o); }, reps);
    k::selective_log_softmax(xv, y, {lp, lse, ent}, o);
    // the two backwards alternate within each repetition, so that load changes hit both alike
    std::vector<double> tb_plain, tb_ent;
    for (int r = 0; r <= reps; ++r) {
      const auto a = std::chrono::steady_clock::now();
      k::selective_log_softmax_backward(xv, y, lse, gl, k::matrix_view<float>{gx.data(), N, V}, o);
      const auto b = std::chrono::steady_clock::now();
      k::selective_log_softmax_backward(xv, y, {lse, gl, ent, gh}, k::matrix_view<float>{gx.data(), N, V}, o);
      const auto c = std::chrono::steady_clock::now();
      if (r == 0) continue; // warm-up
      tb_plain.push_back(std::chrono::duration<double, std::milli>(b - a).count());
      tb_ent.push_back(std::chrono::duration<double, std::milli>(c - b).count());
    }
    std::sort(tb_plain.begin(), tb_plain.end());
    std::sort(tb_ent.begin(), tb_ent.end());
    const double t_bwd = tb_plain[tb_plain.size() / 2], t_bwd_ent = tb_ent[tb_ent.size() / 2];
    for (std::size_t i = 0; i < N; ++i) old[i] = ref[i] = lp[i] + 0.1f * nd(rng) / 3.f;
    const k::logits_loss_inputs<float> in{msrl::token_layout::padded(B, T), xv, y, old, ref, adv, mask};
    auto lo = g::presets::verl_default.loss;
    lo.beta = 0.04;
    lo.agg = g::aggregation::token_mean;
    double loss = 0;
    const double t_grpo = median_ms([&] {
      loss = k::grpo_loss_from_logits(in, lo, {}, k::logits_loss_outputs<float>{{gx.data(), N, V}}, o).loss;
    }, reps);
    // bf16 logits, bf16 gradient (written in place of a copy of the logits, as a trainer does)
    std::vector<k::bf16> gxb(xb);
    const k::logits_loss_inputs<k::bf16> inb{msrl::token_layout::padded(B, T), {xb.data(), N, V}, y, old, ref, adv, mask};
    const double t_grpo_bf16 = median_ms([&] {
      loss = k::grpo_loss_from_logits(inb, lo, {}, k::logits_loss_outputs<k::bf16>{{gxb.data(), N, V}}, o).loss;
    }, reps);
    std::vector<k::bf16>().swap(gxb);
    double b_fwd = 0, b_fwd_bf16 = 0, b_grpo = 0, b_bwd = 0, b_bwd_ent = 0;
#ifdef MSRL_BENCH_TORCH
    at::set_num_threads(static_cast<int>(threads));
    torch::NoGradGuard* ng = new torch::NoGradGuard();
    const auto tx = torch::from_blob(x.data(), {static_cast<long>(N), static_cast<long>(V)}, torch::kFloat32);
    const auto txb = tx.to(torch::kBFloat16);
    const auto ty = torch::from_blob(y.data(), {static_cast<long>(N), 1}, torch::kInt64);
    b_fwd = median_ms([&] { auto r = torch::log_softmax(tx, -1).gather(-1, ty); }, reps);
    b_fwd_bf16 = median_ms([&] { auto r = torch::log_softmax(txb, -1, torch::kFloat32).gather(-1, ty); }, reps);
    delete ng;
    const auto told = torch::from_blob(old.data(), {static_cast<long>(N)}, torch::kFloat32);
    const auto tref = torch::from_blob(ref.data(), {static_cast<long>(N)}, torch::kFloat32);
    const auto tadv = torch::from_blob(adv.data(), {static_cast<long>(B), 1}, torch::kFloat32).expand({static_cast<long>(B), static_cast<long>(T)}).reshape({-1});
    auto xg = tx.clone().requires_grad_(true);
    double tl = 0;
    b_grpo = median_ms([&] {
      xg.mutable_grad() = torch::Tensor();
      auto loss_t = libtorch_grpo_loss(torch::log_softmax(xg, -1).gather(-1, ty).squeeze(-1), told, tref, tadv);
      loss_t.backward();
      tl = loss_t.item<double>();
    }, reps);
    std::printf("{\"note\":\"grpo loss msrl %.9g libtorch %.9g\"}\n", loss, tl);
    auto xg2 = tx.clone().requires_grad_(true);
    b_bwd = median_ms([&] {
      xg2.mutable_grad() = torch::Tensor();
      torch::log_softmax(xg2, -1).gather(-1, ty).sum().backward();
    }, reps);
    auto xg3 = tx.clone().requires_grad_(true);
    b_bwd_ent = median_ms([&] { // verl's entropy_from_logits style: H = lse - sum(p x), plus the log-prob
      xg3.mutable_grad() = torch::Tensor();
      const auto ls = torch::log_softmax(xg3, -1);
      const auto h = torch::logsumexp(xg3, -1) - (torch::softmax(xg3, -1) * xg3).sum(-1);
      (ls.gather(-1, ty).sum() * 0.5 + h.sum() * -0.01).backward();
    }, reps);
#endif
    const char* base = b_fwd > 0 ? "libtorch log_softmax+gather" : "none";
    line("selective_log_softmax_forward", N, V, "fp32", threads, t_fwd, base, b_fwd, fbytes, peak);
    line("selective_log_softmax_forward", N, V, "bf16", threads, t_fwd_bf16, base, b_fwd_bf16, fbytes / 2, peak);
    line("selective_log_softmax_backward", N, V, "fp32", threads, t_bwd, b_bwd > 0 ? "libtorch log_softmax+gather fwd+autograd bwd" : "none",
         b_bwd, 2 * fbytes, peak);
    line("selective_log_softmax_backward_entropy", N, V, "fp32", threads, t_bwd_ent, "msrl backward without entropy", t_bwd, 2 * fbytes,
         peak);
    if (b_bwd_ent > 0)
      line("selective_log_softmax_backward_entropy", N, V, "fp32", threads, t_bwd_ent,
           "libtorch log_softmax+gather+entropy fwd+autograd bwd", b_bwd_ent, 2 * fbytes, peak);
    line("grpo_loss_from_logits_fwd_bwd", N, V, "fp32", threads, t_grpo, b_grpo > 0 ? "libtorch eager GRPO loss + autograd" : "none",
         b_grpo, 2 * fbytes, peak);
    line("grpo_loss_from_logits_fwd_bwd", N, V, "bf16", threads, t_grpo_bf16, "none", 0, fbytes, peak);
#ifdef MSRL_BENCH_EIGEN
    {
      // fused linear log-prob: hidden [NL, HL] x W [V, HL]. GFLOP/s of the GEMM work (forward 2NHV,
      // forward + backward 8NHV: the backward recomputes the logits; the GRPO loss 6NHV), against the same GEMM alone
      // (detail::host_gemm: the system BLAS or Eigen, the measured GEMM peak here) and libtorch
      // (matmul + log_softmax + gather; autograd backward to hidden and weight).
      set_blas_threads(threads);
      const std::size_t NL = 128, HL = 512;
      std::vector<float> h(NL * HL), w(V * HL), lpl(NL), g_lin(NL), dh(NL * HL), dw(V * HL);
      std::vector<double> lsel(NL);
      for (auto& v : h) v = nd(rng) / 3.f;
      for (auto& v : w) v = nd(rng) / 30.f;
      for (auto& v : g_lin) v = nd(rng);
      std::vector<std::int64_t> yl(NL);
      for (std::size_t i = 0; i < NL; ++i) yl[i] = y[i % N]; // N may be smaller than NL
      const k::matrix_view<const float> hv{h.data(), NL, HL}, wv{w.data(), V, HL};
      // the chunk's logits block is kept across calls, as a trainer keeps it (linear_options::workspace)
      std::vector<float> Lg(NL * V);
      const k::linear_options lin_o{.chunk = NL, .threads = threads, .workspace = Lg};
      const double t_lin = median_ms([&] { k::linear_selective_log_softmax(hv, wv, yl, lpl, lin_o, lsel); }, 3);
      // d W written fresh, as autograd's is (overwrite_d_weight: no caller-side fill)
      k::linear_options lin_w = lin_o;
      lin_w.overwrite_d_weight = true;
      const double t_lin_bwd = median_ms([&] {
        k::linear_selective_log_softmax(hv, wv, yl, lpl, lin_o, lsel);
        k::linear_selective_log_softmax_backward(hv, wv, yl, lsel, g_lin, {dh.data(), NL, HL}, {dw.data(), V, HL}, lin_w);
      }, 3);
      // the fused linear GRPO loss (token level, one sweep: 6NHV): the grpo_loss_from_logits row's
      // formula (clip 0.2 / 0.2, k3 KL beta 0.04, token mean over 8 sequences x NL / 8 tokens)
      std::vector<float> old_l(NL), ref_l(NL), adv_l(8);
      for (std::size_t i = 0; i < NL; ++i) old_l[i] = ref_l[i] = lpl[i] + 0.1f * nd(rng) / 3.f;
      for (auto& a : adv_l) a = nd(rng);
      const auto lay_l = msrl::token_layout::padded(8, NL / 8);
      double loss_l = 0;
      const double t_lin_loss = median_ms([&] {
        loss_l = k::linear_grpo_loss<std::uint8_t>(hv, wv, yl, lay_l, old_l, ref_l, adv_l, {}, lo, {}, {dh.data(), NL, HL},
                                                   {dw.data(), V, HL}, lin_w)
                     .loss;
      }, 3);
      const double t_gemm = median_ms([&] { k::detail::host_gemm({h.data(), NL, HL, HL}, {w.data(), V, HL, HL, true}, Lg.data(), V, false, threads); }, 3);
      double t_tl = 0, t_tl_bwd = 0, t_tl_loss = 0;
#ifdef MSRL_BENCH_TORCH
      {
        const auto th = torch::from_blob(h.data(), {static_cast<long>(NL), static_cast<long>(HL)}, torch::kFloat32);
        const auto tw = torch::from_blob(w.data(), {static_cast<long>(V), static_cast<long>(HL)}, torch::kFloat32);
        const auto tyl = torch::from_blob(yl.data(), {static_cast<long>(NL), 1}, torch::kInt64);
        const auto tgl = torch::from_blob(g_lin.data(), {static_cast<long>(NL), 1}, torch::kFloat32);
        {
          torch::NoGradGuard ng2;
          t_tl = median_ms([&] { auto r = torch::log_softmax(torch::matmul(th, tw.t()), -1).gather(-1, tyl); }, 3);
        }
        const auto thg = th.clone().requires_grad_(true), twg = tw.clone().requires_grad_(true);
        t_tl_bwd = median_ms([&] {
          thg.mutable_grad() = torch::Tensor();
          twg.mutable_grad() = torch::Tensor();
          (torch::log_softmax(torch::matmul(thg, twg.t()), -1).gather(-1, tyl) * tgl).sum().backward();
        }, 3);
        const auto told_l = torch::from_blob(old_l.data(), {static_cast<long>(NL)}, torch::kFloat32);
        const auto tref_l = torch::from_blob(ref_l.data(), {static_cast<long>(NL)}, torch::kFloat32);
        const auto tadv_l = torch::from_blob(adv_l.data(), {8, 1}, torch::kFloat32).expand({8, static_cast<long>(NL / 8)}).reshape({-1});
        double tl_l = 0;
        t_tl_loss = median_ms([&] {
          thg.mutable_grad() = torch::Tensor();
          twg.mutable_grad() = torch::Tensor();
          auto loss_t = libtorch_grpo_loss(torch::log_softmax(torch::matmul(thg, twg.t()), -1).gather(-1, tyl).squeeze(-1), told_l,
                                           tref_l, tadv_l);
          loss_t.backward();
          tl_l = loss_t.item<double>();
        }, 3);
        std::printf("{\"note\":\"linear grpo loss msrl %.9g libtorch %.9g\"}\n", loss_l, tl_l);
      }
#endif
      (void)loss_l;
      const double flop = 2.0 * static_cast<double>(NL * HL * V);
      const auto lin_line = [&](const char* op, double ms, const char* baseline, double base_ms, double work) {
        std::printf("{\"op\":\"%s\",\"shape\":[%zu,%zu,%zu],\"dtype\":\"fp32\",\"threads\":%u,\"gemm\":\"%s\","
                    "\"time_ms_median\":%.2f,\"baseline\":\"%s\",\"baseline_ms_median\":%.2f,"
                    "\"ratio\":%.2f,\"GFLOPs\":%.1f,\"pct_measured_gemm_peak\":%.1f,\"gemm_alone_GFLOPs\":%.1f}\n",
                    op, NL, HL, V, threads, k::detail::host_gemm_name, ms, baseline, base_ms, base_ms > 0 ? base_ms / ms : 0.0,
                    work / (ms * 1e6), 100.0 * (work / flop) * t_gemm / ms, flop / (t_gemm * 1e6));
        std::fflush(stdout);
      };
      lin_line("linear_selective_log_softmax_forward", t_lin, "libtorch matmul+log_softmax+gather", t_tl, flop);
      lin_line("linear_selective_log_softmax_fwd_bwd", t_lin_bwd, "libtorch matmul+log_softmax+gather fwd+autograd bwd", t_tl_bwd,
               4 * flop);
      lin_line("linear_grpo_loss_fwd_bwd", t_lin_loss, "libtorch matmul+log_softmax+gather+GRPO loss fwd+autograd bwd", t_tl_loss,
               3 * flop);
    }
#endif
  }
  return 0;
}
