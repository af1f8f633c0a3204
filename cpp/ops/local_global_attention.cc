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

constexpr int kGroup = 4;  // queries scored together: each key/value row loaded once feeds 4 queries

// Softmax over the memory scores and the query's own local range [a, b) of the union row;
// everything outside the range gets weight 0. Returns 1 / sum.
float SoftmaxInPlace(float* mem_scores, int64_t mem, float* local, int64_t width, int64_t a, int64_t b, float scale) {
  float top = -INFINITY;
  for (int64_t m = 0; m < mem; ++m) top = std::max(top, mem_scores[m] * scale);
  for (int64_t j = a; j < b; ++j) top = std::max(top, local[j] * scale);
  float total = 0.0f;
  for (int64_t m = 0; m < mem; ++m) total += (mem_scores[m] = std::exp(mem_scores[m] * scale - top));
  for (int64_t j = 0; j < a; ++j) local[j] = 0.0f;
  for (int64_t j = a; j < b; ++j) total += (local[j] = std::exp(local[j] * scale - top));
  for (int64_t j = b; j < width; ++j) local[j] = 0.0f;
  return 1.0f / total;
}

// One (batch, head): queries in tiles; each tile transposes the union of its queries' key
// ranges once (Kt[d][j]); queries go through in groups of kGroup that share every key and
// value row load; score and output loops are unit-stride multiply-adds.
void AttendOneHead(const LocalGlobalParams& p, int64_t seq, int64_t dim, int64_t mem, int64_t length, const float* q,
                   const float* k, const float* v, const float* mem_k, const float* mem_v, float* out) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  std::vector<float> mem_t(static_cast<size_t>(dim * mem));  // [D][M]
  for (int64_t m = 0; m < mem; ++m)
    for (int64_t d = 0; d < dim; ++d) mem_t[d * mem + m] = mem_k[m * dim + d];
  std::vector<float> key_t, scores, acc(static_cast<size_t>(kGroup * dim)), qg(static_cast<size_t>(kGroup * dim));
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
    for (int64_t i0 = t0; i0 < t1; i0 += kGroup) {
      const int g = static_cast<int>(std::min<int64_t>(kGroup, t1 - i0));
      KeyRange own[kGroup];
      int64_t ulo = seq, uhi = 0;
      for (int r = 0; r < g; ++r) {
        own[r] = LocalKeys(p, i0 + r, length);
        ulo = std::min(ulo, own[r].lo);
        uhi = std::max(uhi, own[r].hi);
      }
      for (int r = g; r < kGroup; ++r) own[r] = {ulo, ulo};  // absent queries: zero rows, results dropped
      const int64_t un = uhi - ulo, row = mem + un;
      std::fill(qg.begin(), qg.end(), 0.0f);
      for (int r = 0; r < g; ++r) std::copy(q + (i0 + r) * dim, q + (i0 + r + 1) * dim, qg.begin() + r * dim);
      scores.assign(static_cast<size_t>(kGroup * row), 0.0f);  // [G][M + un]
      float* s0 = scores.data();
      float* s1 = s0 + row;
      float* s2 = s1 + row;
      float* s3 = s2 + row;
      for (int64_t d = 0; d < dim; ++d) {
        const float q0 = qg[d], q1 = qg[dim + d], q2 = qg[2 * dim + d], q3 = qg[3 * dim + d];
        const float* mrow = mem_t.data() + d * mem;
        for (int64_t m = 0; m < mem; ++m) {
          const float x = mrow[m];
          s0[m] += q0 * x; s1[m] += q1 * x; s2[m] += q2 * x; s3[m] += q3 * x;
        }
        const float* krow = key_t.data() + d * width + (ulo - lo);
        float *l0 = s0 + mem, *l1 = s1 + mem, *l2 = s2 + mem, *l3 = s3 + mem;
        for (int64_t j = 0; j < un; ++j) {
          const float x = krow[j];
          l0[j] += q0 * x; l1[j] += q1 * x; l2[j] += q2 * x; l3[j] += q3 * x;
        }
      }
      float inv[kGroup];
      for (int r = 0; r < kGroup; ++r) {
        float* sr = scores.data() + r * row;
        inv[r] = r < g ? SoftmaxInPlace(sr, mem, sr + mem, un, own[r].lo - ulo, own[r].hi - ulo, scale) : 0.0f;
        if (r >= g) std::fill(sr, sr + row, 0.0f);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      float *a0 = acc.data(), *a1 = a0 + dim, *a2 = a1 + dim, *a3 = a2 + dim;
      for (int64_t e = 0; e < row; ++e) {
        const float w0 = s0[e], w1 = s1[e], w2 = s2[e], w3 = s3[e];
        const float* vrow = e < mem ? mem_v + e * dim : v + (ulo + e - mem) * dim;
        for (int64_t d = 0; d < dim; ++d) {
          const float x = vrow[d];
          a0[d] += w0 * x; a1[d] += w1 * x; a2[d] += w2 * x; a3[d] += w3 * x;
        }
      }
      for (int r = 0; r < g; ++r) {
        float* oi = out + (i0 + r) * dim;
        for (int64_t d = 0; d < dim; ++d) oi[d] = acc[r * dim + d] * inv[r];
      }
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
