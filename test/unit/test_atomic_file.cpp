// msrl/core/atomic_file.hpp: a file or directory is either its old content or the complete new
// one. Checks the content after success, the old content and no temporary left after a failing
// writer, a write that fails in the kernel (RLIMIT_FSIZE), messages that name the function and the
// path, concurrent writers of one target, the directory swap and the recovery after a crash.
#define BOOST_TEST_MODULE atomic_file
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <msrl/core/atomic_file.hpp>

#include "scratch.hpp"

namespace fs = std::filesystem;
using msrl_test::scratch;
using msrl_test::slurp;
using msrl_test::spit;

namespace {

/// Names of the entries of `dir`, sorted.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

/// Entries of `dir` whose name contains `part`.
int count_named(const fs::path& dir, const std::string& part) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().find(part) != std::string::npos;
  return n;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

} // namespace

BOOST_AUTO_TEST_SUITE(files)

BOOST_AUTO_TEST_CASE(io_error_is_an_msrl_error) {
  static_assert(std::is_base_of_v<msrl::error, msrl::io_error>);
  static_assert(!std::is_base_of_v<msrl::invalid_argument, msrl::io_error>);
  BOOST_TEST(true);
}

BOOST_AUTO_TEST_CASE(file_is_old_or_new_never_torn) {
  scratch s("file");
  const fs::path p = s.dir / "state.json";
  msrl::write_file_atomic(p, std::string_view("old"));
  BOOST_TEST(slurp(p) == "old");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"state.json"});

  BOOST_CHECK_THROW(msrl::write_file_atomic_with(p,
                                                 [](std::ostream& o) {
                                                   o << std::string(200000, 'x'); // past the buffer: bytes reach the temporary
                                                   o.flush();
                                                   throw std::runtime_error("disk full");
                                                 }),
                    std::runtime_error);
  BOOST_TEST(slurp(p) == "old");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"state.json"}); // no temporary left

  BOOST_CHECK_THROW(msrl::write_file_atomic_via(p,
                                                [&](const fs::path& tmp) {
                                                  BOOST_TEST(tmp.parent_path() == p.parent_path()); // same file system
                                                  spit(tmp, "partial");
                                                  throw std::runtime_error("serializer failed");
                                                }),
                    std::runtime_error);
  BOOST_TEST(slurp(p) == "old");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"state.json"});

  msrl::write_file_atomic_with(p, [](std::ostream& o) { o << "new"; });
  BOOST_TEST(slurp(p) == "new");
  msrl::write_file_atomic_via(p, [](const fs::path& tmp) { spit(tmp, "via"); });
  BOOST_TEST(slurp(p) == "via");
  const std::vector<std::uint8_t> bytes{0, 1, 2, 255};
  msrl::write_file_atomic(p, std::span<const std::uint8_t>(bytes));
  BOOST_TEST(slurp(p) == std::string("\x00\x01\x02\xff", 4));
  msrl::write_file_atomic(p, std::string_view{});
  BOOST_TEST(fs::exists(p));
  BOOST_TEST(fs::file_size(p) == 0u);
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"state.json"});
  // mkstemp creates 0600; the published file is readable like any other.
  const auto perms = fs::status(p).permissions();
  BOOST_TEST(((perms & fs::perms::owner_read) != fs::perms::none));
  BOOST_TEST(((perms & fs::perms::group_read) != fs::perms::none));
  BOOST_TEST(((perms & fs::perms::others_read) != fs::perms::none));
}

BOOST_AUTO_TEST_CASE(large_and_small_writes_keep_every_byte_in_order) {
  scratch s("large");
  const fs::path p = s.dir / "blob.bin";
  std::string expect;
  std::mt19937 rng(7);
  msrl::write_file_atomic_with(p, [&](std::ostream& o) {
    for (int i = 0; i < 50; ++i) {
      // Sizes around and far beyond the 64 KiB buffer: both the buffered and the direct path.
      const std::size_t n = i % 5 == 0 ? 300000 + i : (rng() % 70000);
      std::string chunk(n, '\0');
      for (auto& c : chunk) c = static_cast<char>(rng());
      if (i % 7 == 0)
        for (char c : chunk) o.put(c);
      else o.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      expect += chunk;
    }
  });
  BOOST_TEST(fs::file_size(p) == expect.size());
  BOOST_TEST((slurp(p) == expect));
}

