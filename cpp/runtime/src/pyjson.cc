#include "pyjson.hpp"

#include <cstdio>
#include <string>

#include "memx/errors.hpp"

namespace memx::detail {

namespace {

void append_escaped_codepoint(std::string& out, uint32_t cp) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\u%04x", cp);
  out += buf;
}

// Decode one UTF-8 sequence at s[i]; advances i. Invalid bytes become U+FFFD.
uint32_t next_codepoint(const std::string& s, std::size_t& i) {
  auto byte = [&](std::size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t c = byte(i);
  int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
  if (extra < 0 || i + extra >= s.size() + (extra == 0 ? 1 : 0)) {
    ++i;
    return 0xFFFD;
  }
  uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (byte(i + k) & 0x3F);
  i += extra + 1;
  return cp;
}

void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    uint32_t cp = next_codepoint(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (cp >= 0x7F && cp < 0x10000)) {
          append_escaped_codepoint(out, cp);
        } else if (cp >= 0x10000) {  // UTF-16 surrogate pair, as Python writes it
          cp -= 0x10000;
          append_escaped_codepoint(out, 0xD800 + (cp >> 10));
          append_escaped_codepoint(out, 0xDC00 + (cp & 0x3FF));
        } else {
          out += static_cast<char>(cp);
        }
    }
  }
  out += '"';
}

void dump(std::string& out, const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null: out += "null"; break;
    case nlohmann::json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case nlohmann::json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case nlohmann::json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case nlohmann::json::value_t::number_float:  // Python's float repr is not needed: the model id is read from memx.json
      throw InternalError("a snapshot header holds no floats", "null/bool/int/string/array/object", "float");
    case nlohmann::json::value_t::string: dump_string(out, v.get_ref<const std::string&>()); break;
    case nlohmann::json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& item : v) {
        if (!first) out += ", ";
        first = false;
        dump(out, item);
      }
      out += ']';
      break;
    }
    case nlohmann::json::value_t::object: {  // nlohmann's object is a std::map: keys sorted
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        dump_string(out, it.key());
        out += ": ";
        dump(out, it.value());
      }
      out += '}';
      break;
    }
    default: throw InternalError("value cannot be written as JSON", "null/bool/number/string/array/object", v.type_name());
  }
}

}  // namespace

std::string python_dumps(const nlohmann::json& value) {
  std::string out;
  dump(out, value);
  return out;
}

}  // namespace memx::detail
