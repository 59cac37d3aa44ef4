// msrl::torch_ops against libtorch's own autograd on the same formula: forward values and the
// gradients that backward() leaves on the logits (log-probs, entropy, GRPO loss, fused linear).
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

// libtorch's own formula in double: logp = log_softmax(x / T)[y], H = -(p * logp).sum(-1), with
// p log p = 0 where p = 0 (logp masked before the product, so no 0 * -inf in the backward either)
// and 0 for ignored targets (y < 0).
static std::tuple<at::Tensor, at::Tensor> torch_logp_entropy(const at::Tensor& x, const at::Tensor& y, double temp) {
  const auto lsm = torch::log_softmax(x / temp, -1);
  const auto p = lsm.exp();
  const auto safe = torch::where(p > 0, lsm, torch::zeros_like(lsm));
  const auto keep = y >= 0;
  const auto lp = lsm.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1);
  const auto h = -(p * safe).sum(-1);
  return {torch::where(keep, lp, torch::zeros_like(lp)), torch::where(keep, h, torch::zeros_like(h))};
}

BOOST_AUTO_TEST_CASE(selective_log_softmax_with_entropy_matches_torch_autograd) {
  torch::manual_seed(3);
  const long B = 3, T = 5, V = 1001;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (double temp : {1.0, 0.7, 1.3}) {
      auto x0 = torch::randn({B, T, V}) * 3;
      x0.index_put_({0, 1, torch::indexing::Slice(0, torch::indexing::None, 3)}, -INFINITY); // a third banned
      x0.index_put_({1, 2, 17}, -INFINITY);                                                   // target logit -inf
      x0 = x0.to(dtype);
      auto y = torch::randint(0, V, {B, T}, torch::kLong);
      y.index_put_({0, 1}, 1); // finite target in the banned row
      y.index_put_({1, 2}, 17);
      y.index_put_({2, 0}, -100); // ignored
      y.index_put_({2, 4}, -100);
      const auto up_lp = torch::randn({B, T}), up_h = torch::randn({B, T});
      auto xa = x0.clone().requires_grad_(true);
      auto [la, ha] = to::selective_log_softmax_with_entropy(xa, y, temp);
      // a GRPO-style loss with an entropy bonus: both outputs, per-token weights
      ((la * up_lp).sum() - 0.01 * (ha * up_h).sum() + ha.mean()).backward();
      auto xb = x0.to(at::kDouble).requires_grad_(true);
      auto [lb, hb] = torch_logp_entropy(xb, y, temp);
      ((lb * up_lp.to(at::kDouble)).sum() - 0.01 * (hb * up_h.to(at::kDouble)).sum() + hb.mean()).backward();
      BOOST_TEST_INFO("dtype " << dtype << " T " << temp);
      BOOST_TEST((la.scalar_type() == at::kFloat && ha.scalar_type() == at::kFloat));
      BOOST_TEST((la.sizes() == y.sizes() && ha.sizes() == y.sizes()));
      const auto fin = torch::isfinite(lb);
      BOOST_TEST(max_abs(torch::where(fin, la.to(at::kDouble) - lb, torch::zeros_like(lb))) <= 1e-5);
      BOOST_TEST(la[1][2].item<float>() == -INFINITY); // p(target) = 0
      BOOST_TEST(max_abs(ha.to(at::kDouble) - hb) <= 1e-5);
      BOOST_TEST((la[2][0].item<float>() == 0.f && ha[2][0].item<float>() == 0.f));
      const auto ga = xa.grad().to(at::kDouble), gb = xb.grad();
      BOOST_TEST(torch::isfinite(ga).all().item<bool>());
      BOOST_TEST(max_abs(ga[0][1].slice(0, 0, V, 3)) == 0.0); // -inf logits: exactly 0
      BOOST_TEST(max_abs(ga[2][0]) == 0.0);                   // ignored targets: exactly 0
      const double tol = dtype == at::kFloat ? 1e-6 : 8e-3;   // bf16: the gradient's output rounding
      BOOST_TEST(max_abs(ga - gb) <= tol * max_abs(gb));
    }
  }
}

