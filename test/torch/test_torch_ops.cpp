// msrl::torch_ops against libtorch's own autograd on the same formula: forward values and the
// gradients that backward() leaves on the logits.
#define BOOST_TEST_MODULE torch_ops
#include <boost/test/unit_test.hpp>

#include <string>

#include <msrl/grpo.hpp>
#include <msrl/torch/logprob_ops.hpp>

namespace g = msrl::grpo;
namespace to = msrl::torch_ops;

static double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

BOOST_AUTO_TEST_CASE(selective_log_softmax_matches_torch_autograd) {
  torch::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (double temp : {1.0, 0.7}) {
      const auto x0 = (torch::randn({3, 5, 1001}) * 3).to(dtype);
      const auto y = torch::randint(0, 1001, {3, 5}, torch::kLong);
      const auto up = torch::randn({3, 5});
      auto xa = x0.clone().requires_grad_(true);
      auto la = to::selective_log_softmax(xa, y, temp);
      (la * up).sum().backward();
      // libtorch reference in double on the same (rounded) values
      auto xb = x0.to(at::kDouble).requires_grad_(true);
      auto lb = torch::log_softmax(xb / temp, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
      (lb * up.to(at::kDouble)).sum().backward();
      BOOST_TEST_INFO("dtype " << dtype << " T " << temp);
      BOOST_TEST(la.scalar_type() == at::kFloat);
      BOOST_TEST(max_abs(la.to(at::kDouble) - lb) <= 1e-5);
      const double scale = max_abs(xb.grad());
      const double tol = dtype == at::kFloat ? 1e-6 : 8e-3; // bf16 gradient output rounding
      BOOST_TEST(max_abs(xa.grad().to(at::kDouble) - xb.grad()) <= tol * scale);
    }
  }
}

