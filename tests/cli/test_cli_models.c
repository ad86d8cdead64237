/*
 * kiln perplexity on the tiny checkpoints, and every command on the shipped checkpoints: the engine team's
 * tests/data/tiny/ (against their transformers golden data) and the embedded default model, when present.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static void test_perplexity(void **state) {
  (void)state;
  const char *text = t_ppl_text();
  char *file = t_path_in(T.tmp, "ppl.txt");
  t_write_file(file, text, strlen(text));
  size_t n;
  int32_t *ids = t_tokenize(T.qwen, text, &n);
  free(ids);
  assert_true(n > 3 * 32);

  json_t *all = t_ppl_json(T.qwen, file, "32", NULL);
  assert_int_equal(json_integer_value(json_object_get(all, "tokens")), (json_int_t)((n / 32) * 31));
  json_t *two = t_ppl_json(T.qwen, file, "32", "2");
  assert_int_equal(json_integer_value(json_object_get(two, "tokens")), 62);
  json_t *two_again = t_ppl_json(T.qwen, file, "32", "2");
  assert_true(json_number_value(json_object_get(two, "nll")) == json_number_value(json_object_get(two_again, "nll")));
  /* A text shorter than the window is one window of all its tokens. */
  const char *short_text = "the cat sat on the mat";
  char *short_file = t_path_in(T.tmp, "ppl-short.txt");
  t_write_file(short_file, short_text, strlen(short_text));
  ids = t_tokenize(T.llama, short_text, &n);
  free(ids);
  json_t *one = t_ppl_json(T.llama, short_file, "64", NULL);
  assert_int_equal(json_integer_value(json_object_get(one, "tokens")), (json_int_t)n - 1);
  json_decref(one);
  json_decref(all);
  json_decref(two);
  json_decref(two_again);

  proc_result r;
  t_kiln(&r, NULL, "perplexity", "-m", T.qwen, "-f", file, "--ctx", "64", NULL);
  t_expect_ok(&r);
  CHECK(&r, strstr(r.out, "perplexity") && strstr(r.out, "bits/byte"));
  proc_result_free(&r);
}


/* ---- shipped models ---------------------------------------------------------------------------------------- */

static bool is_ckpt_(const char *dir) {
  return access(t_path_in(dir, "config.json"), R_OK) == 0 && access(t_path_in(dir, "tokenizer.json"), R_OK) == 0;
}

static void smoke_(const char *model) {
  t_gen g;
  t_run_json(&g, model, NULL, "-p", "In the beginning", "-n", "8", "--ignore-eos", NULL);
  assert_int_equal(g.completion_tokens, 8);
  json_decref(g.v);
  t_roundtrip(model);
  char *file = t_path_in(T.tmp, "smoke.txt");
  t_write_file(file, t_ppl_text(), strlen(t_ppl_text()));
  json_t *v = t_ppl_json(model, file, "64", "2");
  json_decref(v);
}

/* The checkpoint's golden.json (tools/make_tiny_models.py, recorded with transformers, model upcast to f32): the
 * CLI must give the same token ids for tests/data/tiny/eval.txt, the same perplexities (relative error <= 1e-5)
 * and the same greedy continuations. */
static void golden_(const char *dir) {
  json_error_t e;
  json_t *g = json_load_file(t_path_in(dir, "golden.json"), 0, &e);
  if (!g) return;
  char eval[1500];
  snprintf(eval, sizeof eval, "%s/tests/data/tiny/eval.txt", T.src);
  proc_result r;
  if (json_object_get(g, "text_ids") && access(eval, R_OK) == 0) {
    t_kiln(&r, NULL, "tokenize", "-m", dir, "-f", eval, NULL);
    t_expect_ok(&r);
    json_t *ids = t_parse_json_line(&r);
    CHECK(&r, json_equal(ids, json_object_get(g, "text_ids")));
    json_decref(ids);
    proc_result_free(&r);

    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(g, "perplexity"), i, p) {
      char ctx[32], win[32];
      snprintf(ctx, sizeof ctx, "%d", (int)json_integer_value(json_object_get(p, "ctx")));
      snprintf(win, sizeof win, "%d", (int)json_integer_value(json_object_get(p, "windows")));
      json_t *v = t_ppl_json(dir, eval, ctx, strcmp(win, "0") ? win : NULL);
      assert_int_equal(json_integer_value(json_object_get(v, "tokens")), json_integer_value(json_object_get(p, "tokens")));
      const char *keys[] = {"ppl", "bpb", "nll"};
      for (int k = 0; k < 3; k++) {
        double got = json_number_value(json_object_get(v, keys[k])), want = json_number_value(json_object_get(p, keys[k]));
        if (!(fabs(got - want) <= 1e-5 * fabs(want))) {
          fprintf(stderr, "%s: perplexity --ctx %s --windows %s: %s %.9g, transformers %.9g\n", dir, ctx, win, keys[k],
                  got, want);
          fail();
        }
      }
      json_decref(v);
    }
  }

  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(g, "greedy"), i, c) {
    json_t *pids = json_object_get(c, "prompt_ids"), *want = json_object_get(c, "ids");
    size_t np = json_array_size(pids);
    int32_t *ids = malloc((np + 1) * sizeof *ids);
    assert_non_null(ids);
    for (size_t k = 0; k < np; k++) ids[k] = (int32_t)json_integer_value(json_array_get(pids, k));
    char *csv = t_ids_csv(ids, np);
    free(ids);
    t_kiln(&r, NULL, "detokenize", "-m", dir, "--ids", csv, NULL);
    free(csv);
    t_expect_ok(&r);
    /* The CLI takes text: use the prompt only when its text encodes back to the same ids. */
    size_t n2;
    int32_t *back = t_tokenize(dir, r.out, &n2);
    bool same = n2 == np;
    for (size_t k = 0; same && k < np; k++) same = back[k] == json_integer_value(json_array_get(pids, k));
    free(back);
    if (same) {
      char n[32];
      snprintf(n, sizeof n, "%zu", json_array_size(want));
      t_gen out;
      t_run_json(&out, dir, NULL, "-p", r.out, "-n", n, "--ignore-eos", "--no-bos", NULL);
      assert_int_equal(out.prompt_tokens, (int)np);
      assert_int_equal(out.n_ids, json_array_size(want));
      for (size_t k = 0; k < out.n_ids; k++) assert_int_equal(out.ids[k], json_integer_value(json_array_get(want, k)));
      json_decref(out.v);
    }
    proc_result_free(&r);
  }
  json_decref(g);
}

