/*
 * The sampler: greedy and its ties, the distribution of draws (temperature 1 and 2, chi-square-like bounds over
 * 40,000 draws), top-k (ties at the boundary kept), top-p and min-p edge cases against HF's definitions, the
 * penalties, seeds (same seed, same tokens; the stream is a pure function of the seed), bad parameters.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/sampler.h"
#include "kiln/status.h"

static kiln_sampler *make_(kiln_sampling p, int n) {
  kiln_sampler *s;
  assert_int_equal(kiln_sampler_create(&s, &p, n), KILN_OK);
  return s;
}

static int32_t draw_(kiln_sampler *s, const float *logits, int n) {
  float l[16];
  memcpy(l, logits, sizeof(float) * (size_t)n);
  return kiln_sampler_sample(s, l);
}

static kiln_sampling temp_(float t, uint64_t seed) {
  kiln_sampling p = kiln_sampling_default();
  p.temperature = t;
  p.seed = seed;
  return p;
}

/* Frequencies of n_draws draws (each from a fresh copy of the logits; no penalties, so draws are independent). */
static void freqs_(kiln_sampling p, const float *logits, int n, int n_draws, double *f) {
  kiln_sampler *s = make_(p, n);
  for (int i = 0; i < n; i++) f[i] = 0;
  for (int d = 0; d < n_draws; d++) f[draw_(s, logits, n)] += 1.0 / n_draws;
  kiln_sampler_free(s);
}

static void test_greedy(void **st) {
  (void)st;
  kiln_sampler *s = make_(kiln_sampling_default(), 5);
  const float a[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  assert_int_equal(draw_(s, a, 5), 1); /* ties: the lowest id */
  const float b[5] = {NAN, -3.0f, NAN, -1.0f, -2.0f};
  assert_int_equal(draw_(s, b, 5), 3); /* NaN never wins */
  kiln_sampler_free(s);
}

static void test_distribution(void **st) {
  (void)st;
  const float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
  double f[3];
  const int N = 40000;
  freqs_(temp_(1.0f, 7), l, 3, N, f);
  const double p1[3] = {0.5, 0.3, 0.2};
  for (int i = 0; i < 3; i++) assert_true(fabs(f[i] - p1[i]) < 4 * sqrt(p1[i] * (1 - p1[i]) / N) + 1e-3);
  /* temperature 2: p_i ∝ sqrt(p_i) */
  freqs_(temp_(2.0f, 8), l, 3, N, f);
  double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.2);
  for (int i = 0; i < 3; i++) {
    double q = sqrt(p1[i]) / z;
    assert_true(fabs(f[i] - q) < 4 * sqrt(q * (1 - q) / N) + 1e-3);
  }
}

static void test_seeds(void **st) {
  (void)st;
  const float l[8] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
  int32_t a[64], b[64], c[64];
  kiln_sampler *s1 = make_(temp_(1.0f, 42), 8), *s2 = make_(temp_(1.0f, 42), 8), *s3 = make_(temp_(1.0f, 43), 8);
  int differ = 0;
  for (int i = 0; i < 64; i++) {
    a[i] = draw_(s1, l, 8), b[i] = draw_(s2, l, 8), c[i] = draw_(s3, l, 8);
    assert_int_equal(a[i], b[i]);
    differ += a[i] != c[i];
  }
  assert_true(differ > 10);
  kiln_sampler_free(s1);
  kiln_sampler_free(s2);
  kiln_sampler_free(s3);
  /* the stream of seed 42 is a fixed function of the seed (xoshiro256** from splitmix64, sums in double): its
   * first draws, recorded once, must not change with the build, the platform or a refactoring */
  const int32_t want[12] = {0, 3, 6, 7, 7, 6, 6, 7, 6, 5, 6, 3};
  for (int i = 0; i < 12; i++) assert_int_equal(a[i], want[i]);
}

static void test_top_k(void **st) {
  (void)st;
  const float l[4] = {1.0f, 2.0f, 2.0f, 0.0f};
  kiln_sampling p = temp_(1.0f, 1);
  p.top_k = 1;
  double f[4];
  freqs_(p, l, 4, 4000, f);
  /* k = 1 keeps both tokens tied at the top (torch.topk + `<` semantics), nothing else */
  assert_true(f[0] == 0 && f[3] == 0 && f[1] > 0.4 && f[2] > 0.4);
  p.top_k = 3;
  freqs_(p, l, 4, 4000, f);
  assert_true(f[3] == 0 && f[0] > 0);
  p.top_k = 100; /* more than the vocabulary: off */
  freqs_(p, l, 4, 8000, f);
  assert_true(f[3] > 0);
}

