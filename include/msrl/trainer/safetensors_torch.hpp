#pragma once
/// \file safetensors reader and writer for libtorch tensors (component msrl::torch).
///
///   msrl::trainer::safetensors_file f(path);      // parses and validates the header only
///   at::Tensor w = f.load("lm_head.weight");      // reads one tensor (CPU, stored dtype)
///   msrl::trainer::save_safetensors(path, tensors, {{"format", "pt"}});
///   msrl::trainer::checkpoint ck(dir_or_file);     // model.safetensors or a sharded index
///   msrl::trainer::save_checkpoint(dir, tensors, {.max_shard_bytes = 5u << 30});
///
/// Format (huggingface/safetensors README): u64 little-endian header length N, N bytes of UTF-8
/// JSON (right-padded with spaces), then the data buffer. Offsets are relative to the buffer,
/// end-exclusive; the buffer must be covered exactly (no holes, no overlaps). The reader rejects
/// every violation with msrl::parse_error naming the file and the rule, before reading any data,
/// so a truncated or corrupt file never reaches from_blob. Tensors are read one at a time with
/// plain file reads (no mmap), so loading an 8B shard needs memory for one tensor at a time.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"

namespace msrl::trainer {

namespace fs = std::filesystem;

namespace detail {

[[noreturn]] inline void st_fail(const std::string& file, const std::string& rule) {
  throw parse_error("safetensors: file '" + file + "' " + rule);
}

/// safetensors dtype name <-> libtorch scalar type (the subset libtorch 1.13 represents).
inline bool st_dtype(const std::string& s, at::ScalarType& t) {
  static const std::pair<const char*, at::ScalarType> table[] = {
      {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"F64", at::kDouble},
      {"I64", at::kLong},  {"I32", at::kInt},  {"I16", at::kShort},     {"I8", at::kChar},
      {"U8", at::kByte},   {"BOOL", at::kBool}};
  for (const auto& [n, v] : table)
    if (s == n) {
      t = v;
      return true;
    }
  return false;
}

inline std::string st_dtype_name(at::ScalarType t) {
  switch (t) {
  case at::kFloat: return "F32";
  case at::kHalf: return "F16";
  case at::kBFloat16: return "BF16";
  case at::kDouble: return "F64";
  case at::kLong: return "I64";
  case at::kInt: return "I32";
  case at::kShort: return "I16";
  case at::kChar: return "I8";
  case at::kByte: return "U8";
  case at::kBool: return "BOOL";
  default: throw invalid_argument(std::string("save_safetensors: argument 'tensors' has dtype ") + c10::toString(t) + ", which safetensors cannot store here");
  }
}

inline bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& r) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return true;
  r = a * b;
  return false;
}

} // namespace detail

/// One tensor's header entry.
struct tensor_entry {
  at::ScalarType dtype = at::kFloat;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0; ///< relative to the data buffer
};

/// A parsed, validated safetensors file. Data is read on demand.
class safetensors_file {
public:
  /// Largest header accepted (the reference reader's limit).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  explicit safetensors_file(fs::path path) : path_(std::move(path)) {
    const std::string f = path_.string();
    std::error_code ec;
    if (!fs::is_regular_file(path_, ec)) detail::st_fail(f, "does not exist or is not a regular file");
    const std::uint64_t size = fs::file_size(path_, ec);
    if (ec) detail::st_fail(f, "cannot be sized: " + ec.message());
    if (size < 8) detail::st_fail(f, "is shorter than the 8-byte header length");
    std::ifstream in(path_, std::ios::binary);
    if (!in) detail::st_fail(f, "cannot be opened");
    unsigned char len[8];
    in.read(reinterpret_cast<char*>(len), 8);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    if (n > max_header_bytes) detail::st_fail(f, "declares a header of " + std::to_string(n) + " bytes (limit 100000000)");
    if (n < 2 || 8 + n > size) detail::st_fail(f, "is truncated: header length " + std::to_string(n) + " does not fit in " + std::to_string(size) + " bytes");
    std::string text(n, '\0');
    in.read(text.data(), static_cast<std::streamsize>(n));
    if (!in) detail::st_fail(f, "is truncated inside the header");
    if (text[0] != '{') detail::st_fail(f, "has a header that does not start with '{'");
    data_offset_ = 8 + n;
    data_size_ = size - data_offset_;

