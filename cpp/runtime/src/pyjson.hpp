// JSON written exactly like Python's json.dumps(value, sort_keys=True): ", " and ": "
// separators, ASCII-only strings (\uXXXX escapes). Snapshot headers are hashed, so both
// runtimes must produce the same bytes; they hold no floats (a float is an InternalError).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace memx::detail {

std::string python_dumps(const nlohmann::json& value);

}  // namespace memx::detail
