// The readers' limits (issue 17): sizes computed with overflow checks, bounded JSON nesting,
// regular files only. Run plain and under ASan/UBSan by `make test`.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "memx/memx.hpp"

using namespace memx;

TEST(Limits, ShapeProductsThatOverflowAreShapeErrors) {
  EXPECT_THROW(numel({int64_t(1) << 32, int64_t(1) << 32}), ShapeError);
  EXPECT_THROW(numel({2, -1}), ShapeError);
  EXPECT_EQ(numel({int64_t(1) << 31, 2}), int64_t(1) << 32);
  EXPECT_THROW(Tensor(DType::Int64, {int64_t(1) << 61}), ShapeError);  // 2^64 bytes: refused before allocating
  EXPECT_THROW(Tensor(DType::Float32, {int64_t(1) << 20, int64_t(1) << 20}), ShapeError);  // 4 TiB > the 1 TiB cap
  EXPECT_THROW(make_tokens({1, 2}, int64_t(1) << 40, int64_t(1) << 40), ShapeError);
}

TEST(Limits, DeeplyNestedJsonIsRefusedNotRecursedInto) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  try {
    Manifest::parse("{\"format\": \"memx.package\", \"x\": " + deep + "}");
    ADD_FAILURE() << "accepted";
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("nested too deeply: expected at most 64 levels of arrays and objects, got 200001"), std::string::npos) << e.what();
  }
  // brackets inside strings are not nesting
  EXPECT_THROW(Manifest::parse("{\"format\": \"memx.package\", \"x\": \"" + deep + "\"}"), ManifestError);  // refused later, for other reasons
}

TEST(Limits, AFifoNamedMemxJsonIsRefusedWithoutBlocking) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("memx-fifo-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  ASSERT_EQ(::mkfifo((dir / "memx.json").c_str(), 0600), 0);
  try {
    Manifest::load(dir.string());
    ADD_FAILURE() << "accepted";
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("is not a regular file: expected a regular file, got a FIFO"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(Limits, ASnapshotHeaderNestedTooDeeplyIsCorrupt) {
  const std::string header = std::string(5000, '[') + std::string(5000, ']');
  std::vector<uint8_t> blob = {'M', 'E', 'M', 'X', 'S', 'N', 'A', 'P', 1, 0};
  for (int i = 0; i < 4; ++i) blob.push_back(uint8_t(header.size() >> (8 * i)));
  blob.insert(blob.end(), header.begin(), header.end());
  const std::vector<uint8_t> digest = sha256(blob.data(), blob.size());  // a valid checksum: the nesting is what is refused
  blob.insert(blob.end(), digest.begin(), digest.end());
  try {
    decode_snapshot(blob);
    ADD_FAILURE() << "accepted";
  } catch (const SnapshotCorruptError& e) {
    EXPECT_NE(std::string(e.what()).find("snapshot header is nested too deeply"), std::string::npos) << e.what();
  }
}
