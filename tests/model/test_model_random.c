/* kiln_model_random: shapes from the config, deterministic values (independent of the thread split), the stated
 * distribution (std 0.02; norms near 1), dtype conversions consistent with kiln/half.h, tied/untied heads. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/half.h"
#include "kiln/model.h"
#include "kiln/status.h"
#include "model/model_impl.h"
#include "model/test_configs.h"

static kiln_config cfg_of(const char *json) {
  kiln_config c;
  assert_int_equal(kiln_config_parse(&c, json, strlen(json), "config.json"), KILN_OK);
  return c;
}

static kiln_model *make(const kiln_config *c, kiln_dtype dt, uint64_t seed) {
  kiln_model *m = NULL;
  int rc = kiln_model_random(&m, c, dt, seed);
  if (rc != KILN_OK) fail_msg("%s", kiln_last_error());
  return m;
}

static float value(const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_F32: return ((const float *)t->data)[i];
  case KILN_BF16: return kiln_bf16_to_f32(((const uint16_t *)t->data)[i]);
  case KILN_F16: return kiln_f16_to_f32(((const uint16_t *)t->data)[i]);
  }
  return NAN;
}

static size_t tensor_bytes(const kiln_tensor *t) { return (size_t)kiln_tensor_numel(t) * kiln_dtype_size(t->dtype); }

static void test_shapes_and_sizes(void **s) {
  (void)s;
  kiln_config c = cfg_of(QWEN3_TINY_V4);
  kiln_model *m = make(&c, KILN_BF16, 1);
  assert_null(m->dir);
  assert_int_equal(m->embed.shape[0], 64);
  assert_int_equal(m->embed.shape[1], 32);
  assert_int_equal(m->layers[1].wq.shape[0], 4 * 16);
  assert_int_equal(m->layers[1].wk.shape[0], 2 * 16);
  assert_int_equal(m->layers[1].wo.shape[1], 4 * 16);
  assert_int_equal(m->layers[0].q_norm.shape[0], 16);
  assert_null(m->layers[0].bq.data);
  assert_null(m->layers[0].bo.data);
  assert_non_null(m->lm_head.data);
  assert_ptr_not_equal(m->lm_head.data, m->embed.data);
  kiln_wspec *sp = NULL;
  size_t n = 0;
  assert_int_equal(kiln_model_specs_(m, &sp, &n), KILN_OK);
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    const kiln_tensor *t = sp[i].slot;
    assert_int_equal(t->dtype, KILN_BF16);
    assert_int_equal((uintptr_t)t->data % 64, 0);
    bytes += tensor_bytes(t);
  }
  free(sp);
  assert_int_equal(m->weight_bytes, bytes);
  /* params: embed + head 2*64*32, per layer 2*32 norms + 2*16 qk norms + 64*32 + 2*32*32 + 32*64 + 3*48*32, norm 32 */
  assert_int_equal(bytes, 2 * (2 * 64 * 32 + 2 * (64 + 32 + 64 * 32 + 2 * 32 * 32 + 32 * 64 + 3 * 48 * 32) + 32));
  kiln_model_free(m);

  c = cfg_of(LLAMA_TINY_V5);
  m = make(&c, KILN_F16, 1);
  assert_ptr_equal(m->lm_head.data, m->embed.data);
  assert_int_equal(m->lm_head.shape[0], 80);
  assert_non_null(m->layers[1].bv.data);
  assert_int_equal(m->layers[1].bv.shape[0], 2 * 8);
  assert_int_equal(m->layers[1].bo.shape[0], 48);
  assert_null(m->layers[1].q_norm.data);
  kiln_model_free(m);
}

static void test_deterministic(void **s) {
  (void)s;
  kiln_config c = cfg_of(QWEN3_TINY_V4);
  kiln_model *a = make(&c, KILN_F32, 5), *b = make(&c, KILN_F32, 5), *d = make(&c, KILN_F32, 6);
  assert_memory_equal(a->embed.data, b->embed.data, tensor_bytes(&a->embed));
  assert_memory_equal(a->layers[1].w_down.data, b->layers[1].w_down.data, tensor_bytes(&a->layers[1].w_down));
  assert_memory_not_equal(a->embed.data, d->embed.data, tensor_bytes(&a->embed));
  /* Tensors differ from each other (each has its own stream). */
  assert_memory_not_equal(a->layers[0].w_gate.data, a->layers[0].w_up.data, tensor_bytes(&a->layers[0].w_up));
  kiln_model_free(a);
  kiln_model_free(b);
  kiln_model_free(d);
}

