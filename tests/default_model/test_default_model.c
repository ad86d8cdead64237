/*
 * The embedded default model (models/default) on the CPU engine, f32 compute, against the values PyTorch recorded
 * when tools/train_default.py trained it (tests/data/default/reference.json: the saved bf16 weights upcast to
 * float32, transformers' Qwen3ForCausalLM, CPU):
 *   - the model files are what the reference describes (Qwen3, tied embeddings, q/k norm, GQA, ids of the special
 *     tokens, EOS list, <= 32 MB of weights);
 *   - kiln's tokenizer gives the recorded ids for Revelation and for the prompts;
 *   - perplexity by the contract (kiln_eval_perplexity) of the fixed passage (the first tokens of Revelation, one
 *     window): same predicted tokens and bytes, nll / ppl / bpb within a relative 1e-4;
 *   - greedy generation (EOS ignored) through kiln_gen: the recorded ids and text.
 * With the argument --full it checks instead the perplexity of all of Revelation (every full window of the
 * recorded ctx), which takes longer (ctest label "slow").
 */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/eval.h"
#include "kiln/kiln.h"

#define PPL_TOL 1e-4
#define MAX_WEIGHT_BYTES 32000000u

typedef struct fixture {
  json_t *ref;
  kiln_model *model;
  kiln_tokenizer *tok;
  kiln_engine *engine;
  int32_t *text_ids; /* all of revelation.txt */
  size_t n_text;
} fixture;

static const char *path_(const char *rel) {
  static char buf[1024];
  const char *src = getenv("KILN_SOURCE_DIR");
  snprintf(buf, sizeof buf, "%s/%s", src ? src : ".", rel);
  return buf;
}

static char *read_file_(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
      if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
      } else {
        buf[n] = '\0';
        *len = (size_t)n;
      }
    }
  }
  fclose(f);
  return buf;
}

static json_t *get_(json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  if (!v) fail_msg("reference.json: no '%s'", key);
  return v;
}

static int64_t int_(json_t *obj, const char *key) {
  json_t *v = get_(obj, key);
  if (!json_is_integer(v)) fail_msg("reference.json: '%s' is not an integer", key);
  return (int64_t)json_integer_value(v);
}

static double num_(json_t *obj, const char *key) {
  json_t *v = get_(obj, key);
  if (!json_is_number(v)) fail_msg("reference.json: '%s' is not a number", key);
  return json_number_value(v);
}

static int teardown_(void **state);

/* Loads everything once for the group; on failure it says what and frees what it made. */
static int setup_(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  *state = f;
  json_error_t err;
  size_t len = 0;
  char *text = NULL;
  f->ref = json_load_file(path_("tests/data/default/reference.json"), 0, &err);
  if (!f->ref) {
    fprintf(stderr, "reference.json: %s\n", err.text);
    goto fail;
  }
  if (kiln_model_load(&f->model, path_("models/default"), NULL, NULL) != KILN_OK ||
      kiln_tokenizer_load(&f->tok, path_("models/default/tokenizer.json")) != KILN_OK) {
    fprintf(stderr, "models/default: %s\n", kiln_last_error());
    goto fail;
  }
  if (!(text = read_file_(path_("tests/data/default/revelation.txt"), &len))) {
    fprintf(stderr, "tests/data/default/revelation.txt: cannot read\n");
    goto fail;
  }
  if (kiln_tokenizer_encode(f->tok, text, len, &f->text_ids, &f->n_text) != KILN_OK) {
    fprintf(stderr, "revelation.txt: %s\n", kiln_last_error());
    goto fail;
  }
  free(text);
  text = NULL;
  json_t *ctx = json_object_get(f->ref, "ctx");
  if (!json_is_integer(ctx)) {
    fprintf(stderr, "reference.json: no integer 'ctx'\n");
    goto fail;
  }
  kiln_engine_opts o = {.device = "cpu", .n_threads = 2, .n_ctx = (int)json_integer_value(ctx), .n_seqs = 1};
  if (kiln_engine_create(&f->engine, f->model, &o) != KILN_OK) {
    fprintf(stderr, "engine: %s\n", kiln_last_error());
    goto fail;
  }
  return 0;
fail:
  free(text);
  teardown_(state);
  *state = NULL;
  return -1;
}

