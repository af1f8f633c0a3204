// Package directory checks before any session is created: every listed file lies inside the
// package, exists and has its recorded size (and sha256 when asked).
#include "package.hpp"

#include <filesystem>

#include "memx/errors.hpp"
#include "memx/npy.hpp"
#include "memx/snapshot.hpp"

namespace fs = std::filesystem;

namespace memx::detail {

std::string safe_join(const std::string& root, const std::string& relative) {
  fs::path rel(relative);
  if (relative.empty() || rel.is_absolute() || rel.has_root_name())
    throw UnsafePathError("package path must be relative to the package", "a relative path inside the package", relative);
  const fs::path base = fs::weakly_canonical(fs::path(root));
  const fs::path target = fs::weakly_canonical(base / rel);
  auto b = base.begin(), t = target.begin();
  for (; b != base.end(); ++b, ++t)
    if (t == target.end() || *b != *t) throw UnsafePathError("package path leaves the package directory", "a path inside " + root, relative);
  return target.string();
}

void check_package_files(const std::string& root, const Manifest& manifest, bool verify_hashes) {
  if (!fs::is_directory(root)) throw PackageFileError("package directory not found", "a directory containing memx.json", root);
  for (const auto& [relative, entry] : manifest.files) {
    const std::string path = safe_join(root, relative);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) throw PackageFileError("package file is missing", relative, "no such file");
    const auto size = static_cast<int64_t>(fs::file_size(path, ec));
    if (ec || size != entry.bytes) throw PackageFileError("package file '" + relative + "' has the wrong size", std::to_string(entry.bytes) + " bytes", std::to_string(size) + " bytes");
    if (verify_hashes) {
      const std::vector<uint8_t> raw = read_file(path);
      const std::string digest = sha256_hex(raw.data(), raw.size());
      if (digest != entry.sha256) throw PackageFileError("package file '" + relative + "' does not match its hash (altered since export)", entry.sha256.substr(0, 16), digest.substr(0, 16),
                                                          "re-export or re-copy the package; --no-verify skips the check");
    }
  }
}

}  // namespace memx::detail