    // Duplicate keys are an error in safetensors; nlohmann keeps the last one, so count them.
    std::set<std::string> seen;
    bool duplicate = false;
    std::string dup;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& v) {
        if (depth == 1 && ev == nlohmann::json::parse_event_t::key && v.is_string()) {
          if (!seen.insert(v.get<std::string>()).second) {
            duplicate = true;
            dup = v.get<std::string>();
          }
        }
        return true;
      });
    } catch (const nlohmann::json::exception& e) {
      detail::st_fail(f, std::string("has a header that is not valid JSON: ") + e.what());
    }
    if (duplicate) detail::st_fail(f, "has the tensor name '" + dup + "' twice");
    if (!j.is_object()) detail::st_fail(f, "has a header that is not a JSON object");

    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& name = it.key();
      const auto& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) detail::st_fail(f, "has __metadata__ that is not an object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) detail::st_fail(f, "has __metadata__ value '" + m.key() + "' that is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = "has tensor '" + name + "' ";
      if (!v.is_object()) detail::st_fail(f, where + "whose entry is not an object");
      tensor_entry e;
      if (!v.contains("dtype") || !v["dtype"].is_string()) detail::st_fail(f, where + "without a string dtype");
      if (!detail::st_dtype(v["dtype"].get<std::string>(), e.dtype))
        detail::st_fail(f, where + "with unsupported dtype '" + v["dtype"].get<std::string>() + "'");
      if (!v.contains("shape") || !v["shape"].is_array()) detail::st_fail(f, where + "without a shape array");
      std::uint64_t numel = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_unsigned()) detail::st_fail(f, where + "with a shape entry that is not a non-negative integer");
        const auto x = d.get<std::uint64_t>();
        if (x > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) || detail::mul_overflows(numel, x, numel))
          detail::st_fail(f, where + "with a shape whose element count overflows");
        e.shape.push_back(static_cast<std::int64_t>(x));
      }
      const auto& off = v.contains("data_offsets") ? v["data_offsets"] : nlohmann::json();
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        detail::st_fail(f, where + "without data_offsets [begin, end] of non-negative integers");
      e.begin = off[0].get<std::uint64_t>();
      e.end = off[1].get<std::uint64_t>();
      if (e.begin > e.end) detail::st_fail(f, where + "with data_offsets begin > end");
      if (e.end > data_size_) detail::st_fail(f, where + "whose data_offsets end " + std::to_string(e.end) + " lies past the data buffer (" + std::to_string(data_size_) + " bytes; file truncated?)");
      std::uint64_t bytes = 0;
      if (detail::mul_overflows(numel, static_cast<std::uint64_t>(c10::elementSize(e.dtype)), bytes) || bytes != e.end - e.begin)
        detail::st_fail(f, where + "whose byte range (" + std::to_string(e.end - e.begin) + ") does not match shape x dtype size");
      ranges.emplace_back(e.begin, e.end);
      names_.push_back(name);
      entries_.emplace(name, std::move(e));
    }
    std::sort(ranges.begin(), ranges.end());
    std::uint64_t at = 0;
    for (const auto& [b, e] : ranges) {
      if (b != at) detail::st_fail(f, b < at ? "has overlapping tensor data ranges" : "has a hole in the data buffer");
      at = e;
    }
    if (at != data_size_) detail::st_fail(f, "has " + std::to_string(data_size_ - at) + " trailing bytes not covered by any tensor");
  }

  const fs::path& path() const noexcept { return path_; }
  const std::vector<std::string>& names() const noexcept { return names_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }

  const tensor_entry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw invalid_argument("safetensors: file '" + path_.string() + "' has no tensor '" + name + "'");
    return it->second;
  }

  /// Reads one tensor into fresh CPU memory in its stored dtype.
  at::Tensor load(const std::string& name) const {
    const tensor_entry& e = entry(name);
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    const std::uint64_t bytes = e.end - e.begin;
    if (bytes == 0) return t;
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(data_offset_ + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes));
    if (!in) detail::st_fail(path_.string(), "could not be read at tensor '" + name + "' (file changed or truncated)");
    return t;
  }

private:
  fs::path path_;
  std::uint64_t data_offset_ = 0, data_size_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, tensor_entry> entries_;
  std::map<std::string, std::string> metadata_;
};

