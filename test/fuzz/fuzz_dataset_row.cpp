// libFuzzer target: msrl-train's dataset rows (examples/pipeline/include/msrl_pipeline/dataset_rows.hpp):
// ms-swift JSONL rows (messages, images, videos, solution, task_type, caption, caption_messages,
// order), their A/B mirror, and the VL-RewardBench / GenAI-Bench benchmark layouts.
// Input: any bytes, read as a JSONL file. Every malformed row must be refused with msrl::error
// (naming file:line and the field); an accepted row's mirror, mirrored again, must be the row.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include <msrl_pipeline/dataset_rows.hpp>

namespace {

bool same_messages(const std::vector<msrl_pipeline::message>& a, const std::vector<msrl_pipeline::message>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].role != b[i].role || a[i].content != b[i].content) return false;
  return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  {
    std::istringstream in(text);
    try {
      for (const auto& r : msrl_pipeline::read_jsonl(in, "fuzz/rows.jsonl")) {
        if (r.messages.empty() || r.id.empty() || r.source.empty()) std::abort();
        try {
          const auto m = msrl_pipeline::mirrored(r);
          const auto back = msrl_pipeline::mirrored(m);
          if (m.solution == r.solution || back.solution != r.solution || !same_messages(back.messages, r.messages) ||
              back.images != r.images || back.videos != r.videos || back.order != r.order)
            std::abort();
        } catch (const msrl::error&) {
        }
      }
    } catch (const msrl::error&) {
    }
  }
  for (const char* layout : {"vlrb", "genai"}) {
    std::istringstream in(text);
    try {
      const auto rows = msrl_pipeline::read_benchmark(in, "fuzz/bench.jsonl", layout, "judge");
      if (rows.size() % 2 != 0) std::abort(); // every item in both orders
      for (const auto& r : rows)
        if (r.solution != "A" && r.solution != "B") std::abort();
    } catch (const msrl::error&) {
    }
  }
  return 0;
}
