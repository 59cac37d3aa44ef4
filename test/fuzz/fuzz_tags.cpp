// libFuzzer target: tag search and extraction on arbitrary bytes, with structural invariants.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <msrl/reward/tags.hpp>

namespace r = msrl::reward;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (std::string_view tag : {"think", "answer", "type", "caption", "a"}) {
    for (bool ic : {true, false})
      for (bool dot : {true, false}) {
        const auto m = r::find_tag(text, tag, {.ignore_case = ic, .dot_all = dot}, size / 3);
        if (!m) continue;
        // offsets are ordered, inside the text, and the content has no newline without DOTALL
        if (!(size / 3 <= m->open && m->open < m->content_begin && m->content_begin <= m->content_end &&
              m->content_end < m->close_end && m->close_end <= size))
          std::abort();
        if (!dot && text.substr(m->content_begin, m->content_end - m->content_begin).find('\n') != std::string_view::npos)
          std::abort();
        if (text[m->open] != '<' || text[m->content_end] != '<' || text[m->content_end + 1] != '/') std::abort();
      }
    const std::string_view c = r::extract_tag(text, tag);
    if (!c.empty() && (c.data() < text.data() || c.data() + c.size() > text.data() + size)) std::abort();
  }
  const std::size_t k = r::count(text, "<think>");
  if (k > size / 7 + 1) std::abort();
  const std::size_t f = r::find(text, "</ANSWER>", 0, true);
  if (f != std::string_view::npos && !r::iequals(text.substr(f, 9), "</answer>")) std::abort();
  return 0;
}
