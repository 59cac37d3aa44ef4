// The CUDA kernel set behind the libtorch ops (msrl/torch/cuda_kernel_set.cuh) against the host
// kernel set on the same values: forward (logp, lse, entropy), backward (plain, entropy term, in
// place) and the GRPO loss (packed layout with device offsets, mask, old / ref, every preset's
// options), fp32 / bf16 / fp16. Skipped (77) without a GPU.
#define BOOST_TEST_MODULE cuda_kernel_set
#include "../support/cuda_test_main.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include <msrl/grpo/presets.hpp>
#include <msrl/torch/cuda_kernel_set.cuh>

namespace to = msrl::torch_ops;
namespace k = msrl::kernels;
namespace mc = msrl::cuda;

namespace {

template <class T>
constexpr to::logit_dtype dtype_v = std::is_same_v<T, float> ? to::logit_dtype::f32
                                    : std::is_same_v<T, k::bf16> ? to::logit_dtype::bf16
                                                                 : to::logit_dtype::f16;

template <class T>
std::vector<T> host_copy(const mc::device_buffer<T>& d) {
  std::vector<T> h(d.size());
  d.copy_to_host(h);
  return h;
}

template <class T>
mc::device_buffer<T> device_copy(const std::vector<T>& h) {
  mc::device_buffer<T> d(h.size());
  d.copy_from_host(h);
  return d;
}

/// A logits case: N rows of V values (storage type T), targets with one ignored row.
template <class T>
struct logits_case {
  std::size_t N, V;
  std::vector<T> x;
  std::vector<std::int64_t> y;
  logits_case(std::size_t n, std::size_t v, unsigned seed) : N(n), V(v), x(n * v), y(n) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 3.f);
    for (auto& e : x) e = k::from_float<T>(nd(rng));
    for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<std::int64_t>(rng() % v);
    y[n / 2] = -100;                                                                 // ignored row
    for (std::size_t j = 0; j < v; j += 3) x[(n - 1) * v + j] = k::from_float<T>(-INFINITY); // -inf logits
    y[n - 1] = 1;
  }
  to::logits_ref host_ref() const { return {x.data(), dtype_v<T>, N, V}; }
};

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, err = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return scale > 0 ? err / scale : err;
}

template <class T>
std::vector<float> widen(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](T e) { return k::to_float(e); });
  return out;
}

template <class T>
void forward_backward_case(std::size_t N, std::size_t V, double temp, bool entropy, bool in_place) {
  BOOST_TEST_INFO("dtype " << static_cast<int>(dtype_v<T>) << " N " << N << " V " << V << " entropy " << entropy << " in place " << in_place);
  const logits_case<T> c(N, V, static_cast<unsigned>(N * 31 + V));
  std::vector<float> gl(N), gh(N);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (std::size_t i = 0; i < N; ++i) gl[i] = nd(rng), gh[i] = 0.1f * nd(rng);

  // host
  const to::host_kernel_set host;
  const to::device_context hctx{-1, nullptr, 2};
  std::vector<float> logp(N), ent(N);
  std::vector<double> lse(N);
  host.forward(hctx, c.host_ref(), c.y.data(), temp, logp.data(), lse.data(), entropy ? ent.data() : nullptr);
  std::vector<T> grad(N * V);
  host.backward(hctx, c.host_ref(), c.y.data(), temp,
                {lse.data(), gl.data(), entropy ? ent.data() : nullptr, entropy ? gh.data() : nullptr}, grad.data());

  // device
  const auto& dev = to::cuda_kernels();
  const to::device_context dctx{0, nullptr, 0};
  auto dx = device_copy(c.x);
  auto dy = device_copy(c.y);
  auto dgl = device_copy(gl), dgh = device_copy(gh);
  mc::device_buffer<float> dlogp(N), dent(N);
  mc::device_buffer<double> dlse(N);
  mc::device_buffer<T> dgrad(in_place ? 0 : N * V);
  const to::logits_ref dref{dx.data(), dtype_v<T>, N, V};
  dev.forward(dctx, dref, dy.data(), temp, dlogp.data(), dlse.data(), entropy ? dent.data() : nullptr);
  dev.backward(dctx, dref, dy.data(), temp, {dlse.data(), dgl.data(), entropy ? dent.data() : nullptr, entropy ? dgh.data() : nullptr},
               in_place ? static_cast<void*>(dx.data()) : static_cast<void*>(dgrad.data()));
  BOOST_TEST((cudaDeviceSynchronize() == cudaSuccess));

  const auto dlp = host_copy(dlogp);
  const auto dls = host_copy(dlse);
  for (std::size_t i = 0; i < N; ++i) {
    BOOST_TEST_INFO("row " << i);
    if (std::isinf(logp[i])) {
      BOOST_TEST(std::isinf(dlp[i]));
      continue;
    }
    BOOST_TEST(std::abs(dlp[i] - logp[i]) <= 2e-5);
    BOOST_TEST(std::abs(dls[i] - lse[i]) <= 2e-5);
  }
  if (entropy) BOOST_TEST(max_rel(host_copy(dent), ent) <= 1e-4);
  const auto dg = widen(host_copy(in_place ? dx : dgrad));
  // 16-bit gradients may round the other way: one unit in the last place of the largest entry
  BOOST_TEST(max_rel(dg, widen(grad)) <= (std::is_same_v<T, float> ? 2e-6 : 8e-3));
}

