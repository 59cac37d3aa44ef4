// Fused linear log-prob (chunked hidden x lm_head) against the materialised double path:
// logits = H W^T, reference log-softmax, d H = dL W, d W = dL^T H; and the fused linear GRPO
// loss against the fused-from-logits loss on materialised logits.
#define BOOST_TEST_MODULE kernels_linear_logprob
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <vector>

#include <msrl/grpo.hpp>
#include <msrl/kernels/grpo_loss.hpp>
#include <msrl/kernels/linear_logprob_eigen.hpp>

#include "reference.hpp"

namespace k = msrl::kernels;
namespace g = msrl::grpo;

struct problem {
  std::size_t N, H, V;
  std::vector<float> h, w;
  std::vector<std::int64_t> y;
};

static problem make(std::size_t N, std::size_t H, std::size_t V, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  problem p{N, H, V, std::vector<float>(N * H), std::vector<float>(V * H), std::vector<std::int64_t>(N)};
  for (auto& v : p.h) v = n(rng);
  for (auto& v : p.w) v = 0.4f * n(rng);
  for (auto& t : p.y) t = static_cast<std::int64_t>(rng() % V);
  return p;
}

static std::vector<double> logits_double(const problem& p) {
  std::vector<double> L(p.N * p.V);
  for (std::size_t i = 0; i < p.N; ++i)
    for (std::size_t v = 0; v < p.V; ++v) {
      double s = 0;
      for (std::size_t j = 0; j < p.H; ++j) s += static_cast<double>(p.h[i * p.H + j]) * p.w[v * p.H + j];
      L[i * p.V + v] = s;
    }
  return L;
}

BOOST_AUTO_TEST_CASE(forward_and_backward_match_the_materialised_double_path) {
  const problem p = make(37, 24, 301, 3);
  const double temp = 0.9;
  const auto L = logits_double(p);
  std::vector<float> gl(p.N);
  std::mt19937 rng(4);
  std::normal_distribution<float> n(0.f, 1.f);
  for (auto& g0 : gl) g0 = n(rng);
  for (std::size_t chunk : {1, 8, 37, 1000}) {
    std::vector<float> lp(p.N), dh(p.N * p.H, 9.f), dw(p.V * p.H, 0.f);
    std::vector<double> lse(p.N);
    const k::linear_options o{.temperature = temp, .chunk = chunk, .threads = 2};
    const k::matrix_view<const float> hv{p.h.data(), p.N, p.H}, wv{p.w.data(), p.V, p.H};
    k::linear_selective_log_softmax(hv, wv, p.y, lp, o, lse);
    k::linear_selective_log_softmax_backward(hv, wv, p.y, lse, gl, k::matrix_view<float>{dh.data(), p.N, p.H},
                                             k::matrix_view<float>{dw.data(), p.V, p.H}, o);
    std::vector<double> dL(p.N * p.V), row;
    for (std::size_t i = 0; i < p.N; ++i) {
      const auto r = msrl::lab::ref_forward(L.data() + i * p.V, p.V, p.y[i], temp);
      BOOST_TEST(std::abs(lp[i] - r.logp) <= 2e-5); // fp32 GEMM rounding of the logits (H = 24)
      msrl::lab::ref_backward(L.data() + i * p.V, p.V, p.y[i], temp, gl[i], row);
      std::copy(row.begin(), row.end(), dL.begin() + static_cast<long>(i * p.V));
    }
    double mh = 0, eh = 0, mw = 0, ew = 0;
    for (std::size_t i = 0; i < p.N; ++i)
      for (std::size_t j = 0; j < p.H; ++j) {
        double s = 0;
        for (std::size_t v = 0; v < p.V; ++v) s += dL[i * p.V + v] * p.w[v * p.H + j];
        mh = std::max(mh, std::abs(s));
        eh = std::max(eh, std::abs(s - dh[i * p.H + j]));
      }
    for (std::size_t v = 0; v < p.V; ++v)
      for (std::size_t j = 0; j < p.H; ++j) {
        double s = 0;
        for (std::size_t i = 0; i < p.N; ++i) s += dL[i * p.V + v] * p.h[i * p.H + j];
        mw = std::max(mw, std::abs(s));
        ew = std::max(ew, std::abs(s - dw[v * p.H + j]));
      }
    BOOST_TEST_INFO("chunk " << chunk);
    BOOST_TEST(eh <= 1e-5 * mh);
    BOOST_TEST(ew <= 1e-5 * mw);
  }
}

BOOST_AUTO_TEST_CASE(linear_grpo_loss_equals_the_loss_from_materialised_logits) {
  const std::size_t B = 4, T = 5;
  const problem p = make(B * T, 16, 211, 7);
  std::vector<float> L(p.N * p.V);
  const auto Ld = logits_double(p);
  for (std::size_t i = 0; i < L.size(); ++i) L[i] = static_cast<float>(Ld[i]);
  std::mt19937 rng(8);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> old(p.N), ref(p.N), adv(B);
  std::vector<std::uint8_t> mask(p.N);
  for (std::size_t i = 0; i < p.N; ++i) {
    old[i] = -5.5f + n(rng);
    ref[i] = -5.5f + n(rng);
    mask[i] = (i % T) <= i / T ? 1 : 0;
  }
  for (auto& a : adv) a = n(rng);
  g::loss_options o = g::presets::verl_default.loss;
  o.beta = 0.05;
  const auto lay = msrl::token_layout::padded(B, T);
  std::vector<float> dL(p.N * p.V);
  const k::logits_loss_inputs<float> in{lay, {L.data(), p.N, p.V}, p.y, old, ref, adv, mask};
  const auto want = k::grpo_loss_from_logits(in, o, {}, k::logits_loss_outputs<float>{{dL.data(), p.N, p.V}});
  std::vector<float> dh(p.N * p.H), dw(p.V * p.H, 0.f);
  const auto got = k::linear_grpo_loss<std::uint8_t>({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.y, lay, old, ref, adv, mask, o, {},
                                                     {dh.data(), p.N, p.H}, {dw.data(), p.V, p.H}, {.chunk = 6});
  BOOST_TEST(std::abs(got.loss - want.loss) <= 1e-5 * std::max(1.0, std::abs(want.loss)));
  double mh = 0, eh = 0;
  for (std::size_t i = 0; i < p.N; ++i)
    for (std::size_t j = 0; j < p.H; ++j) {
      double s = 0;
      for (std::size_t v = 0; v < p.V; ++v) s += static_cast<double>(dL[i * p.V + v]) * p.w[v * p.H + j];
      mh = std::max(mh, std::abs(s));
      eh = std::max(eh, std::abs(s - dh[i * p.H + j]));
    }
  BOOST_TEST(mh > 0.0);
  BOOST_TEST(eh <= 1e-4 * mh);
}

BOOST_AUTO_TEST_CASE(shape_errors_name_the_argument) {
  std::vector<float> h(6 * 4), w(10 * 3), lp(6);
  std::vector<std::int64_t> y(6, 0);
  try {
    k::linear_selective_log_softmax({h.data(), 6, 4}, {w.data(), 10, 3}, y, lp);
    BOOST_ERROR("no exception");
  } catch (const msrl::shape_error& e) {
    BOOST_TEST(std::string(e.what()).find("'weight'") != std::string::npos);
  }
}