BOOST_AUTO_TEST_CASE(atomic_file_publishes_only_on_commit) {
  scratch s("stream");
  const fs::path p = s.dir / "out.jsonl";
  spit(p, "old\n");
  {
    msrl::atomic_file f(p);
    BOOST_TEST(f.path() == p);
    BOOST_TEST(f.temp_path().parent_path() == s.dir);
    BOOST_TEST(f.temp_path().filename().string().rfind(".out.jsonl.tmp-", 0) == 0u, f.temp_path()); // hidden sibling
    BOOST_TEST(fs::exists(f.temp_path()));
    f.write("{\"a\":1}\n");
    f.stream() << "{\"a\":" << 2 << "}\n";
    BOOST_TEST(slurp(p) == "old\n"); // nothing visible before commit
  } // destroyed without commit: an early return or an exception
  BOOST_TEST(slurp(p) == "old\n");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"out.jsonl"});

  msrl::atomic_file f(p);
  f.write("{\"a\":1}\n");
  f.stream() << "{\"a\":" << 2 << "}\n";
  const fs::path tmp = f.temp_path();
  f.commit();
  BOOST_TEST(f.committed());
  BOOST_TEST(f.temp_path().empty());
  BOOST_TEST(slurp(p) == "{\"a\":1}\n{\"a\":2}\n");
  BOOST_TEST(!fs::exists(tmp));
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"out.jsonl"});
  BOOST_CHECK_THROW(f.commit(), msrl::error);
  BOOST_CHECK_THROW(f.write("more"), msrl::error);
  BOOST_TEST(slurp(p) == "{\"a\":1}\n{\"a\":2}\n");

  msrl::atomic_file g(p);
  g.write("dropped");
  g.discard();
  BOOST_TEST(g.temp_path().empty());
  BOOST_TEST(slurp(p) == "{\"a\":1}\n{\"a\":2}\n");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"out.jsonl"});
}

BOOST_AUTO_TEST_CASE(concurrent_writers_of_one_target_do_not_collide) {
  scratch s("concurrent");
  const fs::path p = s.dir / "model.safetensors";
  msrl::atomic_file a(p), b(p);
  BOOST_TEST(a.temp_path() != b.temp_path());
  a.write(std::string(100000, 'a'));
  b.write(std::string(100000, 'b'));
  b.commit();
  BOOST_TEST(slurp(p) == std::string(100000, 'b'));
  a.commit(); // the last commit wins, whole
  BOOST_TEST(slurp(p) == std::string(100000, 'a'));
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"model.safetensors"});
}

BOOST_AUTO_TEST_CASE(a_failing_kernel_write_keeps_the_old_file) {
  // RLIMIT_FSIZE makes write(2) fail with EFBIG (SIGXFSZ ignored): a real I/O error mid-file.
  scratch s("efbig");
  const fs::path p = s.dir / "state.bin";
  spit(p, "old");
  rlimit saved{};
  BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
  rlimit small = saved;
  small.rlim_cur = 100000;
  const auto previous = std::signal(SIGXFSZ, SIG_IGN);
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  const std::string m1 = message_of([&] { msrl::write_file_atomic(p, std::string(300000, 'x')); });
  const std::string m2 = message_of([&] {
    msrl::write_file_atomic_with(p, [](std::ostream& o) {
      for (int i = 0; i < 4000; ++i) o << "0123456789012345678901234567890123456789\n";
    });
  });
  bool typed = false;
  try {
    msrl::atomic_file f(p);
    f.stream() << std::string(300000, 'y');
    f.commit();
  } catch (const msrl::io_error&) {
    typed = true;
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, previous);
  BOOST_TEST(contains(m1, "msrl::write_file_atomic: argument 'path' could not be written"), m1);
  BOOST_TEST(contains(m1, ".state.bin.tmp-"), m1);
  BOOST_TEST(contains(m1, std::strerror(EFBIG)), m1);
  BOOST_TEST(contains(m2, "msrl::write_file_atomic_with: argument 'path' could not be written"), m2);
  BOOST_TEST(typed);
  BOOST_TEST(slurp(p) == "old");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"state.bin"});
}

