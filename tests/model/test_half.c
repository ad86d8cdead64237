/* kiln/half.h against independent references: exhaustive over the 16-bit formats, and random + edge f32 inputs
 * for the narrowing conversions (round to nearest even, subnormals, overflow, NaN). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kiln/half.h"

static uint64_t rng = 0x123456789abcdefull;
static uint32_t next32(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* f16 value by definition. */
static double f16_ref(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

/* Nearest finite f16 to |x| by search over the ordered non-negative encodings, ties to even; infinity when |x| is
 * at or past 65520 (the midpoint between 65504 and the next step). */
static uint16_t f32_to_f16_ref(float x) {
  if (isnan(x)) return 0x7e00;
  uint16_t sign = signbit(x) ? 0x8000 : 0;
  double a = fabs((double)x);
  if (a >= 65520.0) return sign | 0x7c00;
  uint16_t lo = 0, hi = 0x7bff;
  while (lo < hi) { /* largest encoding with value <= a */
    uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
    if (f16_ref(mid) <= a) lo = mid; else hi = (uint16_t)(mid - 1);
  }
  uint16_t best = lo;
  if (lo < 0x7bff) {
    double dl = a - f16_ref(lo), du = f16_ref((uint16_t)(lo + 1)) - a;
    if (du < dl || (du == dl && ((lo + 1) & 1) == 0)) best = (uint16_t)(lo + 1);
  } else if (a - 65504.0 >= 16.0) {
    best = 0x7c00;
  }
  return sign | best;
}

static uint16_t f32_to_bf16_ref(float x) {
  uint32_t u = kiln_f32_bits(x);
  if (isnan(x)) return 0x7fc0;
  uint32_t lo = u & 0xffff0000u;
  double vl = (double)kiln_f32_from_bits(lo);
  if ((lo & 0x7f800000u) == 0x7f800000u) return (uint16_t)(lo >> 16); /* infinity */
  uint32_t up = lo + 0x10000u; /* next bf16 away from zero (may be infinity) */
  double vu = (up & 0x7fffffffu) >= 0x7f800000u ? (signbit(x) ? -1 : 1) * ldexp(1.0, 128) : kiln_f32_from_bits(up);
  double dl = fabs((double)x - vl), du = fabs(vu - (double)x);
  if (du < dl || (du == dl && ((lo >> 16) & 1))) return (uint16_t)(up >> 16);
  return (uint16_t)(lo >> 16);
}

static void test_bf16_exhaustive(void **s) {
  (void)s;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = kiln_bf16_to_f32((uint16_t)h);
    assert_int_equal(kiln_f32_bits(f), h << 16);
    uint16_t back = kiln_f32_to_bf16(f);
    if (isnan(f))
      assert_true(isnan(kiln_bf16_to_f32(back)));
    else
      assert_int_equal(back, h);
  }
}

static void check_bf16(float x) {
  uint16_t got = kiln_f32_to_bf16(x);
  if (isnan(x)) {
    assert_true(isnan(kiln_bf16_to_f32(got)));
    return;
  }
  uint16_t want = f32_to_bf16_ref(x);
  if (got != want) fail_msg("bf16(%a) = %#x, want %#x", (double)x, got, want);
}

static void test_bf16_rounding(void **s) {
  (void)s;
  /* Ties: exactly half way, below and above; odd and even kept bits; carries into the exponent and to inf. */
  uint32_t edges[] = {0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u, 0x3fffffffu, 0x7f7fffffu, 0x7f7f8000u,
                      0x7f7f7fffu, 0x00008000u, 0x00018000u, 0x807f8000u, 0xff7f8000u, 0x7f800000u, 0xff800000u,
                      0x7f800001u, 0xffc00000u, 0x00000001u, 0x80000000u};
  for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) check_bf16(kiln_f32_from_bits(edges[i]));
  for (int i = 0; i < 2000000; i++) check_bf16(kiln_f32_from_bits(next32()));
  assert_int_equal(kiln_f32_to_bf16(1.00390625f), 0x3f80); /* 1 + 2^-8: tie, even stays */
  assert_int_equal(kiln_f32_to_bf16(1.01171875f), 0x3f82); /* 1 + 3*2^-8: tie, odd rounds up */
}

static void test_f16_exhaustive(void **s) {
  (void)s;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = kiln_f16_to_f32((uint16_t)h);
    double want = f16_ref((uint16_t)h);
    if (isnan(want)) {
      assert_true(isnan(f));
      assert_true(isnan(kiln_f16_to_f32(kiln_f32_to_f16(f))));
      continue;
    }
    assert_true((double)f == want);
    assert_int_equal(signbit(f) != 0, (h >> 15) != 0);
    assert_int_equal(kiln_f32_to_f16(f), h);
  }
}

static void check_f16(float x) {
  uint16_t got = kiln_f32_to_f16(x);
  if (isnan(x)) {
    assert_true(isnan(kiln_f16_to_f32(got)));
    return;
  }
  uint16_t want = f32_to_f16_ref(x);
  if (got != want) fail_msg("f16(%a) = %#x, want %#x", (double)x, got, want);
#ifdef __FLT16_MAX__
  _Float16 h = (_Float16)x;
  uint16_t hb;
  memcpy(&hb, &h, 2);
  if (got != hb) fail_msg("f16(%a) = %#x, compiler says %#x", (double)x, got, hb);
#endif
}

static void test_f16_rounding(void **s) {
  (void)s;
  float edges[] = {65504.0f, 65519.99f, 65520.0f, 65536.0f, 1e10f, 6.103515625e-05f /* 2^-14 */,
                   6.0975552e-05f /* just below */, 5.9604645e-08f /* 2^-24 */, 2.9802322e-08f /* 2^-25: tie -> 0 */,
                   2.9802326e-08f, 8.940697e-08f /* 1.5 * 2^-24: tie -> 2 */, 1.0009765625f, 1.00048828125f,
                   1.00146484375f, -0.0f, 0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -3.0517578e-05f};
  for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) check_f16(edges[i]);
  for (int i = 0; i < 300000; i++) check_f16(kiln_f32_from_bits(next32()));
  /* Random values in f16's range, where the interesting rounding happens. */
  for (int i = 0; i < 300000; i++) {
    uint32_t u = (next32() & 0x807fffffu) | ((uint32_t)(100 + next32() % 45) << 23);
    check_f16(kiln_f32_from_bits(u));
  }
  assert_int_equal(kiln_f32_to_f16(2.9802322e-08f), 0);
  assert_int_equal(kiln_f32_to_f16(8.940697e-08f), 2);
  assert_int_equal(kiln_f32_to_f16(65520.0f), 0x7c00);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bf16_exhaustive),
      cmocka_unit_test(test_bf16_rounding),
      cmocka_unit_test(test_f16_exhaustive),
      cmocka_unit_test(test_f16_rounding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
