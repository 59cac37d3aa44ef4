// The libtorch ops on CUDA tensors (msrl::torch_ops with the CUDA kernel set installed): values and
// the gradients backward() leaves, against libtorch's own autograd in double on the GPU (log-probs,
// entropy) and against the same op on CPU tensors (GRPO loss, fused linear), fp32 and bf16; then
// the op's fwd + bwd time against torch eager's in the same run. Plain main, JSON lines on stdout
// (scripts/gpu_check.sh collects them); exit 77 without a CUDA device, 1 when a check fails.
// Needs a CUDA libtorch; the CUDA kernels come from cuda_kernels_install.cu (nvcc).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/torch.h>

#include <msrl/grpo/presets.hpp>
#include <msrl/torch/logprob_ops.hpp>

void msrl_install_cuda_kernels(); // cuda_kernels_install.cu

namespace to = msrl::torch_ops;

namespace {

int failures = 0;

void check(const std::string& name, double err, double tol) {
  const bool ok = err <= tol;
  failures += !ok;
  std::printf("{\"check\": \"torch_cuda_%s\", \"max_err\": %.3e, \"tol\": %.1e, \"ok\": %s}\n", name.c_str(), err, tol, ok ? "true" : "false");
}

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

double rel(const at::Tensor& a, const at::Tensor& b) {
  return max_abs(a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)) / std::max(1e-30, max_abs(b.to(at::kCPU, at::kDouble)));
}

template <class F>
double median_ms(F&& f, int reps) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    torch::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    torch::cuda::synchronize();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

} // namespace

