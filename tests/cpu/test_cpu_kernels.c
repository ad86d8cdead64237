/*
 * The fast CPU kernels (cpu_kernels.h, both the AVX2 table when the CPU has it and the portable one) and the small
 * ops (cpu_ops.h) against the reference ops (ref_ops.h) on random inputs.
 *
 * Tolerances (f32 arithmetic against double-accumulated references):
 *   matmul, dot:  |got - ref| <= 1e-5 * sum_i |x_i w_i| + 1e-30   (the rounding of an f32 sum of `in` terms)
 *   rmsnorm, rope, swiglu, axpy: |got - ref| <= 2e-6 * max(1, |ref|);
 *   softmax: |got - ref| <= (2e-6 + 6e-8 * (max - x)) * ref + 1e-37 (x - max rounded to f32 first: its ulp)
 * Outputs are poisoned with NaN first; entries a call must not write are checked to stay NaN.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/ref_ops.h"

static uint64_t rs_ = 12345;

static float urand_(void) { /* uniform in [-1, 1) */
  rs_ = rs_ * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((double)(rs_ >> 40) / (double)(1ull << 23) - 1.0);
}

/* Random weights of dtype dt, values in [-1, 1) (representable exactly after rounding to the dtype). */
static void *rand_weights_(kiln_dtype dt, int64_t n) {
  void *w = malloc((size_t)n * kiln_dtype_size(dt) + 1);
  assert_non_null(w);
  for (int64_t i = 0; i < n; i++) {
    float v = urand_();
    if (dt == KILN_F32) ((float *)w)[i] = v;
    else if (dt == KILN_BF16) ((uint16_t *)w)[i] = kiln_f32_to_bf16(v);
    else { /* f16: v in [-1, 1): sign, exponent and 10 mantissa bits, subnormals flushed to 0 */
      uint16_t h = 0;
      float a = fabsf(v);
      if (a >= 6.2e-5f) {
        int e;
        float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
        int man = (int)lrintf((m * 2 - 1) * 1024);
        int ex = e - 1 + 15;
        if (man == 1024) man = 0, ex++;
        h = (uint16_t)((ex << 10) | man);
      }
      if (v < 0) h |= 0x8000;
      ((uint16_t *)w)[i] = h;
    }
  }
  return w;
}

static const kiln_cpu_kernels *tables_[2];
static int n_tables_;

static int setup_(void **s) {
  (void)s;
  n_tables_ = 0;
  tables_[n_tables_++] = &kiln_cpu_kernels_generic;
  if (kiln_cpu_kernels_avx2()) tables_[n_tables_++] = kiln_cpu_kernels_avx2();
  else print_message("no AVX2 on this CPU: portable kernels only\n");
  return 0;
}

static void check_matmul_(const kiln_cpu_kernels *k, kiln_dtype dt, int64_t n, int64_t in, int64_t out, int64_t o0,
                          int64_t o1, int64_t ldy) {
  float *x = malloc(sizeof(float) * (size_t)(n * in)), *xp = malloc(sizeof(float) * (size_t)(n * in));
  float *y = malloc(sizeof(float) * (size_t)(n * ldy)), *ref = malloc(sizeof(float) * (size_t)(n * out));
  assert_non_null(x);
  assert_non_null(xp);
  assert_non_null(y);
  assert_non_null(ref);
  for (int64_t i = 0; i < n * in; i++) x[i] = urand_();
  void *w = rand_weights_(dt, out * in);
  for (int64_t i = 0; i < n * ldy; i++) y[i] = NAN;
  k->prep_x(xp, x, n, in, dt);
  k->matmul(y, ldy, xp, n, w, dt, in, o0, o1);
  kiln_ref_matmul(ref, x, w, dt, n, in, out);
  for (int64_t t = 0; t < n; t++)
    for (int64_t o = 0; o < ldy; o++) {
      float got = y[t * ldy + o];
      if (o < o0 || o >= o1) {
        if (!isnan(got)) fail_msg("%s %s n=%lld in=%lld: wrote y[%lld][%lld] outside [%lld, %lld)", k->name,
                                  kiln_dtype_name(dt), (long long)n, (long long)in, (long long)t, (long long)o,
                                  (long long)o0, (long long)o1);
        continue;
      }
      double mag = 0;
      for (int64_t i = 0; i < in; i++) mag += fabs((double)x[t * in + i] * kiln_weight_at(w, dt, o * in + i));
      double err = fabs((double)got - ref[t * out + o]);
      if (!(err <= 1e-5 * mag + 1e-30))
        fail_msg("%s %s n=%lld in=%lld out=%lld: y[%lld][%lld] = %.9g, ref %.9g (|x||w| %.3g)", k->name,
                 kiln_dtype_name(dt), (long long)n, (long long)in, (long long)out, (long long)t, (long long)o,
                 (double)got, (double)ref[t * out + o], mag);
    }
  free(x);
  free(xp);
  free(y);
  free(ref);
  free(w);
}

