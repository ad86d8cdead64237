/*
 * Fidelity against Hugging Face transformers: the tiny checkpoints of tests/data/tiny (made by
 * tools/make_tiny_models.py: Qwen3 with f32 weights, Llama with bf16 weights, biases and llama3 RoPE) loaded from
 * disk and run on the CPU engine with 1 and 2 threads, against what transformers computed with the same
 * checkpoints upcast to float32:
 *   - RoPE inverse frequencies: within 1 ulp;
 *   - logits: max relative error <= 1e-4, where for each recorded position
 *       rel = max_i |kiln_i - hf_i| / max_i |hf_i|   over the vocabulary,
 *     both for one prefill of all positions and for a shorter prefill followed by one-token decode steps;
 *   - greedy continuations (EOS ignored) through kiln_gen: identical ids;
 *   - perplexity by the contract (kiln_eval_perplexity): relative error of the mean NLL and of ppl <= 1e-5, same
 *     token count; with the model's tokenizer, the same bytes count and bpb;
 *   - the kiln tokenizer gives the recorded ids for the evaluation text.
 */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cpu/ref_ops.h"
#include "kiln/kiln.h"

#define LOGIT_TOL 1e-4
#define PPL_TOL 1e-5

typedef struct golden {
  json_t *root;
  int32_t *text_ids;
  size_t n_text;
} golden;

static char *path_(const char *model, const char *file) {
  static char buf[512];
  const char *src = getenv("KILN_SOURCE_DIR");
  snprintf(buf, sizeof buf, "%s/tests/data/tiny/%s%s%s", src ? src : ".", model, *file ? "/" : "", file);
  return buf;
}

static void golden_load_(golden *g, const char *model) {
  json_error_t err;
  g->root = json_load_file(path_(model, "golden.json"), 0, &err);
  if (!g->root) fail_msg("%s: %s", path_(model, "golden.json"), err.text);
  json_t *ids = json_object_get(g->root, "text_ids");
  assert_true(json_is_array(ids));
  g->n_text = json_array_size(ids);
  g->text_ids = malloc(g->n_text * sizeof *g->text_ids);
  assert_non_null(g->text_ids);
  for (size_t i = 0; i < g->n_text; i++) g->text_ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
}

static void golden_free_(golden *g) {
  json_decref(g->root);
  free(g->text_ids);
}

static double rel_err_(const float *a, json_t *ref, int n) {
  double md = 0, mr = 0;
  assert_int_equal((int)json_array_size(ref), n);
  for (int i = 0; i < n; i++) {
    double r = json_number_value(json_array_get(ref, (size_t)i)), d = fabs((double)a[i] - r);
    if (!(d <= md)) md = isnan(d) ? INFINITY : d;
    if (fabs(r) > mr) mr = fabs(r);
  }
  return md / mr;
}

static void check_inv_freq_(const kiln_model *m, const golden *g, const char *name) {
  json_t *inv = json_object_get(g->root, "inv_freq");
  const int half = m->cfg.head_dim / 2;
  assert_int_equal((int)json_array_size(inv), half);
  float mine[KILN_REF_MAX_HEAD_DIM / 2];
  kiln_ref_rope_inv_freq(mine, &m->cfg);
  for (int i = 0; i < half; i++) {
    float hf = (float)json_number_value(json_array_get(inv, (size_t)i));
    if (fabsf(mine[i] - hf) > nextafterf(fabsf(hf), INFINITY) - fabsf(hf))
      fail_msg("%s: inv_freq[%d] = %.9g, transformers %.9g", name, i, (double)mine[i], (double)hf);
  }
}

