// Fused linear log-prob (chunked hidden x lm_head) against the materialised double path:
// logits = H W^T, reference log-softmax, d H = dL W, d W = dL^T H; and the fused linear GRPO
// loss against the fused-from-logits loss on materialised logits.
#define BOOST_TEST_MODULE kernels_linear_logprob
#include <boost/test/unit_test.hpp>

#include <array>
#include <cmath>
#include <limits>
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

// The loss, metrics, d hidden and d weight of linear_grpo_loss against the fused-from-logits loss on
// materialised logits, whose d logits is then multiplied out in double: d H = dL W, d W = dL^T H.
// The token level takes the one-sweep route (logits never recomputed), the sequence level and the
// row forms the two-sweep route; every chunk size and a global normaliser go through both.
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
  problem q = p;
  for (std::size_t i = 0; i < p.N; ++i) {
    mask[i] = (i % T) <= i / T ? 1 : 0;
    if (!mask[i]) q.y[i] = -100; // ignored ids at masked tokens
  }
  // old / ref near the current log-probs, so that some ratios clip and some do not
  std::vector<float> lp0(p.N);
  k::linear_selective_log_softmax({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.y, lp0);
  for (std::size_t i = 0; i < p.N; ++i) {
    old[i] = lp0[i] + 0.3f * n(rng);
    ref[i] = lp0[i] + 0.3f * n(rng);
  }
  for (auto& a : adv) a = n(rng);
  const auto lay = msrl::token_layout::padded(B, T);

  struct variant {
    const char* name;
    g::loss_options opt;
    g::loss_normalizer norm;
  };
  g::loss_options tok = g::presets::verl_default.loss;
  tok.beta = 0.05;
  g::loss_options seq = g::presets::gspo.loss;
  seq.beta = 0.05;
  const std::vector<variant> variants{{"token level, beta 0.05", tok, {}},
                                      {"token level, global normaliser", tok, {.global_tokens = 31.0, .scale = 0.5}},
                                      {"sequence level (gspo)", seq, {}},
                                      {"row form (trl_gmpo)", g::presets::trl_gmpo.loss, {}}};
  for (const auto& v : variants) {
    std::vector<float> dL(p.N * p.V);
    const k::logits_loss_inputs<float> in{lay, {L.data(), p.N, p.V}, q.y, old, ref, adv, mask};
    const auto want = k::grpo_loss_from_logits(in, v.opt, v.norm, k::logits_loss_outputs<float>{{dL.data(), p.N, p.V}});
    // the reference d H and d W in double
    std::vector<double> rh(p.N * p.H, 0.0), rw(p.V * p.H, 0.0);
    for (std::size_t i = 0; i < p.N; ++i)
      for (std::size_t u = 0; u < p.V; ++u) {
        const double d = dL[i * p.V + u];
        if (d == 0.0) continue;
        for (std::size_t j = 0; j < p.H; ++j) {
          rh[i * p.H + j] += d * p.w[u * p.H + j];
          rw[u * p.H + j] += d * p.h[i * p.H + j];
        }
      }
    double mh = 0, mw = 0;
    for (double x : rh) mh = std::max(mh, std::abs(x));
    for (double x : rw) mw = std::max(mw, std::abs(x));
    for (std::size_t chunk : {1, 6, 7, 1000})
      for (unsigned threads : {1u, 2u}) {
        BOOST_TEST_CONTEXT(v.name << ", chunk " << chunk << ", threads " << threads) {
          std::vector<float> dh(p.N * p.H, 7.f), dw(p.V * p.H, 0.f);
          const auto got = k::linear_grpo_loss<std::uint8_t>({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, q.y, lay, old, ref, adv,
                                                             mask, v.opt, v.norm, {dh.data(), p.N, p.H}, {dw.data(), p.V, p.H},
                                                             {.chunk = chunk, .threads = threads});
          BOOST_TEST(std::abs(got.loss - want.loss) <= 1e-5 * std::max(1.0, std::abs(want.loss)));
          BOOST_TEST(got.metrics.tokens == want.metrics.tokens);
          BOOST_TEST(got.metrics.normalizer == want.metrics.normalizer);
          BOOST_TEST(std::abs(got.metrics.clip_fraction - want.metrics.clip_fraction) <= 1e-12);
          BOOST_TEST(std::abs(got.metrics.ratio_mean - want.metrics.ratio_mean) <= 1e-5);
          BOOST_TEST(std::abs(got.metrics.kl_mean - want.metrics.kl_mean) <= 1e-5);
          BOOST_TEST(std::abs(got.metrics.policy_loss - want.metrics.policy_loss) <= 1e-5 * std::max(1.0, std::abs(want.loss)));
          double eh = 0, ew = 0;
          for (std::size_t i = 0; i < rh.size(); ++i) eh = std::max(eh, std::abs(rh[i] - dh[i]));
          for (std::size_t i = 0; i < rw.size(); ++i) ew = std::max(ew, std::abs(rw[i] - dw[i]));
          BOOST_TEST(mh > 0.0);
          BOOST_TEST(mw > 0.0);
          BOOST_TEST(eh <= 1e-4 * mh);
          BOOST_TEST(ew <= 1e-4 * mw);
        }
      }
    // some ratios clip: the metrics above compare something
    if (v.opt.form == g::loss_form::clipped_ratio) BOOST_TEST(want.metrics.clip_fraction > 0.0);
  }
  // an ignored id at an unmasked token is an error, not a zero log-prob
  std::vector<float> dh(p.N * p.H), dw(p.V * p.H);
  try {
    k::linear_grpo_loss<std::uint8_t>({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, q.y, lay, old, ref, adv, {}, tok, {},
                                      {dh.data(), p.N, p.H}, {dw.data(), p.V, p.H});
    BOOST_ERROR("no exception");
  } catch (const msrl::value_error& e) {
    BOOST_TEST(std::string(e.what()).find("'targets'") != std::string::npos, e.what());
  }
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

// The chunk GEMM (system BLAS in test_linear_logprob_blas, Eigen in test_linear_logprob) against a
// double loop: every transpose combination, padded leading dimensions, overwrite and accumulate.
BOOST_AUTO_TEST_CASE(host_gemm_matches_a_double_loop_for_every_layout) {
  BOOST_TEST_MESSAGE("host GEMM: " << k::detail::host_gemm_name);
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.f, 1.f);
  const std::size_t m = 13, nn = 29, kk = 7, pad = 3;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const bool acc : {false, true}) {
        // stored shapes: A is m x k (or k x m when transposed), B is k x n (or n x k)
        const std::size_t ar = ta ? kk : m, ac = ta ? m : kk, br = tb ? nn : kk, bc = tb ? kk : nn;
        std::vector<float> a(ar * (ac + pad)), b(br * (bc + pad)), c(m * (nn + pad));
        for (auto& v : a) v = n(rng);
        for (auto& v : b) v = n(rng);
        for (auto& v : c) v = n(rng);
        const std::vector<float> c0 = c;
        k::detail::host_gemm({a.data(), ar, ac, ac + pad, ta}, {b.data(), br, bc, bc + pad, tb}, c.data(), nn + pad, acc, 2);
        double worst = 0;
        for (std::size_t i = 0; i < m; ++i)
          for (std::size_t j = 0; j < nn + pad; ++j) {
            if (j >= nn) { // padding of C is never written
              BOOST_TEST(c[i * (nn + pad) + j] == c0[i * (nn + pad) + j]);
              continue;
            }
            double s = acc ? c0[i * (nn + pad) + j] : 0.0;
            for (std::size_t q = 0; q < kk; ++q) {
              const double av = ta ? a[q * (ac + pad) + i] : a[i * (ac + pad) + q];
              const double bv = tb ? b[j * (bc + pad) + q] : b[q * (bc + pad) + j];
              s += av * bv;
            }
            worst = std::max(worst, std::abs(s - c[i * (nn + pad) + j]));
          }
        BOOST_TEST_INFO("trans A " << ta << ", trans B " << tb << ", accumulate " << acc);
        BOOST_TEST(worst <= 1e-5);
      }
}

BOOST_AUTO_TEST_CASE(host_gemm_rejects_mismatched_inner_dimensions) {
  std::vector<float> a(6), b(6), c(4);
  try {
    k::detail::host_gemm({a.data(), 2, 3, 3}, {b.data(), 2, 3, 3}, c.data(), 3, false, 1);
    BOOST_ERROR("no exception");
  } catch (const msrl::shape_error& e) {
    BOOST_TEST(std::string(e.what()).find("inner dimensions") != std::string::npos);
  }
}

// Row strides larger than the row (views into wider buffers) give bit-for-bit the contiguous results.
BOOST_AUTO_TEST_CASE(padded_views_give_the_contiguous_results) {
  const problem p = make(11, 9, 57, 5);
  const std::size_t pad = 4, hs = p.H + pad;
  std::vector<float> hp(p.N * hs, 7.f), wp(p.V * hs, 7.f);
  for (std::size_t i = 0; i < p.N; ++i) std::copy_n(&p.h[i * p.H], p.H, &hp[i * hs]);
  for (std::size_t v = 0; v < p.V; ++v) std::copy_n(&p.w[v * p.H], p.H, &wp[v * hs]);
  std::vector<float> g(p.N, 0.5f);
  const k::linear_options o{.chunk = 4, .threads = 2};
  auto run = [&](const k::matrix_view<const float>& hv, const k::matrix_view<const float>& wv, std::size_t ld) {
    std::vector<float> lp(p.N), dh(p.N * ld, -3.f), dw(p.V * ld, 0.f);
    std::vector<double> lse(p.N);
    k::linear_selective_log_softmax(hv, wv, p.y, lp, o, lse);
    k::linear_selective_log_softmax_backward(hv, wv, p.y, lse, g, {dh.data(), p.N, p.H, ld}, {dw.data(), p.V, p.H, ld}, o);
    std::vector<float> out(lp);
    for (std::size_t i = 0; i < p.N; ++i) out.insert(out.end(), &dh[i * ld], &dh[i * ld] + p.H);
    for (std::size_t v = 0; v < p.V; ++v) out.insert(out.end(), &dw[v * ld], &dw[v * ld] + p.H);
    if (ld > p.H) // the padding of d_hidden is never written
      for (std::size_t i = 0; i < p.N; ++i) BOOST_TEST(dh[i * ld + p.H] == -3.f);
    return out;
  };
  const auto dense = run({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.H);
  const auto padded = run({hp.data(), p.N, p.H, hs}, {wp.data(), p.V, p.H, hs}, hs);
  BOOST_TEST(dense == padded, boost::test_tools::per_element());
}

// A caller's workspace (reused across calls, dirty from the last one) gives the results of the
// per-call block, also for the GRPO loss; one smaller than min(N, chunk) x V is refused by name.
BOOST_AUTO_TEST_CASE(a_reused_workspace_gives_the_same_results) {
  const problem p = make(9, 7, 41, 11);
  std::vector<float> g(p.N, 0.25f);
  auto run = [&](const k::linear_options& o) {
    std::vector<float> lp(p.N), dh(p.N * p.H), dw(p.V * p.H, 0.f);
    std::vector<double> lse(p.N);
    k::linear_selective_log_softmax({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.y, lp, o, lse);
    k::linear_selective_log_softmax_backward({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.y, lse, g, {dh.data(), p.N, p.H},
                                             {dw.data(), p.V, p.H}, o);
    lp.insert(lp.end(), dh.begin(), dh.end());
    lp.insert(lp.end(), dw.begin(), dw.end());
    return lp;
  };
  const auto own = run({.chunk = 4, .threads = 2});
  std::vector<float> ws(4 * p.V, std::numeric_limits<float>::quiet_NaN());
  BOOST_TEST(run({.chunk = 4, .threads = 2, .workspace = ws}) == own, boost::test_tools::per_element());
  BOOST_TEST(run({.chunk = 4, .threads = 2, .workspace = ws}) == own, boost::test_tools::per_element()); // reused
  std::vector<float> small(4 * p.V - 1);
  std::vector<float> lp(p.N);
  try {
    k::linear_selective_log_softmax({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.y, lp, {.chunk = 4, .workspace = small});
    BOOST_ERROR("no exception for a short workspace");
  } catch (const msrl::shape_error& e) {
    BOOST_TEST(std::string(e.what()).find("'options.workspace'") != std::string::npos, e.what());
  }
  // the GRPO loss with a workspace: the same loss and gradients
  std::vector<float> old(p.N, -3.f), ref(p.N, -3.2f), adv{0.7f, -0.4f, 1.1f};
  const auto lay = msrl::token_layout::padded(3, 3);
  auto loss = [&](const k::linear_options& o, std::vector<float>& dh, std::vector<float>& dw) {
    return k::linear_grpo_loss<std::uint8_t>({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.y, lay, old, ref, adv, {},
                                             g::presets::verl_default.loss, {}, {dh.data(), p.N, p.H}, {dw.data(), p.V, p.H}, o)
        .loss;
  };
  std::vector<float> dh1(p.N * p.H), dw1(p.V * p.H, 0.f), dh2(p.N * p.H), dw2(p.V * p.H, 0.f);
  BOOST_TEST(loss({.chunk = 4}, dh1, dw1) == loss({.chunk = 4, .workspace = ws}, dh2, dw2));
  BOOST_TEST(dh1 == dh2, boost::test_tools::per_element());
  BOOST_TEST(dw1 == dw2, boost::test_tools::per_element());
}

// detail::zero_matrix zeroes exactly the rows x cols entries of a (possibly padded, unaligned)
// matrix, on one or two threads, across its block boundaries; the padding keeps its values.
BOOST_AUTO_TEST_CASE(zero_matrix_zeroes_the_matrix_and_nothing_else) {
  for (std::size_t offset : {0, 1, 3})
    for (const auto& [rows, cols, ld] : std::vector<std::array<std::size_t, 3>>{{1, 5, 5}, {3, 7, 9}, {2053, 40, 40}, {1700, 41, 43}})
      for (unsigned threads : {1u, 2u}) {
        BOOST_TEST_CONTEXT("offset " << offset << ", " << rows << " x " << cols << " ld " << ld << ", threads " << threads) {
          std::vector<float> buf(offset + rows * ld + 5, 2.5f);
          k::detail::zero_matrix(buf.data() + offset, rows, cols, ld, threads);
          std::size_t wrong = 0;
          for (std::size_t i = 0; i < buf.size(); ++i) {
            const bool inside = i >= offset && i < offset + rows * ld && (i - offset) % ld < cols;
            wrong += buf[i] != (inside ? 0.0f : 2.5f);
          }
          BOOST_TEST(wrong == 0u);
        }
      }
}

// linear_options::overwrite_d_weight: a d_weight full of NaN (and, padded, with its padding kept)
// ends bit for bit as the gradient accumulated into zeros, for the log-prob backward, the one-sweep
// GRPO loss (token level) and the two-sweep one (sequence level); without it the call adds to
// what d_weight holds.
BOOST_AUTO_TEST_CASE(overwrite_d_weight_gives_the_fresh_gradient) {
  const problem p = make(6, 40, 2053, 13); // V x H spans two zeroing blocks
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> g(p.N, 0.5f), old(p.N, -7.f), ref(p.N, -7.2f), adv{0.7f, -0.4f};
  const auto lay = msrl::token_layout::padded(2, 3);
  g::loss_options seq = g::presets::verl_default.loss;
  seq.level = g::ratio_level::sequence;
  for (std::size_t ld : {p.H, p.H + 3})
    for (int op = 0; op < 3; ++op) {
      BOOST_TEST_CONTEXT("ld " << ld << ", op " << op) {
        auto run = [&](bool overwrite, float fill) {
          std::vector<float> dh(p.N * p.H), dw(p.V * ld, fill);
          for (std::size_t v = 0; v < p.V; ++v)
            for (std::size_t j = p.H; j < ld; ++j) dw[v * ld + j] = -1.f; // padding
          const k::linear_options o{.chunk = 4, .threads = 2, .overwrite_d_weight = overwrite};
          const k::matrix_view<const float> hv{p.h.data(), p.N, p.H}, wv{p.w.data(), p.V, p.H};
          if (op == 0) {
            std::vector<float> lp(p.N);
            std::vector<double> lse(p.N);
            k::linear_selective_log_softmax(hv, wv, p.y, lp, o, lse);
            k::linear_selective_log_softmax_backward(hv, wv, p.y, lse, g, {dh.data(), p.N, p.H}, {dw.data(), p.V, p.H, ld}, o);
          } else {
            k::linear_grpo_loss<std::uint8_t>(hv, wv, p.y, lay, old, ref, adv, {}, op == 1 ? g::presets::verl_default.loss : seq, {},
                                              {dh.data(), p.N, p.H}, {dw.data(), p.V, p.H, ld}, o);
          }
          return dw;
        };
        const auto fresh = run(false, 0.f);
        const auto over = run(true, nan);
        BOOST_TEST(fresh == over, boost::test_tools::per_element());
        double m = 0;
        for (float x : fresh) m = std::max(m, std::abs(static_cast<double>(x)));
        BOOST_TEST(m > 0.0);
        const auto added = run(false, 1.f); // accumulates: 1 + the gradient
        double e = 0;
        for (std::size_t i = 0; i < added.size(); ++i)
          e = std::max(e, std::abs(added[i] - (i % ld < p.H ? 1.0 + fresh[i] : -1.0)));
        BOOST_TEST(e <= 1e-6 * (1.0 + m));
      }
    }
  std::vector<float> dh(p.N * p.H), dw(p.V * p.H);
  try {
    k::linear_selective_log_softmax_backward({p.h.data(), p.N, p.H}, {p.w.data(), p.V, p.H}, p.y, std::vector<double>(p.N), g,
                                             {dh.data(), p.N, p.H}, {dw.data(), p.V, p.H, p.H - 1});
    BOOST_ERROR("no exception for a stride shorter than the row");
  } catch (const msrl::shape_error& e) {
    BOOST_TEST(std::string(e.what()).find("'d_weight.stride'") != std::string::npos, e.what());
  }
}
