// Eight floats in SIMD registers, for the register blocks of local_global_attention.cc: one
// __m256 with AVX2/FMA, two float32x4_t with NEON (ARMv8-A Advanced SIMD). The kernel's loops
// are written once over F8; each variant picks its instruction set with an explicit compile
// definition (CMake's memx_kernel_variant ... SIMD <isa>), never from what the compiler happens
// to enable: on aarch64 __ARM_NEON is always defined, and the `baseline` variant must stay the
// plain scalar loops. Without MEMX_SIMD_AVX2 / MEMX_SIMD_NEON this header defines nothing.
//
// Everything lives in memx::<MEMX_KERNEL_VARIANT>::simd, so two variants' inline functions never
// share a symbol (each object library has its own flags).
#pragma once

#if defined(MEMX_SIMD_AVX2) && defined(MEMX_SIMD_NEON)
#error "define at most one of MEMX_SIMD_AVX2 and MEMX_SIMD_NEON"
#endif

#if defined(MEMX_SIMD_AVX2)
#if !(defined(__AVX2__) && defined(__FMA__))
#error "MEMX_SIMD_AVX2 needs AVX2 and FMA code generation (-mavx2 -mfma)"
#endif
#include <immintrin.h>
#define MEMX_SIMD 1
#elif defined(MEMX_SIMD_NEON)
#if !(defined(__aarch64__) && defined(__ARM_NEON))
#error "MEMX_SIMD_NEON needs an aarch64 target with Advanced SIMD (__aarch64__ and __ARM_NEON)"
#endif
#include <arm_neon.h>
#define MEMX_SIMD 1
#endif

#ifdef MEMX_SIMD
#ifndef MEMX_KERNEL_VARIANT
#error "simd.h is for the kernel variants: compile with -DMEMX_KERNEL_VARIANT=<name> (cpp/ops/CMakeLists.txt does)"
#endif

namespace memx {
namespace MEMX_KERNEL_VARIANT {
namespace simd {

constexpr int kLanes = 8;

#if defined(MEMX_SIMD_AVX2)

struct F8 {
  __m256 v;
};
inline F8 Load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void Store(float* p, F8 a) { _mm256_storeu_ps(p, a.v); }
inline F8 Set1(float x) { return {_mm256_set1_ps(x)}; }
inline F8 Zero() { return {_mm256_setzero_ps()}; }
inline F8 Add(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F8 Mul(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline F8 Fma(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }    // a * b + c, one rounding
inline F8 Fnma(F8 a, F8 b, F8 c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }  // c - a * b, one rounding
inline F8 Min(F8 a, F8 b) { return {_mm256_min_ps(a.v, b.v)}; }                  // NaN handling differs by ISA
inline F8 Max(F8 a, F8 b) { return {_mm256_max_ps(a.v, b.v)}; }
inline F8 RoundNearest(F8 a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }  // ties to even
// 2^n for integral n in [-126, 127], built in the exponent bits.
inline F8 Pow2(F8 n) {
  return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23))};
}

#else  // MEMX_SIMD_NEON

struct F8 {
  float32x4_t lo, hi;
};
inline F8 Load(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
inline void Store(float* p, F8 a) {
  vst1q_f32(p, a.lo);
  vst1q_f32(p + 4, a.hi);
}
inline F8 Set1(float x) { return {vdupq_n_f32(x), vdupq_n_f32(x)}; }
inline F8 Zero() { return Set1(0.0f); }
inline F8 Add(F8 a, F8 b) { return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)}; }
inline F8 Mul(F8 a, F8 b) { return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)}; }
inline F8 Fma(F8 a, F8 b, F8 c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }   // a * b + c, one rounding
inline F8 Fnma(F8 a, F8 b, F8 c) { return {vfmsq_f32(c.lo, a.lo, b.lo), vfmsq_f32(c.hi, a.hi, b.hi)}; }  // c - a * b, one rounding
inline F8 Min(F8 a, F8 b) { return {vminq_f32(a.lo, b.lo), vminq_f32(a.hi, b.hi)}; }  // NaN handling differs by ISA
inline F8 Max(F8 a, F8 b) { return {vmaxq_f32(a.lo, b.lo), vmaxq_f32(a.hi, b.hi)}; }
inline F8 RoundNearest(F8 a) { return {vrndnq_f32(a.lo), vrndnq_f32(a.hi)}; }  // ties to even, as FRINTN
inline F8 Pow2(F8 n) {
  const int32x4_t bias = vdupq_n_s32(127);
  return {vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n.lo), bias), 23)),
          vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n.hi), bias), 23))};
}

#endif

// The eight lanes added in lane order (the same order on every ISA).
inline float Sum(F8 a) {
  alignas(32) float lanes[kLanes];
  Store(lanes, a);
  float total = 0.0f;
  for (float l : lanes) total += l;
  return total;
}

// exp(x) for 8 floats: Cephes-style range reduction x = n ln2 + r and a degree-6 polynomial
// (relative error ~1e-7), then 2^n through the exponent bits. x is clamped to [-87.3, 88.3].
inline F8 Exp8(F8 x) {
  x = Min(Max(x, Set1(-87.3f)), Set1(88.3f));
  const F8 n = RoundNearest(Mul(x, Set1(1.44269504088896341f)));
  F8 r = Fnma(n, Set1(0.693359375f), x);  // ln2 in two parts: the first is exact in n * c
  r = Fnma(n, Set1(-2.12194440e-4f), r);
  F8 p = Set1(1.9875691500e-4f);
  p = Fma(p, r, Set1(1.3981999507e-3f));
  p = Fma(p, r, Set1(8.3334519073e-3f));
  p = Fma(p, r, Set1(4.1665795894e-2f));
  p = Fma(p, r, Set1(1.6666665459e-1f));
  p = Fma(p, r, Set1(5.0000001201e-1f));
  p = Fma(p, Mul(r, r), Add(r, Set1(1.0f)));
  return Mul(p, Pow2(n));
}

}  // namespace simd
}  // namespace MEMX_KERNEL_VARIANT
}  // namespace memx

#endif  // MEMX_SIMD
