// Host tensors: a dtype, a shape and contiguous (C-order) bytes. What the runtime takes and
// returns at its API boundary; the state of a Stream may live on a device in between.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace memx {

enum class DType { Float32, Float16, BFloat16, Int64, Int32, Int8, UInt8, Bool };

using Shape = std::vector<int64_t>;

std::size_t dtype_size(DType dtype);
// "float32", "float16", ... as in the manifest (memx/package/manifest.py DTYPES)
const char* dtype_name(DType dtype);
DType dtype_from_name(const std::string& name);  // throws ManifestError for unknown names
// numpy's dtype.str ("<f4", "|b1", ...), used by snapshots and .npy files
const char* numpy_descr(DType dtype);
DType dtype_from_numpy_descr(const std::string& descr);  // throws DTypeError
bool is_floating(DType dtype);

// the number of elements; throws ShapeError for a negative dim or a product that overflows
int64_t numel(const Shape& shape);
constexpr int64_t kMaxTensorBytes = int64_t(1) << 40;  // 1 TiB: larger shapes are refused before allocating
// numel(shape) * dtype_size(dtype), checked against overflow and kMaxTensorBytes (ShapeError)
std::size_t checked_nbytes(const Shape& shape, DType dtype);
std::string shape_str(const Shape& shape);  // "[2, 16, 64]" (Python list formatting)

struct Tensor {
  DType dtype = DType::Float32;
  Shape shape;
  std::vector<uint8_t> bytes;  // numel(shape) * dtype_size(dtype), C order

  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // zero-filled
  static Tensor from_bytes(DType dtype, Shape shape, const void* data);

  int64_t size() const { return numel(shape); }
  std::size_t nbytes() const { return bytes.size(); }
  template <typename T>
  T* data() { return reinterpret_cast<T*>(bytes.data()); }
  template <typename T>
  const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }

  // rows [begin, end) along axis 0, as a new tensor
  Tensor rows(int64_t begin, int64_t end) const;
  // first index (flat, C order) holding NaN/Inf, or -1; integer tensors never do
  int64_t first_non_finite() const;
  // "float32[2, 16, 64]"
  std::string describe() const;
};

// first index of n elements at data holding NaN/Inf, or -1 (integer dtypes: always -1)
int64_t first_non_finite(DType dtype, const void* data, int64_t n);

// Concatenate tensors of one dtype and equal trailing dims along axis 0.
Tensor concat_rows(const std::vector<const Tensor*>& parts);

// Typed constructors for the step inputs.
Tensor make_tokens(const std::vector<int64_t>& ids, int64_t batch, int64_t segment_len);  // int64 [B, S]
Tensor make_lengths(const std::vector<int64_t>& lengths);                                 // int64 [B]
Tensor make_reset(const std::vector<bool>& reset);                                        // bool [B]

}  // namespace memx