/* The default model against tests/data/default/reference.json (transformers, f32): greedy continuations of its
 * prompts through `kiln run` with no -m, and the perplexity of its passage (one window) through `kiln perplexity`. */
static void default_reference_(const char *def) {
  char path[1500];
  snprintf(path, sizeof path, "%s/tests/data/default/reference.json", T.src);
  json_error_t e;
  json_t *ref = json_load_file(path, 0, &e);
  if (!ref) return;
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(ref, "greedy"), i, c) {
    json_t *want = json_object_get(c, "ids");
    char n[32];
    snprintf(n, sizeof n, "%zu", json_array_size(want));
    proc_result r;
    t_kiln(&r, NULL, "run", "-p", json_string_value(json_object_get(c, "prompt")), "-n", n, "--ignore-eos", "--json",
           "-q", NULL);
    t_expect_ok(&r);
    json_t *v = t_parse_json_line(&r);
    CHECK(&r, json_equal(json_object_get(v, "ids"), want));
    CHECK(&r, json_equal(json_object_get(v, "text"), json_object_get(c, "text")));
    json_decref(v);
    proc_result_free(&r);
  }
  json_t *passage = json_object_get(ref, "passage");
  json_t *pids = json_object_get(passage, "ids");
  if (json_array_size(pids) > 1) {
    int32_t ids[4096];
    size_t n = json_array_size(pids) < 4096 ? json_array_size(pids) : 4096;
    for (size_t k = 0; k < n; k++) ids[k] = (int32_t)json_integer_value(json_array_get(pids, k));
    char *csv = t_ids_csv(ids, n);
    proc_result r;
    t_kiln(&r, NULL, "detokenize", "-m", def, "--ids", csv, NULL);
    free(csv);
    t_expect_ok(&r);
    char *file = t_path_in(T.tmp, "passage.txt");
    t_write_file(file, r.out, r.out_len);
    proc_result_free(&r);
    json_t *v = t_ppl_json(def, file, "1024", NULL);
    assert_int_equal(json_integer_value(json_object_get(v, "tokens")), json_integer_value(json_object_get(passage, "tokens")));
    const char *keys[] = {"nll", "ppl", "bpb"};
    for (int k = 0; k < 3; k++) {
      double got = json_number_value(json_object_get(v, keys[k]));
      double want = json_number_value(json_object_get(passage, keys[k]));
      if (!(fabs(got - want) <= 1e-5 * fabs(want))) {
        fprintf(stderr, "default model passage: %s %.9g, transformers %.9g\n", keys[k], got, want);
        fail();
      }
    }
    json_decref(v);
  }
  json_decref(ref);
}

/* The engine team's tiny checkpoints (tests/data/tiny/<name>/) and the embedded default model, when present. */
static void test_shipped_models(void **state) {
  (void)state;
  int found = 0;
  char base[1200];
  snprintf(base, sizeof base, "%s/tests/data/tiny", T.src);
  DIR *d = opendir(base);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char dir[1500];
    snprintf(dir, sizeof dir, "%s/%s", base, e->d_name);
    if (!is_ckpt_(dir)) continue;
    golden_(dir);
    smoke_(dir);
    found++;
  }
  if (d) closedir(d);

  char def[1200];
  snprintf(def, sizeof def, "%s/models/default", T.src);
  if (is_ckpt_(def)) {
    found++;
    /* No -m and no KILN_MODEL: the embedded default model. */
    proc_result r;
    t_kiln(&r, NULL, "run", "-p", "In the beginning", "-n", "8", "--ignore-eos", "--json", "-q", NULL);
    t_expect_ok(&r);
    json_t *v = t_parse_json_line(&r);
    CHECK(&r, json_integer_value(json_object_get(v, "completion_tokens")) == 8);
    json_decref(v);
    proc_result_free(&r);
    default_reference_(def);
    smoke_(def);
  }
  if (!found) skip();
}


int main(int argc, char **argv) {
  int rc = t_init(argc, argv);
  if (rc) return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_perplexity),
      cmocka_unit_test(test_shipped_models),
  };
  return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