static void check_logits_(kiln_engine *e, const golden *g, const char *name, int threads) {
  json_t *lg = json_object_get(g->root, "logits");
  const int n = (int)json_integer_value(json_object_get(lg, "n"));
  json_t *pos = json_object_get(lg, "positions"), *vals = json_object_get(lg, "values");
  const int V = kiln_engine_model(e)->cfg.vocab_size;
  assert_true((size_t)n <= g->n_text);
  float *all = malloc(sizeof(float) * (size_t)n * (size_t)V), *one = malloc(sizeof(float) * (size_t)V);
  assert_non_null(all);
  assert_non_null(one);
  /* one prefill with every position's logits */
  assert_int_equal(kiln_engine_seq_reset(e, 0), KILN_OK);
  assert_int_equal(kiln_engine_forward(e, 0, g->text_ids, n, all, true), KILN_OK);
  double worst = 0;
  for (size_t k = 0; k < json_array_size(pos); k++) {
    int p = (int)json_integer_value(json_array_get(pos, k));
    double r = rel_err_(all + (size_t)p * V, json_array_get(vals, k), V);
    if (r > LOGIT_TOL) fail_msg("%s, %d threads: prefill logits at position %d: rel err %.3g", name, threads, p, r);
    if (r > worst) worst = r;
  }
  /* a prefill of 40, then decode steps */
  const int P = 40;
  assert_int_equal(kiln_engine_seq_reset(e, 0), KILN_OK);
  assert_int_equal(kiln_engine_forward(e, 0, g->text_ids, P, NULL, false), KILN_OK);
  for (int t = P; t < n; t++) {
    assert_int_equal(kiln_engine_forward(e, 0, g->text_ids + t, 1, one, false), KILN_OK);
    for (size_t k = 0; k < json_array_size(pos); k++)
      if (json_integer_value(json_array_get(pos, k)) == t) {
        double r = rel_err_(one, json_array_get(vals, k), V);
        if (r > LOGIT_TOL) fail_msg("%s, %d threads: decode logits at position %d: rel err %.3g", name, threads, t, r);
        if (r > worst) worst = r;
      }
  }
  print_message("%s, %d threads: logits max rel err %.2e (bound %.0e)\n", name, threads, worst, LOGIT_TOL);
  free(all);
  free(one);
}

static void check_greedy_(kiln_engine *e, const golden *g, const char *name, int threads) {
  json_t *greedy = json_object_get(g->root, "greedy");
  assert_true(json_array_size(greedy) > 0);
  for (size_t k = 0; k < json_array_size(greedy); k++) {
    json_t *pj = json_object_get(json_array_get(greedy, k), "prompt_ids");
    json_t *ij = json_object_get(json_array_get(greedy, k), "ids");
    int np = (int)json_array_size(pj), ni = (int)json_array_size(ij);
    int32_t prompt[256];
    assert_true(np > 0 && np <= 256);
    for (int i = 0; i < np; i++) prompt[i] = (int32_t)json_integer_value(json_array_get(pj, (size_t)i));
    kiln_gen_params p = kiln_gen_params_default();
    p.ignore_eos = true;
    p.max_tokens = ni;
    kiln_gen *gen;
    assert_int_equal(kiln_gen_start(&gen, e, NULL, 0, prompt, np, &p), KILN_OK);
    kiln_gen_event ev;
    int steps = 0;
    do {
      assert_int_equal(kiln_gen_step(gen, &ev), KILN_OK);
      steps++;
    } while (ev.finish == KILN_FINISH_NONE);
    assert_int_equal(ev.finish, KILN_FINISH_LENGTH);
    int n;
    const int32_t *ids = kiln_gen_ids(gen, &n);
    assert_int_equal(n, ni);
    assert_int_equal(steps, ni);
    for (int i = 0; i < ni; i++)
      if (ids[i] != json_integer_value(json_array_get(ij, (size_t)i)))
        fail_msg("%s, %d threads: greedy prompt %zu: token %d is %d, transformers %lld", name, threads, k, i, ids[i],
                 (long long)json_integer_value(json_array_get(ij, (size_t)i)));
    kiln_gen_free(gen);
  }
}

