/* config.json in the transformers 4 and 5 forms, transformers' defaults, generation_config.json, the shipped bench
 * configs, and malformed or unsupported configs (one-line messages naming the file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/model.h"
#include "kiln/status.h"
#include "model/ckpt_writer.h"
#include "model/config.h"
#include "model/test_configs.h"

static kiln_config parse_ok(const char *json) {
  kiln_config c;
  int rc = kiln_config_parse(&c, json, strlen(json), "config.json");
  if (rc != KILN_OK) fail_msg("%s: %s", json, kiln_last_error());
  return c;
}

static void test_qwen3_v4(void **s) {
  (void)s;
  kiln_config c = parse_ok(QWEN3_TINY_V4);
  assert_int_equal(c.arch, KILN_ARCH_QWEN3);
  assert_int_equal(c.vocab_size, 64);
  assert_int_equal(c.hidden_size, 32);
  assert_int_equal(c.intermediate_size, 48);
  assert_int_equal(c.n_layers, 2);
  assert_int_equal(c.n_heads, 4);
  assert_int_equal(c.n_kv_heads, 2);
  assert_int_equal(c.head_dim, 16); /* given: not hidden / heads */
  assert_int_equal(c.max_position_embeddings, 128);
  assert_float_equal(c.rms_norm_eps, 1e-6f, 0);
  assert_true(c.rope_theta == 1e6);
  assert_int_equal(c.rope_type, KILN_ROPE_DEFAULT);
  assert_false(c.tie_word_embeddings);
  assert_false(c.attention_bias);
  assert_true(c.qk_norm);
  assert_int_equal(c.torch_dtype, KILN_F32);
  assert_int_equal(c.bos_token_id, 1);
  assert_int_equal(c.n_eos, 1);
  assert_int_equal(c.eos_token_ids[0], 2);
}

static void test_llama_v5(void **s) {
  (void)s;
  kiln_config c = parse_ok(LLAMA_TINY_V5);
  assert_int_equal(c.arch, KILN_ARCH_LLAMA);
  assert_int_equal(c.head_dim, 8); /* derived */
  assert_int_equal(c.n_kv_heads, 2);
  assert_false(c.qk_norm);
  assert_true(c.attention_bias);
  assert_true(c.tie_word_embeddings);
  assert_float_equal(c.rms_norm_eps, 1e-5f, 0);
  assert_int_equal(c.rope_type, KILN_ROPE_LLAMA3);
  assert_true(c.rope_theta == 500000.0);
  assert_true(c.rope_factor == 32.0);
  assert_true(c.rope_low_freq_factor == 1.0);
  assert_true(c.rope_high_freq_factor == 4.0);
  assert_int_equal(c.rope_original_max_position, 8192);
  assert_int_equal(c.torch_dtype, KILN_BF16);
  assert_int_equal(c.bos_token_id, 128000);
  assert_int_equal(c.n_eos, 3);
  assert_int_equal(c.eos_token_ids[2], 128009);
}

/* The same Llama in the transformers 4 form (rope_theta at the top, rope_scaling, the old "type" key) gives the
 * same config as the 5 form. */
