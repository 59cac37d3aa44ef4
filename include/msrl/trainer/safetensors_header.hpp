#pragma once
/// \file The safetensors header and the sharded-checkpoint index, parsed and validated without
/// libtorch (safetensors_torch.hpp reads the tensors they describe).
///
///   auto h = msrl::trainer::safetensors_header::from_bytes(bytes, size, "model.safetensors");
///   for (const auto& name : h.names) h.tensors.at(name).shape;   // dtype, element_size, offsets
///   auto shards = msrl::trainer::parse_safetensors_index(text, "model.safetensors.index.json");
///
/// Format (huggingface/safetensors README): u64 little-endian header length N, N bytes of UTF-8
/// JSON (right-padded with spaces), then the data buffer. Offsets are relative to the buffer,
/// end-exclusive; the buffer must be covered exactly (no holes, no overlaps). Every violation is a
/// msrl::parse_error naming the file and the rule: a header longer than the file or than
/// max_header_bytes, JSON that is not an object or repeats a name, an entry without a known dtype,
/// a shape of non-negative integers or data_offsets [begin, end], a shape whose element count or
/// byte size overflows 64 bits, a byte range that differs from shape x element size or lies past
/// the data buffer, and __metadata__ that is not an object of strings. Nothing is allocated beyond
/// the header text and what it describes, so a file cannot ask for more memory than it holds.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace msrl::trainer {

namespace detail {

[[noreturn]] inline void st_fail(const std::string& file, const std::string& rule) {
  throw parse_error("safetensors: file '" + file + "' " + rule);
}

/// Bytes per element of a safetensors dtype name; 0 for a name msrl does not read (the subset that
/// libtorch represents: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL).
inline std::size_t st_dtype_size(std::string_view s) {
  static constexpr std::pair<std::string_view, std::size_t> table[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8},
                                                                       {"I64", 8}, {"I32", 4}, {"I16", 2},  {"I8", 1},
                                                                       {"U8", 1},  {"BOOL", 1}};
  for (const auto& [n, size] : table)
    if (s == n) return size;
  return 0;
}

inline bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& r) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return true;
  r = a * b;
  return false;
}

} // namespace detail

/// One tensor's header entry.
struct safetensors_tensor_info {
  std::string dtype;                ///< the safetensors dtype name (F32, BF16, ...)
  std::size_t element_size = 0;     ///< bytes per element
  std::vector<std::int64_t> shape;  ///< every entry in [0, INT64_MAX]
  std::uint64_t begin = 0, end = 0; ///< relative to the data buffer; end - begin = numel x element_size
};

/// A parsed, validated safetensors header.
struct safetensors_header {
  /// Largest header accepted (the reference reader's limit).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  std::uint64_t data_offset = 0;                          ///< 8 + header length
  std::uint64_t data_size = 0;                            ///< file size - data_offset
  std::vector<std::string> names;                         ///< tensor names, sorted
  std::map<std::string, safetensors_tensor_info> tensors; ///< by name
  std::map<std::string, std::string> metadata;            ///< the __metadata__ entry

  /// The header length N from the file's first 8 bytes (little-endian), checked against the
  /// limit and against `file_size` (8 + N must fit).
  static std::uint64_t header_length(const unsigned char (&len)[8], std::uint64_t file_size, const std::string& file) {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    if (n > max_header_bytes)
      detail::st_fail(file, "declares a header of " + std::to_string(n) + " bytes (limit 100000000)");
    if (n < 2 || 8 + n > file_size)
      detail::st_fail(file, "is truncated: header length " + std::to_string(n) + " does not fit in " +
                                std::to_string(file_size) + " bytes");
    return n;
  }