static void check_ppl_(kiln_engine *e, const kiln_tokenizer *tok, const golden *g, const char *name, int threads) {
  json_t *runs = json_object_get(g->root, "perplexity");
  assert_true(json_array_size(runs) > 0);
  for (size_t k = 0; k < json_array_size(runs); k++) {
    json_t *r = json_array_get(runs, k);
    int ctx = (int)json_integer_value(json_object_get(r, "ctx"));
    int win = (int)json_integer_value(json_object_get(r, "windows"));
    double nll = json_number_value(json_object_get(r, "nll")), ppl = json_number_value(json_object_get(r, "ppl"));
    kiln_ppl out;
    assert_int_equal(kiln_eval_perplexity(e, tok, g->text_ids, g->n_text, ctx, win, &out), KILN_OK);
    assert_int_equal(out.tokens, json_integer_value(json_object_get(r, "tokens")));
    double en = fabs(out.nll - nll) / nll, ep = fabs(out.ppl - ppl) / ppl;
    if (en > PPL_TOL || ep > PPL_TOL)
      fail_msg("%s, %d threads: ppl ctx %d: nll %.9g vs %.9g (rel %.2g), ppl rel %.2g", name, threads, ctx, out.nll,
               nll, en, ep);
    if (tok) {
      assert_int_equal(out.bytes, json_integer_value(json_object_get(r, "bytes")));
      double bpb = json_number_value(json_object_get(r, "bpb"));
      if (fabs(out.bpb - bpb) / bpb > PPL_TOL)
        fail_msg("%s: bpb %.9g vs %.9g", name, out.bpb, bpb);
    } else {
      assert_true(isnan(out.bpb));
    }
    print_message("%s, %d threads: ppl ctx %d windows %d: %.6f (transformers %.6f, rel %.1e)\n", name, threads, ctx,
                  win, out.ppl, ppl, ep);
  }
}

static void run_model_(const char *name) {
  golden g;
  golden_load_(&g, name);
  kiln_model *m = NULL;
  if (kiln_model_load(&m, path_(name, ""), NULL, NULL) != KILN_OK) fail_msg("%s: %s", name, kiln_last_error());
  check_inv_freq_(m, &g, name);
  kiln_tokenizer *tok = NULL;
  if (kiln_tokenizer_load(&tok, path_(name, "tokenizer.json")) != KILN_OK)
    fail_msg("%s: tokenizer: %s", name, kiln_last_error());
  for (int threads = 1; threads <= 2; threads++) {
    kiln_engine_opts o = {.device = "cpu", .n_threads = threads, .n_ctx = 256, .n_seqs = 1};
    kiln_engine *e;
    assert_int_equal(kiln_engine_create(&e, m, &o), KILN_OK);
    check_logits_(e, &g, name, threads);
    check_greedy_(e, &g, name, threads);
    check_ppl_(e, threads == 1 ? tok : NULL, &g, name, threads);
    kiln_engine_free(e);
  }
  kiln_tokenizer_free(tok);
  kiln_model_free(m);
  golden_free_(&g);
}

static void test_qwen3_f32(void **s) {
  (void)s;
  run_model_("qwen3-f32");
}

static void test_llama_bf16(void **s) {
  (void)s;
  run_model_("llama-bf16");
}

/* The kiln tokenizer on the evaluation text gives the ids transformers' tokenizer gave (the ids the checks above
 * feed the engine). */
static void test_tokenizer_ids(void **s) {
  (void)s;
  golden g;
  golden_load_(&g, "qwen3-f32");
  FILE *f = fopen(path_("eval.txt", ""), "rb");
  assert_non_null(f);
  static char text[1 << 16];
  size_t len = fread(text, 1, sizeof text, f);
  fclose(f);
  kiln_tokenizer *tok;
  if (kiln_tokenizer_load(&tok, path_("qwen3-f32", "tokenizer.json")) != KILN_OK) fail_msg("%s", kiln_last_error());
  int32_t *ids;
  size_t n;
  assert_int_equal(kiln_tokenizer_encode(tok, text, len, &ids, &n), KILN_OK);
  assert_int_equal(n, g.n_text);
  for (size_t i = 0; i < n; i++)
    if (ids[i] != g.text_ids[i]) fail_msg("eval.txt: id %zu is %d, transformers %d", i, ids[i], g.text_ids[i]);
  free(ids);
  kiln_tokenizer_free(tok);
  golden_free_(&g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qwen3_f32),
      cmocka_unit_test(test_llama_bf16),
      cmocka_unit_test(test_tokenizer_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
