#include "local_global_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

// This file is compiled once per instruction set (CMake: one object library per variant, each
// with its own flags and MEMX_KERNEL_VARIANT); kernel_dispatch.cc picks one at run time.
#ifndef MEMX_KERNEL_VARIANT
#error "compile with -DMEMX_KERNEL_VARIANT=<name> (cpp/ops/CMakeLists.txt does)"
#endif

// MEMX_SIMD_AVX2 / MEMX_SIMD_NEON (set per variant by CMake): the register-blocked loops over
// simd::F8; the `baseline` variant defines neither and runs the portable scalar loops alone.
#include "simd.h"

namespace memx {
namespace MEMX_KERNEL_VARIANT {
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

constexpr int kGroup = 4;        // queries scored together
constexpr int64_t kParallelWork = int64_t{1} << 22;  // multiply-adds below which one thread does the call
constexpr int64_t kColumnPad = 16;  // score columns per register block

// s[r * ld_s + c] = sum_d qg[r * dim + d] * kt[d * ld_k + c] for c in [0, n): register blocks of
// 4 queries x 16 columns accumulate over d, so every key vector loaded feeds 4 queries.
void ScoreBlock(const float* qg, int64_t dim, const float* kt, int64_t ld_k, int64_t n, float* s, int64_t ld_s) {
  int64_t c = 0;
#ifdef MEMX_SIMD
  using namespace simd;
  for (; c + 16 <= n; c += 16) {
    F8 a[kGroup][2];
    for (int r = 0; r < kGroup; ++r) a[r][0] = a[r][1] = Zero();
    for (int64_t d = 0; d < dim; ++d) {
      const F8 k0 = Load(kt + d * ld_k + c), k1 = Load(kt + d * ld_k + c + 8);
      for (int r = 0; r < kGroup; ++r) {
        const F8 qv = Set1(qg[r * dim + d]);
        a[r][0] = Fma(qv, k0, a[r][0]);
        a[r][1] = Fma(qv, k1, a[r][1]);
      }
    }
    for (int r = 0; r < kGroup; ++r) {
      Store(s + r * ld_s + c, a[r][0]);
      Store(s + r * ld_s + c + 8, a[r][1]);
    }
  }
#endif
  for (; c < n; ++c)
    for (int r = 0; r < kGroup; ++r) {
      float a = 0.0f;
      for (int64_t d = 0; d < dim; ++d) a += qg[r * dim + d] * kt[d * ld_k + c];
      s[r * ld_s + c] = a;
    }
}

// acc[r * dim + d] += sum_j w[r * ld_w + j] * values[j * dim + d] for j in [0, n): register blocks
// of 4 queries x 16 features accumulate over j, so every value vector loaded feeds 4 queries.
void AccumulateBlock(const float* w, int64_t ld_w, const float* values, int64_t n, int64_t dim, float* acc) {
  int64_t d0 = 0;
#ifdef MEMX_SIMD
  using namespace simd;
  for (; d0 + 16 <= dim; d0 += 16) {
    F8 a[kGroup][2];
    for (int r = 0; r < kGroup; ++r) a[r][0] = a[r][1] = Zero();
    for (int64_t j = 0; j < n; ++j) {
      const float* vr = values + j * dim + d0;
      const F8 v0 = Load(vr), v1 = Load(vr + 8);
      for (int r = 0; r < kGroup; ++r) {
        const F8 wv = Set1(w[r * ld_w + j]);
        a[r][0] = Fma(wv, v0, a[r][0]);
        a[r][1] = Fma(wv, v1, a[r][1]);
      }
    }
    for (int r = 0; r < kGroup; ++r) {
      float* out = acc + r * dim + d0;
      Store(out, Add(Load(out), a[r][0]));
      Store(out + 8, Add(Load(out + 8), a[r][1]));
    }
  }
#endif
  for (; d0 < dim; ++d0)
    for (int r = 0; r < kGroup; ++r) {
      float a = 0.0f;
      for (int64_t j = 0; j < n; ++j) a += w[r * ld_w + j] * values[j * dim + d0];
      acc[r * dim + d0] += a;
    }
}

// x[i] <- exp(x[i] * scale - top) for i in [0, n); returns the sum.
float ExpShifted(float* x, int64_t n, float scale, float top) {
  int64_t i = 0;
  float total = 0.0f;
#ifdef MEMX_SIMD
  using namespace simd;
  F8 sum = Zero();
  const F8 vs = Set1(scale), neg_top = Set1(-top);
  for (; i + kLanes <= n; i += kLanes) {
    const F8 e = Exp8(Fma(Load(x + i), vs, neg_top));  // x * scale - top, one rounding
    Store(x + i, e);
    sum = Add(sum, e);
  }
  total = Sum(sum);
#endif
  for (; i < n; ++i) total += (x[i] = std::exp(x[i] * scale - top));
  return total;
}

// Softmax over the memory scores and the query's own local range [a, b) of the union row;
// everything outside the range gets weight 0. Returns 1 / sum.
float SoftmaxInPlace(float* mem_scores, int64_t mem, float* local, int64_t width, int64_t a, int64_t b, float scale) {
  float top = -INFINITY;
  for (int64_t m = 0; m < mem; ++m) top = std::max(top, mem_scores[m]);
  for (int64_t j = a; j < b; ++j) top = std::max(top, local[j]);
  top *= scale;  // scale > 0: max of scaled scores
  const float total = ExpShifted(mem_scores, mem, scale, top) + ExpShifted(local + a, b - a, scale, top);
  std::fill(local, local + a, 0.0f);
  std::fill(local + b, local + width, 0.0f);
  return 1.0f / total;
}

// One (batch, head): queries in tiles; each tile transposes the union of its queries' key
// ranges once (Kt[d][j]); queries go through in groups of kGroup over the union of their
// ranges (weights outside a query's own range are zero), with register-blocked loops.
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
    const int64_t ld = width + kColumnPad;  // zero columns after the keys: score blocks never need a scalar tail
    key_t.assign(static_cast<size_t>(dim * ld), 0.0f);  // [D][ld]
    for (int64_t j = 0; j < width; ++j)
      for (int64_t d = 0; d < dim; ++d) key_t[d * ld + j] = k[(lo + j) * dim + d];
    for (int64_t i0 = t0; i0 < t1; i0 += kGroup) {
      const int g = static_cast<int>(std::min<int64_t>(kGroup, t1 - i0));
      KeyRange own[kGroup];
      int64_t ulo = seq, uhi = 0;
      for (int r = 0; r < g; ++r) {
        own[r] = LocalKeys(p, i0 + r, length);
        ulo = std::min(ulo, own[r].lo);
        uhi = std::max(uhi, own[r].hi);
      }
      const int64_t un = uhi - ulo;
      const int64_t un_padded = (un + kColumnPad - 1) / kColumnPad * kColumnPad;  // <= width - (ulo - lo) + kColumnPad
      const int64_t row = mem + un_padded;
      std::fill(qg.begin(), qg.end(), 0.0f);  // absent queries (g < kGroup) score zeros, dropped below
      for (int r = 0; r < g; ++r) std::copy(q + (i0 + r) * dim, q + (i0 + r + 1) * dim, qg.begin() + r * dim);
      scores.assign(static_cast<size_t>(kGroup * row), 0.0f);  // [G][M + un]
      ScoreBlock(qg.data(), dim, mem_t.data(), mem, mem, scores.data(), row);
      ScoreBlock(qg.data(), dim, key_t.data() + (ulo - lo), ld, un_padded, scores.data() + mem, row);
      float inv[kGroup] = {};
      for (int r = 0; r < kGroup; ++r) {
        float* sr = scores.data() + r * row;
        if (r < g)
          inv[r] = SoftmaxInPlace(sr, mem, sr + mem, un_padded, own[r].lo - ulo, own[r].hi - ulo, scale);
        else
          std::fill(sr, sr + row, 0.0f);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      if (mem) AccumulateBlock(scores.data(), row, mem_v, mem, dim, acc.data());
      AccumulateBlock(scores.data() + mem, row, v + ulo * dim, un, dim, acc.data());
      for (int r = 0; r < g; ++r) {
        float* oi = out + (i0 + r) * dim;
        for (int64_t d = 0; d < dim; ++d) oi[d] = acc[r * dim + d] * inv[r];
      }
    }
  }
}

}  // namespace

void LocalGlobalAttentionForward(const LocalGlobalParams& params, const AttentionShape& shape, const float* q, const float* k,
                                 const float* v, const int64_t* lengths, const float* mem_k, const float* mem_v, float* out) {
  const int64_t heads = shape.heads, seq = shape.seq, dim = shape.head_dim, mem = shape.memory;
  const int64_t units = shape.batch * heads;
  // Small calls run on the calling thread: waking a thread team costs more than the work.
  const int64_t keys = (params.pattern == Pattern::kBand ? 2 * params.window + 1 : params.window) + mem;
  const bool parallel = units > 1 && units * seq * keys * dim >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t b = u / heads;
    const int64_t length = std::clamp<int64_t>(lengths[b], 0, seq);
    const int64_t off = u * seq * dim;
    const int64_t moff = u * mem * dim;
    AttendOneHead(params, seq, dim, mem, length, q + off, k + off, v + off, mem ? mem_k + moff : nullptr, mem ? mem_v + moff : nullptr,
                  out + off);
  }
}

}  // namespace MEMX_KERNEL_VARIANT
}  // namespace memx
