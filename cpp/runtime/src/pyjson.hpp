// JSON written exactly like Python's json.dumps(value, sort_keys=True): ", " and ": "
// separators, ASCII-only strings (\uXXXX escapes), floats as repr(float). Model ids and
// snapshot headers are hashed, so both runtimes must produce the same bytes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace memx::detail {

std::string python_dumps(const nlohmann::json& value);
std::string python_float_repr(double value);

}  // namespace memx::detail
