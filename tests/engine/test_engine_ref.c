/*
 * The fast CPU engine against the reference forward pass (ref_model.h) on random models of both architectures and
 * all three weight dtypes, with 1 and 2 threads and both kernel tables: one prefill of every token (all logits,
 * across the prefill chunk boundary), then a shorter prefill followed by one-token decode steps, and two sequence
 * slots interleaved. Error measure per position: max|kiln - ref| / max|ref| over the logits vector; bound 1e-4.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cpu/ref_model.h"
#include "kiln/engine.h"
#include "kiln/status.h"
#include "rand_model.h"

#define N_TOK 70 /* more than one prefill chunk of the CPU backend */
#define TOL 1e-4

static double rel_err_(const float *a, const float *ref, int n) {
  double md = 0, mr = 0;
  for (int i = 0; i < n; i++) {
    double d = fabs((double)a[i] - ref[i]);
    if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
    if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
  }
  return md / mr;
}

static void check_model_(const rand_model_spec *spec, int threads, const char *label) {
  kiln_model *m;
  assert_int_equal(rand_model_create(&m, spec), KILN_OK);
  const int V = m->cfg.vocab_size;
  int32_t toks[N_TOK];
  uint64_t rs = spec->seed * 77 + 5;
  for (int i = 0; i < N_TOK; i++) toks[i] = (int32_t)(rand_u64(&rs) % (uint64_t)V);
  float *ref = malloc(sizeof(float) * N_TOK * V), *got = malloc(sizeof(float) * N_TOK * V);
  assert_non_null(ref);
  assert_non_null(got);
  assert_int_equal(kiln_ref_model_forward(m, toks, N_TOK, ref), KILN_OK);

  kiln_engine_opts o = {.device = "cpu", .n_threads = threads, .n_ctx = 128, .n_seqs = 2};
  kiln_engine *e;
  assert_int_equal(kiln_engine_create(&e, m, &o), KILN_OK);

  /* 1: one prefill, all logits, in slot 1 */
  assert_int_equal(kiln_engine_forward(e, 1, toks, N_TOK, got, true), KILN_OK);
  assert_int_equal(kiln_engine_seq_pos(e, 1), N_TOK);
  double worst = 0;
  for (int t = 0; t < N_TOK; t++) {
    double r = rel_err_(got + (size_t)t * V, ref + (size_t)t * V, V);
    if (r > worst) worst = r;
  }
  if (worst > TOL) fail_msg("%s threads %d: prefill max rel err %.3g", label, threads, worst);

  /* 2: prefill 37 (last logits only), then decode, in slot 0, with slot 1 advanced in between */
  const int P = 37;
  assert_int_equal(kiln_engine_forward(e, 0, toks, P, got, false), KILN_OK);
  worst = rel_err_(got, ref + (size_t)(P - 1) * V, V);
  for (int t = P; t < N_TOK; t++) {
    assert_int_equal(kiln_engine_forward(e, 0, toks + t, 1, got, false), KILN_OK);
    double r = rel_err_(got, ref + (size_t)t * V, V);
    if (r > worst) worst = r;
    if (t % 8 == 0) { /* another sequence stepping must not disturb this one */
      int32_t other = (int32_t)(t % V);
      assert_int_equal(kiln_engine_seq_reset(e, 1), KILN_OK);
      assert_int_equal(kiln_engine_forward(e, 1, &other, 1, NULL, false), KILN_OK);
    }
  }
  if (worst > TOL) fail_msg("%s threads %d: decode max rel err %.3g", label, threads, worst);
  print_message("%-18s threads %d: max rel err %.2e\n", label, threads, worst);

  /* 3: the context is full: nothing is appended */
  assert_int_equal(kiln_engine_seq_reset(e, 0), KILN_OK);
  int32_t *many = calloc(129, sizeof *many);
  assert_non_null(many);
  assert_int_equal(kiln_engine_forward(e, 0, many, 129, NULL, false), KILN_ECONTEXT);
  assert_int_equal(kiln_engine_seq_pos(e, 0), 0);
  assert_int_equal(kiln_engine_forward(e, 0, many, 128, NULL, false), KILN_OK);
  assert_int_equal(kiln_engine_forward(e, 0, many, 1, NULL, false), KILN_ECONTEXT);
  free(many);

  kiln_engine_free(e);
  free(ref);
  free(got);
  rand_model_free(m);
}

static void run_all_(const char *kernels) {
  const kiln_dtype dts[3] = {KILN_F32, KILN_BF16, KILN_F16};
  const char *names[3] = {"f32", "bf16", "f16"};
  for (int d = 0; d < 3; d++)
    for (int th = 1; th <= 2; th++) {
      char label[64];
      rand_model_spec q = rand_model_qwen3(dts[d]), l = rand_model_llama(dts[d]);
      snprintf(label, sizeof label, "qwen3 %s %s", names[d], kernels);
      check_model_(&q, th, label);
      snprintf(label, sizeof label, "llama %s %s", names[d], kernels);
      check_model_(&l, th, label);
    }
}

static void test_best_kernels(void **state) {
  (void)state;
  unsetenv("KILN_CPU_GENERIC");
  run_all_("best");
}

static void test_generic_kernels(void **state) {
  (void)state;
  setenv("KILN_CPU_GENERIC", "1", 1);
  run_all_("generic");
  unsetenv("KILN_CPU_GENERIC");
}

static void test_bad_args(void **state) {
  (void)state;
  rand_model_spec q = rand_model_qwen3(KILN_F32);
  kiln_model *m;
  assert_int_equal(rand_model_create(&m, &q), KILN_OK);
  kiln_engine *e = NULL;
  kiln_engine_opts o = {.device = "tpu", .n_threads = 1};
  assert_int_equal(kiln_engine_create(&e, m, &o), KILN_EINVAL);
  assert_null(e);
  o.device = "cuda:x";
  assert_int_equal(kiln_engine_create(&e, m, &o), KILN_EINVAL);
  o.device = "cpu";
  assert_int_equal(kiln_engine_create(&e, m, &o), KILN_OK);
  assert_string_equal(kiln_engine_device(e), "cpu");
  assert_int_equal(kiln_engine_n_ctx(e), 512); /* min(max_position_embeddings, 4096) */
  assert_int_equal(kiln_engine_n_seqs(e), 1);
  int32_t bad = q.vocab;
  assert_int_equal(kiln_engine_forward(e, 0, &bad, 1, NULL, false), KILN_ERANGE);
  bad = 0;
  assert_int_equal(kiln_engine_forward(e, 1, &bad, 1, NULL, false), KILN_ERANGE);
  assert_int_equal(kiln_engine_forward(e, 0, &bad, 0, NULL, false), KILN_EINVAL);
  assert_int_equal(kiln_engine_seq_pos(e, 0), 0);
  kiln_engine_free(e);
  rand_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_best_kernels),
      cmocka_unit_test(test_generic_kernels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