BOOST_AUTO_TEST_CASE(errors_name_the_function_and_the_path) {
  scratch s("errors");
  const fs::path p = s.dir / "no_such_dir" / "f.txt";
  try {
    msrl::write_file_atomic(p, std::string_view("x"));
    BOOST_FAIL("expected io_error");
  } catch (const msrl::io_error& e) {
    const std::string m = e.what();
    BOOST_TEST(m.rfind("msrl::write_file_atomic: argument 'path' ", 0) == 0u, m);
    BOOST_TEST(contains(m, "('" + p.string() + "')"), m);
    BOOST_TEST(contains(m, std::strerror(ENOENT)), m);
  }
  const std::string m_with = message_of([&] { msrl::write_file_atomic_with(p, [](std::ostream& o) { o << "x"; }); });
  BOOST_TEST(m_with.rfind("msrl::write_file_atomic_with: ", 0) == 0u, m_with);
  BOOST_TEST(contains(m_with, p.string()), m_with);
  bool called = false;
  const std::string m_via = message_of([&] { msrl::write_file_atomic_via(p, [&](const fs::path&) { called = true; }); });
  BOOST_TEST(m_via.rfind("msrl::write_file_atomic_via: ", 0) == 0u, m_via);
  BOOST_TEST(contains(m_via, p.string()), m_via);
  BOOST_TEST(!called); // fails before any work is done
  BOOST_CHECK_THROW(msrl::atomic_file{p}, msrl::io_error);

  // A directory the process may not write (skipped as root, who may write anyway).
  if (::geteuid() != 0) {
    const fs::path ro = s.dir / "read_only";
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    const std::string m = message_of([&] { msrl::write_file_atomic(ro / "f.txt", std::string_view("x")); });
    BOOST_TEST(contains(m, (ro / "f.txt").string()), m);
    BOOST_TEST(contains(m, std::strerror(EACCES)), m);
    fs::permissions(ro, fs::perms::owner_all);
  }

  // Bad arguments: msrl::invalid_argument naming the argument.
  BOOST_CHECK_THROW(msrl::write_file_atomic(fs::path{}, std::string_view("x")), msrl::invalid_argument);
  BOOST_CHECK_THROW(msrl::write_file_atomic(s.dir / "sub/", std::string_view("x")), msrl::invalid_argument);
  const std::string m_dot = message_of([&] { msrl::write_file_atomic(s.dir / "..", std::string_view("x")); });
  BOOST_TEST(m_dot.rfind("msrl::write_file_atomic: argument 'path' must name a file", 0) == 0u, m_dot);
  BOOST_CHECK_THROW(msrl::write_file_atomic_with(s.dir / "f", nullptr), msrl::invalid_argument);
  BOOST_CHECK_THROW(msrl::write_file_atomic_via(s.dir / "f", nullptr), msrl::invalid_argument);
  const std::string m_fill = message_of([&] { msrl::write_file_atomic_via(s.dir / "f", [](const fs::path& tmp) { fs::remove(tmp); }); });
  BOOST_TEST(contains(m_fill, "was not left as a regular file by the callback"), m_fill);
  BOOST_TEST(!fs::exists(s.dir / "f"));
  BOOST_TEST(!fs::exists(s.dir / "no_such_dir")); // never created
  BOOST_TEST(count_named(s.dir, ".tmp-") == 0);
}

BOOST_AUTO_TEST_CASE(make_io_error_formats_like_the_writers) {
  const msrl::io_error e = msrl::make_io_error("metrics_writer::write_row", "run/metrics.jsonl", "could not be appended to", ENOSPC);
  BOOST_TEST(std::string(e.what()) == "metrics_writer::write_row: argument 'path' could not be appended to ('run/metrics.jsonl'): " +
                                          std::string(std::strerror(ENOSPC)));
  BOOST_TEST(std::string(msrl::make_io_error("f", "p", "is odd").what()) == "f: argument 'path' is odd ('p')");
  BOOST_TEST(std::string(msrl::make_io_error("g", "dir", "run/ck", "is odd", 0).what()) == "g: argument 'dir' is odd ('run/ck')");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(directories)

BOOST_AUTO_TEST_CASE(directory_publish_replaces_whole_checkpoints) {
  scratch s("publish");
  const fs::path ck = s.dir / "checkpoint";
  msrl::publish_directory_atomic(ck, [](const fs::path& d) {
    BOOST_TEST(fs::is_directory(d));
    spit(d / "model.bin", "v1");
    fs::create_directories(d / "sub");
    spit(d / "sub" / "opt.bin", "o1");
  });
  BOOST_TEST(slurp(ck / "model.bin") == "v1");
  BOOST_TEST(slurp(ck / "sub" / "opt.bin") == "o1");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"checkpoint"});

  // A failing build leaves the previous checkpoint whole and no staging folder.
  BOOST_CHECK_THROW(msrl::publish_directory_atomic(ck,
                                                   [](const fs::path& d) {
                                                     spit(d / "model.bin", "v2-partial");
                                                     throw std::runtime_error("out of memory");
                                                   }),
                    std::runtime_error);
  BOOST_TEST(slurp(ck / "model.bin") == "v1");
  BOOST_TEST(slurp(ck / "sub" / "opt.bin") == "o1");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"checkpoint"});

  // A successful one replaces it entirely (files the new one lacks are gone).
  msrl::publish_directory_atomic(ck, [](const fs::path& d) { spit(d / "model.bin", "v2"); });
  BOOST_TEST(slurp(ck / "model.bin") == "v2");
  BOOST_TEST(!fs::exists(ck / "sub"));
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"checkpoint"}); // no .tmp- or .old- left
}

