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
/// end-exclusive; the buffer must be covered exactly (no holes, no overlaps). The reader
/// (safetensors_header.hpp, without libtorch) rejects every violation with msrl::parse_error
/// naming the file and the rule, before reading any data,
/// so a truncated or corrupt file never reaches from_blob. Tensors are read one at a time with
/// plain file reads (no mmap), so loading an 8B shard needs memory for one tensor at a time.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
#include "safetensors_header.hpp"

namespace msrl::trainer {

namespace fs = std::filesystem;

namespace detail {

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
  static constexpr std::uint64_t max_header_bytes = safetensors_header::max_header_bytes;

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
    const std::uint64_t n = safetensors_header::header_length(len, size, f);
    std::string text(n, '\0');
    in.read(text.data(), static_cast<std::streamsize>(n));
    if (!in) detail::st_fail(f, "is truncated inside the header");
    safetensors_header h = safetensors_header::parse(f, size, text);
    data_offset_ = h.data_offset;
    data_size_ = h.data_size;
    names_ = std::move(h.names);
    metadata_ = std::move(h.metadata);
    for (auto& [name, info] : h.tensors) {
      tensor_entry e;
      if (!detail::st_dtype(info.dtype, e.dtype)) detail::st_fail(f, "has tensor '" + name + "' with unsupported dtype '" + info.dtype + "'");
      e.shape = std::move(info.shape);
      e.begin = info.begin;
      e.end = info.end;
      entries_.emplace(name, std::move(e));
    }
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
    std::ifstream in(index, std::ios::binary);
    require(static_cast<bool>(in), "checkpoint", "path", "index must be readable ('" + index.string() + "')");
    const std::string text{std::istreambuf_iterator<char>(in), {}};
    const auto by_file = parse_safetensors_index(text, index.string());
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
