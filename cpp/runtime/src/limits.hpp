// Limits both readers apply before parsing (memx/package/limits.py): bounded JSON nesting (a
// deeply nested memx.json is a typed error, not a stack overflow), bounded manifest size,
// regular files only (a FIFO named memx.json must not block the reader).
#pragma once

#include <cstddef>
#include <cstdint>

namespace memx::detail {

constexpr int kMaxJsonDepth = 64;  // memx writes depth <= 6; a user's config nests a few levels more
constexpr std::uintmax_t kMaxManifestBytes = std::uintmax_t(64) << 20;

// The deepest nesting of arrays and objects in JSON text (brackets inside strings not counted).
template <typename It>
int json_depth(It begin, It end) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (It it = begin; it != end; ++it) {
    const unsigned char c = static_cast<unsigned char>(*it);
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = ++depth > deepest ? depth : deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace memx::detail
