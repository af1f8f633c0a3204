#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "memx/memx.hpp"
#include "pyjson.hpp"

using namespace memx;

TEST(Tensor, ZeroFilledWithExactByteSize) {
  Tensor t(DType::Float16, {2, 3, 4});
  EXPECT_EQ(t.size(), 24);
  EXPECT_EQ(t.nbytes(), 48u);
  for (uint8_t b : t.bytes) EXPECT_EQ(b, 0);
  EXPECT_EQ(t.describe(), "float16[2, 3, 4]");
}

TEST(Tensor, NegativeDimsAreRefused) {
  EXPECT_THROW(Tensor(DType::Float32, {2, -1}), ShapeError);
}

TEST(Tensor, StackAndUnstackRowsRoundTrip) {
  Tensor a(DType::Float32, {1, 2, 3}), b(DType::Float32, {2, 2, 3});
  for (int i = 0; i < 6; ++i) a.data<float>()[i] = static_cast<float>(i);
  for (int i = 0; i < 12; ++i) b.data<float>()[i] = static_cast<float>(100 + i);
  Tensor s = concat_rows({&a, &b});
  ASSERT_EQ(s.shape, (Shape{3, 2, 3}));
  EXPECT_EQ(s.data<float>()[5], 5.0f);
  EXPECT_EQ(s.data<float>()[6], 100.0f);
  Tensor back_a = s.rows(0, 1), back_b = s.rows(1, 3);
  EXPECT_EQ(back_a.bytes, a.bytes);
  EXPECT_EQ(back_b.bytes, b.bytes);
  EXPECT_EQ(s.rows(2, 3).data<float>()[0], 106.0f);
}

TEST(Tensor, StackRefusesDifferentLayouts) {
  Tensor a(DType::Float32, {1, 2, 3}), b(DType::Float32, {1, 3, 2}), c(DType::Float16, {1, 2, 3});
  EXPECT_THROW(concat_rows({&a, &b}), StateError);
  EXPECT_THROW(concat_rows({&a, &c}), StateError);
}

TEST(Tensor, RowsOutOfRangeIsAnError) {
  Tensor a(DType::Int64, {2, 2});
  EXPECT_THROW(a.rows(1, 3), InternalError);
}

TEST(Tensor, FindsNonFiniteValuesInEveryFloatType) {
  Tensor f(DType::Float32, {4});
  EXPECT_EQ(f.first_non_finite(), -1);
  f.data<float>()[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(f.first_non_finite(), 2);
  Tensor h(DType::Float16, {3});
  h.data<uint16_t>()[1] = 0x7C00;  // +inf
  EXPECT_EQ(h.first_non_finite(), 1);
  h.data<uint16_t>()[1] = 0x7BFF;  // 65504, the largest finite half
  EXPECT_EQ(h.first_non_finite(), -1);
  Tensor i(DType::Int64, {3});
  i.data<int64_t>()[0] = -1;
  EXPECT_EQ(i.first_non_finite(), -1);
}

TEST(Tensor, DTypeNamesRoundTrip) {
  for (DType d : {DType::Float32, DType::Float16, DType::Int64, DType::Int32, DType::Int8, DType::UInt8, DType::Bool}) {
    EXPECT_EQ(dtype_from_name(dtype_name(d)), d);
    EXPECT_EQ(dtype_from_numpy_descr(numpy_descr(d)), d);
  }
  EXPECT_THROW(dtype_from_name("float64"), ManifestError);
  EXPECT_THROW(dtype_from_numpy_descr(">f4"), DTypeError);
}

TEST(Errors, MessageNamesExpectedAndActualLikePython) {
  SegmentLengthError e("segment length outside what the package allows", "1..16 tokens", "17");
  EXPECT_STREQ(e.what(), "segment length outside what the package allows: expected 1..16 tokens, got 17");
  EXPECT_EQ(e.expected(), "1..16 tokens");
  EXPECT_EQ(e.actual(), "17");
  BackendUnavailableError h("no provider", "CUDA", "CPU", "install it");
  EXPECT_STREQ(h.what(), "no provider: expected CUDA, got CPU (install it)");
  // the hierarchy mirrors memx/errors.py
  EXPECT_NE(dynamic_cast<const ShapeError*>(&e), nullptr);
  EXPECT_NE(dynamic_cast<const InputError*>(&e), nullptr);
}

TEST(PythonJson, DumpsSortsKeysAndEscapesLikeJsonDumps) {
  nlohmann::json v = nlohmann::json::parse(R"({"b": [1, -2, "x\ny"], "a": {"z": null, "y": true}, "é": "ü\u0001"})");
  EXPECT_EQ(detail::python_dumps(v), R"({"a": {"y": true, "z": null}, "b": [1, -2, "x\ny"], "\u00e9": "\u00fc\u0001"})");
  EXPECT_EQ(detail::python_dumps(nlohmann::json::parse(R"({"a": 2.5, "b": 1e-05, "c": 1e16})")), R"({"a": 2.5, "b": 1e-05, "c": 1e+16})");  // repr(float)
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 56 bytes: padding spills into a 2nd block
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
