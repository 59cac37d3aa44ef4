// libFuzzer target: the safetensors header (include/msrl/trainer/safetensors_header.hpp) of a file
// held in memory, and the same bytes read as a sharded checkpoint's model.safetensors.index.json.
// Every malformed input must be refused with msrl::parse_error; an accepted header must describe
// tensors whose byte ranges are shape x element size, lie in the data buffer and cover it exactly,
// and an accepted index must name only plain shard file names.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <utility>
#include <vector>

#include <msrl/trainer/safetensors_header.hpp>

namespace {

void check_header(const std::uint8_t* data, std::size_t size) {
  const auto h = msrl::trainer::safetensors_header::from_bytes(data, size, "fuzz.safetensors");
  if (h.data_offset < 10 || h.data_offset > size || h.data_offset + h.data_size != size) std::abort();
  if (h.names.size() != h.tensors.size()) std::abort();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& name : h.names) {
    const auto& t = h.tensors.at(name);
    if (t.element_size != msrl::trainer::detail::st_dtype_size(t.dtype) || t.element_size == 0) std::abort();
    if (t.begin > t.end || t.end > h.data_size) std::abort();
    std::uint64_t numel = 1;
    for (const auto d : t.shape) {
      if (d < 0) std::abort();
      numel *= static_cast<std::uint64_t>(d); // cannot wrap: checked by the parser
    }
    if (numel * t.element_size != t.end - t.begin) std::abort();
    ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  std::uint64_t at = 0;
  for (const auto& [b, e] : ranges) {
    if (b != at) std::abort();
    at = e;
  }
  if (at != h.data_size) std::abort();
}

void check_index(const std::uint8_t* data, std::size_t size) {
  const auto shards = msrl::trainer::parse_safetensors_index(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.index.json");
  for (const auto& [shard, tensors] : shards) {
    if (shard.empty() || shard == "." || shard == ".." || tensors.empty()) std::abort();
    for (const char c : shard)
      if (c == '/' || c == '\\' || c == '\0') std::abort();
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    check_header(data, size);
  } catch (const msrl::parse_error&) {
  }
  try {
    check_index(data, size);
  } catch (const msrl::parse_error&) {
  }
  return 0;
}
