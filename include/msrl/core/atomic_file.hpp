#pragma once
/// \file Crash-safe file and directory replacement (POSIX, host only): a file or a whole directory
/// either keeps its previous content or gets the complete new one, never a torn mix.
///
///   msrl::write_file_atomic("run/state.json", json.dump());
///   msrl::write_file_atomic_with("run/summary.txt", [&](std::ostream& o) { o << text; });
///   msrl::write_file_atomic_via("run/opt.pt", [&](const fs::path& tmp) { torch::save(t, tmp.string()); });
///   msrl::atomic_file out("scored.jsonl");       // streamed output, published by commit()
///   out.stream() << row << '\n';
///   out.commit();                                  // destroyed without commit: nothing published
///   msrl::publish_directory_atomic("run/checkpoint-100", [&](const fs::path& staging) {
///     save_model(staging); save_optimizer(staging);     // any files and folders under staging
///   });
///   msrl::recover_directory("run/checkpoint-100");      // before reading it after a crash
///
/// Files: the content goes to a hidden ".<name>.tmp-XXXXXX" (mkstemp, mode 0644) in the target's
/// directory, so concurrent writers never share a temporary and rename(2) stays on one file
/// system. It is flushed and fsync'ed, renamed over the target, and the directory is fsync'ed so
/// the rename itself is durable. If anything throws, the temporary is removed and the old file is
/// untouched.
///
/// Directories: built in "<dir>.tmp-XXXXXX" (mkdtemp), every file and folder fsync'ed, then
/// swapped with the old directory in one step (renameat2 RENAME_EXCHANGE) and the old copy
/// removed. Where the file system cannot exchange, the old directory is first renamed to
/// "<dir>.old-XXXXXX"; a crash between the two renames leaves it there, and recover_directory(dir)
/// moves it back. Leftover "<dir>.tmp-*" folders are incomplete and recover_directory removes them.
///
/// Failures of the file system throw msrl::io_error, whose message names the function, the
/// argument, the path and the system error:
///
///   msrl::write_file_atomic: argument 'path' has no writable directory for a temporary file ('out/x.json'): No such file or directory
///
/// Arguments that break a rule (an empty path, a missing callback) throw msrl::invalid_argument.
/// An exception thrown by a callback propagates unchanged, after the temporary is removed.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <ostream>
#include <span>
#include <streambuf>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.hpp"

