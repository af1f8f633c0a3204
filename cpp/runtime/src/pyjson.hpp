// JSON written exactly like Python's json.dumps(value, sort_keys=True): ", " and ": "
// separators, ASCII-only strings (\uXXXX escapes). Snapshot headers are hashed, so both
// runtimes must produce the same bytes, and so is a manifest's model id (its config holds floats).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace memx::detail {

std::string python_dumps(const nlohmann::json& value);

// repr(float) as CPython writes it: the shortest digits that read back as x, fixed notation for
// 1e-4 <= |x| < 1e16 ("0.0001", "1e-05", "1e+16", "2.5", "-0.0")
std::string python_float_repr(double x);

}  // namespace memx::detail
