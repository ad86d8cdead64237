/*
 * kiln/half.h: scalar conversions between f32 and the 16-bit float formats of checkpoints.
 *
 * bf16 is the top half of an f32; f32 -> bf16 rounds to nearest, ties to even, and keeps NaNs NaN (a quiet NaN
 * with the sign of the input). f16 is IEEE 754 binary16 with subnormals; f32 -> f16 rounds to nearest even,
 * overflows to infinity and keeps NaNs NaN. These are the reference conversions: the CPU and CUDA kernels may use
 * faster vector forms, and tests hold them to these.
 */
#ifndef KILN_HALF_H
#define KILN_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline uint32_t kiln_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float kiln_f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline float kiln_bf16_to_f32(uint16_t h) { return kiln_f32_from_bits((uint32_t)h << 16); }

static inline uint16_t kiln_f32_to_bf16(float f) {
  uint32_t u = kiln_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: keep it NaN, quiet */
  /* Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into the exponent is the right result
   * (up to infinity for values past the largest bf16). */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float kiln_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return kiln_f32_from_bits(sign | 0x7f800000u | (man << 13)); /* inf, NaN (payload kept) */
  if (exp == 0) {
    if (man == 0) return kiln_f32_from_bits(sign); /* +-0 */
    /* Subnormal: man * 2^-24, exact in f32. */
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return kiln_f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t kiln_f32_to_f16(float f) {
  uint32_t u = kiln_f32_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) /* inf or NaN (NaN stays NaN: force a mantissa bit) */
    return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? (0x0200u | ((a >> 13) & 0x3ffu)) : 0u));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
  if (a >= 0x38800000u) {                                   /* normal f16 range: >= 2^-14 */
    /* Rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a mantissa carry moves
     * into the exponent, which is the right result. */
    uint32_t r = a - 0x38000000u;
    r += 0x0fffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
  }
  if (a < 0x33000000u) return sign; /* below half the smallest subnormal (2^-25): +-0 */
  /* Subnormal result: value = m * 2^(e-150) with the implicit bit; the f16 unit is 2^-24, so shift right by
   * (126 - e) and round to nearest even on the bits shifted out. */
  uint32_t e = a >> 23;
  uint32_t m = (a & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126u - e; /* 14..24 */
  uint32_t q = m >> shift;
  uint32_t rem = m & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) q++;
  return (uint16_t)(sign | q); /* q may reach 0x400: the smallest normal, correctly encoded */
}

#ifdef __cplusplus
}
#endif
#endif /* KILN_HALF_H */
