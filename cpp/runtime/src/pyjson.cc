#include "pyjson.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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
  if (v.is_number_float()) {
    out += python_float_repr(v.get<double>());
    return;
  }
  switch (v.type()) {
    case nlohmann::json::value_t::null: out += "null"; break;
    case nlohmann::json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case nlohmann::json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case nlohmann::json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
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

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "NaN";  // json.dumps's words for them (memx's readers refuse them as input)
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, std::fabs(x), std::chars_format::scientific);  // shortest round trip: d.ddde+XX
  const std::string sci(buf, res.ptr);
  const std::size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::atoi(sci.c_str() + e + 1);
  const int n = static_cast<int>(digits.size()), point = exponent + 1;  // the decimal point sits after `point` digits
  std::string out = x < 0 ? "-" : "";
  if (point > -4 && point <= 16) {  // CPython's repr: fixed notation for 1e-4 <= |x| < 1e16
    if (point <= 0) out += "0." + std::string(-point, '0') + digits;
    else if (point >= n) out += digits + std::string(point - n, '0') + ".0";
    else out += digits.substr(0, point) + "." + digits.substr(point);
    return out;
  }
  out += digits.substr(0, 1);
  if (n > 1) out += "." + digits.substr(1);
  char exp[16];
  std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp;
}

std::string python_dumps(const nlohmann::json& value) {
  std::string out;
  dump(out, value);
  return out;
}

}  // namespace memx::detail
