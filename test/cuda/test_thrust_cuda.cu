// The Thrust backend on a CUDA device agrees with the reference backend. Skipped (77) without a GPU.
#define BOOST_TEST_MODULE thrust_cuda
#include "../support/cuda_test_main.hpp"

#include <cuda_runtime.h>
#include <cstdlib>
#include <random>
#include <vector>

#include <msrl/backend/thrust.hpp>
#include <msrl/grpo.hpp>

namespace g = msrl::grpo;

BOOST_AUTO_TEST_CASE(loss_and_advantages_match_reference) {
  const std::size_t B = 64, T = 300;
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> lp(B * T), old(B * T), ref(B * T), r(B), a(B);
  std::vector<std::uint8_t> m(B * T);
  for (std::size_t i = 0; i < B * T; ++i) {
    lp[i] = -1.f + 0.5f * n(rng);
    old[i] = lp[i] + 0.2f * n(rng);
    ref[i] = lp[i] + 0.3f * n(rng);
    m[i] = (i % T) < 20 + (i / T) * 4 ? 1 : 0;
  }
  for (auto& x : r) x = n(rng) > 0 ? 1.f : 0.f;
  auto st_ref = g::advantages(std::span<const float>(r), 8, std::span<float>(a), g::presets::ms_swift_default.advantages);
  thrust::device_vector<float> dr(r.begin(), r.end()), da(B), dlp(lp.begin(), lp.end()), dold(old.begin(), old.end()),
      dref(ref.begin(), ref.end()), dg(B * T);
  thrust::device_vector<std::uint8_t> dm(m.begin(), m.end());
  msrl::backend::thrust_device ex;
  auto st = g::advantages(ex, std::span<const float>(thrust::raw_pointer_cast(dr.data()), B), 8,
                          std::span<float>(thrust::raw_pointer_cast(da.data()), B), g::presets::ms_swift_default.advantages);
  BOOST_TEST(st.zero_std_fraction == st_ref.zero_std_fraction);
  std::vector<float> ha(B);
  thrust::copy(da.begin(), da.end(), ha.begin());
  for (std::size_t i = 0; i < B; ++i) BOOST_TEST(ha[i] == a[i], boost::test_tools::tolerance(1e-5f));

  for (const g::preset* p : g::presets::all) {
    g::loss_options o = p->loss;
    o.beta = 0.05;
    std::vector<float> gh(B * T), gd(B * T);
    auto rr = g::policy_loss(g::loss_inputs<float>{msrl::token_layout::padded(B, T), lp, old, ref, a, m}, o, {},
                             std::span<float>(gh));
    auto rd = g::policy_loss(ex,
        g::loss_inputs<float>{msrl::token_layout::padded(B, T), {thrust::raw_pointer_cast(dlp.data()), B * T},
                              {thrust::raw_pointer_cast(dold.data()), B * T}, {thrust::raw_pointer_cast(dref.data()), B * T},
                              {thrust::raw_pointer_cast(da.data()), B}, {thrust::raw_pointer_cast(dm.data()), B * T}},
        o, {}, std::span<float>(thrust::raw_pointer_cast(dg.data()), B * T));
    thrust::copy(dg.begin(), dg.end(), gd.begin());
    BOOST_TEST(rd.loss == rr.loss, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(rd.metrics.clip_fraction == rr.metrics.clip_fraction, boost::test_tools::tolerance(1e-12));
    for (std::size_t i = 0; i < B * T; i += 7) BOOST_TEST(gd[i] == gh[i], boost::test_tools::tolerance(1e-6f));
  }
}

// The estimators of estimators.hpp on the device against the reference backend.
BOOST_AUTO_TEST_CASE(estimators_match_reference) {
  const std::size_t G = 8, B = 64, T = 40;
  std::mt19937 rng(9);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<double> s(B), len(B), base(B), tok(B * T), a(B), ta(B * T), ha(B), hta(B * T);
  std::vector<std::uint8_t> m(B * T);
  for (std::size_t i = 0; i < B; ++i) {
    s[i] = n(rng) > 0 ? 1.0 : 0.0;
    base[i] = n(rng);
    len[i] = static_cast<double>(1 + i % T);
    for (std::size_t t = 0; t < T; ++t) {
      m[i * T + t] = t < 1 + i % T;
      tok[i * T + t] = t == i % T ? s[i] : 0.05 * n(rng);
    }
  }
  thrust::device_vector<double> ds(s.begin(), s.end()), dl(len.begin(), len.end()), db(base.begin(), base.end()),
      dt(tok.begin(), tok.end()), da(B), dta(B * T);
  thrust::device_vector<std::uint8_t> dm(m.begin(), m.end());
  auto dspan = [](thrust::device_vector<double>& v) { return std::span<double>(thrust::raw_pointer_cast(v.data()), v.size()); };
  auto cspan = [](thrust::device_vector<double>& v) {
    return std::span<const double>(thrust::raw_pointer_cast(v.data()), v.size());
  };
  const std::span<const std::uint8_t> dms(thrust::raw_pointer_cast(dm.data()), dm.size());
  const auto lay = msrl::token_layout::padded(B, T);
  const msrl::backend::reference ref;
  msrl::backend::thrust_device ex;
  auto same = [](thrust::device_vector<double>& d, const std::vector<double>& want) {
    std::vector<double> h(d.size());
    thrust::copy(d.begin(), d.end(), h.begin());
    for (std::size_t i = 0; i < h.size(); ++i) BOOST_TEST(h[i] == want[i], boost::test_tools::tolerance(1e-12));
  };
  g::opo_advantages(ref, std::span<const double>(s), std::span<const double>(len), G, std::span<double>(a));
  g::opo_advantages(ex, cspan(ds), cspan(dl), G, dspan(da));
  same(da, a);
  g::passk_advantages(ref, std::span<const double>(s), G, std::span<double>(a));
  g::passk_advantages(ex, cspan(ds), G, dspan(da));
  same(da, a);
  g::gpg_advantages(ref, std::span<const double>(s), G, std::span<double>(a));
  g::gpg_advantages(ex, cspan(ds), G, dspan(da));
  same(da, a);
  g::reinforce_pp_baseline(ref, lay, std::span<const double>(s), G, std::span<const std::uint8_t>(m), std::span<double>(ta));
  g::reinforce_pp_baseline(ex, lay, cspan(ds), G, dms, dspan(dta));
  same(dta, ta);
  g::reinforce_pp(ref, lay, std::span<const double>(tok), std::span<const std::uint8_t>(m), 0.9, std::span<double>(ta));
  g::reinforce_pp(ex, lay, cspan(dt), dms, 0.9, dspan(dta));
  same(dta, ta);
  g::remax_advantages(ref, lay, std::span<const double>(tok), std::span<const double>(base),
                      std::span<const std::uint8_t>(m), std::span<double>(ta));
  g::remax_advantages(ex, lay, cspan(dt), cspan(db), dms, dspan(dta));
  same(dta, ta);
}
