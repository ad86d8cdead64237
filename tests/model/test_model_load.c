/*
 * kiln_model_load: round trips through checkpoints written here (one file and sharded, f32/bf16/f16, tied and
 * untied), and every way a checkpoint directory can be broken, each giving a one-line message naming the file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kiln/model.h"
#include "kiln/status.h"
#include "model/ckpt_writer.h"
#include "model/model_impl.h"
#include "model/test_configs.h"

typedef struct progress_log {
  int calls;
  uint64_t last_done, last_total;
  int monotonic;
} progress_log;

static void on_progress(void *user, uint64_t done, uint64_t total) {
  progress_log *p = user;
  if (p->calls && (done < p->last_done || total != p->last_total)) p->monotonic = 0;
  p->calls++;
  p->last_done = done;
  p->last_total = total;
}

static kiln_model *random_model(const char *json, kiln_dtype dt, uint64_t seed) {
  kiln_config cfg;
  assert_int_equal(kiln_config_parse(&cfg, json, strlen(json), "config.json"), KILN_OK);
  kiln_model *m = NULL;
  assert_int_equal(kiln_model_random(&m, &cfg, dt, seed), KILN_OK);
  return m;
}

static void assert_same_tensor(const kiln_tensor *a, const kiln_tensor *b) {
  assert_int_equal(a->dtype, b->dtype);
  assert_int_equal(a->ndim, b->ndim);
  for (int i = 0; i < a->ndim; i++) assert_int_equal(a->shape[i], b->shape[i]);
  assert_non_null(a->data);
  assert_non_null(b->data);
  assert_memory_equal(a->data, b->data, (size_t)kiln_tensor_numel(a) * kiln_dtype_size(a->dtype));
}

static void assert_same_model(kiln_model *want, kiln_model *got) {
  assert_true(cfg_equal(&want->cfg, &got->cfg));
  kiln_wspec *sw = NULL, *sg = NULL;
  size_t nw = 0, ng = 0;
  assert_int_equal(kiln_model_specs_(want, &sw, &nw), KILN_OK);
  assert_int_equal(kiln_model_specs_(got, &sg, &ng), KILN_OK);
  assert_int_equal(nw, ng);
  for (size_t i = 0; i < nw; i++) {
    assert_string_equal(sw[i].name, sg[i].name);
    assert_same_tensor(sw[i].slot, sg[i].slot);
  }
  free(sw);
  free(sg);
  assert_same_tensor(&want->lm_head, &got->lm_head);
  if (got->cfg.tie_word_embeddings) assert_ptr_equal(got->lm_head.data, got->embed.data);
  for (int l = 0; l < got->cfg.n_layers; l++) {
    const kiln_layer_weights *w = &got->layers[l];
    assert_true((w->bq.data != NULL) == got->cfg.attention_bias);
    assert_true((w->bo.data != NULL) == got->cfg.attention_bias);
    assert_true((w->q_norm.data != NULL) == got->cfg.qk_norm);
  }
  assert_int_equal(want->weight_bytes, got->weight_bytes);
}

static void round_trip(const char *json, kiln_dtype dt, const ckpt_opts *o) {
  kiln_model *want = random_model(json, dt, 42);
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  assert_int_equal(ckpt_write(dir, json, want, o), 0);
  kiln_model *got = NULL;
  progress_log p = {.monotonic = 1};
  int rc = kiln_model_load(&got, dir, on_progress, &p);
  if (rc != KILN_OK) fail_msg("load: %s", kiln_last_error());
  assert_string_equal(got->dir, dir);
  assert_same_model(want, got);
  assert_true(p.calls >= 2);
  assert_true(p.monotonic);
  assert_true(p.last_total > got->weight_bytes);
  assert_int_equal(p.last_done, p.last_total);
  kiln_model_free(got);
  kiln_model_free(want);
  ckpt_rmdir(dir);
}

static void test_round_trip_qwen3_f32(void **s) {
  (void)s;
  round_trip(QWEN3_TINY_V4, KILN_F32, NULL);
}

static void test_round_trip_llama_bf16_tied_bias(void **s) {
  (void)s;
  round_trip(LLAMA_TINY_V5, KILN_BF16, NULL);
}

static void test_round_trip_sharded_f16(void **s) {
  (void)s;
  round_trip(QWEN3_TINY_V4, KILN_F16, &(ckpt_opts){.shards = 3});
  round_trip(LLAMA_TINY_V5, KILN_BF16, &(ckpt_opts){.shards = 2});
}

static void test_extra_tensors_ignored(void **s) {
  (void)s;
  round_trip(QWEN3_TINY_V4, KILN_BF16, &(ckpt_opts){.extra = "model.layers.0.self_attn.rotary_emb.inv_freq"});
  /* Tied: a stored lm_head.weight is not used; lm_head is the embedding. */
  round_trip(LLAMA_TINY_V5, KILN_F32, &(ckpt_opts){.write_lm_head = 1});
}