BOOST_AUTO_TEST_CASE(selective_log_softmax_with_entropy_one_output_and_masked_rows) {
  torch::manual_seed(4);
  const long N = 6, V = 77;
  auto x0 = torch::randn({N, V}) * 2;
  x0.index_put_({3}, -INFINITY); // a row of only -inf logits
  const auto y = torch::randint(0, V, {N}, torch::kLong);
  // the entropy alone (logp unused: its gradient stays undefined), temperature 0.8
  auto xa = x0.clone().requires_grad_(true);
  auto [la, ha] = to::selective_log_softmax_with_entropy(xa, y, 0.8);
  BOOST_TEST(la[3].item<float>() == -INFINITY);
  BOOST_TEST(ha[3].item<float>() == 0.f);
  ha.sum().backward();
  const auto ga = xa.grad().to(at::kDouble);
  BOOST_TEST(torch::isfinite(ga).all().item<bool>());
  BOOST_TEST(max_abs(ga[3]) == 0.0);
  const auto rows = torch::tensor({0, 1, 2, 4, 5}, torch::kLong);
  auto xb = x0.index_select(0, rows).to(at::kDouble).requires_grad_(true);
  std::get<1>(torch_logp_entropy(xb, y.index_select(0, rows), 0.8)).sum().backward();
  BOOST_TEST(max_abs(ga.index_select(0, rows) - xb.grad()) <= 1e-6 * max_abs(xb.grad()));
  // logp alone through the entropy op equals the plain op, bit for bit
  auto xc = x0.clone().requires_grad_(true), xd = x0.clone().requires_grad_(true);
  std::get<0>(to::selective_log_softmax_with_entropy(xc, y, 0.8)).sum().backward();
  to::selective_log_softmax(xd, y, 0.8).sum().backward();
  BOOST_TEST(torch::equal(xc.grad(), xd.grad()));
}