static void test_matmul(void **s) {
  (void)s;
  const int64_t ins[] = {1, 7, 15, 16, 17, 33, 64, 100, 1032};
  const int64_t ns[] = {1, 2, 3, 4, 5, 7, 9, 13};
  const kiln_dtype dts[] = {KILN_F32, KILN_BF16, KILN_F16};
  for (int ti = 0; ti < n_tables_; ti++)
    for (int d = 0; d < 3; d++)
      for (size_t a = 0; a < sizeof ins / sizeof *ins; a++)
        for (size_t b = 0; b < sizeof ns / sizeof *ns; b++) {
          int64_t out = 1 + (int64_t)((ins[a] * 7 + ns[b] * 3) % 23);
          check_matmul_(tables_[ti], dts[d], ns[b], ins[a], out, 0, out, out);
          /* a sub-range of rows, written into a wider output */
          if (out > 3) check_matmul_(tables_[ti], dts[d], ns[b], ins[a], out, 1, out - 1, out + 5);
        }
  /* a row block larger than the kernels' L2 block (rows x in x size > 64 KiB), 64 tokens */
  for (int ti = 0; ti < n_tables_; ti++) check_matmul_(tables_[ti], KILN_BF16, 64, 512, 150, 3, 147, 150);
}

static void test_dot_axpy(void **s) {
  (void)s;
  for (int ti = 0; ti < n_tables_; ti++)
    for (int64_t n = 0; n < 70; n++) {
      float a[80], b[80], y[80], yr[80];
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; i++) {
        a[i] = urand_(), b[i] = urand_(), y[i] = yr[i] = urand_();
        ref += (double)a[i] * b[i];
        mag += fabs((double)a[i] * b[i]);
      }
      float got = tables_[ti]->dot(a, b, n);
      assert_true(fabs(got - ref) <= 1e-5 * mag + 1e-30);
      const float c = urand_();
      y[n] = NAN;
      tables_[ti]->axpy(y, c, a, n);
      for (int64_t i = 0; i < n; i++) {
        double r = (double)yr[i] + (double)c * a[i];
        assert_true(fabs(y[i] - r) <= 2e-6 * fmax(1, fabs(r)));
      }
      assert_true(isnan(y[n]));
    }
}

static void assert_close_(const float *got, const float *ref, int64_t n, const char *what) {
  for (int64_t i = 0; i < n; i++)
    if (!(fabsf(got[i] - ref[i]) <= 2e-6f * fmaxf(1.0f, fabsf(ref[i]))))
      fail_msg("%s[%lld] = %.9g, ref %.9g", what, (long long)i, (double)got[i], (double)ref[i]);
}

static void test_small_ops(void **s) {
  (void)s;
  enum { N = 5, D = 72 };
  const kiln_dtype dts[] = {KILN_F32, KILN_BF16, KILN_F16};
  float x[N * D], x2[N * D], r[N * D], got[N * D], ref[N * D];
  for (int d = 0; d < 3; d++) {
    for (int i = 0; i < N * D; i++) x[i] = 3 * urand_(), r[i] = urand_();
    void *w = rand_weights_(dts[d], D);
    kiln_cpu_rmsnorm(got, x, w, dts[d], N, D, 1e-6f);
    kiln_ref_rmsnorm(ref, x, w, dts[d], N, D, 1e-6f);
    assert_close_(got, ref, N * D, "rmsnorm");
    memcpy(x2, x, sizeof x);
    kiln_cpu_add_rmsnorm(got, x, r, w, dts[d], N, D, 1e-5f);
    kiln_ref_add_rmsnorm(ref, x2, r, w, dts[d], N, D, 1e-5f);
    assert_close_(x, x2, N * D, "add_rmsnorm residual");
    assert_close_(got, ref, N * D, "add_rmsnorm");
    free(w);
  }
  /* rope: a table per position, then each head rotated, against the reference over all heads */
  kiln_config c = {0};
  c.head_dim = 24;
  c.rope_theta = 10000.0;
  c.rope_type = KILN_ROPE_LLAMA3;
  c.rope_factor = 8;
  c.rope_low_freq_factor = 1;
  c.rope_high_freq_factor = 4;
  c.rope_original_max_position = 64;
  float inv[12], cs[N * 24], q[N * 3 * 24], qr[N * 3 * 24];
  int32_t pos[N] = {0, 1, 17, 300, 4095};
  kiln_ref_rope_inv_freq(inv, &c);
  for (int i = 0; i < N * 3 * 24; i++) q[i] = qr[i] = urand_();
  kiln_cpu_rope_table(cs, pos, N, 24, inv);
  for (int t = 0; t < N; t++)
    for (int h = 0; h < 3; h++) kiln_cpu_rope_head(q + (t * 3 + h) * 24, cs + t * 24, 24);
  kiln_ref_rope(qr, pos, N, 3, 24, inv);
  assert_close_(q, qr, N * 3 * 24, "rope");
  /* swiglu and softmax */
  for (int i = 0; i < N * D; i++) x[i] = 8 * urand_(), r[i] = urand_();
  kiln_cpu_swiglu(got, x, r, N * D);
  kiln_ref_swiglu(ref, x, r, N * D);
  assert_close_(got, ref, N * D, "swiglu");
  memcpy(got, x, sizeof x);
  kiln_cpu_softmax(got, N * D);
  kiln_ref_softmax(ref, x, N * D);
  assert_close_(got, ref, N * D, "softmax");
}

