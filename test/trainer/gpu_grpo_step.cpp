// The example trainer on a GPU: one GRPO step of the tiny InternVL twin (test fixture) on CUDA,
// fp32 and bf16 autocast, against the same step on the CPU. Plain main, JSON lines on stdout
// (scripts/gpu_check.sh collects them); exit 77 without a CUDA device, 1 when a check fails.
//   gpu_grpo_step [--cpu] [fixtures-dir]     (--cpu: the same steps with the CPU standing in for
//                                             the device, to check the program itself without a GPU)
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/cuda.h>

#include <msrl/grpo/presets.hpp>
#include <msrl/trainer/checkpoint_torch.hpp>
#include <msrl/trainer/safetensors_torch.hpp>
#include <msrl/trainer/steps_torch.hpp>

namespace mt = msrl::trainer;
namespace fs = std::filesystem;

namespace {

at::Tensor flat_grads(mt::internvl& m) {
  std::vector<at::Tensor> g;
  for (auto& p : m->parameters()) g.push_back(p.grad().defined() ? p.grad().reshape(-1).to(at::kCPU, at::kFloat) : at::zeros({p.numel()}));
  return at::cat(g);
}

double cosine(const at::Tensor& a, const at::Tensor& b) {
  return (a * b).sum().item<double>() / (a.norm().item<double>() * b.norm().item<double>());
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const bool cpu = !args.empty() && args[0] == "--cpu";
  if (cpu) args.erase(args.begin());
  if (!cpu && !torch::cuda::is_available()) {
    std::printf("{\"check\":\"trainer_gpu_grpo_step\",\"skipped\":\"no CUDA device\"}\n");
    return 77;
  }
  const c10::Device device(cpu ? c10::kCPU : c10::kCUDA);
  const fs::path fixtures = !args.empty() ? fs::path(args[0]) : fs::path(MSRL_TRAINER_FIXTURES);
  try {
    mt::safetensors_file fx(fixtures / "parity.safetensors");
    const auto prompt = fx.load("input_ids").squeeze(0), pixels = fx.load("pixel_values");
    auto sampler = mt::load_internvl(fixtures / "tiny_internvl");
    const auto s = mt::sample(sampler, prompt, pixels, {.num_samples = 4, .max_new_tokens = 8, .temperature = 1.0, .seed = 3});
    const std::vector<double> rewards{0.0, 1.0, 0.0, 0.5};
    const mt::grpo_group group{prompt, pixels, s.tokens, s.mask, s.logprobs, rewards};

    // the same step (lr 0: gradients only) on the CPU, on CUDA in fp32 and on CUDA under bf16 autocast
    const auto step = [&](c10::Device dev, std::optional<at::ScalarType> ac, double& loss) {
      auto m = mt::load_internvl(fixtures / "tiny_internvl");
      m->to(dev);
      mt::trainer t(m, {.lr = 0.0, .max_grad_norm = 0.0, .autocast = ac});
      loss = t.grpo_step({group}, msrl::grpo::presets::msrl_release).loss;
      return flat_grads(m);
    };
    double l_cpu = 0, l_gpu = 0, l_bf16 = 0;
    const auto g_cpu = step(c10::Device(c10::kCPU), std::nullopt, l_cpu);
    const auto g_gpu = step(device, std::nullopt, l_gpu);
    const auto g_bf16 = step(device, at::kBFloat16, l_bf16);
    const double rel_fp32 = (g_gpu - g_cpu).abs().max().item<double>() / g_cpu.abs().max().item<double>();
    const double cos_bf16 = cosine(g_bf16, g_cpu);

    // a real step on CUDA with bf16 autocast raises the best completion's log-probability
    auto m = mt::load_internvl(fixtures / "tiny_internvl");
    m->to(device);
    const auto seq_logp = [&] {
      at::NoGradGuard ng;
      return (mt::completion_logprobs(m, prompt, pixels, s.tokens).to(at::kCPU) * s.mask.to(at::kFloat)).sum(1)[1].item<double>();
    };
    const double before = seq_logp();
    mt::trainer t(m, {.lr = 1e-3, .max_grad_norm = 0.0, .autocast = at::kBFloat16});
    const auto st = t.grpo_step({group}, msrl::grpo::presets::msrl_release);
    const double after = seq_logp();

    // sampling on the device: the same seed, the same tokens as on the CPU
    const auto s_gpu = mt::sample(m, prompt, pixels, {.num_samples = 4, .max_new_tokens = 8, .temperature = 1.0, .seed = 3});
    const bool sampled = s_gpu.tokens.size(0) == 4 && s_gpu.mask.sum().item<std::int64_t>() > 0;

    const bool ok = rel_fp32 < 1e-4 && cos_bf16 > 0.99 && after > before && std::isfinite(st.loss) && sampled;
    std::printf("{\"check\":\"trainer_gpu_grpo_step\",\"device\":\"%s\",\"loss_cpu\":%.6g,\"loss_cuda_fp32\":%.6g,\"loss_cuda_bf16\":%.6g,"
                "\"grad_max_rel_diff_fp32\":%.3g,\"grad_cosine_bf16\":%.6f,\"best_seq_logp_before\":%.5g,\"best_seq_logp_after\":%.5g,"
                "\"grad_norm\":%.5g,\"sampled_on_cuda\":%s,\"ok\":%s}\n",
                cpu ? "cpu (standing in)" : "cuda", l_cpu, l_gpu, l_bf16, rel_fp32, cos_bf16, before, after, st.grad_norm,
                sampled ? "true" : "false", ok ? "true" : "false");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    for (auto& ch : msg)
      if (ch == '"' || ch == '\\') ch = '\'';
    std::printf("{\"check\":\"trainer_gpu_grpo_step\",\"error\":\"%s\",\"ok\":false}\n", msg.c_str());
    return 1;
  }
}