// Eager libtorch GRPO loss: token ratio, clip, dual clip, k3 KL with clamps, masked aggregation.
static at::Tensor torch_grpo(const at::Tensor& x, const at::Tensor& y, const at::Tensor& old, const at::Tensor& ref, const at::Tensor& adv,
                             const at::Tensor& mask, const g::loss_options& o, const at::Tensor& isw = {}) {
  auto lp = torch::log_softmax(x, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
  auto ratio = torch::exp((lp - old).clamp(-o.log_ratio_clamp, o.log_ratio_clamp));
  auto a = adv.unsqueeze(-1).expand_as(lp);
  auto pg = -torch::minimum(ratio * a, torch::clamp(ratio, 1 - o.clip_low, 1 + o.clip_high) * a);
  if (std::isfinite(o.dual_clip)) pg = torch::where(a < 0, torch::minimum(pg, -a * o.dual_clip), pg);
  auto d = (ref - lp).clamp(-o.kl_log_ratio_clamp, o.kl_log_ratio_clamp);
  auto kl = (torch::exp(d) - d - 1).clamp(-o.kl_value_clamp, o.kl_value_clamp);
  if (o.kl_is_corrected) kl = kl * torch::exp(lp - old); // TRL use_bias_correction_kl: k3 * coef_1
  if (isw.defined()) pg = pg * isw;                       // TRL: the IS weight before the KL is added
  auto per = (pg + o.beta * kl) * mask;
  if (o.agg == g::aggregation::token_mean) return per.sum() / mask.sum();
  return (per.sum(-1) / mask.sum(-1).clamp_min(1)).mean(); // seq_mean_token_mean, clamp_one, count empty
}

BOOST_AUTO_TEST_CASE(grpo_loss_matches_torch_autograd) {
  torch::manual_seed(1);
  const long B = 4, T = 6, V = 517;
  for (const g::preset* p : {&g::presets::trl_default, &g::presets::verl_default, &g::presets::dapo})
   for (int weighted = 0; weighted < 2; ++weighted) {
    g::loss_options o = p->loss;
    o.beta = 0.05;
    o.kl_is_corrected = weighted == 1;
    o.is_weight_kl = false;
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
    const auto isw = weighted ? (2.0 * torch::rand({B, T})).to(at::kFloat) : at::Tensor();
    auto la = to::grpo_loss(xa, y, old, ref, adv, mask, o, {}, 1.0, &met, {}, isw);
    (2.0 * la).backward();
    auto xb = xa.detach().to(at::kDouble).requires_grad_(true);
    auto lb = torch_grpo(xb, y, old.to(at::kDouble), ref.to(at::kDouble), adv.to(at::kDouble), mask.to(at::kDouble), o,
                         weighted ? isw.to(at::kDouble) : at::Tensor());
    (2.0 * lb).backward();
    BOOST_TEST_INFO("preset " << p->name << " weighted " << weighted);
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
  expect([&] { to::selective_log_softmax_with_entropy(x, torch::zeros({4}, torch::kLong), -1.0); }, "'temperature'");
  expect([&] { to::selective_log_softmax_with_entropy(x, torch::zeros({5}, torch::kLong)); }, "'targets'");
  expect([&] { to::grpo_loss(x, torch::zeros({4}, torch::kLong), {}, {}, torch::zeros({4}), {}, g::loss_options{}); }, "[B, T]");
  expect([&] { to::linear_selective_log_softmax(x, torch::randn({7, 9}), torch::zeros({4}, torch::kLong)); }, "'weight'");
  expect([&] { to::linear_selective_log_softmax(x, torch::randn({7, 10}).to(at::kBFloat16), torch::zeros({4}, torch::kLong)); },
         "dtype of hidden");
  // devices: a tensor that is neither CPU nor CUDA, and a mix of devices
  const auto meta = at::empty({4, 10}, at::TensorOptions().device(at::kMeta));
  expect([&] { to::selective_log_softmax(meta, at::zeros({4}, at::TensorOptions().dtype(at::kLong).device(at::kMeta))); },
         "must be a CPU or CUDA tensor");
  expect([&] { to::selective_log_softmax(x, at::zeros({4}, at::TensorOptions().dtype(at::kLong).device(at::kMeta))); },
         "must be on the logits' device");
  expect([&] {
    to::grpo_loss(x.reshape({2, 2, 10}), torch::zeros({2, 2}, torch::kLong), {}, {}, at::zeros({2}, at::TensorOptions().device(at::kMeta)),
                  {}, g::loss_options{});
  }, "'advantages' must be on the logits' device");
}

BOOST_AUTO_TEST_CASE(linear_log_prob_bf16_within_bf16_rounding) {
  // bf16 hidden / weight: the chunk logits are bf16 (as libtorch's own bf16 matmul gives them);
  // the reference runs libtorch's autograd in double on the same bf16 logits' formula.
  torch::manual_seed(3);
  const long N = 9, H = 16, V = 257;
  const auto h0 = torch::randn({N, H}).to(at::kBFloat16), w0 = (torch::randn({V, H}) * 0.5).to(at::kBFloat16);
  const auto y = torch::randint(0, V, {N}, torch::kLong);
  const auto up = torch::randn({N});
  auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  auto lp = to::linear_selective_log_softmax(h, w, y, 1.0, 4);
  (lp * up).sum().backward();
  auto hb = h0.to(at::kDouble).requires_grad_(true), wb = w0.to(at::kDouble).requires_grad_(true);
  auto lb = torch::log_softmax(torch::matmul(hb, wb.t()), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
  (lb * up.to(at::kDouble)).sum().backward();
  BOOST_TEST(lp.scalar_type() == at::kFloat);
  BOOST_TEST(h.grad().scalar_type() == at::kBFloat16);
  BOOST_TEST(w.grad().scalar_type() == at::kBFloat16);
  // logits of magnitude ~2-8 rounded to bf16 (relative 2^-9): logp within a few 1e-2
  BOOST_TEST(max_abs(lp.to(at::kDouble) - lb) <= 0.03);
  BOOST_TEST(max_abs(h.grad().to(at::kDouble) - hb.grad()) <= 0.02 * max_abs(hb.grad()));
  BOOST_TEST(max_abs(w.grad().to(at::kDouble) - wb.grad()) <= 0.02 * max_abs(wb.grad()));
}

namespace {
/// The host kernels behind a counter: proves that every op reaches its device's installed set.
class counting_kernels final : public to::kernel_set {
public:
  mutable int forwards = 0, backwards = 0, losses = 0;
  const char* name() const noexcept override { return "counting host"; }
  void forward(const to::device_context& ctx, const to::logits_ref& x, const std::int64_t* t, double T, float* logp, double* lse,
               float* ent) const override {
    ++forwards;
    host_.forward(ctx, x, t, T, logp, lse, ent);
  }
  void backward(const to::device_context& ctx, const to::logits_ref& x, const std::int64_t* t, double T, const to::backward_arrays& in,
                void* grad) const override {
    ++backwards;
    host_.backward(ctx, x, t, T, in, grad);
  }
  g::loss_result grpo_loss(const to::device_context& ctx, const to::logits_ref& x, const std::int64_t* t,
                           const g::loss_arrays<float>& in, const g::loss_options& o, const g::loss_normalizer& n, double T,
                           void* grad) const override {
    ++losses;
    return host_.grpo_loss(ctx, x, t, in, o, n, T, grad);
  }

private:
  to::host_kernel_set host_;
};
} // namespace

BOOST_AUTO_TEST_CASE(ops_run_the_kernel_set_installed_for_their_device) {
  BOOST_TEST(std::string(to::installed_kernels(to::device_kind::cpu)->name()) == "host (msrl::kernels)");
  BOOST_TEST(to::installed_kernels(to::device_kind::cuda) == nullptr); // this test program installs none
  counting_kernels counting;
  const to::kernel_set* previous = to::install_kernels(to::device_kind::cpu, &counting);
  torch::manual_seed(4);
  const auto x0 = torch::randn({2, 3, 50});
  const auto y = torch::randint(0, 50, {2, 3}, torch::kLong);
  auto x = x0.clone().requires_grad_(true);
  to::selective_log_softmax(x, y).sum().backward();
  const auto g_logp = x.grad().clone();
  x.grad().zero_();
  auto [lp, ent] = to::selective_log_softmax_with_entropy(x, y);
  (lp.sum() + ent.sum()).backward();
  x.grad().zero_();
  to::grpo_loss(x, y, {}, {}, torch::tensor({1.0f, -1.0f}), {}, g::loss_options{}).backward();
  auto h = torch::randn({6, 4}).requires_grad_(true), w = torch::randn({50, 4}).requires_grad_(true);
  to::linear_selective_log_softmax(h, w, y.reshape({6}), 1.0, 4).sum().backward(); // 2 chunks
  to::install_kernels(to::device_kind::cpu, nullptr);
  BOOST_TEST(to::installed_kernels(to::device_kind::cpu) == previous); // nullptr restored the default
  BOOST_TEST(counting.forwards == 1 + 1 + 2);
  BOOST_TEST(counting.backwards == 1 + 1 + 2);
  BOOST_TEST(counting.losses == 1);
  // and the default set gives the same gradient as the counted one
  auto x2 = x0.clone().requires_grad_(true);
  to::selective_log_softmax(x2, y).sum().backward();
  BOOST_TEST(max_abs(x2.grad() - g_logp) == 0.0);
}
