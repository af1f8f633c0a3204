// Run-time choice of the LocalGlobalAttention kernel variant. A wheel must run on any CPU of its
// platform, so the AVX2/FMA loops are compiled beside a portable build of the same source (the
// scalar reference loops) and picked here when the CPU has them. MEMX_OPS_KERNEL=portable forces
// the portable build (tests compare the two); MEMX_OPS_KERNEL=avx2 on a CPU without it is ignored.
#include <cstdlib>
#include <cstring>
#include <string>

#include "local_global_attention.h"

namespace memx {
namespace {

using ForwardFn = void (*)(const LocalGlobalParams&, const AttentionShape&, const float*, const float*, const float*,
                           const int64_t*, const float*, const float*, float*);

struct Variant {
  ForwardFn forward;
  const char* name;
};

Variant Choose() {
  const char* wanted = std::getenv("MEMX_OPS_KERNEL");
  const bool portable_only = wanted != nullptr && std::strcmp(wanted, "portable") == 0;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (!portable_only && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {avx2::LocalGlobalAttentionForward, "avx2+fma"};
#endif
  return {baseline::LocalGlobalAttentionForward, "portable"};
}

const Variant& Chosen() {
  static const Variant variant = Choose();  // thread-safe initialisation, once per process
  return variant;
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

const char* KernelVariant() { return Chosen().name; }

void LocalGlobalAttentionForward(const LocalGlobalParams& params, const AttentionShape& shape, const float* q, const float* k,
                                 const float* v, const int64_t* lengths, const float* mem_k, const float* mem_v, float* out) {
  Chosen().forward(params, shape, q, k, v, lengths, mem_k, mem_v, out);
}

}  // namespace memx