namespace msrl {

/// The io_error "where: argument 'arg' what ('path'): strerror(err)" (no reason when err is 0).
inline io_error make_io_error(std::string_view where, std::string_view arg, const std::filesystem::path& path, std::string_view what, int err) {
  std::string m;
  m.append(where).append(": argument '").append(arg).append("' ").append(what).append(" ('").append(path.string()).append("')");
  if (err != 0) m.append(": ").append(std::strerror(err));
  return io_error(m);
}

/// The same for an argument named 'path'.
inline io_error make_io_error(std::string_view where, const std::filesystem::path& path, std::string_view what, int err = 0) {
  return make_io_error(where, "path", path, what, err);
}

namespace detail::atomic_io {

/// The function and the argument an error message names.
struct site {
  std::string_view fn;
  std::string_view arg = "path";
};

inline io_error fail_at(const site& at, const std::filesystem::path& p, std::string_view what, int err = 0) {
  return make_io_error(at.fn, at.arg, p, what, err);
}

/// Closes the descriptor on scope exit.
struct fd_guard {
  int fd = -1;
  fd_guard() = default;
  explicit fd_guard(int f) noexcept : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  int release() noexcept { return std::exchange(fd, -1); }
};

/// Writes all of [data, data + size), retrying on EINTR and short writes. Returns 0 or an errno.
inline int write_all(int fd, const char* data, std::size_t size) noexcept {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return 0;
}

/// fsync(2), retried on EINTR. Some file systems refuse fsync on directories (EINVAL); that is
/// not a data-loss signal, so it is ignored.
inline void fsync_fd(int fd, const std::filesystem::path& p, const site& at) {
  int rc;
  do rc = ::fsync(fd);
  while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EINVAL) throw fail_at(at, p, "could not be synced to disk", errno);
}

/// fsync of a file or directory by name (opened read-only).
inline void fsync_path(const std::filesystem::path& p, const site& at) {
  int fd;
  do fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw fail_at(at, p, "could not be opened for fsync", errno);
  fd_guard g(fd);
  fsync_fd(fd, p, at);
}

inline std::filesystem::path parent_or_dot(const std::filesystem::path& p) {
  auto d = p.parent_path();
  return d.empty() ? std::filesystem::path(".") : d;
}

/// A path that names an entry of a directory: not empty, no trailing slash, not "." or "..".
inline bool names_an_entry(const std::filesystem::path& p) {
  return !p.empty() && p.has_filename() && p.filename() != "." && p.filename() != "..";
}

/// Creates an empty hidden ".<name>.tmp-XXXXXX" beside `target` (mode 0644); returns its open
/// descriptor and its path.
inline std::pair<int, std::filesystem::path> make_temp_file(const std::filesystem::path& target, const site& at) {
  std::string name(1, '.'); // appended, not "." + string: GCC 12 warns falsely (-Wrestrict) on that
  name.append(target.filename().string()).append(".tmp-XXXXXX");
  std::string tmpl = (target.parent_path() / name).string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw fail_at(at, target, "has no writable directory for a temporary file", errno);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  ::fchmod(fd, 0644); // mkstemp creates 0600; a published file should look like any other
  return {fd, std::filesystem::path(tmpl)};
}

/// rename(2) `tmp` over `target`, then fsync the directory so the rename is durable.
inline void rename_into_place(const std::filesystem::path& tmp, const std::filesystem::path& target, const site& at) {
  if (::rename(tmp.c_str(), target.c_str()) != 0) throw fail_at(at, target, "could not be replaced by rename", errno);
  fsync_path(parent_or_dot(target), at);
}

/// A streambuf over a file descriptor. Large writes bypass the buffer; the first failure's errno
/// is kept for the error message (std::ostream swallows it into badbit).
class fd_streambuf : public std::streambuf {
public:
  fd_streambuf() : buf_(std::size_t{1} << 16) { setp(buf_.data(), buf_.data() + buf_.size()); }
  fd_streambuf(const fd_streambuf&) = delete;
  fd_streambuf& operator=(const fd_streambuf&) = delete;
  /// The descriptor written to (owned by the caller).
  void attach(int fd) noexcept { fd_ = fd; }
  /// errno of the first failed write, or 0.
  int error() const noexcept { return err_; }

protected:
  int_type overflow(int_type ch) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }

  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n <= 0) return 0;
    if (n >= epptr() - pptr() && !drain()) return 0;
    if (n < epptr() - pptr()) {
      std::memcpy(pptr(), s, static_cast<std::size_t>(n));
      pbump(static_cast<int>(n));
      return n;
    }
    // At least a whole buffer: straight to the file, no copy.
    if (const int e = write_all(fd_, s, static_cast<std::size_t>(n)); e != 0) {
      if (err_ == 0) err_ = e;
      return 0;
    }
    return n;
  }

  int sync() override { return drain() ? 0 : -1; }

private:
  bool drain() {
    if (err_ != 0) return false;
    const auto n = static_cast<std::size_t>(pptr() - pbase());
    if (n > 0) err_ = write_all(fd_, pbase(), n);
    setp(buf_.data(), buf_.data() + buf_.size());
    return err_ == 0;
  }

  int fd_ = -1;
  std::vector<char> buf_;
  int err_ = 0;
};

/// fsync every regular file and directory under `root` (bottom-up), then `root` itself.
inline void fsync_tree(const std::filesystem::path& root, const site& at) {
  namespace fs = std::filesystem;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_symlink()) continue;
    if (e.is_regular_file()) fsync_path(e.path(), at);
    else if (e.is_directory()) dirs.push_back(e.path());
  }
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) fsync_path(*it, at);
  fsync_path(root, at);
}

inline std::filesystem::path make_temp_dir(const std::filesystem::path& target, std::string_view suffix, const site& at) {
  std::string tmpl = target.string();
  tmpl.append(suffix).append("XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) throw fail_at(at, target, "has no writable parent directory for a temporary folder", errno);
  return tmpl;
}

/// Whether `name` is "<base>" + marker + 6 characters (a temporary of ours).
inline bool is_sibling_temp(const std::string& name, const std::string& base, std::string_view marker) {
  const std::string prefix = base + std::string(marker);
  return name.size() == prefix.size() + 6 && name.compare(0, prefix.size(), prefix) == 0;
}

} // namespace detail::atomic_io

