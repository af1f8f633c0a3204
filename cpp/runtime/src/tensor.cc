#include "memx/tensor.hpp"

#include <cmath>

#include "memx/errors.hpp"

namespace memx {

namespace {
struct DTypeInfo {
  DType dtype;
  const char* name;
  const char* numpy;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::Float32, "float32", "<f4", 4}, {DType::Float16, "float16", "<f2", 2}, {DType::BFloat16, "bfloat16", "<V2", 2},
    {DType::Int64, "int64", "<i8", 8},     {DType::Int32, "int32", "<i4", 4},     {DType::Int8, "int8", "|i1", 1},
    {DType::UInt8, "uint8", "|u1", 1},     {DType::Bool, "bool", "|b1", 1},
};
const DTypeInfo& info(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d;
  throw InternalError("unknown DType value");
}
std::string all_names() {
  std::string s = "one of [";
  for (const auto& d : kDTypes) s += std::string(s.back() == '[' ? "" : ", ") + "'" + d.name + "'";
  return s + "]";
}
}  // namespace

std::size_t dtype_size(DType dtype) { return info(dtype).size; }
const char* dtype_name(DType dtype) { return info(dtype).name; }
const char* numpy_descr(DType dtype) { return info(dtype).numpy; }
bool is_floating(DType dtype) { return dtype == DType::Float32 || dtype == DType::Float16 || dtype == DType::BFloat16; }

DType dtype_from_name(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  throw ManifestError("unknown dtype", all_names(), name);
}

DType dtype_from_numpy_descr(const std::string& descr) {
  // numpy writes "<i8" on little-endian machines; "|b1"/"|i1"/"|u1" have no byte order
  for (const auto& d : kDTypes)
    if (descr == d.numpy || (descr.size() == 3 && descr[0] == '=' && descr.substr(1) == std::string(d.numpy).substr(1))) return d.dtype;
  throw DTypeError("unsupported numpy dtype", "a little-endian <f4, <f2, <i8, <i4, |i1, |u1 or |b1 array", descr);
}

int64_t numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ShapeError("a tensor dim is negative", "dims >= 0", shape_str(shape));
    if (__builtin_mul_overflow(n, d, &n)) throw ShapeError("a tensor's number of elements overflows", "a product of dims below 2^63", shape_str(shape));
  }
  return n;
}

std::size_t checked_nbytes(const Shape& shape, DType dtype) {
  const int64_t n = numel(shape);
  int64_t bytes = 0;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(dtype_size(dtype)), &bytes) || bytes > kMaxTensorBytes)
    throw ShapeError("a tensor is too large", "at most " + std::to_string(kMaxTensorBytes) + " bytes", std::string(dtype_name(dtype)) + shape_str(shape));
  return static_cast<std::size_t>(bytes);
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor::Tensor(DType dtype_, Shape shape_) : dtype(dtype_), shape(std::move(shape_)) {
  for (int64_t d : shape)
    if (d < 0) throw ShapeError("tensor dims must be non-negative", "dims >= 0", shape_str(shape));
  const std::size_t n = checked_nbytes(shape, dtype);
  try {
    bytes.assign(n, 0);
  } catch (const std::bad_alloc&) {
    throw ShapeError("cannot allocate a tensor", std::to_string(n) + " bytes of free memory", std::string(dtype_name(dtype)) + shape_str(shape));
  }
}

Tensor Tensor::from_bytes(DType dtype, Shape shape, const void* data) {
  Tensor t(dtype, std::move(shape));
  if (t.nbytes()) std::memcpy(t.bytes.data(), data, t.nbytes());
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  if (shape.empty() || begin < 0 || end > shape[0] || begin > end)
    throw InternalError("row range outside the tensor", "0 <= begin <= end <= " + std::to_string(shape.empty() ? 0 : shape[0]),
                        std::to_string(begin) + ".." + std::to_string(end));
  Shape out = shape;
  out[0] = end - begin;
  const std::size_t row = shape[0] ? nbytes() / static_cast<std::size_t>(shape[0]) : 0;
  return Tensor::from_bytes(dtype, out, bytes.data() + begin * row);
}

namespace {
bool half_non_finite(uint16_t h) { return (h & 0x7C00u) == 0x7C00u; }
bool bf16_non_finite(uint16_t h) { return (h & 0x7F80u) == 0x7F80u; }
}  // namespace

int64_t first_non_finite(DType dtype, const void* data, int64_t n) {
  if (dtype == DType::Float32) {
    const auto* p = static_cast<const float*>(data);
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
  } else if (dtype == DType::Float16 || dtype == DType::BFloat16) {
    const auto* p = static_cast<const uint16_t*>(data);
    for (int64_t i = 0; i < n; ++i)
      if (dtype == DType::Float16 ? half_non_finite(p[i]) : bf16_non_finite(p[i])) return i;
  }
  return -1;
}

int64_t Tensor::first_non_finite() const { return memx::first_non_finite(dtype, bytes.data(), size()); }

std::string Tensor::describe() const { return std::string(dtype_name(dtype)) + shape_str(shape); }

Tensor concat_rows(const std::vector<const Tensor*>& parts) {
  if (parts.empty()) throw InternalError("concat_rows needs at least one tensor");
  const Tensor& first = *parts[0];
  Shape shape = first.shape;
  shape[0] = 0;
  for (const Tensor* t : parts) {
    if (t->dtype != first.dtype || t->shape.size() != first.shape.size() ||
        !std::equal(t->shape.begin() + 1, t->shape.end(), first.shape.begin() + 1))
      throw StateError("cannot stack tensors of different layouts", first.describe(), t->describe());
    shape[0] += t->shape[0];
  }
  Tensor out(first.dtype, shape);
  std::size_t offset = 0;
  for (const Tensor* t : parts) {
    if (t->nbytes()) std::memcpy(out.bytes.data() + offset, t->bytes.data(), t->nbytes());
    offset += t->nbytes();
  }
  return out;
}

Tensor make_tokens(const std::vector<int64_t>& ids, int64_t batch, int64_t segment_len) {
  const int64_t n = numel({batch, segment_len});  // checked: a product that overflows is a ShapeError
  if (static_cast<int64_t>(ids.size()) != n)
    throw ShapeError("token count does not fill [batch, segment]", std::to_string(n) + " ids", std::to_string(ids.size()) + " ids");
  return Tensor::from_bytes(DType::Int64, {batch, segment_len}, ids.data());
}

Tensor make_lengths(const std::vector<int64_t>& lengths) {
  return Tensor::from_bytes(DType::Int64, {static_cast<int64_t>(lengths.size())}, lengths.data());
}

Tensor make_reset(const std::vector<bool>& reset) {
  Tensor t(DType::Bool, {static_cast<int64_t>(reset.size())});
  for (std::size_t i = 0; i < reset.size(); ++i) t.bytes[i] = reset[i] ? 1 : 0;
  return t;
}

}  // namespace memx