static void test_forms_agree(void **s) {
  (void)s;
  const char *v4 = "{\"model_type\":\"llama\",\"vocab_size\":80,\"hidden_size\":48,\"intermediate_size\":64,"
                   "\"num_hidden_layers\":2,\"num_attention_heads\":6,\"num_key_value_heads\":2,"
                   "\"max_position_embeddings\":256,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,"
                   "\"rope_scaling\":{\"type\":\"llama3\",\"factor\":32.0,\"low_freq_factor\":1.0,"
                   "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},"
                   "\"tie_word_embeddings\":true,\"attention_bias\":true,\"torch_dtype\":\"bfloat16\","
                   "\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009]}";
  kiln_config a = parse_ok(v4), b = parse_ok(LLAMA_TINY_V5);
  assert_true(cfg_equal(&a, &b));
  const char *q5 = "{\"model_type\":\"qwen3\",\"vocab_size\":64,\"hidden_size\":32,\"intermediate_size\":48,"
                   "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":16,"
                   "\"max_position_embeddings\":128,\"rms_norm_eps\":1e-06,"
                   "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1000000.0},"
                   "\"layer_types\":[\"full_attention\",\"full_attention\"],\"tie_word_embeddings\":false,"
                   "\"dtype\":\"float32\",\"bos_token_id\":1,\"eos_token_id\":2}";
  kiln_config c = parse_ok(q5), d = parse_ok(QWEN3_TINY_V4);
  assert_true(cfg_equal(&c, &d));
  /* rope_parameters beats a top-level rope_theta; a rope_parameters without rope_theta takes the top-level one. */
  c = parse_ok("{\"model_type\":\"qwen3\",\"rope_theta\":5.0,\"rope_parameters\":{\"rope_theta\":7.0}}");
  assert_true(c.rope_theta == 7.0);
  c = parse_ok("{\"model_type\":\"qwen3\",\"rope_theta\":5.0,\"rope_parameters\":{\"rope_type\":\"default\"}}");
  assert_true(c.rope_theta == 5.0);
  c = parse_ok("{\"model_type\":\"qwen3\",\"rope_parameters\":{\"full_attention\":{\"rope_theta\":9.0}}}");
  assert_true(c.rope_theta == 9.0);
}

/* Absent fields take transformers' class defaults; null head_dim / num_key_value_heads are derived. */
static void test_defaults(void **s) {
  (void)s;
  kiln_config c = parse_ok("{\"model_type\":\"qwen3\"}");
  assert_int_equal(c.vocab_size, 151936);
  assert_int_equal(c.hidden_size, 4096);
  assert_int_equal(c.intermediate_size, 22016);
  assert_int_equal(c.n_layers, 32);
  assert_int_equal(c.n_heads, 32);
  assert_int_equal(c.n_kv_heads, 32);
  assert_int_equal(c.head_dim, 128);
  assert_int_equal(c.max_position_embeddings, 32768);
  assert_true(c.rope_theta == 10000.0);
  assert_false(c.tie_word_embeddings);
  assert_int_equal(c.bos_token_id, -1);
  assert_int_equal(c.n_eos, 0);
  /* Qwen3: an absent head_dim is the class default 128, even when hidden / heads differs. */
  c = parse_ok("{\"model_type\":\"qwen3\",\"hidden_size\":1024,\"num_attention_heads\":16,\"num_key_value_heads\":8}");
  assert_int_equal(c.head_dim, 128);
  c = parse_ok("{\"model_type\":\"qwen3\",\"hidden_size\":1024,\"num_attention_heads\":16,\"head_dim\":null,"
               "\"num_key_value_heads\":null}");
  assert_int_equal(c.head_dim, 64);
  assert_int_equal(c.n_kv_heads, 16);
  c = parse_ok("{\"model_type\":\"llama\"}");
  assert_int_equal(c.vocab_size, 32000);
  assert_int_equal(c.intermediate_size, 11008);
  assert_int_equal(c.head_dim, 128);
  assert_int_equal(c.n_kv_heads, 32);
  assert_int_equal(c.max_position_embeddings, 2048);
  assert_int_equal(c.bos_token_id, 1);
  assert_int_equal(c.n_eos, 1);
  assert_int_equal(c.eos_token_ids[0], 2);
  assert_false(c.qk_norm);
  /* Llama: explicit head_dim is kept, never derived. */
  c = parse_ok("{\"model_type\":\"llama\",\"hidden_size\":2048,\"num_attention_heads\":32,\"head_dim\":128}");
  assert_int_equal(c.head_dim, 128);
  c = parse_ok("{\"model_type\":\"llama\",\"hidden_size\":2048,\"num_attention_heads\":32,\"eos_token_id\":null,"
               "\"bos_token_id\":null,\"tie_word_embeddings\":null}");
  assert_int_equal(c.head_dim, 64);
  assert_int_equal(c.n_eos, 0);
  assert_int_equal(c.bos_token_id, -1);
  /* Qwen3 with sliding windows switched on but no layer beyond max_window_layers: all full attention. */
  c = parse_ok("{\"model_type\":\"qwen3\",\"num_hidden_layers\":4,\"use_sliding_window\":true,"
               "\"max_window_layers\":4}");
  assert_int_equal(c.n_layers, 4);
  /* Integral reals are accepted for integers. */
  c = parse_ok("{\"model_type\":\"qwen3\",\"hidden_size\":1024.0}");
  assert_int_equal(c.hidden_size, 1024);
}