BOOST_AUTO_TEST_CASE(directory_publish_rejects_bad_targets_before_building) {
  scratch s("publish_err");
  spit(s.dir / "plain_file", "keep");
  bool built = false;
  const auto build = [&](const fs::path&) { built = true; };
  const std::string m = message_of([&] { msrl::publish_directory_atomic(s.dir / "plain_file", build); });
  BOOST_TEST(m.rfind("msrl::publish_directory_atomic: argument 'dir' must be a directory when it exists", 0) == 0u, m);
  BOOST_TEST(!built);
  BOOST_TEST(slurp(s.dir / "plain_file") == "keep");
  BOOST_TEST(entries(s.dir) == std::vector<std::string>{"plain_file"}); // no staging folder left
  BOOST_CHECK_THROW(msrl::publish_directory_atomic(s.dir / "ck", nullptr), msrl::invalid_argument);
  BOOST_CHECK_THROW(msrl::publish_directory_atomic(fs::path{}, build), msrl::invalid_argument);
  const std::string m_missing = message_of([&] { msrl::publish_directory_atomic(s.dir / "no_such_dir" / "ck", build); });
  BOOST_TEST(m_missing.rfind("msrl::publish_directory_atomic: argument 'dir' has no writable parent directory", 0) == 0u, m_missing);
  BOOST_TEST(contains(m_missing, (s.dir / "no_such_dir" / "ck").string()), m_missing);
  BOOST_TEST(!built);
}

BOOST_AUTO_TEST_CASE(recover_directory_after_a_crash_between_renames) {
  scratch s("recover");
  const fs::path ck = s.dir / "checkpoint";
  // The state a crash can leave on a file system without RENAME_EXCHANGE: old copy moved aside,
  // new one still staging.
  fs::create_directories(s.dir / "checkpoint.old-AbC123");
  spit(s.dir / "checkpoint.old-AbC123" / "model.bin", "v1");
  fs::create_directories(s.dir / "checkpoint.tmp-XyZ789");
  spit(s.dir / "checkpoint.tmp-XyZ789" / "model.bin", "v2-maybe-incomplete");
  spit(s.dir / "checkpoint.tmp-keepme-not-ours", "x"); // not our name pattern: left alone
  spit(s.dir / "other.tmp-AbC123", "x");               // another target's: left alone
  BOOST_TEST(msrl::recover_directory(ck));
  BOOST_TEST(slurp(ck / "model.bin") == "v1");
  BOOST_TEST((entries(s.dir) == std::vector<std::string>{"checkpoint", "checkpoint.tmp-keepme-not-ours", "other.tmp-AbC123"}));
  BOOST_TEST(!msrl::recover_directory(ck)); // nothing to do
  BOOST_TEST(slurp(ck / "model.bin") == "v1");

  // With the directory present, stale copies are removed and the directory is kept.
  fs::create_directories(s.dir / "checkpoint.old-QqQqQq");
  fs::create_directories(s.dir / "checkpoint.tmp-WwWwWw");
  BOOST_TEST(!msrl::recover_directory(ck));
  BOOST_TEST(slurp(ck / "model.bin") == "v1");
  BOOST_TEST(count_named(s.dir, "checkpoint.old-") == 0);
  BOOST_TEST(count_named(s.dir, "checkpoint.tmp-") == 1); // only the one not ours
  BOOST_TEST(!msrl::recover_directory(s.dir / "no_such_parent" / "ck"));
  BOOST_CHECK_THROW(msrl::recover_directory(fs::path{}), msrl::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
