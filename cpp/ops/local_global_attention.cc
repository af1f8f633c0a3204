#include "local_global_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace memx {
namespace {

constexpr int64_t kQueryTile = 32;  // queries sharing one transposed key block

// The local keys query i may see, as a half-open range [lo, hi) of positions < length.
struct KeyRange {
  int64_t lo, hi;
};

KeyRange LocalKeys(const LocalGlobalParams& p, int64_t i, int64_t length) {
  int64_t lo, hi;
  if (p.pattern == Pattern::kChunked) {
    lo = (i / p.window) * p.window;
    hi = lo + p.window;
  } else {
    lo = i - p.window;
    hi = i + p.window + 1;
  }
  if (p.causal) hi = std::min(hi, i + 1);
  return {std::max<int64_t>(lo, 0), std::min(hi, length)};
}

// One (batch, head): queries in tiles; each tile transposes the union of its queries' key
// ranges once (Kt[d][j]) so score and output loops are unit-stride multiply-adds.
void AttendOneHead(const LocalGlobalParams& p, int64_t seq, int64_t dim, int64_t mem, int64_t length, const float* q,
                   const float* k, const float* v, const float* mem_k, const float* mem_v, float* out) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  std::vector<float> mem_t(static_cast<size_t>(dim * mem));  // [D][M]
  for (int64_t m = 0; m < mem; ++m)
    for (int64_t d = 0; d < dim; ++d) mem_t[d * mem + m] = mem_k[m * dim + d];
  std::vector<float> key_t, scores, acc(static_cast<size_t>(dim));
  std::fill(out, out + seq * dim, 0.0f);
  for (int64_t t0 = 0; t0 < length; t0 += kQueryTile) {
    const int64_t t1 = std::min(t0 + kQueryTile, length);
    const int64_t lo = LocalKeys(p, t0, length).lo;
    int64_t hi = lo;
    for (int64_t i = t0; i < t1; ++i) hi = std::max(hi, LocalKeys(p, i, length).hi);
    const int64_t width = hi - lo;
    key_t.assign(static_cast<size_t>(dim * width), 0.0f);  // [D][width]
    for (int64_t j = 0; j < width; ++j)
      for (int64_t d = 0; d < dim; ++d) key_t[d * width + j] = k[(lo + j) * dim + d];
    scores.resize(static_cast<size_t>(mem + width));
    for (int64_t i = t0; i < t1; ++i) {
      const KeyRange r = LocalKeys(p, i, length);
      const int64_t a = r.lo - lo, n = r.hi - r.lo;
      float* s_mem = scores.data();
      float* s_loc = scores.data() + mem;
      std::fill(scores.begin(), scores.begin() + mem + n, 0.0f);
      const float* qi = q + i * dim;
      for (int64_t d = 0; d < dim; ++d) {
        const float qd = qi[d];
        const float* mrow = mem_t.data() + d * mem;
        for (int64_t m = 0; m < mem; ++m) s_mem[m] += qd * mrow[m];
        const float* krow = key_t.data() + d * width + a;
        for (int64_t j = 0; j < n; ++j) s_loc[j] += qd * krow[j];
      }
      float top = -INFINITY;
      for (int64_t e = 0; e < mem + n; ++e) {
        s_mem[e] *= scale;
        top = std::max(top, s_mem[e]);
      }
      float total = 0.0f;
      for (int64_t e = 0; e < mem + n; ++e) {
        s_mem[e] = std::exp(s_mem[e] - top);
        total += s_mem[e];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t m = 0; m < mem; ++m) {
        const float w = s_mem[m];
        const float* vrow = mem_v + m * dim;
        for (int64_t d = 0; d < dim; ++d) acc[d] += w * vrow[d];
      }
      for (int64_t j = 0; j < n; ++j) {
        const float w = s_loc[j];
        const float* vrow = v + (r.lo + j) * dim;
        for (int64_t d = 0; d < dim; ++d) acc[d] += w * vrow[d];
      }
      const float inv = 1.0f / total;
      float* oi = out + i * dim;
      for (int64_t d = 0; d < dim; ++d) oi[d] = acc[d] * inv;
    }
  }
}

}  // namespace

bool ParsePattern(const std::string& text, Pattern* pattern) {
  if (text == "band") {
    *pattern = Pattern::kBand;
    return true;
  }
  if (text == "chunked") {
    *pattern = Pattern::kChunked;
    return true;
  }
  return false;
}

void LocalGlobalAttentionForward(const LocalGlobalParams& params, const AttentionShape& shape, const float* q, const float* k,
                                 const float* v, const int64_t* lengths, const float* mem_k, const float* mem_v, float* out) {
  const int64_t heads = shape.heads, seq = shape.seq, dim = shape.head_dim, mem = shape.memory;
  const int64_t units = shape.batch * heads;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t b = u / heads;
    const int64_t length = std::clamp<int64_t>(lengths[b], 0, seq);
    const int64_t off = u * seq * dim;
    const int64_t moff = u * mem * dim;
    AttendOneHead(params, seq, dim, mem, length, q + off, k + off, v + off, mem ? mem_k + moff : nullptr, mem ? mem_v + moff : nullptr,
                  out + off);
  }
}

}  // namespace memx
