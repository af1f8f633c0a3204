#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "memx/memx.hpp"

using namespace memx;

namespace {
std::string temp(const std::string& name) { return (std::filesystem::temp_directory_path() / name).string(); }
}  // namespace

TEST(Npy, WriteThenReadRoundTripsEveryDtype) {
  for (DType d : {DType::Float32, DType::Float16, DType::Int64, DType::Int32, DType::Int8, DType::UInt8, DType::Bool}) {
    Tensor t(d, {3, 5});
    for (std::size_t i = 0; i < t.nbytes(); ++i) t.bytes[i] = static_cast<uint8_t>(d == DType::Bool ? i % 2 : i * 7);
    const std::string path = temp(std::string("memx-gtest-") + dtype_name(d) + ".npy");
    write_npy(path, t);
    Tensor back = read_npy(path);
    EXPECT_EQ(back.dtype, d);
    EXPECT_EQ(back.shape, t.shape);
    EXPECT_EQ(back.bytes, t.bytes);
    std::filesystem::remove(path);
  }
}

TEST(Npy, OneDimensionalAndScalarShapes) {
  Tensor v(DType::Int64, {4});
  write_npy(temp("memx-gtest-1d.npy"), v);
  EXPECT_EQ(read_npy(temp("memx-gtest-1d.npy")).shape, (Shape{4}));
  Tensor s(DType::Float32, {});
  write_npy(temp("memx-gtest-0d.npy"), s);
  EXPECT_EQ(read_npy(temp("memx-gtest-0d.npy")).size(), 1);
}

TEST(Npy, RefusesBadFiles) {
  EXPECT_THROW(read_npy(temp("memx-gtest-missing.npy")), NpyError);
  std::ofstream(temp("memx-gtest-bad.npy")) << "not an npy file at all";
  EXPECT_THROW(read_npy(temp("memx-gtest-bad.npy")), NpyError);
  Tensor t(DType::Float32, {4});
  write_npy(temp("memx-gtest-trunc.npy"), t);
  std::filesystem::resize_file(temp("memx-gtest-trunc.npy"), std::filesystem::file_size(temp("memx-gtest-trunc.npy")) - 3);
  try {
    read_npy(temp("memx-gtest-trunc.npy"));
    FAIL() << "truncated file accepted";
  } catch (const NpyError& e) {
    EXPECT_EQ(e.expected(), "16 bytes");
  }
}