/* Writes a checkpoint broken by `o` and expects load to fail with `want` and a message containing each needle. */
static void expect_broken(const char *json, kiln_dtype dt, const ckpt_opts *o, int want, const char *needle1,
                          const char *needle2) {
  kiln_model *m = random_model(json, dt, 7);
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  assert_int_equal(ckpt_write(dir, json, m, o), 0);
  kiln_model *got = (kiln_model *)1;
  int rc = kiln_model_load(&got, dir, NULL, NULL);
  const char *msg = kiln_last_error();
  if (rc != want || !strstr(msg, needle1) || (needle2 && !strstr(msg, needle2)))
    fail_msg("want %s with '%s'/'%s', got %s: %s", kiln_err_name(want), needle1, needle2 ? needle2 : "",
             kiln_err_name(rc), msg);
  assert_null(got);
  assert_null(strchr(msg, '\n'));
  kiln_model_free(m);
  ckpt_rmdir(dir);
}

static void test_missing_tensor(void **s) {
  (void)s;
  expect_broken(QWEN3_TINY_V4, KILN_F32, &(ckpt_opts){.skip = "model.layers.1.self_attn.k_norm.weight"},
                KILN_ENOTFOUND, "model.safetensors: missing tensor 'model.layers.1.self_attn.k_norm.weight'", NULL);
  expect_broken(QWEN3_TINY_V4, KILN_F32, &(ckpt_opts){.skip = "lm_head.weight"}, KILN_ENOTFOUND,
                "missing tensor 'lm_head.weight'", NULL);
  expect_broken(LLAMA_TINY_V5, KILN_F32, &(ckpt_opts){.skip = "model.layers.0.self_attn.v_proj.bias"},
                KILN_ENOTFOUND, "missing tensor 'model.layers.0.self_attn.v_proj.bias'", NULL);
  expect_broken(LLAMA_TINY_V5, KILN_BF16, &(ckpt_opts){.skip = "model.layers.1.self_attn.o_proj.bias"},
                KILN_ENOTFOUND, "missing tensor 'model.layers.1.self_attn.o_proj.bias'", NULL);
  /* Sharded: the tensor is not in the index. */
  expect_broken(QWEN3_TINY_V4, KILN_F32, &(ckpt_opts){.shards = 2, .skip = "model.norm.weight"}, KILN_ENOTFOUND,
                "model.safetensors.index.json: missing tensor 'model.norm.weight'", NULL);
}

static void test_wrong_shape(void **s) {
  (void)s;
  expect_broken(QWEN3_TINY_V4, KILN_F32, &(ckpt_opts){.bad_shape = "model.layers.0.mlp.down_proj.weight"},
                KILN_EFORMAT, "model.safetensors: tensor 'model.layers.0.mlp.down_proj.weight' has shape [1536]",
                "config.json implies [32, 48]");
  expect_broken(LLAMA_TINY_V5, KILN_BF16, &(ckpt_opts){.shards = 2, .bad_shape = "model.embed_tokens.weight"},
                KILN_EFORMAT, "model-00001-of-00002.safetensors: tensor 'model.embed_tokens.weight' has shape",
                "[80, 48]");
}

