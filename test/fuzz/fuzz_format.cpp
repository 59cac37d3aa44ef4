// libFuzzer target: the four format styles on arbitrary bytes, checked against a std::regex
// transcription of the recorded regexes for short inputs and against their implications.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <msrl/reward/format.hpp>

#include "../reward/regex_reference.hpp"

namespace r = msrl::reward;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool m = r::check_format(text, r::format_style::msrl);
  const bool s = r::check_format(text, r::format_style::swift);
  const bool u = r::check_format(text, r::format_style::unifiedreward);
  const bool x = r::check_format(text, r::format_style::r1reward);
  // the stricter styles imply the looser ones
  if ((s && !u) || (x && !u) || (u && !m)) std::abort();
  if (size <= 512) { // std::regex recurses per character: keep the oracle to short inputs
    static const msrl_test::regex_reference ref;
    if (m != ref.format_msrl(text) || s != ref.format_swift(text) || u != ref.format_unified(text) ||
        x != ref.format_r1(text))
      std::abort();
  }
  return 0;
}