static int teardown_(void **state) {
  fixture *f = *state;
  if (!f) return 0;
  *state = NULL;
  kiln_engine_free(f->engine);
  kiln_tokenizer_free(f->tok);
  kiln_model_free(f->model);
  free(f->text_ids);
  json_decref(f->ref);
  free(f);
  return 0;
}

/* The files describe the model README.md and the reference describe. */
static void test_model_files(void **state) {
  fixture *f = *state;
  const kiln_config *c = &f->model->cfg;
  json_t *args = get_(get_(get_(f->ref, "training"), "args"), "vocab");
  assert_int_equal(c->arch, KILN_ARCH_QWEN3);
  assert_int_equal(c->vocab_size, (int)json_integer_value(args));
  assert_int_equal(kiln_tokenizer_n_vocab(f->tok), c->vocab_size);
  assert_true(c->tie_word_embeddings);
  assert_true(c->qk_norm);
  assert_false(c->attention_bias);
  assert_true(c->n_kv_heads < c->n_heads && c->n_heads % c->n_kv_heads == 0);
  assert_int_equal(c->max_position_embeddings, (int)int_(f->ref, "ctx"));
  assert_true(f->model->weight_bytes <= MAX_WEIGHT_BYTES);
  assert_int_equal(f->model->embed.dtype, KILN_BF16);
  const char *special[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; i++) {
    int32_t id = kiln_tokenizer_find(f->tok, special[i]);
    assert_int_equal(id, c->vocab_size - 3 + i);
    assert_true(kiln_tokenizer_is_special(f->tok, id));
  }
  /* generation_config.json: <|im_end|> then <|endoftext|> */
  assert_int_equal(c->n_eos, 2);
  assert_int_equal(c->eos_token_ids[0], c->vocab_size - 1);
  assert_int_equal(c->eos_token_ids[1], c->vocab_size - 3);
}

/* kiln's tokenizer reproduces the ids PyTorch was evaluated on. */
static void test_tokenizer_ids(void **state) {
  fixture *f = *state;
  json_t *p = get_(f->ref, "passage");
  json_t *ids = get_(p, "ids");
  size_t n = json_array_size(ids);
  assert_int_equal((int64_t)n, int_(p, "n_tokens"));
  assert_int_equal((int64_t)f->n_text, int_(get_(get_(f->ref, "training"), "tokens"), "revelation"));
  for (size_t i = 0; i < n; i++)
    if (f->text_ids[i] != json_integer_value(json_array_get(ids, i)))
      fail_msg("revelation.txt: id %zu is %d, reference %lld", i, f->text_ids[i],
               (long long)json_integer_value(json_array_get(ids, i)));
}

static void check_ppl_(fixture *f, const char *what, size_t n_ids) {
  json_t *r = get_(f->ref, what);
  const int ctx = (int)int_(f->ref, "ctx");
  kiln_ppl out;
  if (kiln_eval_perplexity(f->engine, f->tok, f->text_ids, n_ids, ctx, 0, &out) != KILN_OK)
    fail_msg("%s: %s", what, kiln_last_error());
  assert_int_equal(out.tokens, int_(r, "tokens"));
  assert_int_equal(out.bytes, int_(r, "bytes"));
  const double nll = num_(r, "nll"), ppl = num_(r, "ppl"), bpb = num_(r, "bpb");
  const double en = fabs(out.nll - nll) / nll, ep = fabs(out.ppl - ppl) / ppl, eb = fabs(out.bpb - bpb) / bpb;
  print_message("%s: %lld tokens, %lld bytes: kiln nll %.8f ppl %.6f bpb %.6f; PyTorch nll %.8f ppl %.6f bpb %.6f;"
                " rel err %.1e\n", what, (long long)out.tokens, (long long)out.bytes, out.nll, out.ppl, out.bpb, nll,
                ppl, bpb, fmax(en, fmax(ep, eb)));
  if (!(en <= PPL_TOL && ep <= PPL_TOL && eb <= PPL_TOL))
    fail_msg("%s: relative errors nll %.2g ppl %.2g bpb %.2g exceed %.0e", what, en, ep, eb, PPL_TOL);
}

