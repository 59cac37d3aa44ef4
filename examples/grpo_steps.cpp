// GRPO on bundled toy judgments, with nothing but <msrl/grpo.hpp>.
//
// Each prompt of examples/data/toy_judgments.tsv is a pairwise judgment with a gold label A or B.
// The "model" is a tabular policy: one row of logits per (prompt, position) over a tiny vocabulary
// (5 reasoning tokens, "<answer>A</answer>", "<answer>B</answer>", EOS). Every step samples G = 8
// completions per prompt, scores them with verifiable rewards (accuracy 1/0, format 1/0 weighted
// by the preset's convention), forms group-relative advantages, and takes `mu` optimisation passes
// with the clipped-ratio loss. The closed-form d loss / d logp from msrl is chained through the
// softmax by hand (d logp / d logits = onehot - softmax), so no autograd is needed.
//
//   grpo_steps --data FILE [--preset NAME] [--steps N] [--seed S] [--mu M] [--lr LR]
#include <msrl/grpo.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int vocab = 8, answer_a = 5, answer_b = 6, eos = 7, max_len = 6, group = 8;

struct judgment {
  std::string id, task;
  int gold;          // answer_a or answer_b
  double difficulty; // initial bias toward the wrong answer
};

std::vector<judgment> load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw msrl::invalid_argument("grpo_steps: argument '--data' cannot open '" + path + "'");
  std::vector<judgment> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    judgment j;
    std::string sol;
    if (!(ss >> j.id >> j.task >> sol >> j.difficulty) || (sol != "A" && sol != "B"))
      throw msrl::parse_error(path + ":" + std::to_string(lineno) +
                              ": expected 'id task_type solution(A|B) difficulty'");
    j.gold = sol == "A" ? answer_a : answer_b;
    out.push_back(j);
  }
  if (out.empty()) throw msrl::invalid_argument("grpo_steps: argument '--data' holds no judgments: " + path);
  return out;
}

struct policy {
  std::vector<double> logits; // [prompts, max_len, vocab]
  double* row(std::size_t p, int t) { return &logits[(p * max_len + static_cast<std::size_t>(t)) * vocab]; }
  const double* row(std::size_t p, int t) const { return &logits[(p * max_len + static_cast<std::size_t>(t)) * vocab]; }
};

void log_softmax(const double* z, double* out) {
  double m = z[0];
  for (int v = 1; v < vocab; ++v) m = std::max(m, z[v]);
  double s = 0;
  for (int v = 0; v < vocab; ++v) s += std::exp(z[v] - m);
  const double lse = m + std::log(s);
  for (int v = 0; v < vocab; ++v) out[v] = z[v] - lse;
}

} // namespace