// Eager libtorch GRPO loss: token ratio, clip, dual clip, k3 KL with clamps, masked aggregation.
static at::Tensor torch_grpo(const at::Tensor& x, const at::Tensor& y, const at::Tensor& old, const at::Tensor& ref, const at::Tensor& adv,
                             const at::Tensor& mask, const g::loss_options& o) {
  auto lp = torch::log_softmax(x, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
  auto ratio = torch::exp((lp - old).clamp(-o.log_ratio_clamp, o.log_ratio_clamp));
  auto a = adv.unsqueeze(-1).expand_as(lp);
  auto pg = -torch::minimum(ratio * a, torch::clamp(ratio, 1 - o.clip_low, 1 + o.clip_high) * a);
  if (std::isfinite(o.dual_clip)) pg = torch::where(a < 0, torch::minimum(pg, -a * o.dual_clip), pg);
  auto d = (ref - lp).clamp(-o.kl_log_ratio_clamp, o.kl_log_ratio_clamp);
  auto kl = (torch::exp(d) - d - 1).clamp(-o.kl_value_clamp, o.kl_value_clamp);
  auto per = (pg + o.beta * kl) * mask;
  if (o.agg == g::aggregation::token_mean) return per.sum() / mask.sum();
  return (per.sum(-1) / mask.sum(-1).clamp_min(1)).mean(); // seq_mean_token_mean, clamp_one, count empty
}

BOOST_AUTO_TEST_CASE(grpo_loss_matches_torch_autograd) {
  torch::manual_seed(1);
  const long B = 4, T = 6, V = 517;
  for (const g::preset* p : {&g::presets::trl_default, &g::presets::verl_default, &g::presets::dapo}) {
    g::loss_options o = p->loss;
    o.beta = 0.05;
    o.kl = g::kl_estimator::k3;
    o.kl_straight_through = false;
    if (o.level != g::ratio_level::token) continue;
    const auto x0 = (torch::randn({B, T, V}, at::kDouble) * 2);
    const auto y = torch::randint(0, V, {B, T}, torch::kLong);
    const auto lp0 = torch::log_softmax(x0, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
    const auto old = (lp0 + 0.3 * torch::randn({B, T}, at::kDouble)).to(at::kFloat);
    const auto ref = (lp0 + 0.5 * torch::randn({B, T}, at::kDouble)).to(at::kFloat);
    const auto adv = torch::randn({B}).to(at::kFloat);
    auto mask = torch::ones({B, T});
    mask.index_put_({1, torch::indexing::Slice(3, torch::indexing::None)}, 0);
    auto xa = x0.to(at::kFloat).requires_grad_(true);
    g::loss_metrics met{};
    auto la = to::grpo_loss(xa, y, old, ref, adv, mask, o, {}, 1.0, &met);
    (2.0 * la).backward();
    auto xb = xa.detach().to(at::kDouble).requires_grad_(true);
    auto lb = torch_grpo(xb, y, old.to(at::kDouble), ref.to(at::kDouble), adv.to(at::kDouble), mask.to(at::kDouble), o);
    (2.0 * lb).backward();
    BOOST_TEST_INFO("preset " << p->name);
    BOOST_TEST(std::abs(la.item<double>() - lb.item<double>()) <= 1e-6 * std::max(1.0, std::abs(lb.item<double>())));
    BOOST_TEST(met.tokens == mask.sum().item<double>());
    BOOST_TEST(max_abs(xa.grad().to(at::kDouble) - xb.grad()) <= 1e-5 * max_abs(xb.grad()));
  }
}

BOOST_AUTO_TEST_CASE(linear_log_prob_matches_torch_autograd) {
  torch::manual_seed(2);
  const long N = 23, H = 16, V = 301;
  const auto h0 = torch::randn({N, H}), w0 = torch::randn({V, H}) * 0.5;
  const auto y = torch::randint(0, V, {N}, torch::kLong);
  const auto up = torch::randn({N});
  for (long chunk : {1L, 5L, 64L}) {
    auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    auto lp = to::linear_selective_log_softmax(h, w, y, 0.8, chunk);
    (lp * up).sum().backward();
    auto hb = h0.to(at::kDouble).requires_grad_(true), wb = w0.to(at::kDouble).requires_grad_(true);
    auto lb = torch::log_softmax(torch::matmul(hb, wb.t()) / 0.8, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
    (lb * up.to(at::kDouble)).sum().backward();
    BOOST_TEST_INFO("chunk " << chunk);
    BOOST_TEST(max_abs(lp.to(at::kDouble) - lb) <= 2e-5);
    BOOST_TEST(max_abs(h.grad().to(at::kDouble) - hb.grad()) <= 1e-5 * max_abs(hb.grad()));
    BOOST_TEST(max_abs(w.grad().to(at::kDouble) - wb.grad()) <= 1e-5 * max_abs(wb.grad()));
  }
}

BOOST_AUTO_TEST_CASE(bad_inputs_name_the_argument) {
  const auto x = torch::randn({4, 10});
  auto expect = [](auto f, const std::string& needle) {
    try {
      f();
      BOOST_ERROR("no exception, expected " << needle);
    } catch (const msrl::invalid_argument& e) {
      BOOST_TEST_INFO(e.what());
      BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  expect([&] { to::selective_log_softmax(x, torch::zeros({3}, torch::kLong)); }, "'targets'");
  expect([&] { to::selective_log_softmax(x, torch::zeros({4}, torch::kInt)); }, "int64");
  expect([&] { to::selective_log_softmax(x.to(at::kDouble), torch::zeros({4}, torch::kLong)); }, "float32, bfloat16 or float16");
  expect([&] { to::selective_log_softmax(x, torch::zeros({4}, torch::kLong), 0.0); }, "'temperature'");
  expect([&] { to::grpo_loss(x, torch::zeros({4}, torch::kLong), {}, {}, torch::zeros({4}), {}, g::loss_options{}); }, "[B, T]");
  expect([&] { to::linear_selective_log_softmax(x, torch::randn({7, 9}), torch::zeros({4}, torch::kLong)); }, "'weight'");
}
