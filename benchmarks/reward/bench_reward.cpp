// Reward scoring throughput, one core: msrl's linear-time rules vs a std::regex transcription of
// the same rules (test/reward/regex_reference.hpp), on the same synthetic stage-3 completions.
// Prints one JSON line per measurement and a final line with the ratio.
//   bench_reward [megabytes=64] [regex_megabytes=4]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <msrl/reward.hpp>

#include "regex_reference.hpp"

namespace r = msrl::reward;

namespace {

struct rng {
  std::uint64_t x;
  std::uint64_t next() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  }
};

// A plausible judgment: type, caption, a GRAM-R²-style rationale, an answer; 0.5-4 KB.
std::string completion(rng& g) {
  static const char* const words[] = {"the", "response", "image", "shows", "a", "detailed", "answer", "is", "more",
                                      "accurate", "because", "it", "follows", "instruction", "while", "other",
                                      "misses", "key", "object", "colour", "count", "Response", "A", "B", "better"};
  auto sentence = [&](std::size_t bytes) {
    std::string s;
    while (s.size() < bytes) {
      s += words[g.next() % (sizeof(words) / sizeof(words[0]))];
      s += (g.next() % 12 == 0) ? ".\n" : " ";
    }
    return s;
  };
  static const char* const types[] = {"Image Understanding", "image_generation", "Video Understanding", "video-generation"};
  std::string c = "<type>";
  c += types[g.next() % 4];
  c += "</type>\n<caption>" + sentence(100 + g.next() % 300) + "</caption>\n<think>\nFeedback: " +
       sentence(300 + g.next() % 2500) + "\nComparison: " + sentence(50 + g.next() % 300) +
       "\nConclusion: Response A is better.\n</think>\n<answer>" + (g.next() % 2 ? "A" : "B") + "</answer>";
  return c;
}

template <class F>
double best_seconds(int reps, F f) {
  double best = 1e300;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

} // namespace

int main(int argc, char** argv) {
  const double mb = argc > 1 ? std::atof(argv[1]) : 64.0;
  const double regex_mb = argc > 2 ? std::atof(argv[2]) : 4.0;
  rng g{0x9e3779b97f4a7c15ull};
  std::vector<std::string> texts;
  std::vector<r::sample> samples;
  std::size_t bytes = 0, regex_count = 0, regex_bytes = 0;
  while (static_cast<double>(bytes) < mb * 1e6) {
    texts.push_back(completion(g));
    bytes += texts.back().size();
    if (static_cast<double>(bytes) <= regex_mb * 1e6) {
      regex_count = texts.size();
      regex_bytes = bytes;
    }
  }
  const char* const types[] = {"image_understanding", "image_generation", "video_understanding", "video_generation"};
  for (std::size_t i = 0; i < texts.size(); ++i)
    samples.push_back({.completion = texts[i], .solution = (i % 3 ? "A" : "B"), .task_type = types[i % 4]});

  const auto paper = r::preset("paper");
  volatile double sink = 0;
  const double t_msrl = best_seconds(3, [&] {
    double s = 0;
    for (const auto& x : samples) s += paper(x);
    sink = s;
  });
  const double t_batch = best_seconds(3, [&] { sink = paper.score(samples).totals.back(); });
  // Format styles on stage-1 layouts (no <type>/<caption> prefix), so the anchored styles
  // scan the whole judgment instead of failing at the first byte.
  std::vector<std::string> stage1;
  std::size_t stage1_bytes = 0;
  for (const auto& t : texts) {
    stage1.push_back(t.substr(t.find("<think>")));
    stage1_bytes += stage1.back().size();
  }
  std::vector<double> per_style(4);
  const r::format_style styles[4] = {r::format_style::msrl, r::format_style::swift, r::format_style::unifiedreward,
                                     r::format_style::r1reward};
  for (int k = 0; k < 4; ++k)
    per_style[k] = best_seconds(3, [&] {
      std::size_t n = 0;
      for (const auto& t : stage1) n += r::check_format(t, styles[k]);
      sink = static_cast<double>(n);
    });

  const msrl_test::regex_reference ref;
  double ref_sum = 0, msrl_sum = 0;
  const double t_regex = best_seconds(1, [&] {
    double s = 0;
    for (std::size_t i = 0; i < regex_count; ++i)
      s += ref.paper(texts[i], std::string(samples[i].solution), std::string(samples[i].task_type));
    ref_sum = s;
  });
  for (std::size_t i = 0; i < regex_count; ++i) msrl_sum += paper(samples[i]);

  const double mbs_msrl = static_cast<double>(bytes) / 1e6 / t_msrl;
  const double mbs_batch = static_cast<double>(bytes) / 1e6 / t_batch;
  const double mbs_regex = static_cast<double>(regex_bytes) / 1e6 / t_regex;
  std::printf("{\"bench\":\"reward_paper_preset\",\"impl\":\"msrl\",\"completions\":%zu,\"bytes\":%zu,\"seconds\":%.6f,\"mb_per_s\":%.1f}\n",
              samples.size(), bytes, t_msrl, mbs_msrl);
  std::printf("{\"bench\":\"reward_paper_preset\",\"impl\":\"msrl_batch_columns\",\"completions\":%zu,\"bytes\":%zu,\"seconds\":%.6f,\"mb_per_s\":%.1f}\n",
              samples.size(), bytes, t_batch, mbs_batch);
  const char* names[4] = {"msrl", "swift", "unifiedreward", "r1reward"};
  for (int k = 0; k < 4; ++k)
    std::printf("{\"bench\":\"format_%s_stage1_layout\",\"impl\":\"msrl\",\"bytes\":%zu,\"seconds\":%.6f,\"mb_per_s\":%.1f}\n",
                names[k], stage1_bytes, per_style[k], static_cast<double>(stage1_bytes) / 1e6 / per_style[k]);
  std::printf("{\"bench\":\"reward_paper_preset\",\"impl\":\"std_regex\",\"completions\":%zu,\"bytes\":%zu,\"seconds\":%.6f,\"mb_per_s\":%.2f}\n",
              regex_count, regex_bytes, t_regex, mbs_regex);
  std::printf("{\"bench\":\"reward_paper_preset\",\"ratio_msrl_over_std_regex\":%.1f,\"same_totals\":%s,\"goal_mb_per_s\":200,\"goal_met\":%s}\n",
              mbs_msrl / mbs_regex, std::abs(ref_sum - msrl_sum) < 1e-6 ? "true" : "false",
              mbs_msrl >= 200.0 ? "true" : "false");
  (void)sink;
  return std::abs(ref_sum - msrl_sum) < 1e-6 ? 0 : 1;
}
