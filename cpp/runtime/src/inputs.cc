// Step input checks (memx/runtimes/inputs.py): every failure is a typed memx error.
#include <algorithm>

#include "memx/errors.hpp"
#include "memx/runtime.hpp"

namespace memx {

void check_tokens(const Tensor& tokens, int64_t batch, const Manifest& manifest) {
  if (tokens.dtype != DType::Int64) throw DTypeError("tokens must be integer token ids", "int64", dtype_name(tokens.dtype));
  if (tokens.shape.size() != 2)
    throw RankError("tokens must be 2-D [batch, segment]", "rank 2", "rank " + std::to_string(tokens.shape.size()) + " with shape " + shape_str(tokens.shape));
  if (batch >= 0 && tokens.shape[0] != batch) throw BatchMismatchError("tokens batch size differs from the stream's", std::to_string(batch), std::to_string(tokens.shape[0]));
  const int64_t s = tokens.shape[1];
  if (s < manifest.segment_min || s > manifest.segment_max)
    throw SegmentLengthError("segment length outside what the package allows", std::to_string(manifest.segment_min) + ".." + std::to_string(manifest.segment_max) + " tokens", std::to_string(s));
  const int64_t* ids = tokens.data<int64_t>();
  for (int64_t i = 0; i < tokens.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= manifest.vocab_size)
      throw TokenRangeError("token id outside the vocabulary", "0.." + std::to_string(manifest.vocab_size - 1),
                            std::to_string(ids[i]) + " at [row, position] [" + std::to_string(i / s) + ", " + std::to_string(i % s) + "]");
  }
}

Tensor checked_lengths(const Tensor& lengths, int64_t batch, int64_t segment_len) {
  if (lengths.shape.empty() && lengths.bytes.empty()) return make_lengths(std::vector<int64_t>(batch, segment_len));
  if (lengths.dtype != DType::Int64) throw DTypeError("lengths must be integers", "int64", dtype_name(lengths.dtype));
  if (lengths.shape != Shape{batch}) throw BatchMismatchError("lengths must have one entry per row", shape_str({batch}), shape_str(lengths.shape));
  const int64_t* p = lengths.data<int64_t>();
  if (std::any_of(p, p + batch, [&](int64_t n) { return n < 0 || n > segment_len; })) {
    std::string got = "[";
    for (int64_t i = 0; i < batch; ++i) got += (i ? ", " : "") + std::to_string(p[i]);
    throw InputError("lengths out of range", "0.." + std::to_string(segment_len) + " (the segment length)", got + "]");
  }
  return lengths;
}

Tensor checked_reset(const Tensor& reset, int64_t batch) {
  if (reset.shape.empty() && reset.bytes.empty()) return Tensor(DType::Bool, {batch});
  if (reset.dtype != DType::Bool) throw DTypeError("reset must be boolean", "bool", dtype_name(reset.dtype));
  if (reset.shape != Shape{batch}) throw BatchMismatchError("reset must have one entry per row", shape_str({batch}), shape_str(reset.shape));
  return reset;
}

void check_count(int64_t value, const std::string& name) {
  if (value < 1 || value > kMaxBatch) throw InputError(name + " out of range", "1.." + std::to_string(kMaxBatch), std::to_string(value));
}

namespace {
std::string names_str(const std::vector<std::string>& names) {
  std::string s = "[";
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? ", '" : "'") + names[i] + "'";
  return s + "]";
}

// an integer tensor's element i as int64
int64_t integer_at(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::Int64: return t.data<int64_t>()[i];
    case DType::Int32: return t.data<int32_t>()[i];
    case DType::Int8: return t.data<int8_t>()[i];
    case DType::UInt8: return t.data<uint8_t>()[i];
    default: return 0;
  }
}
}  // namespace

void check_inputs(const StepInputs& inputs, const Manifest& manifest, int64_t batch, int64_t segment_len) {
  std::vector<std::string> declared, unknown, missing;
  for (const auto& in : manifest.inputs) declared.push_back(in.name);
  for (const auto& [name, _] : inputs)
    if (std::find(declared.begin(), declared.end(), name) == declared.end()) unknown.push_back(name);
  if (!unknown.empty())
    throw InputError("unknown step inputs", declared.empty() ? "no extra inputs (this package takes tokens, lengths, reset)" : "extra inputs " + names_str(declared), names_str(unknown));
  for (const auto& name : declared)
    if (!inputs.count(name)) missing.push_back(name);
  if (!missing.empty()) throw InputError("missing step inputs", "every extra input of the package " + names_str(declared), "missing " + names_str(missing));
  for (const auto& spec : manifest.inputs) {
    const Tensor& t = inputs.at(spec.name);
    const std::string what = "extra input '" + spec.name + "'";
    if (t.dtype != spec.dtype) throw DTypeError(what + " has the wrong dtype", dtype_name(spec.dtype), dtype_name(t.dtype));
    Shape want;
    for (const auto& d : spec.shape) want.push_back(d.name == "batch" ? batch : d.name == "segment" ? segment_len : d.size);
    if (t.shape.size() != want.size())
      throw RankError(what + " has the wrong rank", "rank " + std::to_string(want.size()), "rank " + std::to_string(t.shape.size()) + " with shape " + shape_str(t.shape));
    if (t.shape[0] != batch) throw BatchMismatchError(what + " batch size differs from the stream's", std::to_string(batch), std::to_string(t.shape[0]));
    if (t.shape != want) throw InputError(what + " has the wrong shape", shape_str(want), shape_str(t.shape));
    if (t.nbytes() != static_cast<std::size_t>(t.size()) * dtype_size(t.dtype)) throw InputError(what + " holds the wrong number of bytes", std::to_string(t.size() * dtype_size(t.dtype)), std::to_string(t.nbytes()));
    if (spec.range)
      for (int64_t i = 0; i < t.size(); ++i) {
        const int64_t v = integer_at(t, i);
        if (v < spec.range->first || v >= spec.range->second)
          throw TokenRangeError(what + " has a value outside its range", std::to_string(spec.range->first) + ".." + std::to_string(spec.range->second - 1),
                                std::to_string(v) + " at flat index " + std::to_string(i));
      }
    if (is_floating(t.dtype) && t.first_non_finite() >= 0) throw InputError(what + " holds NaN/Inf", "finite values", "non-finite at flat index " + std::to_string(t.first_non_finite()));
  }
}

}  // namespace memx