int main(int argc, char** argv) try {
  std::string data = "examples/data/toy_judgments.tsv", preset_name = "msrl_release";
  int steps = 40, mu = 2;
  unsigned seed = 1234;
  double lr = 30.0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw msrl::invalid_argument("grpo_steps: argument '" + a + "' needs a value");
      return argv[++i];
    };
    if (a == "--data") data = next();
    else if (a == "--preset") preset_name = next();
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--mu") mu = std::stoi(next());
    else if (a == "--seed") seed = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--lr") lr = std::stod(next());
    else if (a == "--help" || a == "-h") {
      std::puts("grpo_steps --data FILE [--preset NAME] [--steps N] [--mu M] [--seed S] [--lr LR]");
      return 0;
    } else throw msrl::invalid_argument("grpo_steps: unknown argument '" + a + "'");
  }
  if (steps < 1 || mu < 1) throw msrl::invalid_argument("grpo_steps: arguments '--steps' and '--mu' must be >= 1");

  const msrl::grpo::preset& cfg = msrl::grpo::find_preset(preset_name);
  const auto tasks = load(data);
  const std::size_t P = tasks.size();

  // Initial policy: prefer reasoning early, the wrong answer by `difficulty`, EOS after an answer.
  policy pol{std::vector<double>(P * max_len * vocab, 0.0)};
  for (std::size_t p = 0; p < P; ++p)
    for (int t = 0; t < max_len; ++t) {
      double* z = pol.row(p, t);
      z[tasks[p].gold == answer_a ? answer_b : answer_a] += tasks[p].difficulty;
      z[eos] -= 1.0;
    }
  const policy ref = pol;

  std::mt19937 rng(seed);
  const std::size_t prompts_per_step = 8, B = prompts_per_step * group, T = max_len;
  // Format/accuracy weights follow the preset family: MSRL release scripts weight format 0.2.
  const double w_acc = 1.0, w_fmt = cfg.name == std::string_view("msrl_release") ? 0.2 : 1.0;

  std::printf("preset %s: %zu judgments, G=%d, %zu prompts/step, mu=%d, beta=%g, eps=%g/%g\n",
              std::string(cfg.name).c_str(), P, group, prompts_per_step, mu, cfg.loss.beta, cfg.loss.clip_low,
              cfg.loss.clip_high);
  std::printf("%5s %8s %8s %10s %8s %8s %9s %9s\n", "step", "reward", "acc", "loss", "clipfrac", "ratio", "kl", "zero_std");

  for (int step = 0; step < steps; ++step) {
    // ---- rollout: sample B completions with the current (old) policy
    std::vector<std::size_t> prompt(B);
    std::vector<int> tok(B * T, eos);
    std::vector<std::uint8_t> mask(B * T, 0);
    std::vector<double> old_lp(B * T, 0.0), ref_lp(B * T, 0.0), rewards(B * 2, 0.0);
    double acc_sum = 0;
    for (std::size_t q = 0; q < prompts_per_step; ++q) {
      const std::size_t p = std::uniform_int_distribution<std::size_t>(0, P - 1)(rng);
      for (int g = 0; g < group; ++g) {
        const std::size_t b = q * group + static_cast<std::size_t>(g);
        prompt[b] = p;
        int answer = -1;
        bool ended = false;
        for (std::size_t t = 0; t < T && !ended; ++t) {
          double lp[vocab], lq[vocab];
          log_softmax(pol.row(p, static_cast<int>(t)), lp);
          log_softmax(ref.row(p, static_cast<int>(t)), lq);
          std::vector<double> probs(vocab);
          for (int v = 0; v < vocab; ++v) probs[v] = std::exp(lp[v]);
          const int y = std::discrete_distribution<int>(probs.begin(), probs.end())(rng);
          tok[b * T + t] = y;
          mask[b * T + t] = 1;
          old_lp[b * T + t] = lp[y];
          ref_lp[b * T + t] = lq[y];
          if ((y == answer_a || y == answer_b) && answer < 0) answer = y;
          if (y == eos) ended = true;
        }
        const double acc = answer == tasks[p].gold ? 1.0 : 0.0;
        const double fmt = (answer >= 0 && ended) ? 1.0 : 0.0; // an answer and a clean stop
        rewards[b * 2 + 0] = acc;
        rewards[b * 2 + 1] = fmt;
        acc_sum += acc;
      }
    }
    // ---- advantages from two reward columns with weights
    std::vector<double> adv(B);
    const double weights[2] = {w_acc, w_fmt};
    const auto st = msrl::grpo::advantages(msrl::grpo::reward_matrix<double>{rewards, 2, weights}, group,
                                           std::span<double>(adv), cfg.advantages);
    double reward_mean = 0;
    for (std::size_t b = 0; b < B; ++b) reward_mean += w_acc * rewards[b * 2] + w_fmt * rewards[b * 2 + 1];
    reward_mean /= static_cast<double>(B);

    // ---- mu optimisation passes on the same rollout (ratio != 1 from the second pass on)
    msrl::grpo::loss_result res;
    const double global_tokens = [&] { double n = 0; for (auto m : mask) n += m; return n; }();
    for (int it = 0; it < mu; ++it) {
      std::vector<double> lp(B * T, 0.0), grad(B * T, 0.0);
      for (std::size_t b = 0; b < B; ++b)
        for (std::size_t t = 0; t < T; ++t) {
          if (!mask[b * T + t]) continue;
          double l[vocab];
          log_softmax(pol.row(prompt[b], static_cast<int>(t)), l);
          lp[b * T + t] = l[tok[b * T + t]];
        }
      msrl::grpo::loss_inputs<double> in{msrl::token_layout::padded(B, T), lp, old_lp, ref_lp, adv, mask};
      msrl::grpo::loss_normalizer norm;
      if (cfg.global_token_count) norm.global_tokens = global_tokens;
      res = msrl::grpo::policy_loss(msrl::backend::host_threads{}, in, cfg.loss, norm, std::span<double>(grad));
      // chain rule through log-softmax, then SGD on the logits
      for (std::size_t b = 0; b < B; ++b)
        for (std::size_t t = 0; t < T; ++t) {
          if (!mask[b * T + t]) continue;
          double* z = pol.row(prompt[b], static_cast<int>(t));
          double l[vocab];
          log_softmax(z, l);
          const double g = grad[b * T + t];
          for (int v = 0; v < vocab; ++v)
            z[v] -= lr * g * ((v == tok[b * T + t] ? 1.0 : 0.0) - std::exp(l[v]));
        }
    }
    std::printf("%5d %8.4f %8.4f %10.5f %8.4f %8.4f %9.5f %9.4f\n", step, reward_mean,
                acc_sum / static_cast<double>(B), res.loss, res.metrics.clip_fraction, res.metrics.ratio_mean,
                res.metrics.kl_mean, st.zero_std_fraction);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