template <class T>
void grpo_case(const msrl::grpo::preset& p, unsigned seed, bool weighted = false) {
  BOOST_TEST_INFO("preset " << p.name << " dtype " << static_cast<int>(dtype_v<T>) << " weighted " << weighted);
  const std::size_t V = 1001;
  const std::vector<std::int64_t> off{0, 5, 5, 12, 20}; // one empty sequence
  const std::size_t N = 20, B = 4;
  const logits_case<T> c(N, V, seed);
  std::vector<float> old(N), ref(N), adv(B);
  std::vector<std::uint8_t> mask(N, 1);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  for (std::size_t i = 0; i < N; ++i) old[i] = -7.f + 0.3f * nd(rng), ref[i] = -7.f + 0.3f * nd(rng);
  for (auto& a : adv) a = nd(rng);
  mask[3] = mask[14] = 0;
  mask[N / 2] = 0; // the ignored target's row
  msrl::grpo::loss_options opt = p.loss;
  if (opt.beta == 0.0) opt.beta = 0.04;
  // rollout IS weights per token, the IS-corrected KL (token and sequence levels), KL weighting
  std::vector<float> isw(weighted ? N : 0);
  for (std::size_t i = 0; i < isw.size(); ++i) isw[i] = 0.25f + 0.5f * static_cast<float>((i * 7) % 5);
  opt.kl_is_corrected = weighted && opt.level != msrl::grpo::ratio_level::sequence_token;
  opt.is_weight_kl = weighted && seed % 2 == 0;

  const to::host_kernel_set host;
  msrl::grpo::loss_arrays<float> hin{msrl::token_layout::packed(off, N), old.data(), ref.data(), adv.data(), B, mask.data()};
  hin.is_weights = weighted ? isw.data() : nullptr;
  hin.num_is_weights = isw.size();
  std::vector<std::uint8_t> pmask(N);
  for (std::size_t i = 0; i < N; ++i) pmask[i] = i % 4 != 2;
  hin.policy_mask = weighted ? pmask.data() : nullptr;
  std::vector<T> hgrad(N * V);
  const auto hres = host.grpo_loss({-1, nullptr, 2}, c.host_ref(), c.y.data(), hin, opt, {}, 0.9, hgrad.data());

  auto dx = device_copy(c.x);
  auto dy = device_copy(c.y);
  auto doff = device_copy(off);
  auto dold = device_copy(old), dref = device_copy(ref), dadv = device_copy(adv);
  auto dmask = device_copy(mask);
  auto disw = device_copy(weighted ? isw : std::vector<float>(1));
  mc::device_buffer<T> dgrad(N * V);
  msrl::grpo::loss_arrays<float> din{msrl::token_layout::packed({doff.data(), off.size()}, N), dold.data(), dref.data(),
                                     dadv.data(), B, dmask.data()};
  din.is_weights = weighted ? disw.data() : nullptr;
  din.num_is_weights = isw.size();
  auto dpmask = device_copy(pmask);
  din.policy_mask = weighted ? dpmask.data() : nullptr;
  const auto dres = to::cuda_kernels().grpo_loss({0, nullptr, 0}, {dx.data(), dtype_v<T>, N, V}, dy.data(), din, opt, {}, 0.9, dgrad.data());

  BOOST_TEST(std::abs(dres.loss - hres.loss) <= 1e-5 * std::max(1.0, std::abs(hres.loss)));
  BOOST_TEST(dres.metrics.tokens == hres.metrics.tokens);
  BOOST_TEST(dres.metrics.sequences == hres.metrics.sequences);
  BOOST_TEST(std::abs(dres.metrics.kl_mean - hres.metrics.kl_mean) <= 1e-5);
  BOOST_TEST(std::abs(dres.metrics.clip_fraction - hres.metrics.clip_fraction) <= 1e-12);
  BOOST_TEST(max_rel(widen(host_copy(dgrad)), widen(hgrad)) <= (std::is_same_v<T, float> ? 1e-5 : 8e-3));
}

} // namespace

