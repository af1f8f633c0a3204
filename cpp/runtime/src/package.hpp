#pragma once

#include <string>

#include "memx/manifest.hpp"

namespace memx::detail {

// root/relative, refusing absolute paths and paths that resolve outside root (UnsafePathError)
std::string safe_join(const std::string& root, const std::string& relative);
void check_package_files(const std::string& root, const Manifest& manifest, bool verify_hashes);

}  // namespace memx::detail
