#pragma once
/// \file Crash-safe writes for the pipeline's outputs (POSIX): a file or a whole directory either
/// keeps its previous content or gets the complete new one, never a torn mix.
///
///   msrl_pipeline::write_file_atomic("run/state.json", json.dump());
///   msrl_pipeline::write_file_atomic_with("run/summary.txt", [&](std::ostream& o) { o << text; });
///   msrl_pipeline::write_file_atomic_via("run/opt.pt", [&](const fs::path& tmp) { torch::save(t, tmp.string()); });
///   msrl_pipeline::publish_directory_atomic("run/checkpoint-100", [&](const fs::path& staging) {
///     save_model(staging); save_optimizer(staging);     // any files and folders under staging
///   });
///
/// Files: the content goes to "<name>.tmp-XXXXXX" in the target's directory (same file system, so
/// rename(2) is atomic), is flushed and fsync'ed, renamed over the target, and the directory is
/// fsync'ed so the rename itself is durable. If anything throws, the temporary is removed and the
/// old file is untouched.
///
/// Directories: built in "<dir>.tmp-XXXXXX", every file and folder fsync'ed, then swapped with the
/// old directory in one step (renameat2 RENAME_EXCHANGE), and the old copy removed. Where the file
/// system cannot exchange, the old directory is first renamed to "<dir>.old-XXXXXX"; a crash
/// between the two renames leaves it there, and recover_directory(dir) (call it before reading a
/// checkpoint) moves it back. Leftover "<dir>.tmp-*" folders are incomplete and are removed by
/// recover_directory too.
///
/// Failures throw msrl_pipeline::io_error (an msrl::error) naming the path and the system error.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msrl/core/error.hpp>

namespace msrl_pipeline {

/// A file-system operation failed; the message names the function, the path and the reason.
class io_error : public msrl::error {
public:
  using msrl::error::error;
};

namespace detail {

[[noreturn]] inline void throw_io(std::string_view where, const std::filesystem::path& path, std::string_view what, int err) {
  std::string m;
  m.append(where).append(": argument 'path' ").append(what).append(" ('").append(path.string()).append("')");
  if (err != 0) m.append(": ").append(std::strerror(err));
  throw io_error(m);
}

/// Closes the descriptor on scope exit.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  int release() noexcept { return std::exchange(fd, -1); }
};

/// fsync(2) of a file or directory, retried on EINTR. Directories opened O_RDONLY.
inline void fsync_path(const std::filesystem::path& p, std::string_view where) {
  int fd;
  do fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_io(where, p, "could not be opened for fsync", errno);
  fd_guard g{fd};
  int rc;
  do rc = ::fsync(fd);
  while (rc != 0 && errno == EINTR);
  // Some file systems refuse fsync on directories (EINVAL); that is not a data-loss signal.
  if (rc != 0 && errno != EINVAL) throw_io(where, p, "could not be synced to disk", errno);
}

inline std::filesystem::path parent_or_dot(const std::filesystem::path& p) {
  auto d = p.parent_path();
  return d.empty() ? std::filesystem::path(".") : d;
}

inline void write_all(int fd, const char* data, std::size_t size, const std::filesystem::path& p, std::string_view where) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io(where, p, "could not be written", errno);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

/// Creates an empty "<target>.tmp-XXXXXX" beside `target` (mode 0644) and returns its path.
inline std::filesystem::path make_temp_file(const std::filesystem::path& target, std::string_view where) {
  std::string tmpl = target.string() + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw_io(where, target, "has no writable directory for a temporary file", errno);
  ::fchmod(fd, 0644); // mkstemp uses 0600; a published file should look like any other
  ::close(fd);
  return tmpl;
}

/// fsync the temporary, rename it over `target`, fsync the directory. Removes tmp on failure.
inline void commit_temp_file(const std::filesystem::path& tmp, const std::filesystem::path& target, std::string_view where) {
  fsync_path(tmp, where);
  if (::rename(tmp.c_str(), target.c_str()) != 0) throw_io(where, target, "could not be replaced by rename", errno);
  fsync_path(parent_or_dot(target), where);
}

/// Runs fill(tmp) then commits; on any exception the temporary is removed and the error rethrown.
template <class Fill>
void write_via_temp(const std::filesystem::path& target, std::string_view where, Fill&& fill) {
  msrl::require(!target.empty() && target.has_filename(), where, "path", "must name a file");
  const auto tmp = make_temp_file(target, where);
  try {
    fill(tmp);
    commit_temp_file(tmp, target, where);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

/// fsync every regular file and directory under `root` (bottom-up), then `root` itself.
inline void fsync_tree(const std::filesystem::path& root, std::string_view where) {
  namespace fs = std::filesystem;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_symlink()) continue;
    if (e.is_regular_file()) fsync_path(e.path(), where);
    else if (e.is_directory()) dirs.push_back(e.path());
  }
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) fsync_path(*it, where);
  fsync_path(root, where);
}

inline std::filesystem::path make_temp_dir(const std::filesystem::path& target, std::string_view suffix, std::string_view where) {
  std::string tmpl = target.string();
  tmpl.append(suffix).append("XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) throw_io(where, target, "has no writable parent directory for a temporary folder", errno);
  return tmpl;
}

/// Whether `name` is "<base>" + marker + 6 characters (a temporary of ours).
inline bool is_sibling_temp(const std::string& name, const std::string& base, std::string_view marker) {
  const std::string prefix = base + std::string(marker);
  return name.size() == prefix.size() + 6 && name.compare(0, prefix.size(), prefix) == 0;
}

} // namespace detail