  /// Parses and validates the JSON header `text` of a file of `file_size` bytes whose header is
  /// text.size() bytes long.
  static safetensors_header parse(const std::string& file, std::uint64_t file_size, std::string_view text) {
    if (text.empty() || text[0] != '{') detail::st_fail(file, "has a header that does not start with '{'");
    if (8 + static_cast<std::uint64_t>(text.size()) > file_size)
      detail::st_fail(file, "is truncated inside the header");
    safetensors_header h;
    h.data_offset = 8 + static_cast<std::uint64_t>(text.size());
    h.data_size = file_size - h.data_offset;

    // Duplicate keys are an error in safetensors; nlohmann keeps the last one, so count them.
    std::set<std::string> seen;
    bool duplicate = false;
    std::string dup;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text.begin(), text.end(),
                                [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& v) {
                                  if (depth == 1 && ev == nlohmann::json::parse_event_t::key && v.is_string()) {
                                    if (!seen.insert(v.get<std::string>()).second) {
                                      duplicate = true;
                                      dup = v.get<std::string>();
                                    }
                                  }
                                  return true;
                                });
    } catch (const nlohmann::json::exception& e) {
      detail::st_fail(file, std::string("has a header that is not valid JSON: ") + e.what());
    }
    if (duplicate) detail::st_fail(file, "has the tensor name '" + dup + "' twice");
    if (!j.is_object()) detail::st_fail(file, "has a header that is not a JSON object");

    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& name = it.key();
      const auto& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) detail::st_fail(file, "has __metadata__ that is not an object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string())
            detail::st_fail(file, "has __metadata__ value '" + m.key() + "' that is not a string");
          h.metadata[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = "has tensor '" + name + "' ";
      if (!v.is_object()) detail::st_fail(file, where + "whose entry is not an object");
      safetensors_tensor_info e;
      if (!v.contains("dtype") || !v["dtype"].is_string()) detail::st_fail(file, where + "without a string dtype");
      e.dtype = v["dtype"].get<std::string>();
      e.element_size = detail::st_dtype_size(e.dtype);
      if (e.element_size == 0) detail::st_fail(file, where + "with unsupported dtype '" + e.dtype + "'");
      if (!v.contains("shape") || !v["shape"].is_array()) detail::st_fail(file, where + "without a shape array");
      std::uint64_t numel = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_unsigned())
          detail::st_fail(file, where + "with a shape entry that is not a non-negative integer");
        const auto x = d.get<std::uint64_t>();
        if (x > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
            detail::mul_overflows(numel, x, numel))
          detail::st_fail(file, where + "with a shape whose element count overflows");
        e.shape.push_back(static_cast<std::int64_t>(x));
      }
      const auto& off = v.contains("data_offsets") ? v["data_offsets"] : nlohmann::json();
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        detail::st_fail(file, where + "without data_offsets [begin, end] of non-negative integers");
      e.begin = off[0].get<std::uint64_t>();
      e.end = off[1].get<std::uint64_t>();
      if (e.begin > e.end) detail::st_fail(file, where + "with data_offsets begin > end");
      if (e.end > h.data_size)
        detail::st_fail(file, where + "whose data_offsets end " + std::to_string(e.end) +
                                  " lies past the data buffer (" + std::to_string(h.data_size) +
                                  " bytes; file truncated?)");
      std::uint64_t bytes = 0;
      if (detail::mul_overflows(numel, static_cast<std::uint64_t>(e.element_size), bytes) || bytes != e.end - e.begin)
        detail::st_fail(file, where + "whose byte range (" + std::to_string(e.end - e.begin) +
                                  ") does not match shape x dtype size");
      ranges.emplace_back(e.begin, e.end);
      h.names.push_back(name);
      h.tensors.emplace(name, std::move(e));
    }
    std::sort(ranges.begin(), ranges.end());
    std::uint64_t at = 0;
    for (const auto& [b, e] : ranges) {
      if (b != at)
        detail::st_fail(file, b < at ? "has overlapping tensor data ranges" : "has a hole in the data buffer");
      at = e;
    }
    if (at != h.data_size)
      detail::st_fail(file, "has " + std::to_string(h.data_size - at) + " trailing bytes not covered by any tensor");
    return h;
  }

  /// Parses the header of a whole safetensors file held in memory.
  static safetensors_header from_bytes(const std::uint8_t* bytes, std::size_t size,
                                       const std::string& file = "<memory>") {
    require(bytes != nullptr || size == 0, "safetensors_header::from_bytes", "bytes", "must not be null");
    if (size < 8) detail::st_fail(file, "is shorter than the 8-byte header length");
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = bytes[i];
    const std::uint64_t n = header_length(len, size, file);
    return parse(file, size, std::string_view(reinterpret_cast<const char*>(bytes) + 8, static_cast<std::size_t>(n)));
  }
};

/// Parses model.safetensors.index.json (`text`, read from `index`): the shard file names of its
/// weight_map, each with the tensor names it must hold. A shard must be a plain file name in the
/// index's folder (no '/', '\\' or NUL; not "." or ".."). Errors: msrl::parse_error naming `index`.
inline std::map<std::string, std::vector<std::string>> parse_safetensors_index(std::string_view text,
                                                                               const std::string& index) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    throw parse_error("checkpoint: index '" + index + "' is not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw parse_error("checkpoint: index '" + index + "' has no weight_map object");
  std::map<std::string, std::vector<std::string>> by_file;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      throw parse_error("checkpoint: index '" + index + "' maps '" + it.key() + "' to a non-string");
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard == "." || shard == ".." ||
        shard.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos)
      throw parse_error("checkpoint: index '" + index + "' names shard '" + shard +
                        "', which is not a plain file name");
    by_file[shard].push_back(it.key());
  }
  return by_file;
}

} // namespace msrl::trainer
