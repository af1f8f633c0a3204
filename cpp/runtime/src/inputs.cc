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

}  // namespace memx
