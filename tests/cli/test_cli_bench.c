/*
 * test_cli_bench.c: `kiln bench` on the tiny Qwen3 checkpoint: the floor it reports counts what a decode step
 * reads (every weight once as stored, one embedding row, the KV cache of the token's context; the host's copy
 * bandwidth on the CPU backend), and its bad input fails with one line.
 */
#include <math.h>
#include <string.h>

#include "harness.h"

/* An integer field of a config.json. */
static int64_t cfg_int_(json_t *cfg, const char *key) { return json_integer_value(json_object_get(cfg, key)); }

/* Where the tests' `kiln bench --json` goes. */
static const char *json_path_(void) {
  static char path[4096];
  snprintf(path, sizeof path, "%s", t_path_in(T.tmp, "bench.json"));
  return path;
}

/* After a `kiln bench ... --json json_path_()` run: expects success, loads the JSON it wrote and the checkpoint's
 * config.json. */
static void load_results_(proc_result *r, json_t **res, json_t **cfg) {
  char cfg_path[4096];
  snprintf(cfg_path, sizeof cfg_path, "%s", t_path_in(T.qwen, "config.json"));
  t_expect_ok(r);
  json_error_t je;
  *res = json_load_file(json_path_(), 0, &je);
  *cfg = json_load_file(cfg_path, 0, &je);
  CHECK(r, *res != NULL && *cfg != NULL);
}

static void test_bench_json(void **state) {
  (void)state;
  proc_result r;
  json_t *v, *cfg;
  /* 20 prompt tokens, 16 timed steps in blocks of 8, each block after one untimed step: timed at positions
   * 21..28 and 30..37 in both repeats */
  t_kiln(&r, NULL, "bench", "-m", T.qwen, "--device", "cpu", "-t", "1", "-q", "--json", json_path_(),
         "--prompt-tokens", "20", "--gen-tokens", "16", "--repeats", "2", NULL);
  load_results_(&r, &v, &cfg);
  CHECK(&r, strstr(r.out, "host copy") != NULL);
  const int64_t H = cfg_int_(cfg, "hidden_size"), I = cfg_int_(cfg, "intermediate_size"),
                L = cfg_int_(cfg, "num_hidden_layers"), nh = cfg_int_(cfg, "num_attention_heads"),
                nkv = cfg_int_(cfg, "num_key_value_heads"), hd = cfg_int_(cfg, "head_dim"),
                V = cfg_int_(cfg, "vocab_size");
  /* f32 weights read in place: q, k, v, o, gate, up, down and four norms a layer; the tied head; one embedding
   * row; the final norm. The median timed token sits between positions 28 and 30: its cache holds 30 rows. */
  const int64_t weights =
      4 * (L * (H * (nh + 2 * nkv) * hd + nh * hd * H + 3 * H * I + 2 * H + 2 * hd) + V * H + H + H);
  const int64_t kv = 4 * 2 * L * nkv * hd * 30;
  const int64_t got = json_integer_value(json_object_get(v, "bytes_per_token"));
  if (got != weights + kv)
    fprintf(stderr, "bytes_per_token %lld, expected %lld\n", (long long)got, (long long)(weights + kv));
  CHECK(&r, got == weights + kv);
  CHECK(&r, strcmp(json_string_value(json_object_get(v, "bandwidth_of")), "host") == 0);
  const double bw = json_real_value(json_object_get(v, "copy_gb_s_median"));
  const double floor_ms = json_real_value(json_object_get(v, "floor_ms_per_token"));
  CHECK(&r, bw > 0 && fabs(floor_ms - (double)got / (bw * 1e9) * 1e3) <= 1e-9 + 1e-6 * floor_ms);
  const double frac = json_real_value(json_object_get(v, "fraction_of_floor"));
  CHECK(&r, frac > 0 && isfinite(frac));
  json_decref(v);
  json_decref(cfg);
  proc_result_free(&r);
}

/* Lists of prompts and contexts: one prefill entry per prompt, one decode entry per context, and the KV part of
 * the floor grows with the context by exactly the rows between them. */
static void test_bench_lists(void **state) {
  (void)state;
  proc_result r;
  json_t *v, *cfg;
  t_kiln(&r, NULL, "bench", "-m", T.qwen, "--device", "cpu", "-t", "1", "-q", "--json", json_path_(),
         "--prompt-tokens", "8,16", "--ctx", "10,40", "--gen-tokens", "8", "--repeats", "1", NULL);
  load_results_(&r, &v, &cfg);
  json_t *pre = json_object_get(v, "prefill"), *dec = json_object_get(v, "decode");
  CHECK(&r, json_array_size(pre) == 2 && json_array_size(dec) == 2);
  CHECK(&r, json_integer_value(json_object_get(json_array_get(pre, 0), "prompt")) == 8);
  CHECK(&r, json_integer_value(json_object_get(json_array_get(pre, 1), "prompt")) == 16);
  CHECK(&r, json_real_value(json_object_get(json_array_get(pre, 1), "ttft_ms")) > 0);
  CHECK(&r, json_integer_value(json_object_get(json_array_get(dec, 0), "ctx")) == 10);
  CHECK(&r, json_integer_value(json_object_get(json_array_get(dec, 1), "ctx")) == 40);
  const int64_t row = 4 * 2 * cfg_int_(cfg, "num_hidden_layers") * cfg_int_(cfg, "num_key_value_heads") *
                      cfg_int_(cfg, "head_dim");
  const int64_t b10 = json_integer_value(json_object_get(json_array_get(dec, 0), "bytes_per_token"));
  const int64_t b40 = json_integer_value(json_object_get(json_array_get(dec, 1), "bytes_per_token"));
  CHECK(&r, b40 - b10 == 30 * row);
  CHECK(&r, json_integer_value(json_object_get(v, "bytes_per_token")) == b10); /* the first context's, on top */
  json_decref(v);
  json_decref(cfg);
  proc_result_free(&r);
}

static void test_bench_bad_input(void **state) {
  (void)state;
  t_fails(1, "cuda", NULL, NULL, "bench", "-m", T.qwen, "--device", "cuda:255", "--prompt-tokens", "8",
          "--gen-tokens", "8", NULL);
  t_fails(2, "--prompt-tokens", NULL, NULL, "bench", "-m", T.qwen, "--prompt-tokens", "0", NULL);
  t_fails(2, "exclude", NULL, NULL, "bench", "-m", T.qwen, "--random-weights", "x.json", NULL);
  t_fails(1, "max_position_embeddings", NULL, NULL, "bench", "-m", T.qwen, "--prompt-tokens", "120", NULL);
  t_fails(1, "max_position_embeddings", NULL, NULL, "bench", "-m", T.qwen, "--prompt-tokens", "8", "--ctx", "100",
          NULL);
  t_fails(2, "--ctx", NULL, NULL, "bench", "-m", T.qwen, "--ctx", "0", NULL);
  t_fails(2, "--ctx", NULL, NULL, "bench", "-m", T.qwen, "--ctx", "1,2,3,4,5,6,7,8,9", NULL);
  t_fails(2, "--prompt-tokens", NULL, NULL, "bench", "-m", T.qwen, "--prompt-tokens", "8,,x", NULL);
}

int main(int argc, char **argv) {
  int rc = t_init(argc, argv);
  if (rc) return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bench_json),
      cmocka_unit_test(test_bench_lists),
      cmocka_unit_test(test_bench_bad_input),
  };
  return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