static void expect_bad(const char *json, int want, const char *needle) {
  kiln_config c;
  int rc = kiln_config_parse(&c, json, strlen(json), "dir/config.json");
  const char *msg = kiln_last_error();
  if (rc != want || strncmp(msg, "dir/config.json: ", 17) != 0 || !strstr(msg, needle))
    fail_msg("%s: want %s '%s', got %s '%s'", json, kiln_err_name(want), needle, kiln_err_name(rc), msg);
  assert_null(strchr(msg, '\n'));
}

static void test_bad(void **s) {
  (void)s;
  expect_bad("{\"model_type\":\"qwen3\",", KILN_EFORMAT, "malformed JSON");
  expect_bad("", KILN_EFORMAT, "malformed JSON");
  expect_bad("[1]", KILN_EFORMAT, "not a JSON object");
  expect_bad("{\"model_type\":\"qwen3\",\"model_type\":\"llama\"}", KILN_EFORMAT, "duplicate");
  expect_bad("{}", KILN_EFORMAT, "no model_type");
  expect_bad("{\"model_type\":7}", KILN_EFORMAT, "'model_type' is not a string");
  expect_bad("{\"model_type\":\"mistral\"}", KILN_EUNSUPPORTED, "model_type 'mistral' is not supported");
  expect_bad("{\"model_type\":\"qwen3\",\"hidden_size\":\"big\"}", KILN_EFORMAT, "'hidden_size' is not an integer");
  expect_bad("{\"model_type\":\"qwen3\",\"hidden_size\":1.5}", KILN_EFORMAT, "'hidden_size' is not an integer");
  expect_bad("{\"model_type\":\"qwen3\",\"hidden_size\":0}", KILN_ERANGE, "'hidden_size' = 0 is out of range");
  expect_bad("{\"model_type\":\"qwen3\",\"vocab_size\":-5}", KILN_ERANGE, "'vocab_size' = -5");
  expect_bad("{\"model_type\":\"qwen3\",\"num_hidden_layers\":1e300}", KILN_EFORMAT, "not an integer");
  expect_bad("{\"model_type\":\"qwen3\",\"num_attention_heads\":6,\"num_key_value_heads\":4}", KILN_EFORMAT,
             "num_attention_heads 6 is not a multiple of num_key_value_heads 4");
  expect_bad("{\"model_type\":\"qwen3\",\"num_attention_heads\":16}", KILN_EFORMAT, "not a multiple"); /* kv 32 */
  expect_bad("{\"model_type\":\"qwen3\",\"head_dim\":7}", KILN_EFORMAT, "head_dim 7 is odd");
  expect_bad("{\"model_type\":\"llama\",\"hidden_size\":100,\"num_attention_heads\":32}", KILN_EFORMAT,
             "no head_dim and hidden_size 100");
  expect_bad("{\"model_type\":\"qwen3\",\"rms_norm_eps\":0}", KILN_ERANGE, "rms_norm_eps");
  expect_bad("{\"model_type\":\"qwen3\",\"rms_norm_eps\":\"x\"}", KILN_EFORMAT, "'rms_norm_eps' is not a number");
  expect_bad("{\"model_type\":\"qwen3\",\"rope_theta\":-1}", KILN_ERANGE, "rope_theta");
  expect_bad("{\"model_type\":\"qwen3\",\"tie_word_embeddings\":1}", KILN_EFORMAT, "is not true or false");
  expect_bad("{\"model_type\":\"qwen3\",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}", KILN_EUNSUPPORTED,
             "rope_type 'yarn' is not supported");
  expect_bad("{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":2.0}}",
             KILN_EUNSUPPORTED, "rope_type 'linear'");
  expect_bad("{\"model_type\":\"llama\",\"rope_parameters\":[1]}", KILN_EFORMAT, "'rope_parameters' is not an object");
  expect_bad("{\"model_type\":\"llama\",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
             "\"low_freq_factor\":1.0,\"original_max_position_embeddings\":8192}}",
             KILN_EFORMAT, "llama3 rope scaling without 'high_freq_factor'");
  expect_bad("{\"model_type\":\"llama\",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
             "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0}}",
             KILN_EFORMAT, "without 'original_max_position_embeddings'");
  expect_bad("{\"model_type\":\"llama\",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
             "\"low_freq_factor\":4.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}",
             KILN_ERANGE, "must exceed low_freq_factor");
  expect_bad("{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_type\":\"default\",\"partial_rotary_factor\":0.5}}",
             KILN_EUNSUPPORTED, "partial_rotary_factor");
  expect_bad("{\"model_type\":\"qwen3\",\"use_sliding_window\":true,\"sliding_window\":4096,\"max_window_layers\":2}",
             KILN_EUNSUPPORTED, "use_sliding_window");
  expect_bad("{\"model_type\":\"qwen3\",\"num_hidden_layers\":2,"
             "\"layer_types\":[\"full_attention\",\"sliding_attention\"]}",
             KILN_EUNSUPPORTED, "layer 1 is 'sliding_attention'");
  expect_bad("{\"model_type\":\"llama\",\"hidden_act\":\"gelu\"}", KILN_EUNSUPPORTED, "hidden_act 'gelu'");
  expect_bad("{\"model_type\":\"llama\",\"mlp_bias\":true}", KILN_EUNSUPPORTED, "mlp_bias");
  expect_bad("{\"model_type\":\"llama\",\"eos_token_id\":[1,2,3,4,5,6,7,8,9]}", KILN_ERANGE, "lists 9 ids (at most 8)");
  expect_bad("{\"model_type\":\"llama\",\"eos_token_id\":[1,\"2\"]}", KILN_EFORMAT,
             "'eos_token_id'[1] is not a token id");
  expect_bad("{\"model_type\":\"llama\",\"eos_token_id\":-1}", KILN_ERANGE, "'eos_token_id' = -1");
  expect_bad("{\"model_type\":\"llama\",\"bos_token_id\":true}", KILN_EFORMAT, "'bos_token_id' is not an integer");
}