BOOST_AUTO_TEST_CASE(install_puts_the_cuda_set_behind_the_ops) {
  BOOST_TEST(to::installed_kernels(to::device_kind::cuda) == nullptr);
  BOOST_TEST(to::install_cuda_kernels() == nullptr);
  BOOST_TEST(to::installed_kernels(to::device_kind::cuda) == &to::cuda_kernels());
  BOOST_TEST(to::install_kernels(to::device_kind::cuda, nullptr) == &to::cuda_kernels());
  BOOST_TEST(to::installed_kernels(to::device_kind::cuda) == nullptr);
}

BOOST_AUTO_TEST_CASE(forward_and_backward_match_the_host_set) {
  forward_backward_case<float>(37, 151936, 1.0, false, false);
  forward_backward_case<float>(33, 5003, 0.7, true, false);
  forward_backward_case<k::bf16>(17, 151936, 1.0, true, true);
  forward_backward_case<k::f16>(29, 1001, 0.8, false, true);
}

BOOST_AUTO_TEST_CASE(grpo_loss_matches_the_host_set_for_every_preset) {
  unsigned seed = 11;
  for (const auto* p : msrl::grpo::presets::all) {
    grpo_case<float>(*p, seed++);
    grpo_case<float>(*p, seed++, true);
  }
  grpo_case<k::bf16>(msrl::grpo::presets::verl_default, 3);
  grpo_case<k::f16>(msrl::grpo::presets::dapo, 4);
}

BOOST_AUTO_TEST_CASE(bad_arguments_throw_named_errors) {
  const auto& dev = to::cuda_kernels();
  mc::device_buffer<float> x(8), logp(2);
  mc::device_buffer<double> lse(2);
  mc::device_buffer<std::int64_t> y(2);
  // temperature 0: the launcher's status becomes an invalid_argument exception
  BOOST_CHECK_THROW(dev.forward({0, nullptr, 0}, {x.data(), to::logit_dtype::f32, 2, 4}, y.data(), 0.0, logp.data(), lse.data(), nullptr),
                    msrl::invalid_argument);
  // the GRPO loss's option checks keep their messages (the argument named)
  std::vector<float> adv{1.f};
  auto dadv = device_copy(adv);
  msrl::grpo::loss_options bad{};
  bad.clip_low = -1.0;
  const msrl::grpo::loss_arrays<float> in{msrl::token_layout::padded(1, 2), nullptr, nullptr, dadv.data(), 1, nullptr};
  try {
    dev.grpo_loss({0, nullptr, 0}, {x.data(), to::logit_dtype::f32, 2, 4}, y.data(), in, bad, {}, 1.0, nullptr);
    BOOST_ERROR("no exception");
  } catch (const msrl::invalid_argument& e) {
    BOOST_TEST(std::string(e.what()).find("options.clip_low") != std::string::npos);
  }
}