static void test_passage_perplexity(void **state) {
  fixture *f = *state;
  size_t n = (size_t)int_(get_(f->ref, "passage"), "n_tokens");
  assert_true(n >= 2 && n <= f->n_text);
  check_ppl_(f, "passage", n);
}

static void test_revelation_perplexity(void **state) {
  fixture *f = *state;
  check_ppl_(f, "revelation", f->n_text);
}

static void test_greedy(void **state) {
  fixture *f = *state;
  json_t *greedy = get_(f->ref, "greedy");
  assert_true(json_array_size(greedy) > 0);
  for (size_t k = 0; k < json_array_size(greedy); k++) {
    json_t *g = json_array_get(greedy, k);
    const char *prompt = json_string_value(get_(g, "prompt"));
    const char *want_text = json_string_value(get_(g, "text"));
    json_t *pj = get_(g, "prompt_ids"), *ij = get_(g, "ids");
    assert_non_null(prompt);
    assert_non_null(want_text);
    int32_t *prompt_ids;
    size_t np;
    assert_int_equal(kiln_tokenizer_encode(f->tok, prompt, strlen(prompt), &prompt_ids, &np), KILN_OK);
    assert_int_equal(np, json_array_size(pj));
    for (size_t i = 0; i < np; i++) assert_int_equal(prompt_ids[i], json_integer_value(json_array_get(pj, i)));

    const int ni = (int)json_array_size(ij);
    kiln_gen_params p = kiln_gen_params_default(); /* greedy */
    p.ignore_eos = true;
    p.max_tokens = ni;
    kiln_gen *gen;
    if (kiln_gen_start(&gen, f->engine, f->tok, 0, prompt_ids, (int)np, &p) != KILN_OK)
      fail_msg("'%s': %s", prompt, kiln_last_error());
    char text[4096];
    size_t tlen = 0;
    kiln_gen_event ev;
    do {
      assert_int_equal(kiln_gen_step(gen, &ev), KILN_OK);
      assert_true(tlen + ev.text_len < sizeof text);
      memcpy(text + tlen, ev.text, ev.text_len);
      tlen += ev.text_len;
    } while (ev.finish == KILN_FINISH_NONE);
    text[tlen] = '\0';
    assert_int_equal(ev.finish, KILN_FINISH_LENGTH);
    int n;
    const int32_t *ids = kiln_gen_ids(gen, &n);
    assert_int_equal(n, ni);
    for (int i = 0; i < ni; i++)
      if (ids[i] != json_integer_value(json_array_get(ij, (size_t)i)))
        fail_msg("'%s': token %d is %d, PyTorch %lld", prompt, i, ids[i],
                 (long long)json_integer_value(json_array_get(ij, (size_t)i)));
    assert_string_equal(text, want_text);
    print_message("'%s' -> '%s'\n", prompt, text);
    kiln_gen_free(gen);
    free(prompt_ids);
  }
}

int main(int argc, char **argv) {
  const struct CMUnitTest quick[] = {
      cmocka_unit_test(test_model_files),
      cmocka_unit_test(test_tokenizer_ids),
      cmocka_unit_test(test_passage_perplexity),
      cmocka_unit_test(test_greedy),
  };
  const struct CMUnitTest full[] = {
      cmocka_unit_test(test_revelation_perplexity),
  };
  if (argc > 1 && strcmp(argv[1], "--full") == 0) return cmocka_run_group_tests(full, setup_, teardown_);
  return cmocka_run_group_tests(quick, setup_, teardown_);
}