static char *write_dir(const char *cfg, const char *gen) {
  char *dir = ckpt_tmpdir();
  assert_non_null(dir);
  char path[512];
  snprintf(path, sizeof path, "%s/config.json", dir);
  assert_int_equal(stw_write_text(path, cfg), 0);
  if (gen) {
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    assert_int_equal(stw_write_text(path, gen), 0);
  }
  return dir;
}

static void test_generation_config(void **s) {
  (void)s;
  kiln_config c;
  char *dir = write_dir(QWEN3_TINY_V4, NULL);
  assert_int_equal(kiln_config_load(&c, dir), KILN_OK);
  assert_int_equal(c.n_eos, 1);
  assert_int_equal(c.eos_token_ids[0], 2);
  ckpt_rmdir(dir);
  dir = write_dir(QWEN3_TINY_V4, "{\"bos_token_id\":151643,\"eos_token_id\":[151645,151643],\"temperature\":0.6}");
  assert_int_equal(kiln_config_load(&c, dir), KILN_OK);
  assert_int_equal(c.n_eos, 2);
  assert_int_equal(c.eos_token_ids[0], 151645);
  assert_int_equal(c.eos_token_ids[1], 151643);
  assert_int_equal(c.bos_token_id, 151643);
  ckpt_rmdir(dir);
  dir = write_dir(LLAMA_TINY_V5, "{\"eos_token_id\":7}");
  assert_int_equal(kiln_config_load(&c, dir), KILN_OK);
  assert_int_equal(c.n_eos, 1);
  assert_int_equal(c.eos_token_ids[0], 7);
  assert_int_equal(c.bos_token_id, 128000); /* kept */
  ckpt_rmdir(dir);
  dir = write_dir(LLAMA_TINY_V5, "{\"eos_token_id\":null}");
  assert_int_equal(kiln_config_load(&c, dir), KILN_OK);
  assert_int_equal(c.n_eos, 3); /* null: config.json's stand */
  ckpt_rmdir(dir);
  dir = write_dir(LLAMA_TINY_V5, "{\"eos_token_id\":[1,");
  assert_int_equal(kiln_config_load(&c, dir), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "generation_config.json: malformed JSON"));
  ckpt_rmdir(dir);
  dir = write_dir(LLAMA_TINY_V5, "{\"eos_token_id\":\"x\"}");
  assert_int_equal(kiln_config_load(&c, dir), KILN_EFORMAT);
  assert_non_null(strstr(kiln_last_error(), "generation_config.json: 'eos_token_id' is not an integer"));
  ckpt_rmdir(dir);
  dir = write_dir("{\"model_type\":\"gpt2\"}", NULL);
  assert_int_equal(kiln_config_load(&c, dir), KILN_EUNSUPPORTED);
  assert_non_null(strstr(kiln_last_error(), "/config.json: model_type 'gpt2' is not supported"));
  ckpt_rmdir(dir);
  assert_int_equal(kiln_config_load_file(&c, "/nonexistent/config.json"), KILN_ENOTFOUND);
  assert_non_null(strstr(kiln_last_error(), "/nonexistent/config.json: No such file"));
}