/// An output file that appears at `path` only when commit() succeeds: the constructor creates the
/// temporary (so an unwritable directory fails before any work is done), stream() or write() fill
/// it, commit() syncs it and renames it over `path`. Destroyed without commit() (an exception, an
/// early return), the temporary is removed and `path` keeps its old content. Not copyable or
/// movable (stream() refers into the object).
class atomic_file {
public:
  /// `where` is the function named in error messages.
  explicit atomic_file(std::filesystem::path path, std::string_view where = "msrl::atomic_file")
      : path_(std::move(path)), where_(where) {
    require(detail::atomic_io::names_an_entry(path_), where_, "path", "must name a file, not empty or ending in a slash ('" + path_.string() + "')");
    auto [fd, tmp] = detail::atomic_io::make_temp_file(path_, {where_});
    fd_ = fd;
    tmp_ = std::move(tmp);
    buf_.attach(fd_);
  }
  atomic_file(const atomic_file&) = delete;
  atomic_file& operator=(const atomic_file&) = delete;
  ~atomic_file() { discard(); }

  /// The stream that fills the temporary. Write failures surface at write() or commit().
  std::ostream& stream() noexcept { return out_; }

  /// Appends `bytes`; throws msrl::io_error (temporary removed) when the write fails.
  void write(std::string_view bytes) {
    require<error>(fd_ >= 0, where_, "this", "was already committed or discarded");
    out_.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out_) fail("could not be written", buf_.error());
  }

  /// Flushes, fsyncs and closes the temporary, renames it over path() and fsyncs the directory.
  /// On failure the temporary is removed, path() is unchanged, and msrl::io_error is thrown.
  void commit() {
    require<error>(fd_ >= 0, where_, "this", "was already committed or discarded");
    out_.flush();
    if (!out_) fail("could not be written", buf_.error());
    try {
      detail::atomic_io::fsync_fd(fd_, tmp_, {where_});
    } catch (...) {
      discard();
      throw;
    }
    if (::close(std::exchange(fd_, -1)) != 0) fail("could not be closed", errno);
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      remove_temp();
      throw make_io_error(where_, path_, "could not be replaced by rename", err);
    }
    committed_ = true;
    tmp_.clear();
    detail::atomic_io::fsync_path(detail::atomic_io::parent_or_dot(path_), {where_}); // the rename itself durable
  }

  /// Drops the temporary; path() keeps its old content. Nothing happens after commit().
  void discard() noexcept {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    if (!committed_) remove_temp();
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  /// The temporary's path (empty after commit() or discard()).
  const std::filesystem::path& temp_path() const noexcept { return tmp_; }
  bool committed() const noexcept { return committed_; }

private:
  [[noreturn]] void fail(std::string_view what, int err) {
    const std::filesystem::path tmp = tmp_;
    discard();
    throw make_io_error(where_, tmp, what, err);
  }

  void remove_temp() noexcept {
    if (tmp_.empty()) return;
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
    tmp_.clear();
  }

  std::filesystem::path path_, tmp_;
  std::string where_;
  int fd_ = -1;
  bool committed_ = false;
  detail::atomic_io::fd_streambuf buf_;
  std::ostream out_{&buf_};
};

/// Replaces `path` with exactly `bytes`, atomically and durably (see the file comment).
inline void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  atomic_file f(path, "msrl::write_file_atomic");
  f.write(bytes);
  f.commit();
}

