// libFuzzer target: label normalisers and the task normaliser on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <msrl/reward/accuracy.hpp>
#include <msrl/reward/labels.hpp>
#include <msrl/reward/task.hpp>

namespace r = msrl::reward;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  r::label any = r::label::none;
  // the documented order of label_format::any: msrl, numeric, bracket, phrase
  for (auto f : {r::label_format::msrl, r::label_format::numeric, r::label_format::bracket, r::label_format::phrase}) {
    const r::label l = r::parse_label(text, f);
    if (l != r::label::none && l != r::label::a && l != r::label::b) std::abort();
    if (any == r::label::none) any = l;
  }
  if (r::parse_label(text, r::label_format::any) != any) std::abort(); // `any` = first format that parses
  // msrl label agrees with the string normaliser
  const std::string n = r::normalize_msrl(text);
  const r::label ml = r::parse_label(text, r::label_format::msrl);
  if ((ml == r::label::a) != (n == "A") || (ml == r::label::b) != (n == "B")) std::abort();
  // a text always matches its own normalised task, and the normal form is a fixed point
  const std::string t = r::normalize_task(text);
  if (!r::task_matches(text, t)) std::abort();
  if (!t.empty() && r::normalize_task(t) != t && t.find("<type>") == std::string::npos) std::abort();
  // accuracy is symmetric in the msrl style when both sides are non-empty
  const std::string_view half = text.substr(0, size / 2), rest = text.substr(size / 2);
  const double a1 = r::accuracy_reward{}({.completion = half, .solution = rest});
  const double a2 = r::accuracy_reward{}({.completion = rest, .solution = half});
  if (a1 != a2) std::abort();
  (void)r::accuracy_reward{.style = r::accuracy_style::exact}({.completion = half, .solution = rest});
  return 0;
}