static void test_wrong_dtype(void **s) {
  (void)s;
  expect_broken(QWEN3_TINY_V4, KILN_F32, &(ckpt_opts){.bad_dtype = "model.layers.1.self_attn.q_proj.weight"},
                KILN_EUNSUPPORTED, "tensor 'model.layers.1.self_attn.q_proj.weight' has dtype I32",
                "model.safetensors");
  expect_broken(LLAMA_TINY_V5, KILN_BF16, &(ckpt_opts){.bad_dtype = "model.norm.weight"}, KILN_EUNSUPPORTED,
                "tensor 'model.norm.weight' has dtype I16", NULL);
}

static void test_missing_shard(void **s) {
  (void)s;
  expect_broken(QWEN3_TINY_V4, KILN_F32, &(ckpt_opts){.shards = 2, .missing_shard = "model-gone.safetensors"},
                KILN_ENOTFOUND, "model-gone.safetensors: shard listed in", "model.safetensors.index.json");
  expect_broken(QWEN3_TINY_V4, KILN_F32, &(ckpt_opts){.shards = 2, .missing_shard = "../escape.safetensors"},
                KILN_EFORMAT, "shard name '../escape.safetensors' is not a plain file name", NULL);
}

static void test_bad_directory(void **s) {
  (void)s;
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  kiln_model *m = NULL;
  assert_int_equal(kiln_model_load(&m, dir, NULL, NULL), KILN_ENOTFOUND);
  assert_non_null(strstr(kiln_last_error(), "config.json"));
  char path[512];
  snprintf(path, sizeof path, "%s/config.json", dir);
  assert_int_equal(stw_write_text(path, QWEN3_TINY_V4), 0);
  assert_int_equal(kiln_model_load(&m, dir, NULL, NULL), KILN_ENOTFOUND);
  assert_non_null(strstr(kiln_last_error(), "no model.safetensors or model.safetensors.index.json"));
  /* A malformed index. */
  snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
  assert_int_equal(stw_write_text(path, "{\"weight_map\": [1, 2]}"), 0);
  assert_int_equal(kiln_model_load(&m, dir, NULL, NULL), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "model.safetensors.index.json: no weight_map object"));
  assert_int_equal(stw_write_text(path, "{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}"), 0);
  assert_int_equal(kiln_model_load(&m, dir, NULL, NULL), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "model.safetensors.index.json: malformed JSON"));
  /* A corrupt single file is preferred over the index and reported. */
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  assert_int_equal(stw_write_raw(path, 9999999, "{}", NULL, 0), 0);
  assert_int_equal(kiln_model_load(&m, dir, NULL, NULL), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "model.safetensors: header length 9999999 past end of file (10 bytes)"));
  assert_null(m);
  ckpt_rmdir(dir);
  assert_int_equal(kiln_model_load(&m, "/nonexistent-kiln-dir", NULL, NULL), KILN_ENOTFOUND);
  assert_int_equal(kiln_model_load(NULL, ".", NULL, NULL), KILN_EINVAL);
}

/* A checkpoint directory with QWEN3_TINY_V4 as config.json and `hdr` + `data_len` zero bytes as model.safetensors;
 * loading must fail with `want` and `needle`. */
static void expect_bad_file(uint64_t hlen, const char *hdr, size_t data_len, int want, const char *needle) {
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  char path[512];
  snprintf(path, sizeof path, "%s/config.json", dir);
  assert_int_equal(stw_write_text(path, QWEN3_TINY_V4), 0);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  void *zeros = calloc(1, data_len + 1);
  assert_non_null(zeros);
  assert_int_equal(stw_write_raw(path, hlen ? hlen : strlen(hdr), hdr, zeros, data_len), 0);
  free(zeros);
  kiln_model *m = NULL;
  int rc = kiln_model_load(&m, dir, NULL, NULL);
  if (rc != want || !strstr(kiln_last_error(), needle) || !strstr(kiln_last_error(), "/model.safetensors: "))
    fail_msg("want %s '%s', got %s '%s'", kiln_err_name(want), needle, kiln_err_name(rc), kiln_last_error());
  assert_null(m);
  ckpt_rmdir(dir);
}

