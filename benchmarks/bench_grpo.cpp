// GRPO core benchmark: advantages + loss + closed-form gradient for B sequences x T tokens,
// against libtorch CPU eager (forward + autograd backward) on the same inputs in the same run.
// Prints one JSON line per configuration: medians over repetitions and the ratio to the baseline,
// the ISA the core dispatched to, the bytes it must move (three fp32 log-prob arrays and the byte
// mask read, the fp32 gradient written: 17 B per token) and the data-movement floor measured in
// the same run: a pass over the same arrays, with the same threads and lanes, that only reads
// them and writes a gradient (the inputs fit in cache, as in a trainer's step).
//
//   bench_grpo [--batch 128] [--tokens 1024] [--reps 30] [--threads 2] [--preset ms_swift_default]
#include <msrl/grpo.hpp>

#ifdef MSRL_HAS_TORCH
#include <torch/torch.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace g = msrl::grpo;

// The floor: grad = mask ? lp - old + ref : 0 over token blocks, in the host's vector lanes.
struct floor_pass {
  const float *lp, *old, *ref;
  const std::uint8_t* mask;
  float* grad;
  std::size_t n, blk;
  struct acc {
    template <class V>
    struct type {
      V s{};
      auto fields() { return std::tie(s); }
    };
  };
  template <class VL>
  msrl::sums<1> run(std::size_t b) const {
    typename acc::template type<double> a;
    const std::size_t t0 = b * blk, t1 = std::min(n, t0 + blk);
    msrl::simd::for_lanes<VL>(t0, t1, a, [&](std::size_t t, auto& x, auto cnt) MSRL_LAMBDA_INLINE {
      using V = std::remove_reference_t<decltype(x.s)>;
      namespace s = msrl::simd;
      const auto on = s::load_as<V>(mask + t, cnt) != s::splat<V>(0.0);
      const V g = s::load_as<V>(lp + t, cnt) - s::load_as<V>(old + t, cnt) + s::load_as<V>(ref + t, cnt);
      s::store_as(grad + t, s::select(on, g, s::splat<V>(0.0)), cnt);
    });
    return {};
  }
  msrl::sums<1> operator()(std::size_t b) const { return run<double>(b); }
};