/// Byte-buffer overload (PNG data, serialized tensors).
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) {
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

/// Replaces `path` with what `writer` streams; if `writer` throws, `path` keeps its old content
/// and the exception propagates.
inline void write_file_atomic_with(const std::filesystem::path& path, const std::function<void(std::ostream&)>& writer) {
  constexpr std::string_view where = "msrl::write_file_atomic_with";
  require(static_cast<bool>(writer), where, "writer", "must be callable");
  atomic_file f(path, where);
  writer(f.stream());
  f.commit();
}

/// Replaces `path` with the file `fill(tmp)` writes at the temporary path `tmp` (for writers that
/// take a file name, such as torch::save); if `fill` throws, `path` keeps its old content.
inline void write_file_atomic_via(const std::filesystem::path& path, const std::function<void(const std::filesystem::path& tmp)>& fill) {
  namespace aio = detail::atomic_io;
  constexpr std::string_view where = "msrl::write_file_atomic_via";
  require(aio::names_an_entry(path), where, "path", "must name a file, not empty or ending in a slash ('" + path.string() + "')");
  require(static_cast<bool>(fill), where, "fill", "must be callable");
  const auto [fd, tmp] = aio::make_temp_file(path, {where});
  ::close(fd); // `fill` opens the file by name
  try {
    fill(tmp);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(tmp, ec)) throw make_io_error(where, tmp, "was not left as a regular file by the callback");
    aio::fsync_path(tmp, {where});
    aio::rename_into_place(tmp, path, {where});
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

/// Undoes an interrupted publish_directory_atomic: removes incomplete "<dir>.tmp-XXXXXX" folders
/// and files, and if `dir` is missing while a "<dir>.old-XXXXXX" exists, renames it back.
/// Returns true when an old copy was restored.
inline bool recover_directory(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  namespace aio = detail::atomic_io;
  constexpr std::string_view where = "msrl::recover_directory";
  require(aio::names_an_entry(dir), where, "dir", "must name a directory, not empty or ending in a slash ('" + dir.string() + "')");
  const fs::path parent = aio::parent_or_dot(dir);
  const std::string base = dir.filename().string();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return false;
  std::vector<fs::path> temps, olds;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (aio::is_sibling_temp(name, base, ".tmp-")) temps.push_back(e.path());
    else if (aio::is_sibling_temp(name, base, ".old-")) olds.push_back(e.path());
  }
  for (const auto& t : temps) fs::remove_all(t, ec);
  bool restored = false;
  if (!fs::exists(fs::symlink_status(dir, ec)) && !olds.empty()) {
    if (::rename(olds.front().c_str(), dir.c_str()) != 0) throw make_io_error(where, "dir", dir, "could not be restored from its old copy", errno);
    aio::fsync_path(parent, {where, "dir"});
    restored = true;
    olds.erase(olds.begin());
  }
  if (fs::exists(fs::symlink_status(dir, ec)))
    for (const auto& o : olds) fs::remove_all(o, ec);
  return restored;
}

/// Builds a directory with `build(staging)` and publishes it at `dir` in one step: readers see the
/// previous `dir` or the complete new one. If `build` throws, the staging folder is removed and
/// `dir` is untouched. An existing `dir` that is not a directory is an msrl::invalid_argument.
inline void publish_directory_atomic(const std::filesystem::path& dir, const std::function<void(const std::filesystem::path& staging)>& build) {
  namespace fs = std::filesystem;
  namespace aio = detail::atomic_io;
  constexpr std::string_view where = "msrl::publish_directory_atomic";
  const aio::site at{where, "dir"};
  require(aio::names_an_entry(dir), where, "dir", "must name a directory, not empty or ending in a slash ('" + dir.string() + "')");
  require(static_cast<bool>(build), where, "build", "must be callable");
  std::error_code ec;
  const bool existed = fs::exists(fs::symlink_status(dir, ec));
  require(!existed || fs::is_directory(fs::symlink_status(dir, ec)), where, "dir", "must be a directory when it exists ('" + dir.string() + "')");
  const fs::path parent = aio::parent_or_dot(dir);
  const fs::path staging = aio::make_temp_dir(dir, ".tmp-", at);
  try {
    build(staging);
    aio::fsync_tree(staging, at);
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
  if (!existed) {
    if (::rename(staging.c_str(), dir.c_str()) != 0) {
      const int err = errno;
      fs::remove_all(staging, ec);
      throw make_io_error(where, "dir", dir, "could not be created by rename", err);
    }
    aio::fsync_path(parent, at);
    return;
  }
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    aio::fsync_path(parent, at);
    fs::remove_all(staging, ec); // now holds the previous directory
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP && errno != EXDEV) {
    const int err = errno;
    fs::remove_all(staging, ec);
    throw make_io_error(where, "dir", dir, "could not be exchanged with the new directory", err);
  }
#endif
  // No exchange on this file system: move the old one aside, then the new one in.
  fs::path old;
  try {
    old = aio::make_temp_dir(dir, ".old-", at);
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
  fs::remove(old, ec); // mkdtemp reserved a unique name; rename needs it free (or an empty dir)
  if (::rename(dir.c_str(), old.c_str()) != 0) {
    const int err = errno;
    fs::remove_all(staging, ec);
    throw make_io_error(where, "dir", dir, "could not be moved aside", err);
  }
  if (::rename(staging.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    ::rename(old.c_str(), dir.c_str()); // put the previous one back
    fs::remove_all(staging, ec);
    throw make_io_error(where, "dir", dir, "could not be replaced by rename", err);
  }
  aio::fsync_path(parent, at);
  fs::remove_all(old, ec);
}

} // namespace msrl