static void test_top_p(void **st) {
  (void)st;
  const float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
  double f[3];
  kiln_sampling p = temp_(1.0f, 3);
  p.top_p = 0.5f; /* HF: ascending cumsum [0.2, 0.5, 1.0] <= 0.5 removed: only the top token */
  freqs_(p, l, 3, 2000, f);
  assert_true(f[1] == 0 && f[2] == 0);
  p.top_p = 0.6f; /* removes cumsum <= 0.4: token 2 only */
  freqs_(p, l, 3, 4000, f);
  assert_true(f[2] == 0 && fabs(f[0] - 0.625) < 0.04);
  p.top_p = 0.0f; /* at least one token */
  freqs_(p, l, 3, 500, f);
  assert_true(f[1] == 0 && f[2] == 0);
  p.top_p = 0.99f;
  freqs_(p, l, 3, 4000, f);
  assert_true(f[2] > 0.1);
  /* after top-k the probabilities are renormalised: k = 2 -> [0.625, 0.375]; top_p 0.6 keeps only the first */
  p.top_k = 2;
  p.top_p = 0.6f;
  freqs_(p, l, 3, 1000, f);
  assert_true(f[1] == 0 && f[2] == 0);
}

static void test_min_p(void **st) {
  (void)st;
  const float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
  double f[3];
  kiln_sampling p = temp_(1.0f, 4);
  p.min_p = 0.5f; /* keeps p >= 0.25 */
  freqs_(p, l, 3, 4000, f);
  assert_true(f[2] == 0 && f[1] > 0.3);
  p.min_p = 1.0f; /* only the largest */
  freqs_(p, l, 3, 500, f);
  assert_true(f[1] == 0 && f[2] == 0);
  /* min-p after top-p: top_p 0.9 keeps [0.5, 0.3, 0.2]; min_p 0.5 then drops 0.2 */
  p.min_p = 0.5f;
  p.top_p = 0.9f;
  freqs_(p, l, 3, 4000, f);
  assert_true(f[2] == 0 && f[1] > 0.3);
}

static void test_penalties(void **st) {
  (void)st;
  /* repetition (HF): positive logits divided, negative multiplied, for prompt and generated tokens */
  kiln_sampling p = kiln_sampling_default();
  p.repetition_penalty = 2.0f;
  kiln_sampler *s = make_(p, 3);
  kiln_sampler_accept(s, 0);
  kiln_sampler_accept(s, 1);
  float l[3] = {2.0f, -2.0f, 1.5f};
  assert_int_equal(kiln_sampler_sample(s, l), 2);
  assert_true(l[0] == 1.0f && l[1] == -4.0f && l[2] == 1.5f);
  float l2[3] = {2.0f, -2.0f, 1.5f}; /* token 2 is now seen too */
  assert_int_equal(kiln_sampler_sample(s, l2), 0);
  assert_true(l2[2] == 0.75f);
  kiln_sampler_free(s);
  /* presence and frequency (OpenAI): generated tokens only, once per distinct token */
  p = kiln_sampling_default();
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 1.0f;
  s = make_(p, 3);
  kiln_sampler_accept(s, 1); /* a prompt token: no presence/frequency penalty */
  float a[3] = {3.0f, 2.9f, 0.0f};
  assert_int_equal(kiln_sampler_sample(s, a), 0); /* generated: count 1 */
  float b[3] = {3.0f, 2.9f, 0.0f};
  assert_int_equal(kiln_sampler_sample(s, b), 1); /* 3 - 0.5 - 1 = 1.5 < 2.9 */
  assert_true(b[0] == 1.5f && b[1] == 2.9f);
  float c[3] = {5.0f, 2.9f, 0.0f};
  assert_int_equal(kiln_sampler_sample(s, c), 0); /* 5 - 1.5 = 3.5; 2.9 - 1.5 = 1.4 */
  float d[3] = {5.0f, 0.0f, 0.0f};
  kiln_sampler_sample(s, d);
  assert_true(d[0] == 5.0f - 0.5f - 2.0f); /* token 0 generated twice */
  kiln_sampler_free(s);
}

static void test_bad_params(void **st) {
  (void)st;
  kiln_sampler *s = (kiln_sampler *)&s;
  kiln_sampling p = kiln_sampling_default();
  p.temperature = -1;
  assert_int_equal(kiln_sampler_create(&s, &p, 3), KILN_EINVAL);
  assert_null(s);
  p = kiln_sampling_default();
  p.repetition_penalty = 0;
  assert_int_equal(kiln_sampler_create(&s, &p, 3), KILN_EINVAL);
  p = kiln_sampling_default();
  p.top_p = NAN;
  assert_int_equal(kiln_sampler_create(&s, &p, 3), KILN_EINVAL);
  assert_int_equal(kiln_sampler_create(&s, NULL, 0), KILN_EINVAL);
  assert_int_equal(kiln_sampler_create(&s, NULL, 3), KILN_OK); /* NULL: greedy defaults */
  kiln_sampler_accept(s, -1);                                  /* out of range: ignored */
  kiln_sampler_accept(s, 3);
  kiln_sampler_free(s);
  kiln_sampler_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_greedy),   cmocka_unit_test(test_distribution), cmocka_unit_test(test_seeds),
      cmocka_unit_test(test_top_k),    cmocka_unit_test(test_top_p),        cmocka_unit_test(test_min_p),
      cmocka_unit_test(test_penalties), cmocka_unit_test(test_bad_params),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