/* The reference ops themselves on cases with known answers. */
static void test_ref_known_values(void **s) {
  (void)s;
  assert_true(kiln_bf16_to_f32(0x3f80) == 1.0f);
  assert_int_equal(kiln_f32_to_bf16(1.0f), 0x3f80);
  assert_int_equal(kiln_f32_to_bf16(1.00390625f), 0x3f80); /* halfway: to even */
  assert_int_equal(kiln_f32_to_bf16(1.01171875f), 0x3f82); /* halfway: to even (up) */
  assert_true(kiln_f16_to_f32(0x3c00) == 1.0f);
  assert_true(kiln_f16_to_f32(0xc000) == -2.0f);
  assert_true(kiln_f16_to_f32(0x0001) == ldexpf(1, -24)); /* smallest subnormal */
  assert_true(kiln_f16_to_f32(0x7bff) == 65504.0f);
  assert_true(isinf(kiln_f16_to_f32(0x7c00)));
  float l[4] = {1, 3, 3, 2}, p[4];
  assert_int_equal(kiln_ref_argmax(l, 4), 1);
  assert_int_equal(kiln_ref_argmax(l, 0), -1);
  kiln_ref_softmax(p, l, 4);
  double z = exp(1) + 2 * exp(3) + exp(2);
  assert_true(fabs(p[0] - exp(1) / z) < 1e-7);
  kiln_ref_log_softmax(p, l, 4);
  assert_true(fabs(p[3] - (2 - log(z))) < 1e-6);
  /* rope at position 0 is the identity; rmsnorm of a constant row is the weight */
  float v[4] = {1, 2, 3, 4}, inv[2] = {1, 0.01f};
  int32_t zero = 0;
  kiln_ref_rope(v, &zero, 1, 1, 4, inv);
  assert_true(v[0] == 1 && v[1] == 2 && v[2] == 3 && v[3] == 4);
  float c4[4] = {2, 2, 2, 2}, w4[4] = {1, 2, 3, 4}, o4[4];
  kiln_ref_rmsnorm(o4, c4, w4, KILN_F32, 1, 4, 0);
  assert_true(fabsf(o4[3] - 4) < 1e-6f);
  /* attention over one position returns its value */
  float q1[2] = {1, 0}, k1[2] = {5, 5}, v1[2] = {7, -7}, a1[2];
  kiln_ref_attention(a1, q1, k1, v1, 1, 0, 1, 1, 2);
  assert_true(a1[0] == 7 && a1[1] == -7);
}

static void test_softmax(void **s) {
  (void)s;
  for (int ti = 0; ti < n_tables_; ti++)
    for (int64_t n = 1; n < 300; n += 7) {
      float x[300], got[300], ref[300];
      for (int64_t i = 0; i < n; i++) x[i] = 40 * urand_(); /* a wide range: exp over ~80 nats */
      x[n / 2] = -1e30f;                                    /* far below: exactly or nearly 0 */
      memcpy(got, x, sizeof(float) * (size_t)n);
      tables_[ti]->softmax(got, n);
      kiln_ref_softmax(ref, x, n);
      float mx = x[0];
      for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
      for (int64_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - ref[i]) <= (2e-6f + 6e-8f * (mx - x[i])) * ref[i] + 1e-37f))
          fail_msg("%s softmax n=%lld [%lld] = %.9g, ref %.9g", tables_[ti]->name, (long long)n, (long long)i,
                   (double)got[i], (double)ref[i]);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ref_known_values),
      cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_dot_axpy),
      cmocka_unit_test(test_small_ops),
      cmocka_unit_test(test_softmax),
  };
  return cmocka_run_group_tests(tests, setup_, NULL);
}