template <class F>
static double median_ms(int reps, F f) {
  std::vector<double> t;
  f(); // warm-up
  for (int i = 0; i < reps; ++i) {
    auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  std::size_t B = 128, T = 1024;
  int reps = 30;
  unsigned threads = 2;
  std::string preset = "ms_swift_default";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--batch") B = std::stoul(v);
    else if (a == "--tokens") T = std::stoul(v);
    else if (a == "--reps") reps = std::stoi(v);
    else if (a == "--threads") threads = static_cast<unsigned>(std::stoul(v));
    else if (a == "--preset") preset = v;
  }
  const g::preset& cfg = g::find_preset(preset);
  const std::size_t G = 8, N = B * T;
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> lp(N), old(N), ref(N), rewards(B), adv(B), grad(N);
  std::vector<std::uint8_t> mask(N);
  for (std::size_t i = 0; i < N; ++i) {
    lp[i] = -1.f + 0.5f * n(rng);
    old[i] = lp[i] + 0.1f * n(rng);
    ref[i] = lp[i] + 0.2f * n(rng);
  }
  for (std::size_t b = 0; b < B; ++b) {
    rewards[b] = n(rng) > 0 ? 1.2f : 0.2f;
    const std::size_t L = T / 2 + (b * 37) % (T / 2);
    for (std::size_t t = 0; t < T; ++t) mask[b * T + t] = t < L;
  }
  g::loss_options lo = cfg.loss;
  if (lo.beta == 0.0) lo.beta = 0.04; // always time the KL path as well
  g::loss_inputs<float> in{msrl::token_layout::padded(B, T), lp, old, ref, adv, mask};

  auto run_msrl = [&](auto exec) {
    g::advantages(exec, std::span<const float>(rewards), G, std::span<float>(adv), cfg.advantages);
    volatile double l = g::policy_loss(exec, in, lo, {}, std::span<float>(grad)).loss;
    (void)l;
  };
  const double t_ref = median_ms(reps, [&] { run_msrl(msrl::backend::reference{}); });
  const double t_thr = median_ms(reps, [&] { run_msrl(msrl::backend::host_threads{.threads = threads}); });
  auto run_floor = [&](auto exec) {
    const floor_pass fp{lp.data(), old.data(), ref.data(), mask.data(), grad.data(), N, 512};
    msrl::simd::host_lanes<float>(fp, [&](const auto& f) { return exec.reduce_n((N + 511) / 512, f, msrl::sums<1>{}); });
  };
  const double f_ref = median_ms(reps, [&] { run_floor(msrl::backend::reference{}); });
  const double f_thr = median_ms(reps, [&] { run_floor(msrl::backend::host_threads{.threads = threads}); });
  const double bytes = 17.0 * static_cast<double>(N);

  double t_torch1 = NAN, t_torchN = NAN;
#ifdef MSRL_HAS_TORCH
  torch::NoGradGuard* none = nullptr;
  (void)none;
  auto tl = torch::from_blob(lp.data(), {long(B), long(T)}).clone();
  auto told = torch::from_blob(old.data(), {long(B), long(T)}).clone();
  auto tref = torch::from_blob(ref.data(), {long(B), long(T)}).clone();
  auto tr = torch::from_blob(rewards.data(), {long(B)}).clone();
  auto tm = torch::from_blob(mask.data(), {long(B), long(T)}, torch::kUInt8).to(torch::kFloat32);
  // The eager GRPO step the peers run (ms-swift/TRL style): group advantages, ratio, clipped
  // surrogate, k3 KL, per-sequence token mean, autograd backward.
  auto torch_step = [&] {
    auto x = tl.detach().requires_grad_(true);
    auto grp = tr.view({-1, long(G)});
    auto a = ((grp - grp.mean(1, true)) / (grp.std(1, true, true) + 1e-4)).view({-1, 1});
    auto coef1 = torch::exp(x - told);
    auto coef2 = torch::clamp(coef1, 1 - lo.clip_low, 1 + lo.clip_high);
    auto per_tok = -torch::min(coef1 * a, coef2 * a);
    auto d = tref - x;
    per_tok = per_tok + lo.beta * (torch::exp(d) - d - 1);
    auto loss = ((per_tok * tm).sum(1) / tm.sum(1).clamp_min(1.0)).mean();
    loss.backward();
    return x.grad();
  };
  at::set_num_threads(1);
  t_torch1 = median_ms(reps, torch_step);
  at::set_num_threads(static_cast<int>(threads));
  t_torchN = median_ms(reps, torch_step);
#endif
  const char* isa = msrl::to_string(msrl::active_isa());
  auto line = [&](const char* backend, unsigned th, double t, double floor_ms, double base) {
    std::printf("{\"op\":\"grpo_advantages+loss+grad\",\"shape\":[%zu,%zu],\"dtype\":\"fp32\",\"preset\":\"%s\","
                "\"backend\":\"%s\",\"threads\":%u,\"isa\":\"%s\",\"time_ms\":%.4f,\"bytes\":%.0f,\"GBps\":%.2f,"
                "\"floor_ms\":%.4f,\"floor_ratio\":%.2f,\"baseline\":\"libtorch eager fwd+bwd\","
                "\"baseline_ms\":%.4f,\"ratio\":%.2f}\n",
                B, T, preset.c_str(), backend, th, isa, t, bytes, bytes / (t * 1e6), floor_ms, t / floor_ms, base, base / t);
  };
  line("reference", 1, t_ref, f_ref, t_torch1);
  line("host_threads", threads, t_thr, f_thr, t_torchN);
  return 0;
}
