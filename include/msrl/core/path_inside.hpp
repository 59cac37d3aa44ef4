#pragma once
/// \file Whether a path from a data set stays inside a folder once `..` and symbolic links are
/// resolved: the rule for media paths (msrl-train's rows) and video frames (trainer/video.hpp).
#include <filesystem>
#include <system_error>

namespace msrl {

/// True when `path` resolves (std::filesystem::weakly_canonical: `..` and symbolic links) to
/// `folder` or to something inside it; false when it leads out or either cannot be resolved.
inline bool resolves_inside(const std::filesystem::path& path, const std::filesystem::path& folder) {
  std::error_code ec;
  const auto root = std::filesystem::weakly_canonical(folder, ec);
  if (ec) return false;
  const auto real = std::filesystem::weakly_canonical(path, ec);
  if (ec) return false;
  const auto rel = real.lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

} // namespace msrl