/* A model too small to be split across threads and one large enough to be split share their first tensors. */
static void test_thread_split_independent(void **s) {
  (void)s;
  const char *small = "{\"model_type\":\"llama\",\"vocab_size\":2048,\"hidden_size\":128,\"intermediate_size\":256,"
                      "\"tie_word_embeddings\":true,"
                      "\"num_hidden_layers\":1,\"num_attention_heads\":4}";
  const char *large = "{\"model_type\":\"llama\",\"vocab_size\":2048,\"hidden_size\":128,\"intermediate_size\":256,"
                      "\"tie_word_embeddings\":true,"
                      "\"num_hidden_layers\":8,\"num_attention_heads\":4}";
  kiln_config cs = cfg_of(small), cl = cfg_of(large);
  kiln_model *a = make(&cs, KILN_BF16, 9), *b = make(&cl, KILN_BF16, 9);
  assert_true(a->weight_bytes / 2 < (1u << 20));
  assert_true(b->weight_bytes / 2 > (1u << 20));
  assert_memory_equal(a->embed.data, b->embed.data, tensor_bytes(&a->embed));
  const kiln_layer_weights *x = &a->layers[0], *y = &b->layers[0];
  assert_memory_equal(x->wq.data, y->wq.data, tensor_bytes(&x->wq));
  assert_memory_equal(x->w_down.data, y->w_down.data, tensor_bytes(&x->w_down));
  kiln_model_free(a);
  kiln_model_free(b);
}

static void stats(const kiln_tensor *t, double *mean, double *sd, double *maxabs) {
  int64_t n = kiln_tensor_numel(t);
  double s1 = 0, s2 = 0, mx = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = value(t, i);
    s1 += v;
    s2 += v * v;
  }
  *mean = s1 / (double)n;
  *sd = sqrt(s2 / (double)n - *mean * *mean);
  for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(value(t, i) - *mean));
  *maxabs = mx;
}

static void test_distribution(void **s) {
  (void)s;
  const char *json = "{\"model_type\":\"qwen3\",\"vocab_size\":2048,\"hidden_size\":256,\"intermediate_size\":512,"
                     "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":64}";
  kiln_config c = cfg_of(json);
  kiln_dtype dts[] = {KILN_F32, KILN_BF16, KILN_F16};
  for (int k = 0; k < 3; k++) {
    kiln_model *m = make(&c, dts[k], 11);
    double mean, sd, mx;
    stats(&m->embed, &mean, &sd, &mx); /* 524288 samples */
    assert_true(fabs(mean) < 0.0002);
    assert_true(fabs(sd - 0.02) < 0.0004);
    assert_true(mx <= 0.02 * 3.47);
    assert_true(mx > 0.02 * 2.5);
    stats(&m->layers[0].attn_norm, &mean, &sd, &mx);
    assert_true(fabs(mean - 1.0) < 0.01);
    assert_true(sd > 0.01 && sd < 0.03);
    stats(&m->layers[0].q_norm, &mean, &sd, &mx);
    assert_true(fabs(mean - 1.0) < 0.02);
    kiln_model_free(m);
  }
}

/* The bf16 and f16 models are the f32 model rounded by kiln/half.h. */
static void test_dtypes_consistent(void **s) {
  (void)s;
  kiln_config c = cfg_of(QWEN3_TINY_V4);
  kiln_model *f = make(&c, KILN_F32, 3), *b = make(&c, KILN_BF16, 3), *h = make(&c, KILN_F16, 3);
  const kiln_tensor *ts[][3] = {{&f->embed, &b->embed, &h->embed},
                                {&f->layers[1].k_norm, &b->layers[1].k_norm, &h->layers[1].k_norm},
                                {&f->lm_head, &b->lm_head, &h->lm_head}};
  for (size_t k = 0; k < 3; k++) {
    int64_t n = kiln_tensor_numel(ts[k][0]);
    for (int64_t i = 0; i < n; i++) {
      float v = ((const float *)ts[k][0]->data)[i];
      assert_int_equal(((const uint16_t *)ts[k][1]->data)[i], kiln_f32_to_bf16(v));
      assert_int_equal(((const uint16_t *)ts[k][2]->data)[i], kiln_f32_to_f16(v));
    }
  }
  kiln_model_free(f);
  kiln_model_free(b);
  kiln_model_free(h);
}

static void test_bad_args(void **s) {
  (void)s;
  kiln_config c = cfg_of(QWEN3_TINY_V4);
  kiln_model *m = (kiln_model *)1;
  assert_int_equal(kiln_model_random(&m, &c, (kiln_dtype)9, 1), KILN_EINVAL);
  assert_null(m);
  assert_int_equal(kiln_model_random(&m, NULL, KILN_F32, 1), KILN_EINVAL);
  assert_int_equal(kiln_model_random(NULL, &c, KILN_F32, 1), KILN_EINVAL);
  c.n_kv_heads = 3;
  assert_int_equal(kiln_model_random(&m, &c, KILN_F32, 1), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "not a multiple of num_key_value_heads 3"));
  c = cfg_of(QWEN3_TINY_V4);
  c.hidden_size = 0;
  assert_int_equal(kiln_model_random(&m, &c, KILN_F32, 1), KILN_ERANGE);
  assert_null(m);
  kiln_model_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shapes_and_sizes),         cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_thread_split_independent), cmocka_unit_test(test_distribution),
      cmocka_unit_test(test_dtypes_consistent),        cmocka_unit_test(test_bad_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
