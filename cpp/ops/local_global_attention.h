// memx.LocalGlobalAttention: CPU fp32 kernel (blocked, no S x S buffer).
//
// out[b,h,i,:] = softmax over {memory slots m} U {local keys j} of q_i . k / sqrt(dh), applied to
// the matching values, where local keys are the real tokens (j < lengths[b]) of the band
// |i - j| <= window or of the chunk of i, and j <= i when causal. Padding queries
// (i >= lengths[b]) give zeros. Same semantics as memx/ops/local_global.py.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace memx {

enum class Pattern { kBand, kChunked };

struct LocalGlobalParams {
  Pattern pattern = Pattern::kBand;
  int64_t window = 1;
  bool causal = false;
};

struct AttentionShape {
  int64_t batch = 0, heads = 0, seq = 0, head_dim = 0, memory = 0;
};

// q, k, v: [B, H, S, D]; lengths: [B]; mem_k, mem_v: [B, H, M, D] or nullptr when M == 0;
// out: [B, H, S, D]. Parallel over B x H.
void LocalGlobalAttentionForward(const LocalGlobalParams& params, const AttentionShape& shape, const float* q, const float* k,
                                 const float* v, const int64_t* lengths, const float* mem_k, const float* mem_v, float* out);

// Parses "band" / "chunked"; returns false for anything else.
bool ParsePattern(const std::string& text, Pattern* pattern);

using ForwardFn = void (*)(const LocalGlobalParams& params, const AttentionShape& shape, const float* q, const float* k,
                           const float* v, const int64_t* lengths, const float* mem_k, const float* mem_v, float* out);

// One compiled kernel variant: `variant` is its namespace (baseline, avx2, neon), `name` what
// KernelVariant() says when it is the chosen one ("portable", "avx2+fma", "neon").
struct KernelInfo {
  const char* variant;
  const char* name;
  ForwardFn forward;
};

// The variants built into this binary that this CPU can run, best first; the portable one
// (baseline) is always there, last. CMake says which were built: MEMX_HAVE_KERNEL_AVX2 / _NEON.
std::vector<KernelInfo> RunnableKernels();

// The variant the kernel runs with in this process ("avx2+fma", "neon", "portable"): the first
// of RunnableKernels(), or the portable one when MEMX_OPS_KERNEL=portable (kernel_dispatch.cc).
const char* KernelVariant();

// One definition of the forward pass per compiled variant (local_global_attention.cc built
// with -DMEMX_KERNEL_VARIANT=<name>); LocalGlobalAttentionForward calls the chosen one.
#define MEMX_DECLARE_KERNEL_VARIANT(name)                                                                                      \
  namespace name {                                                                                                              \
  void LocalGlobalAttentionForward(const LocalGlobalParams& params, const AttentionShape& shape, const float* q, const float* k, \
                                   const float* v, const int64_t* lengths, const float* mem_k, const float* mem_v, float* out); \
  }
MEMX_DECLARE_KERNEL_VARIANT(baseline)
MEMX_DECLARE_KERNEL_VARIANT(avx2)  // x86-64: AVX2 + FMA (simd.h, MEMX_SIMD_AVX2)
MEMX_DECLARE_KERNEL_VARIANT(neon)  // aarch64: Advanced SIMD (simd.h, MEMX_SIMD_NEON)
#undef MEMX_DECLARE_KERNEL_VARIANT

}  // namespace memx