/// Replaces `path` with exactly `bytes`, atomically and durably (see the file comment).
inline void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  constexpr std::string_view where = "write_file_atomic";
  detail::write_via_temp(path, where, [&](const std::filesystem::path& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) detail::throw_io(where, tmp, "could not be opened for writing", errno);
    detail::fd_guard g{fd};
    detail::write_all(fd, bytes.data(), bytes.size(), tmp, where);
    if (::close(g.release()) != 0) detail::throw_io(where, tmp, "could not be closed", errno);
  });
}

/// Byte-buffer overload (PNG data, serialized tensors).
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) {
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

/// Replaces `path` with what `writer` streams; if `writer` throws, `path` keeps its old content.
inline void write_file_atomic_with(const std::filesystem::path& path, const std::function<void(std::ostream&)>& writer) {
  constexpr std::string_view where = "write_file_atomic_with";
  msrl::require(static_cast<bool>(writer), where, "writer", "must be callable");
  detail::write_via_temp(path, where, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) detail::throw_io(where, tmp, "could not be opened for writing", errno);
    writer(out);
    out.flush();
    if (!out) detail::throw_io(where, tmp, "could not be written", errno);
    out.close();
    if (out.fail()) detail::throw_io(where, tmp, "could not be closed", errno);
  });
}

/// Replaces `path` with the file `fill(tmp)` writes at the temporary path `tmp` (for writers that
/// take a file name, such as torch::save); if `fill` throws, `path` keeps its old content.
inline void write_file_atomic_via(const std::filesystem::path& path, const std::function<void(const std::filesystem::path& tmp)>& fill) {
  constexpr std::string_view where = "write_file_atomic_via";
  msrl::require(static_cast<bool>(fill), where, "fill", "must be callable");
  detail::write_via_temp(path, where, [&](const std::filesystem::path& tmp) {
    fill(tmp);
    if (!std::filesystem::is_regular_file(tmp)) detail::throw_io(where, tmp, "was not left as a regular file by the callback", 0);
  });
}

/// Undoes an interrupted publish_directory_atomic: removes incomplete "<dir>.tmp-XXXXXX" folders
/// and files, and if `dir` is missing while a "<dir>.old-XXXXXX" exists, renames it back.
/// Returns true when an old copy was restored.
inline bool recover_directory(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  constexpr std::string_view where = "recover_directory";
  msrl::require(!dir.empty() && dir.has_filename(), where, "dir", "must name a directory");
  const fs::path parent = detail::parent_or_dot(dir);
  const std::string base = dir.filename().string();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return false;
  std::vector<fs::path> temps, olds;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (detail::is_sibling_temp(name, base, ".tmp-")) temps.push_back(e.path());
    else if (detail::is_sibling_temp(name, base, ".old-")) olds.push_back(e.path());
  }
  for (const auto& t : temps) fs::remove_all(t, ec);
  bool restored = false;
  if (!fs::exists(dir) && !olds.empty()) {
    if (::rename(olds.front().c_str(), dir.c_str()) != 0) detail::throw_io(where, dir, "could not be restored from its old copy", errno);
    detail::fsync_path(parent, where);
    restored = true;
    olds.erase(olds.begin());
  }
  if (fs::exists(dir))
    for (const auto& o : olds) fs::remove_all(o, ec);
  return restored;
}

/// Builds a directory with `build(staging)` and publishes it at `dir` in one step: readers see the
/// previous `dir` or the complete new one. If `build` throws, the staging folder is removed and
/// `dir` is untouched.
inline void publish_directory_atomic(const std::filesystem::path& dir, const std::function<void(const std::filesystem::path& staging)>& build) {
  namespace fs = std::filesystem;
  constexpr std::string_view where = "publish_directory_atomic";
  msrl::require(!dir.empty() && dir.has_filename(), where, "dir", "must name a directory (no trailing slash)");
  msrl::require(static_cast<bool>(build), where, "build", "must be callable");
  const fs::path parent = detail::parent_or_dot(dir);
  const fs::path staging = detail::make_temp_dir(dir, ".tmp-", where);
  try {
    build(staging);
    detail::fsync_tree(staging, where);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(staging, ec);
    throw;
  }
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(dir, ec))) {
    if (::rename(staging.c_str(), dir.c_str()) != 0) {
      const int err = errno;
      fs::remove_all(staging, ec);
      detail::throw_io(where, dir, "could not be created by rename", err);
    }
    detail::fsync_path(parent, where);
    return;
  }
  msrl::require(fs::is_directory(dir, ec), where, "dir", "must be a directory when it exists ('" + dir.string() + "')");
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    detail::fsync_path(parent, where);
    fs::remove_all(staging, ec); // now holds the previous directory
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP && errno != EXDEV) {
    const int err = errno;
    fs::remove_all(staging, ec);
    detail::throw_io(where, dir, "could not be exchanged with the new directory", err);
  }
#endif
  // No exchange on this file system: move the old one aside, then the new one in.
  const fs::path old = detail::make_temp_dir(dir, ".old-", where);
  fs::remove(old, ec); // mkdtemp reserved a unique name; rename needs it free (or an empty dir)
  if (::rename(dir.c_str(), old.c_str()) != 0) {
    const int err = errno;
    fs::remove_all(staging, ec);
    detail::throw_io(where, dir, "could not be moved aside", err);
  }
  if (::rename(staging.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    ::rename(old.c_str(), dir.c_str()); // put the previous one back
    fs::remove_all(staging, ec);
    detail::throw_io(where, dir, "could not be replaced by rename", err);
  }
  detail::fsync_path(parent, where);
  fs::remove_all(old, ec);
}

} // namespace msrl_pipeline