static void test_corrupt_files(void **s) {
  (void)s;
  expect_bad_file(0, "", 0, KILN_EFORMAT, "header does not start with a JSON object");
  expect_bad_file(4096, "{}", 0, KILN_EFORMAT, "header length 4096 past end of file (10 bytes)");
  expect_bad_file(0, "{\"a\":", 0, KILN_EFORMAT, "header JSON");
  expect_bad_file(0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  16, KILN_EFORMAT, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  expect_bad_file(0, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 12, KILN_EFORMAT,
                  "tensor 'a': data_offsets [8, 16] past the end of the data (12 bytes)");
  expect_bad_file(0, "{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1, KILN_EUNSUPPORTED,
                  "tensor 'a': unknown dtype 'F4'");
}

/* A real checkpoint cut short: the last tensors end past the end of the file. */
static void test_truncated_checkpoint(void **s) {
  (void)s;
  kiln_model *m = random_model(QWEN3_TINY_V4, KILN_BF16, 1);
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  assert_int_equal(ckpt_write(dir, QWEN3_TINY_V4, m, &(ckpt_opts){.shards = 2}), 0);
  char path[512];
  snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
  FILE *fp = fopen(path, "r+b");
  assert_non_null(fp);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  long size = ftell(fp);
  fclose(fp);
  assert_int_equal(truncate(path, size - 100), 0);
  kiln_model *got = NULL;
  assert_int_equal(kiln_model_load(&got, dir, NULL, NULL), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "model-00002-of-00002.safetensors: tensor '"));
  assert_non_null(strstr(kiln_last_error(), "past the end of the data"));
  /* Malformed and unsupported config.json, with good weights. */
  snprintf(path, sizeof path, "%s/config.json", dir);
  assert_int_equal(stw_write_text(path, "{\"model_type\": \"qwen3\", \"hidden_size\": }"), 0);
  assert_int_equal(kiln_model_load(&got, dir, NULL, NULL), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "/config.json: malformed JSON"));
  assert_int_equal(stw_write_text(path, "{\"model_type\": \"phi3\"}"), 0);
  assert_int_equal(kiln_model_load(&got, dir, NULL, NULL), KILN_EUNSUPPORTED);
  assert_non_null(strstr(kiln_last_error(), "/config.json: model_type 'phi3' is not supported"));
  /* An index entry for a tensor its shard does not hold. */
  assert_int_equal(stw_write_text(path, QWEN3_TINY_V4), 0);
  snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
  assert_int_equal(stw_write_text(path, "{\"weight_map\":{"
                                        "\"model.embed_tokens.weight\":\"model-00001-of-00002.safetensors\","
                                        "\"ghost\":\"model-00001-of-00002.safetensors\"}}"),
                   0);
  assert_int_equal(kiln_model_load(&got, dir, NULL, NULL), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "model-00001-of-00002.safetensors: tensor 'ghost' listed in"));
  /* A shard cut to less than the 8-byte length field. */
  assert_int_equal(
      stw_write_text(path, "{\"weight_map\":{\"model.embed_tokens.weight\":\"model-00002-of-00002.safetensors\"}}"), 0);
  snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
  assert_int_equal(truncate(path, 5), 0);
  assert_int_equal(kiln_model_load(&got, dir, NULL, NULL), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "model-00002-of-00002.safetensors: truncated: 5 bytes"));
  assert_null(got);
  kiln_model_free(m);
  ckpt_rmdir(dir);
}

/* Checkpoints written by transformers 5 itself (save_pretrained; tests/data/tiny, made by tools/make_tiny_models.py):
 * the loader reads them as transformers does. */
