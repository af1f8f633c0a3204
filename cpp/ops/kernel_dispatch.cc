// Run-time choice of the LocalGlobalAttention kernel variant. A wheel must run on any CPU of its
// platform, so the SIMD loops are compiled beside a portable build of the same source (the scalar
// reference loops) and picked here: on x86-64 the AVX2/FMA build when the CPU has both, on
// aarch64 the NEON build (Advanced SIMD is part of ARMv8-A). MEMX_OPS_KERNEL=portable forces the
// portable build (tests compare the two); any other value is ignored.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "local_global_attention.h"

namespace memx {
namespace {

constexpr KernelInfo kPortable{"baseline", "portable", baseline::LocalGlobalAttentionForward};

KernelInfo Choose() {
  const char* wanted = std::getenv("MEMX_OPS_KERNEL");
  if (wanted != nullptr && std::strcmp(wanted, "portable") == 0) return kPortable;
  return RunnableKernels().front();
}

const KernelInfo& Chosen() {
  static const KernelInfo variant = Choose();  // thread-safe initialisation, once per process
  return variant;
}

}  // namespace

std::vector<KernelInfo> RunnableKernels() {
  std::vector<KernelInfo> kernels;
#ifdef MEMX_HAVE_KERNEL_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) kernels.push_back({"avx2", "avx2+fma", avx2::LocalGlobalAttentionForward});
#endif
#ifdef MEMX_HAVE_KERNEL_NEON
  kernels.push_back({"neon", "neon", neon::LocalGlobalAttentionForward});  // every aarch64 CPU has Advanced SIMD
#endif
  kernels.push_back(kPortable);
  return kernels;
}

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

const char* KernelVariant() { return Chosen().name; }

void LocalGlobalAttentionForward(const LocalGlobalParams& params, const AttentionShape& shape, const float* q, const float* k,
                                 const float* v, const int64_t* lengths, const float* mem_k, const float* mem_v, float* out) {
  Chosen().forward(params, shape, q, k, v, lengths, mem_k, mem_v, out);
}

}  // namespace memx