/// Writes tensors (any device; copied to CPU, made contiguous) to one safetensors file atomically
/// (msrl::write_file_atomic_with: a unique temporary beside `path`, fsync, rename; `path` keeps its
/// old content on failure). A path that cannot be written: msrl::invalid_argument. Order: larger
/// element size first, then by name, so every tensor is naturally aligned after the 8-byte padded
/// header.
inline void save_safetensors(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {{"format", "pt"}}) {
  std::vector<std::pair<std::string, at::Tensor>> sorted;
  std::set<std::string> names;
  for (const auto& [n, t] : tensors) {
    require(t.defined(), "save_safetensors", "tensors", "must hold defined tensors ('" + n + "' is undefined)");
    require(n != "__metadata__" && names.insert(n).second, "save_safetensors", "tensors", "must have unique names other than __metadata__ ('" + n + "')");
    sorted.emplace_back(n, t.detach().to(at::kCPU).contiguous());
  }
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    const auto ea = a.second.element_size(), eb = b.second.element_size();
    return ea != eb ? ea > eb : a.first < b.first;
  });
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::uint64_t off = 0;
  for (const auto& [n, t] : sorted) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(t.numel()) * t.element_size();
    h[n] = {{"dtype", detail::st_dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  try {
    write_file_atomic_with(path, [&](std::ostream& out) {
      unsigned char len[8];
      const std::uint64_t n = text.size();
      for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
      out.write(reinterpret_cast<const char*>(len), 8);
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
      for (const auto& [nm, t] : sorted)
        out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    });
  } catch (const io_error& e) {
    throw invalid_argument(std::string("save_safetensors: argument 'path' must name a writable file: ") + e.what());
  }
}

/// A checkpoint: either a single .safetensors file, or a folder holding model.safetensors or
/// model.safetensors.index.json (+ its shards). Maps each tensor name to the file holding it.
class checkpoint {
public:
  explicit checkpoint(const fs::path& p) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      const fs::path index = p / "model.safetensors.index.json";
      if (fs::exists(index)) {
        open_index(index);
        return;
      }
      require(fs::exists(p / "model.safetensors"), "checkpoint", "path",
              "must hold model.safetensors or model.safetensors.index.json ('" + p.string() + "')");
      add_file(p / "model.safetensors");
    } else if (p.string().size() > 5 && p.string().substr(p.string().size() - 5) == ".json") {
      open_index(p);
    } else {
      add_file(p);
    }
  }

  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& [n, i] : where_) v.push_back(n);
    return v;
  }
  bool contains(const std::string& n) const { return where_.count(n) != 0; }
  const tensor_entry& entry(const std::string& n) const { return files_.at(file_of(n)).entry(n); }
  at::Tensor load(const std::string& n) const { return files_.at(file_of(n)).load(n); }
  std::string file_name(const std::string& n) const { return files_.at(file_of(n)).path().string(); }
  std::string describe() const { return desc_; }

private:
  std::size_t file_of(const std::string& n) const {
    auto it = where_.find(n);
    if (it == where_.end()) throw invalid_argument("checkpoint '" + desc_ + "': missing tensor '" + n + "'");
    return it->second;
  }
  void add_file(const fs::path& f) {
    if (desc_.empty()) desc_ = f.string();
    files_.emplace_back(f);
    for (const auto& n : files_.back().names()) {
      if (!where_.emplace(n, files_.size() - 1).second)
        throw parse_error("checkpoint '" + desc_ + "': tensor '" + n + "' appears in more than one shard");
    }
  }
  void open_index(const fs::path& index) {
    desc_ = index.string();
    nlohmann::json j;
    try {
      std::ifstream in(index);
      require(static_cast<bool>(in), "checkpoint", "path", "index must be readable ('" + index.string() + "')");
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw parse_error("checkpoint: index '" + index.string() + "' is not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw parse_error("checkpoint: index '" + index.string() + "' has no weight_map object");
    std::map<std::string, std::vector<std::string>> by_file;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw parse_error("checkpoint: index '" + index.string() + "' maps '" + it.key() + "' to a non-string");
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..")
        throw parse_error("checkpoint: index '" + index.string() + "' names shard '" + shard + "', which is not a plain file name");
      by_file[shard].push_back(it.key());
    }
    for (const auto& [shard, tensors] : by_file) {
      const std::size_t before = files_.size();
      add_file(index.parent_path() / shard);
      (void)before;
      for (const auto& n : tensors)
        if (!files_.back().contains(n))
          throw parse_error("checkpoint: index '" + index.string() + "' puts '" + n + "' in '" + shard + "', which does not hold it");
    }
  }

  std::string desc_;
  std::vector<safetensors_file> files_;
  std::map<std::string, std::size_t> where_;
};

struct save_options {
  std::uint64_t max_shard_bytes = 0; ///< 0: one model.safetensors; else shards + model.safetensors.index.json
  std::map<std::string, std::string> metadata{{"format", "pt"}};
};

/// Saves tensors into folder `dir` the way transformers' save_pretrained lays them out.
inline void save_checkpoint(const fs::path& dir, const std::vector<std::pair<std::string, at::Tensor>>& tensors, const save_options& opt = {}) {
  fs::create_directories(dir);
  if (opt.max_shard_bytes == 0) {
    save_safetensors(dir / "model.safetensors", tensors, opt.metadata);
    return;
  }
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  std::uint64_t cur = 0, total = 0;
  for (const auto& nt : tensors) {
    const std::uint64_t b = static_cast<std::uint64_t>(nt.second.numel()) * nt.second.element_size();
    if (cur > 0 && cur + b > opt.max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(nt);
    cur += b;
    total += b;
  }
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::ordered_json::object();
  char buf[64];
  for (std::size_t k = 0; k < shards.size(); ++k) {
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    save_safetensors(dir / buf, shards[k], opt.metadata);
    for (const auto& nt : shards[k]) index["weight_map"][nt.first] = buf;
  }
  try {
    write_file_atomic(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  } catch (const io_error& e) {
    throw invalid_argument(std::string("save_checkpoint: argument 'dir' must name a writable folder: ") + e.what());
  }
}

} // namespace msrl::trainer