static void test_transformers_files(void **s) {
  (void)s;
  const char *src = getenv("KILN_SOURCE_DIR");
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/tests/data/tiny/llama-bf16", src ? src : ".");
  kiln_model *m = NULL;
  if (kiln_model_load(&m, dir, NULL, NULL) != KILN_OK) fail_msg("%s", kiln_last_error());
  const kiln_config *c = &m->cfg;
  assert_int_equal(c->arch, KILN_ARCH_LLAMA);
  assert_int_equal(c->head_dim, 24); /* explicit, though hidden / heads = 16 */
  assert_int_equal(c->n_kv_heads, 2);
  assert_true(c->attention_bias && c->tie_word_embeddings && !c->qk_norm);
  assert_int_equal(c->rope_type, KILN_ROPE_LLAMA3);
  assert_true(c->rope_factor == 8.0 && c->rope_original_max_position == 64);
  assert_int_equal(c->bos_token_id, -1);
  assert_int_equal(c->n_eos, 2); /* generation_config.json's [0, 2] over config.json's 0 */
  assert_int_equal(c->eos_token_ids[1], 2);
  assert_int_equal(m->embed.dtype, KILN_BF16);
  assert_ptr_equal(m->lm_head.data, m->embed.data);
  assert_int_equal(m->layers[2].bk.shape[0], 2 * 24);
  assert_int_equal(m->layers[2].bo.shape[0], 64);
  kiln_model_free(m);
  snprintf(dir, sizeof dir, "%s/tests/data/tiny/qwen3-f32", src ? src : ".");
  if (kiln_model_load(&m, dir, NULL, NULL) != KILN_OK) fail_msg("%s", kiln_last_error());
  c = &m->cfg;
  assert_int_equal(c->arch, KILN_ARCH_QWEN3);
  assert_int_equal(c->head_dim, 32);
  assert_true(c->rope_theta == 1e6);
  assert_true(!c->tie_word_embeddings && c->qk_norm);
  assert_int_equal(m->lm_head.dtype, KILN_F32);
  assert_ptr_not_equal(m->lm_head.data, m->embed.data);
  assert_int_equal(m->layers[0].q_norm.shape[0], 32);
  kiln_model_free(m);
}

/* A file whose data starts at an odd offset still loads (through aligned copies), with the right values. */
static void test_misaligned_data(void **s) {
  (void)s;
  kiln_model *want = random_model(QWEN3_TINY_V4, KILN_F32, 3);
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  assert_int_equal(ckpt_write(dir, QWEN3_TINY_V4, want, NULL), 0);
  /* Rewrite model.safetensors with a header of odd length: read it back, strip the padding, add one space. */
  char path[512];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  uint8_t len8[8];
  assert_int_equal(fread(len8, 1, 8, fp), 8);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
  char *h = calloc(1, hlen + 2);
  assert_non_null(h);
  assert_int_equal(fread(h, 1, hlen, fp), hlen);
  size_t hl = strlen(h);
  while (hl && h[hl - 1] == ' ') h[--hl] = '\0';
  if (hl % 2 == 0) h[hl++] = ' ';
  uint8_t *data = malloc(1 << 20);
  assert_non_null(data);
  size_t dl = fread(data, 1, 1 << 20, fp);
  fclose(fp);
  assert_int_equal(stw_write_raw(path, hl, h, data, dl), 0);
  kiln_model *got = NULL;
  assert_int_equal(kiln_model_load(&got, dir, NULL, NULL), KILN_OK);
  assert_same_model(want, got);
  assert_int_equal((uintptr_t)got->embed.data % 4, 0);
  kiln_model_free(got);
  kiln_model_free(want);
  free(h);
  free(data);
  ckpt_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_qwen3_f32),
      cmocka_unit_test(test_round_trip_llama_bf16_tied_bias),
      cmocka_unit_test(test_round_trip_sharded_f16),
      cmocka_unit_test(test_extra_tensors_ignored),
      cmocka_unit_test(test_missing_tensor),
      cmocka_unit_test(test_wrong_shape),
      cmocka_unit_test(test_wrong_dtype),
      cmocka_unit_test(test_missing_shard),
      cmocka_unit_test(test_bad_directory),
      cmocka_unit_test(test_misaligned_data),
      cmocka_unit_test(test_corrupt_files),
      cmocka_unit_test(test_transformers_files),
      cmocka_unit_test(test_truncated_checkpoint),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
