#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "memx/memx.hpp"
#include "onnx_scan.hpp"

using namespace memx;

namespace {
// protobuf encoding helpers: just enough to build ONNX messages by hand
std::string varint(uint64_t v) {
  std::string s;
  do {
    uint8_t b = v & 0x7F;
    v >>= 7;
    s += static_cast<char>(b | (v ? 0x80 : 0));
  } while (v);
  return s;
}
std::string field(uint32_t number, const std::string& payload) { return varint((uint64_t(number) << 3) | 2) + varint(payload.size()) + payload; }
std::string int_field(uint32_t number, uint64_t v) { return varint(uint64_t(number) << 3) + varint(v); }

std::string external_tensor(const std::string& location) {
  std::string entry = field(1, "location") + field(2, location);
  return field(8, "w") + int_field(14, 1) + field(13, entry) + field(13, field(1, "offset") + field(2, "0"));
}
std::string graph_with_initializer(const std::string& location) { return field(5, external_tensor(location)) + field(2, "g"); }
std::string model(const std::string& graph) { return int_field(1, 8) + field(7, graph); }
std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
}  // namespace

TEST(OnnxScan, FindsInitializerLocations) {
  auto found = detail::external_data_locations(bytes(model(graph_with_initializer("weights.bin"))));
  EXPECT_EQ(found, std::vector<std::string>{"weights.bin"});
}

TEST(OnnxScan, FindsTensorsInAttributesSubgraphsAndFunctions) {
  const std::string constant = field(1, "c") + field(5, field(1, "value") + field(5, external_tensor("const.bin")));
  const std::string sub = field(1, field(5, field(1, "then_branch") + field(6, graph_with_initializer("../sub.bin"))));
  const std::string graph = field(1, constant) + sub;
  const std::string function = field(1, "f") + field(7, field(5, field(5, external_tensor("fn.bin"))));
  auto found = detail::external_data_locations(bytes(model(graph) + field(25, function)));
  EXPECT_EQ(found, (std::vector<std::string>{"const.bin", "../sub.bin", "fn.bin"}));
}

TEST(OnnxScan, RefusesMalformedBytes) {
  std::string good = model(graph_with_initializer("w.bin"));
  EXPECT_THROW(detail::external_data_locations(bytes(good.substr(0, good.size() - 3))), PackageError);
  EXPECT_THROW(detail::external_data_locations(bytes("\x0f\x01")), PackageError);  // wire type 7
}

TEST(OnnxScan, PackageRefusesExternalDataThatLeavesIt) {
  const auto root = std::filesystem::temp_directory_path() / "memx-gtest-extdata";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "graphs");
  std::ofstream(root / "graphs/inside.onnx", std::ios::binary) << model(graph_with_initializer("w.bin"));
  std::ofstream(root / "graphs/up-one.onnx", std::ios::binary) << model(graph_with_initializer("../w.bin"));
  std::ofstream(root / "graphs/escape.onnx", std::ios::binary) << model(graph_with_initializer("../../secret.bin"));
  std::ofstream(root / "graphs/absolute.onnx", std::ios::binary) << model(graph_with_initializer("/etc/passwd"));
  const std::set<std::string> listed = {"graphs/w.bin", "w.bin"};
  EXPECT_NO_THROW(detail::check_external_data(root.string(), "graphs/inside.onnx", listed));
  EXPECT_NO_THROW(detail::check_external_data(root.string(), "graphs/up-one.onnx", listed));  // still inside the package
  try {
    detail::check_external_data(root.string(), "graphs/escape.onnx", listed);
    FAIL() << "escaping external data accepted";
  } catch (const UnsafePathError& e) {
    EXPECT_EQ(e.actual(), "../../secret.bin");
  }
  EXPECT_THROW(detail::check_external_data(root.string(), "graphs/absolute.onnx", listed), UnsafePathError);
  std::filesystem::remove_all(root);
}

TEST(OnnxScan, UnlistedExternalDataIsRefusedAsPythonRefusesIt) {  // memx-run accepted it (issue 17)
  const auto root = std::filesystem::temp_directory_path() / "memx-gtest-unlisted";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  std::ofstream(root / "step.onnx", std::ios::binary) << model(graph_with_initializer("stray.bin"));
  try {
    detail::check_external_data(root.string(), "step.onnx", {"step.onnx"});
    FAIL() << "unlisted external data accepted";
  } catch (const PackageFileError& e) {
    EXPECT_EQ(std::string(e.message()), "external data 'stray.bin' of step.onnx is not listed in the manifest");
    EXPECT_EQ(e.expected(), "listed in files");
  }
  EXPECT_NO_THROW(detail::check_external_data(root.string(), "step.onnx", {"step.onnx", "stray.bin"}));
  std::filesystem::remove_all(root);
}

TEST(OnnxScan, RealExportedGraphHasNoEscapingData) {
  const char* pkg = std::getenv("MEMX_TEST_PACKAGE");
  if (!pkg) GTEST_SKIP() << "needs MEMX_TEST_PACKAGE";
  Manifest m = Manifest::load(pkg);
  std::set<std::string> listed;
  for (const auto& [rel, _] : m.files) listed.insert(rel);
  for (const auto& g : m.graphs) EXPECT_NO_THROW(detail::check_external_data(pkg, g.file, listed));
}
