#include "memx/errors.hpp"

namespace memx {

namespace {
std::string format_error(const std::string& message, const std::string& expected, const std::string& actual, const std::string& hint) {
  std::string text = message;
  if (!expected.empty() || !actual.empty()) text += ": expected " + expected + ", got " + actual;
  if (!hint.empty()) text += " (" + hint + ")";
  return text;
}
}  // namespace

Error::Error(const std::string& message, std::string expected, std::string actual, std::string hint)
    : std::runtime_error(format_error(message, expected, actual, hint)),
      message_(message),
      expected_(std::move(expected)),
      actual_(std::move(actual)),
      hint_(std::move(hint)) {}

}  // namespace memx
