#include <algorithm>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "memx/memx.hpp"

using namespace memx;

namespace {
SnapshotData sample() {
  SnapshotData d;
  d.model_id = std::string(64, 'a');
  Tensor memory(DType::Float32, {2, 3, 4});
  for (int i = 0; i < 24; ++i) memory.data<float>()[i] = 0.5f * static_cast<float>(i) - 3.0f;
  Tensor count(DType::Int64, {2});
  count.data<int64_t>()[1] = 7;
  d.states.emplace("zeta", memory);
  d.states.emplace("alpha", count);
  d.order = {"zeta", "alpha"};
  d.pending_reset = {true, false};
  d.segments = 12;
  return d;
}
}  // namespace

TEST(Snapshot, RoundTripsStatesResetRowsAndSegments) {
  const SnapshotData d = sample();
  const SnapshotData back = decode_snapshot(encode_snapshot(d));
  EXPECT_EQ(back.model_id, d.model_id);
  EXPECT_EQ(back.pending_reset, d.pending_reset);
  EXPECT_EQ(back.segments, 12);
  ASSERT_EQ(back.states.size(), 2u);
  EXPECT_EQ(back.states.at("zeta").bytes, d.states.at("zeta").bytes);
  EXPECT_EQ(back.states.at("zeta").shape, (Shape{2, 3, 4}));
  EXPECT_EQ(back.states.at("alpha").dtype, DType::Int64);
  EXPECT_EQ(back.order, (std::vector<std::string>{"zeta", "alpha"}));  // written in the given order
}

TEST(Snapshot, LayoutIsMagicVersionHeaderPayloadDigest) {
  const std::vector<uint8_t> blob = encode_snapshot(sample());
  EXPECT_EQ(std::string(blob.begin(), blob.begin() + 8), "MEMXSNAP");
  EXPECT_EQ(blob[8] | (blob[9] << 8), 1);
  const uint32_t header_len = blob[10] | (blob[11] << 8) | (blob[12] << 16) | (uint32_t(blob[13]) << 24);
  const std::string header(blob.begin() + 14, blob.begin() + 14 + header_len);
  // Python's json.dumps(sort_keys=True): sorted keys, ", " and ": " separators
  EXPECT_EQ(header.substr(0, 30), "{\"batch\": 2, \"model_id\": \"aaaa");
  EXPECT_NE(header.find("\"pending_reset\": [true, false], \"segments\": 12, \"tensors\": [{\"dtype\": \"<f4\", \"name\": \"zeta\", \"nbytes\": 96, \"offset\": 0, \"shape\": [2, 3, 4]}"), std::string::npos);
  EXPECT_EQ(blob.size(), 14 + header_len + 96 + 16 + 32);
  const std::vector<uint8_t> digest = sha256(blob.data(), blob.size() - 32);
  EXPECT_TRUE(std::equal(digest.begin(), digest.end(), blob.end() - 32));
}

TEST(Snapshot, RefusesEveryAlteredOrTruncatedByte) {
  const std::vector<uint8_t> blob = encode_snapshot(sample());
  for (std::size_t i = 0; i < blob.size(); i += 7) {
    std::vector<uint8_t> bad = blob;
    bad[i] ^= 0x01;
    EXPECT_THROW(decode_snapshot(bad), SnapshotError) << "flipped byte " << i;
  }
  for (std::size_t n : {std::size_t(0), std::size_t(8), std::size_t(45), blob.size() - 1}) {
    std::vector<uint8_t> cut(blob.begin(), blob.begin() + n);
    EXPECT_THROW(decode_snapshot(cut), SnapshotCorruptError) << "truncated to " << n;
  }
}

TEST(Snapshot, ChecksumMismatchNamesBothDigests) {
  std::vector<uint8_t> blob = encode_snapshot(sample());
  blob[blob.size() - 40] ^= 0xFF;  // a payload byte
  try {
    decode_snapshot(blob);
    FAIL() << "altered snapshot accepted";
  } catch (const SnapshotCorruptError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos);
    EXPECT_EQ(e.expected().size(), 16u);
    EXPECT_EQ(e.actual().size(), 16u);
    EXPECT_NE(e.expected(), e.actual());
  }
}

TEST(Snapshot, RefusesOtherVersionsAndGarbage) {
  std::vector<uint8_t> blob = encode_snapshot(sample());
  blob[8] = 2;  // version 2, re-signed so only the version is wrong
  const std::vector<uint8_t> digest = sha256(blob.data(), blob.size() - 32);
  std::copy(digest.begin(), digest.end(), blob.end() - 32);
  try {
    decode_snapshot(blob);
    FAIL() << "version 2 accepted";
  } catch (const SnapshotMismatchError& e) {
    EXPECT_EQ(e.expected(), "1");
    EXPECT_EQ(e.actual(), "2");
  }
  std::vector<uint8_t> garbage(100, 'x');
  try {
    decode_snapshot(garbage);
    FAIL() << "garbage accepted";
  } catch (const SnapshotCorruptError& e) {
    EXPECT_EQ(e.actual(), "100 bytes starting with b'xxxxxxxx'");
  }
}

TEST(Snapshot, RefusesAHeaderThatLiesAboutSizes) {
  SnapshotData d = sample();
  std::vector<uint8_t> blob = encode_snapshot(d);
  const uint32_t header_len = blob[10] | (blob[11] << 8) | (blob[12] << 16) | (uint32_t(blob[13]) << 24);
  std::string header(blob.begin() + 14, blob.begin() + 14 + header_len);
  const std::size_t at = header.find("\"nbytes\": 96");
  ASSERT_NE(at, std::string::npos);
  header.replace(at, 12, "\"nbytes\": 99");  // same length: the payload no longer fits the shape
  std::vector<uint8_t> forged(blob.size());  // same sizes: [prefix | forged header | payload | new sha256]
  std::copy(blob.begin(), blob.end() - 32, forged.begin());
  std::copy(header.begin(), header.end(), forged.begin() + 14);
  const std::vector<uint8_t> digest = sha256(forged.data(), forged.size() - 32);
  std::copy(digest.begin(), digest.end(), forged.end() - 32);
  EXPECT_THROW(decode_snapshot(forged), SnapshotCorruptError);
}
