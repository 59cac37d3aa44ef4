// libFuzzer target: presets, batch scoring, CMKD selection and voting on fuzzed samples. The input
// is split at 0x1e bytes into completions; the last piece is the gold label, the first the caption.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include <msrl/reward.hpp>

namespace r = msrl::reward;
namespace v = msrl::voting;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  for (std::size_t b = 0;;) {
    const std::size_t e = text.find('\x1e', b);
    parts.push_back(text.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b));
    if (e == std::string_view::npos) break;
    b = e + 1;
  }
  const std::string_view gold = parts.back();
  std::vector<r::sample> batch;
  for (std::string_view p : parts) batch.push_back({.completion = p, .solution = gold, .task_type = "text"});
  for (auto name : r::preset_names) {
    const auto rs = r::preset(name);
    const auto sc = rs.score(batch);
    if (sc.values.size() != sc.rows * sc.columns) std::abort();
    // no token counts here, so the length terms are NaN and skipped; the `cosine` preset's
    // repetition penalty (words) brings its totals down to -1
    for (double t : sc.totals)
      if (!std::isfinite(t) || t < -1.0 || t > 3.0) std::abort();
  }
  std::vector<double> lp(parts.size());
  std::vector<v::cmkd_candidate> cands;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    lp[i] = -static_cast<double>(parts[i].size() % 7);
    cands.push_back({parts[i], std::span<const double>(&lp[i], 1), 0.5});
  }
  std::string_view caption = parts.front();
  try {
    (void)v::cmkd_target(caption, "x", r::label::a);
  } catch (const msrl::error&) {
    caption = "c"; // cmkd_select rejects the same captions with the same exception
  }
  const auto s = v::cmkd_select(cands, caption);
  if (s.status == v::sample_status::kept) {
    if (s.chosen >= cands.size() || s.pseudo_label == r::label::none) std::abort();
    if (r::parse_label(s.target) != s.pseudo_label || !r::caption_first(s.target)) std::abort();
  }
  const auto vr = v::vote_at_k(parts, 0, r::label_format::any, v::tie_policy::first_vote);
  if (vr.a + vr.b + vr.invalid != parts.size()) std::abort();
  return 0;
}
