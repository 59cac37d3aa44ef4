// Downstream use of the installed trainer component (find_package(msrl COMPONENTS trainer)): a
// tiny random InternVL, G sampled completions, one GRPO step; the best completion's log-prob must rise.
#include <msrl/trainer/steps_torch.hpp>

#include <cstdio>
#include <vector>

int main() {
  namespace mt = msrl::trainer;
  mt::internvl_config cfg;
  cfg.vision = {.hidden_size = 16, .num_layers = 1, .num_heads = 2, .intermediate_size = 32, .image_size = 28, .patch_size = 14};
  cfg.text = {.hidden_size = 32, .num_layers = 1, .num_heads = 2, .num_kv_heads = 1, .head_dim = 16, .intermediate_size = 64, .vocab_size = 50};
  cfg.image_token_id = 49;
  cfg.validate("consumer");
  torch::manual_seed(0);
  mt::internvl model(cfg);
  const auto prompt = torch::tensor(std::vector<std::int64_t>{1, 2, 3, 4}, at::kLong);
  const auto s = mt::sample(model, prompt, at::Tensor(), {.num_samples = 4, .max_new_tokens = 6, .temperature = 1.0, .seed = 3});
  const std::vector<double> rewards{0.0, 1.0, 0.0, 0.0};
  const auto seq = [&] {
    at::NoGradGuard ng;
    return (mt::completion_logprobs(model, prompt, at::Tensor(), s.tokens) * s.mask.to(at::kFloat)).sum(1)[1].item<double>();
  };
  const double before = seq();
  mt::trainer t(model, {.lr = 1e-2, .max_grad_norm = 0.0});
  const auto st = t.grpo_step({{prompt, at::Tensor(), s.tokens, s.mask, s.logprobs, rewards}}, msrl::grpo::presets::msrl_release);
  const double after = seq();
  if (!(after > before) || !(st.grad_norm > 0) || st.advantages.num_groups != 1) {
    std::printf("GRPO step did not raise the best completion: %g -> %g (grad norm %g)\n", before, after, st.grad_norm);
    return 1;
  }
  std::printf("consumer_trainer: best completion log-prob %g -> %g\n", before, after);
  return 0;
}