static void load_bench(const char *name, kiln_config *c) {
  const char *src = getenv("KILN_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/bench/configs/%s", src ? src : ".", name);
  if (kiln_config_load_file(c, path) != KILN_OK) fail_msg("%s", kiln_last_error());
}

static void test_bench_configs(void **s) {
  (void)s;
  static const struct {
    const char *file;
    int hidden, layers, heads, inter;
    bool tied;
  } q[] = {{"qwen3-0.6b.json", 1024, 28, 16, 3072, true},
           {"qwen3-1.7b.json", 2048, 28, 16, 6144, true},
           {"qwen3-4b.json", 2560, 36, 32, 9728, true},
           {"qwen3-8b.json", 4096, 36, 32, 12288, false}};
  for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
    kiln_config c;
    load_bench(q[i].file, &c);
    assert_int_equal(c.arch, KILN_ARCH_QWEN3);
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.hidden_size, q[i].hidden);
    assert_int_equal(c.n_layers, q[i].layers);
    assert_int_equal(c.n_heads, q[i].heads);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.intermediate_size, q[i].inter);
    assert_int_equal(c.tie_word_embeddings, q[i].tied);
    assert_true(c.rope_theta == 1e6);
    assert_float_equal(c.rms_norm_eps, 1e-6f, 0);
    assert_int_equal(c.max_position_embeddings, 40960);
    assert_int_equal(c.torch_dtype, KILN_BF16);
    assert_int_equal(c.eos_token_ids[0], 151645);
  }
  kiln_config c;
  load_bench("llama-3.2-1b.json", &c);
  assert_int_equal(c.arch, KILN_ARCH_LLAMA);
  assert_int_equal(c.vocab_size, 128256);
  assert_int_equal(c.hidden_size, 2048);
  assert_int_equal(c.n_layers, 16);
  assert_int_equal(c.head_dim, 64);
  assert_int_equal(c.rope_type, KILN_ROPE_LLAMA3);
  assert_true(c.rope_factor == 32.0);
  assert_int_equal(c.rope_original_max_position, 8192);
  assert_true(c.tie_word_embeddings);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qwen3_v4),          cmocka_unit_test(test_llama_v5), cmocka_unit_test(test_forms_agree),
      cmocka_unit_test(test_defaults),          cmocka_unit_test(test_bad),
      cmocka_unit_test(test_generation_config), cmocka_unit_test(test_bench_configs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