int main() {
  if (!torch::cuda::is_available()) {
    std::printf("{\"skipped\": \"no CUDA device\"}\n");
    return 77;
  }
  msrl_install_cuda_kernels();
  torch::manual_seed(0);
  const auto cuda = at::TensorOptions().device(at::kCUDA);

  // refused before install is covered on the CPU; here: the ops run and match autograd in double
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const std::string tag = dtype == at::kFloat ? "fp32" : "bf16";
    const long N = 96, V = 151936;
    const auto x0 = (torch::randn({N, V}, cuda) * 3).to(dtype);
    const auto y = torch::randint(0, V, {N}, cuda.dtype(at::kLong));
    const auto up = torch::randn({N}, cuda), uh = torch::randn({N}, cuda) * 0.1;
    auto xa = x0.clone().requires_grad_(true);
    auto [la, ha] = to::selective_log_softmax_with_entropy(xa, y, 0.8);
    ((la * up).sum() + (ha * uh).sum()).backward();
    auto xb = x0.to(at::kDouble).requires_grad_(true);
    auto lsm = torch::log_softmax(xb / 0.8, -1);
    auto lb = lsm.gather(-1, y.unsqueeze(-1)).squeeze(-1);
    auto hb = -(lsm.exp() * lsm).sum(-1);
    ((lb * up.to(at::kDouble)).sum() + (hb * uh.to(at::kDouble)).sum()).backward();
    check("logp_" + tag, max_abs(la.to(at::kDouble) - lb), 1e-5);
    check("entropy_" + tag, max_abs(ha.to(at::kDouble) - hb), 1e-4);
    check("grad_logits_" + tag, rel(xa.grad(), xb.grad()), dtype == at::kFloat ? 1e-6 : 8e-3);

    // GRPO loss (verl preset, beta 0.04, packed offsets on the device) against the CPU op
    const auto opt = msrl::grpo::presets::verl_default.loss;
    const auto off = torch::tensor({0L, 40L, 40L, 96L}, at::kLong);
    const auto adv = torch::tensor({1.0f, -0.5f, 0.7f});
    const auto old = torch::randn({N}) * 0.1 - 12, ref = torch::randn({N}) * 0.1 - 12;
    auto mask = torch::ones({N}, at::kByte);
    mask[5].fill_(0);
    msrl::grpo::loss_metrics mg, mc;
    auto xg = x0.clone().requires_grad_(true);
    auto lg = to::grpo_loss(xg, y, old.to(at::kCUDA), ref.to(at::kCUDA), adv.to(at::kCUDA), mask.to(at::kCUDA), opt, {}, 1.0, &mg,
                            off.to(at::kCUDA));
    lg.backward();
    auto xc = x0.to(at::kCPU).requires_grad_(true);
    auto lc = to::grpo_loss(xc, y.to(at::kCPU), old, ref, adv, mask, opt, {}, 1.0, &mc, off);
    lc.backward();
    check("grpo_loss_" + tag, std::abs(lg.item<double>() - lc.item<double>()) / std::max(1.0, std::abs(lc.item<double>())), 1e-5);
    check("grpo_kl_mean_" + tag, std::abs(mg.kl_mean - mc.kl_mean), 1e-5);
    check("grpo_grad_" + tag, rel(xg.grad(), xc.grad()), dtype == at::kFloat ? 1e-5 : 8e-3);
  }

  // fused linear (at::mm on the GPU + msrl's sweeps) against the same op on the CPU
  {
    const long N = 40, H = 64, V = 32000;
    const auto h0 = torch::randn({N, H}), w0 = torch::randn({V, H}) * 0.2;
    const auto y = torch::randint(0, V, {N}, at::kLong);
    auto hg = h0.to(at::kCUDA).requires_grad_(true), wg = w0.to(at::kCUDA).requires_grad_(true);
    to::linear_selective_log_softmax(hg, wg, y.to(at::kCUDA), 1.0, 16).sum().backward();
    auto hc = h0.clone().requires_grad_(true), wc = w0.clone().requires_grad_(true);
    auto lc = to::linear_selective_log_softmax(hc, wc, y, 1.0, 16);
    lc.sum().backward();
    check("linear_logp", max_abs(to::linear_selective_log_softmax(h0.to(at::kCUDA), w0.to(at::kCUDA), y.to(at::kCUDA)).cpu() - lc), 1e-4);
    check("linear_grad_hidden", rel(hg.grad(), hc.grad()), 1e-4);
    check("linear_grad_weight", rel(wg.grad(), wc.grad()), 1e-4);
  }

  // refusals that the host kernels make while they read are made on the device by the ops
  {
    const auto x = torch::randn({2, 3, 50}, cuda);
    auto y = torch::randint(0, 50, {2, 3}, cuda.dtype(at::kLong));
    auto refused = [](auto&& f, const char* needle) {
      try {
        f();
      } catch (const msrl::invalid_argument& e) {
        return std::string(e.what()).find(needle) != std::string::npos;
      }
      return false;
    };
    auto y_big = y.clone();
    y_big[0][1].fill_(50);
    check("refuses_target_out_of_range", refused([&] { to::selective_log_softmax(x, y_big); }, "'targets' must be < V") ? 0 : 1, 0);
    auto y_neg = y.clone();
    y_neg[1][2].fill_(-100);
    const auto adv = torch::ones({2}, cuda);
    check("refuses_negative_unmasked_target",
          refused([&] { to::grpo_loss(x, y_neg, {}, {}, adv, {}, msrl::grpo::loss_options{}); }, "at unmasked tokens") ? 0 : 1, 0);
    auto mask = torch::ones({2, 3}, cuda.dtype(at::kByte));
    mask[1][2].fill_(0);
    check("masked_negative_target_accepted",
          refused([&] { to::grpo_loss(x, y_neg, {}, {}, adv, mask, msrl::grpo::loss_options{}); }, "'targets'") ? 1 : 0, 0);
  }

  // time: the op's forward + backward against torch eager's log_softmax + gather + autograd (bf16)
  {
    const long N = 8192, V = 151936;
    const auto x0 = torch::randn({N, V}, cuda.dtype(at::kBFloat16));
    const auto y = torch::randint(0, V, {N}, cuda.dtype(at::kLong));
    auto ours = [&] {
      auto x = x0.detach().requires_grad_(true);
      to::selective_log_softmax(x, y).sum().backward();
    };
    auto eager = [&] {
      auto x = x0.detach().requires_grad_(true);
      torch::log_softmax(x.to(at::kFloat), -1).gather(-1, y.unsqueeze(-1)).sum().backward();
    };
    ours(), eager();
    const double t_ours = median_ms(ours, 7), t_eager = median_ms(eager, 7);
    std::printf("{\"bench\": \"torch_op_logprob_fwd_bwd\", \"dtype\": \"bf16\", \"N\": %ld, \"V\": %ld, \"time_ms_median\": %.3f, "
                "\"torch_eager_ms\": %.3f, \"speedup\": %.2f}\n",
                N, V, t_ours, t_eager, t_eager / t_ours);
  }
  return failures ? 1 : 0;
}
