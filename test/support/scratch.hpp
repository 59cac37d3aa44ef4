#pragma once
/// \file Test helpers shared by the suites: a scratch folder removed at scope exit, and whole-file
/// read / write. msrl_add_test puts test/support on every test's include path.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <system_error>

#include <unistd.h>

namespace msrl_test {

/// A fresh folder under the system temp directory, "msrl_<tag>_<pid>_<random>", removed with
/// everything in it at scope exit (write permission is restored first, so tests may make it
/// read-only).
struct scratch {
  std::filesystem::path dir;
  explicit scratch(const std::string& tag) {
    dir = std::filesystem::temp_directory_path() /
          ("msrl_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir);
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() {
    std::error_code ec;
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(dir, ec);
  }
};

/// The whole file as bytes ("" when it cannot be opened).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Replaces the file's content with `s`.
inline void spit(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

} // namespace msrl_test
