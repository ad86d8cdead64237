/*
 * The generation loop and its text stream.
 *  - utf8_stream.c on crafted bytes: incomplete characters held back, invalid bytes replaced by U+FFFD (maximal
 *    subparts), stop strings found across pieces, prefixes of a stop string held back;
 *  - kiln_gen on the tiny Qwen3 checkpoint with its tokenizer (tests/data/tiny): every event's text is valid
 *    UTF-8 and the events add up to the sanitised bytes of the tokens (sampled generations, whose byte-level
 *    tokens often split characters); stop strings spanning token boundaries cut the text before them; max_tokens;
 *    an EOS list; a full context (KILN_ECONTEXT at start, finish LENGTH after); logprobs against log_softmax of
 *    the engine's logits; same seed, same tokens.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cpu/ref_ops.h"
#include "engine/utf8_stream.h"
#include "kiln/kiln.h"

/* ---- utf8_stream ---- */

static bool valid_utf8_(const char *s, size_t n) {
  char buf[4096];
  assert_true(3 * n <= sizeof buf);
  size_t m = kiln_utf8_sanitize(buf, sizeof buf, s, n);
  return m == n && memcmp(buf, s, n) == 0;
}

static void test_utf8_tail(void **st) {
  (void)st;
  assert_int_equal(kiln_utf8_incomplete_tail("abc", 3), 0);
  assert_int_equal(kiln_utf8_incomplete_tail("a\xc3", 2), 1);
  assert_int_equal(kiln_utf8_incomplete_tail("a\xc3\xa9", 3), 0);
  assert_int_equal(kiln_utf8_incomplete_tail("\xe2\x82", 2), 2);
  assert_int_equal(kiln_utf8_incomplete_tail("\xf0\x9f\x99", 3), 3);
  assert_int_equal(kiln_utf8_incomplete_tail("\xf0\x9f\x99\x82", 4), 0);
  assert_int_equal(kiln_utf8_incomplete_tail("\xe0\x80", 2), 0); /* overlong prefix: invalid, not held */
  assert_int_equal(kiln_utf8_incomplete_tail("\xed\xa0", 2), 0); /* surrogate prefix */
  assert_int_equal(kiln_utf8_incomplete_tail("\x80", 1), 0);     /* stray continuation */
  assert_int_equal(kiln_utf8_incomplete_tail("", 0), 0);
}

static void test_utf8_sanitize(void **st) {
  (void)st;
  char out[64];
  size_t n = kiln_utf8_sanitize(out, sizeof out, "a\xe2\x82" "A\x80z\xc3\xa9\xf0\x9f", 10);
  const char want[] = "a\xef\xbf\xbd" "A\xef\xbf\xbdz\xc3\xa9\xef\xbf\xbd";
  assert_int_equal(n, sizeof want - 1);
  assert_memory_equal(out, want, n);
  n = kiln_utf8_sanitize(out, sizeof out, "\xc0\xaf", 2); /* overlong: two replacements */
  assert_int_equal(n, 6);
}

static void test_release(void **st) {
  (void)st;
  const char *stops[2] = {"END", "\xc3\xa9t\xc3\xa9"};
  size_t lens[2] = {3, 6};
  /* no stop: everything but an incomplete character */
  kiln_release r = kiln_text_release("hello \xc3", 7, stops, lens, 2, false);
  assert_int_equal(r.release, 6);
  assert_int_equal(r.consumed, 6);
  assert_false(r.stopped);
  /* a tail that may grow into "END" is held */
  r = kiln_text_release("the EN", 6, stops, lens, 2, false);
  assert_int_equal(r.release, 4);
  r = kiln_text_release("the E", 5, stops, lens, 2, false);
  assert_int_equal(r.release, 4);
  /* the stop string found: text before it, the rest dropped */
  r = kiln_text_release("ENthe END and more", 18, stops, lens, 2, false);
  assert_true(r.stopped);
  assert_int_equal(r.release, 6);
  assert_int_equal(r.consumed, 18);
  /* a multibyte stop prefix that ends inside a character */
  r = kiln_text_release("summer \xc3\xa9t\xc3", 11, stops, lens, 2, false);
  assert_int_equal(r.release, 7);
  /* final: all released unless a stop is there */
  r = kiln_text_release("the EN", 6, stops, lens, 2, true);
  assert_int_equal(r.release, 6);
  assert_false(r.stopped);
}

/* ---- kiln_gen on the tiny model ---- */

typedef struct fixture {
  kiln_model *m;
  kiln_tokenizer *tok;
} fixture;

static const char *path_(const char *f) {
  static char buf[512];
  const char *src = getenv("KILN_SOURCE_DIR");
  snprintf(buf, sizeof buf, "%s/tests/data/tiny/qwen3-f32%s%s", src ? src : ".", *f ? "/" : "", f);
  return buf;
}

static int setup_(void **st) {
  fixture *fx = calloc(1, sizeof *fx);
  if (!fx || kiln_model_load(&fx->m, path_(""), NULL, NULL) != KILN_OK ||
      kiln_tokenizer_load(&fx->tok, path_("tokenizer.json")) != KILN_OK) {
    fprintf(stderr, "setup: %s\n", kiln_last_error());
    return -1;
  }
  *st = fx;
  return 0;
}

static int teardown_(void **st) {
  fixture *fx = *st;
  kiln_tokenizer_free(fx->tok);
  kiln_model_free(fx->m);
  free(fx);
  return 0;
}

static kiln_engine *engine_(fixture *fx, int n_ctx) {
  kiln_engine_opts o = {.device = "cpu", .n_threads = 2, .n_ctx = n_ctx, .n_seqs = 1};
  kiln_engine *e;
  assert_int_equal(kiln_engine_create(&e, fx->m, &o), KILN_OK);
  return e;
}

typedef struct run_out {
  int32_t ids[512];
  int n_ids, steps;
  char text[8192];
  size_t text_len;
  kiln_finish finish;
} run_out;

static const int32_t prompt_[] = {35, 261, 383, 326, 100, 200, 12, 7};

/* Runs a whole generation, checking each event's text on the way. */
static void run_(kiln_engine *e, const kiln_tokenizer *tok, const int32_t *prompt, int np, const kiln_gen_params *p,
                 run_out *o) {
  memset(o, 0, sizeof *o);
  kiln_gen *g;
  assert_int_equal(kiln_gen_start(&g, e, tok, 0, prompt, np, p), KILN_OK);
  kiln_gen_event ev;
  do {
    assert_int_equal(kiln_gen_step(g, &ev), KILN_OK);
    o->steps++;
    assert_true(ev.token >= 0);
    assert_true(valid_utf8_(ev.text, ev.text_len));
    assert_true(ev.text[ev.text_len] == '\0'); /* terminated (the text itself may hold U+0000) */
    assert_true(o->text_len + ev.text_len < sizeof o->text);
    memcpy(o->text + o->text_len, ev.text, ev.text_len);
    o->text_len += ev.text_len;
  } while (ev.finish == KILN_FINISH_NONE);
  o->finish = ev.finish;
  assert_int_equal(kiln_gen_step(g, &ev), KILN_ECLOSED);
  int n;
  const int32_t *ids = kiln_gen_ids(g, &n);
  assert_true(n <= 512);
  memcpy(o->ids, ids, sizeof(int32_t) * (size_t)n);
  o->n_ids = n;
  kiln_gen_stats s;
  kiln_gen_get_stats(g, &s);
  assert_int_equal(s.prompt_tokens, np);
  assert_int_equal(s.completion_tokens, n);
  assert_true(s.ttft_ms >= 0 && s.decode_ms >= 0);
  kiln_gen_free(g);
}

/* The raw bytes of ids (ids past the tokenizer's vocabulary have none). */
static size_t bytes_of_(const kiln_tokenizer *tok, const int32_t *ids, int n, char *out, size_t cap, size_t *bounds) {
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    const char *b;
    size_t l;
    if (kiln_tokenizer_token_bytes(tok, ids[i], &b, &l) != KILN_OK) l = 0;
    assert_true(len + l <= cap);
    memcpy(out + len, b, l);
    len += l;
    if (bounds) bounds[i] = len;
  }
  return len;
}

static void test_stream_matches_tokens(void **st) {
  fixture *fx = *st;
  kiln_engine *e = engine_(fx, 256);
  int split_chars = 0;
  for (uint64_t seed = 1; seed <= 6; seed++) {
    kiln_gen_params p = kiln_gen_params_default();
    p.sampling.temperature = 1.0f;
    p.sampling.seed = seed;
    p.max_tokens = 60;
    p.ignore_eos = true;
    run_out o;
    run_(e, fx->tok, prompt_, 8, &p, &o);
    assert_int_equal(o.finish, KILN_FINISH_LENGTH);
    assert_int_equal(o.n_ids, 60);
    static char raw[4096], want[3 * 4096];
    size_t n = bytes_of_(fx->tok, o.ids, o.n_ids, raw, sizeof raw, NULL);
    size_t m = kiln_utf8_sanitize(want, sizeof want, raw, n);
    assert_int_equal(o.text_len, m);
    assert_memory_equal(o.text, want, m);
    for (size_t i = 0; i < n; i++) split_chars += (unsigned char)raw[i] >= 0x80;
  }
  /* the sampled text did contain non-ASCII bytes, so the holdback was exercised */
  assert_true(split_chars > 0);
  kiln_engine_free(e);
}

static void test_stop_strings(void **st) {
  fixture *fx = *st;
  kiln_engine *e = engine_(fx, 256);
  kiln_gen_params p = kiln_gen_params_default();
  p.max_tokens = 40;
  p.ignore_eos = true;
  run_out full, cut;
  run_(e, fx->tok, prompt_, 8, &p, &full);
  static char raw[4096];
  size_t bounds[512];
  size_t n = bytes_of_(fx->tok, full.ids, full.n_ids, raw, sizeof raw, bounds);
  /* stop strings of 2 to 4 ASCII bytes straddling each token boundary */
  int tried = 0;
  for (int k = 4; k + 1 < full.n_ids && tried < 6; k++) {
    size_t b = bounds[k];
    if (b < 2 || b + 2 > n || bounds[k + 1] == b || bounds[k - 1] == b) continue;
    char stop[8] = {0};
    memcpy(stop, raw + b - 2, 4);
    bool ascii = true;
    for (int i = 0; i < 4; i++) ascii &= (unsigned char)stop[i] >= 0x20 && (unsigned char)stop[i] < 0x7f;
    if (!ascii) continue;
    tried++;
    p.stop[0] = "never-there";
    p.stop[1] = stop;
    p.n_stop = 2;
    run_(e, fx->tok, prompt_, 8, &p, &cut);
    assert_int_equal(cut.finish, KILN_FINISH_STOP);
    const char *first = memmem(raw, n, stop, 4);
    assert_non_null(first);
    size_t at = (size_t)(first - raw);
    static char want[3 * 4096];
    size_t wl = kiln_utf8_sanitize(want, sizeof want, raw, at);
    assert_int_equal(cut.text_len, wl);
    assert_memory_equal(cut.text, want, wl);
    assert_null(memmem(cut.text, cut.text_len, stop, 4));
    /* generation stopped at the token that completed the stop string */
    int want_ids = 0;
    while (bounds[want_ids] < at + 4) want_ids++;
    assert_int_equal(cut.n_ids, want_ids + 1);
  }
  assert_true(tried > 0);
  /* a stop string whose prefix ends the text at max_tokens: released at the end */
  char tailstop[8] = {0};
  size_t last = n - 1;
  while (last > 0 && (unsigned char)raw[last] >= 0x80) last--;
  tailstop[0] = raw[last];
  tailstop[1] = '\x01';
  p.stop[0] = tailstop;
  p.n_stop = 1;
  p.max_tokens = (int)(full.n_ids);
  run_(e, fx->tok, prompt_, 8, &p, &cut);
  assert_int_equal(cut.finish, KILN_FINISH_LENGTH);
  assert_int_equal(cut.text_len, full.text_len);
  assert_memory_equal(cut.text, full.text, full.text_len);
  kiln_engine_free(e);
}

static void test_eos_and_max_tokens(void **st) {
  fixture *fx = *st;
  kiln_engine *e = engine_(fx, 256);
  kiln_gen_params p = kiln_gen_params_default();
  p.max_tokens = 30;
  p.ignore_eos = true;
  run_out full, o;
  run_(e, fx->tok, prompt_, 8, &p, &full);
  assert_int_equal(full.n_ids, 30);
  assert_int_equal(full.steps, 30);
  /* make the token at step j an EOS id (a list of two), first occurrence */
  int j = 6;
  int32_t eos = full.ids[j];
  for (int i = 0; i < j; i++)
    if (full.ids[i] == eos) j = i;
  kiln_config saved = fx->m->cfg;
  fx->m->cfg.n_eos = 2;
  fx->m->cfg.eos_token_ids[0] = 703;
  fx->m->cfg.eos_token_ids[1] = eos;
  p.ignore_eos = false;
  run_(e, fx->tok, prompt_, 8, &p, &o);
  assert_int_equal(o.finish, KILN_FINISH_STOP);
  assert_int_equal(o.n_ids, j + 1);
  assert_int_equal(o.ids[j], eos);
  static char raw[4096], want[3 * 4096];
  size_t n = bytes_of_(fx->tok, full.ids, j, raw, sizeof raw, NULL); /* the EOS token's own text is not shown */
  size_t m = kiln_utf8_sanitize(want, sizeof want, raw, n);
  assert_int_equal(o.text_len, m);
  assert_memory_equal(o.text, want, m);
  p.ignore_eos = true;
  run_(e, fx->tok, prompt_, 8, &p, &o);
  assert_int_equal(o.n_ids, 30);
  fx->m->cfg = saved;
  kiln_engine_free(e);
}

static void test_context_full(void **st) {
  fixture *fx = *st;
  kiln_engine *e = engine_(fx, 24);
  int32_t prompt[25];
  for (int i = 0; i < 25; i++) prompt[i] = 10 + i;
  kiln_gen_params p = kiln_gen_params_default();
  p.ignore_eos = true;
  kiln_gen *g = (kiln_gen *)&g;
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 0, prompt, 25, &p), KILN_ECONTEXT);
  assert_null(g);
  run_out o;
  run_(e, fx->tok, prompt, 20, &p, &o); /* 20 in the cache + 4 appended; the 5th token cannot be appended */
  assert_int_equal(o.finish, KILN_FINISH_LENGTH);
  assert_int_equal(o.n_ids, 5);
  run_(e, fx->tok, prompt, 24, &p, &o);
  assert_int_equal(o.finish, KILN_FINISH_LENGTH);
  assert_int_equal(o.n_ids, 1);
  /* the engine itself refuses a token past the context */
  assert_int_equal(kiln_engine_seq_pos(e, 0), 24);
  assert_int_equal(kiln_engine_forward(e, 0, prompt, 1, NULL, false), KILN_ECONTEXT);
  kiln_engine_free(e);
}

static void test_logprobs(void **st) {
  fixture *fx = *st;
  kiln_engine *e = engine_(fx, 64);
  const int V = fx->m->cfg.vocab_size;
  float *lg = malloc(sizeof(float) * (size_t)V), *ls = malloc(sizeof(float) * (size_t)V);
  assert_non_null(lg);
  assert_non_null(ls);
  assert_int_equal(kiln_engine_forward(e, 0, prompt_, 8, lg, false), KILN_OK);
  kiln_ref_log_softmax(ls, lg, V);
  kiln_gen_params p = kiln_gen_params_default();
  p.top_logprobs = 5;
  p.max_tokens = 3;
  p.sampling.repetition_penalty = 1.3f; /* the logprob is of the raw distribution, before penalties */
  kiln_gen *g;
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 0, prompt_, 8, &p), KILN_OK);
  kiln_gen_event ev;
  assert_int_equal(kiln_gen_step(g, &ev), KILN_OK);
  assert_int_equal(ev.n_top, 5);
  assert_true(fabsf(ev.logprob - ls[ev.token]) < 1e-4f);
  for (int i = 0; i < 5; i++) {
    assert_true(fabsf(ev.top_logprobs[i] - ls[ev.top_ids[i]]) < 1e-4f);
    if (i) assert_true(ev.top_logprobs[i] <= ev.top_logprobs[i - 1]);
  }
  int64_t best = kiln_ref_argmax(lg, V);
  assert_int_equal(ev.top_ids[0], best);
  for (int i = 0; i < V; i++) /* nothing outside the top 5 beats the 5th */
    if (ls[i] > ev.top_logprobs[4]) {
      bool in = false;
      for (int k = 0; k < 5; k++) in |= ev.top_ids[k] == i;
      assert_true(in);
    }
  kiln_gen_free(g);
  /* 0: the chosen token's logprob, no alternatives */
  p.top_logprobs = 0;
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 0, prompt_, 8, &p), KILN_OK);
  assert_int_equal(kiln_gen_step(g, &ev), KILN_OK);
  assert_int_equal(ev.n_top, 0);
  assert_true(fabsf(ev.logprob - ls[ev.token]) < 1e-4f);
  kiln_gen_free(g);
  /* -1: no logprobs at all */
  p.top_logprobs = -1;
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 0, prompt_, 8, &p), KILN_OK);
  assert_int_equal(kiln_gen_step(g, &ev), KILN_OK);
  assert_int_equal(ev.n_top, 0);
  kiln_gen_free(g);
  p.top_logprobs = KILN_MAX_TOP_LOGPROBS + 1;
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 0, prompt_, 8, &p), KILN_EINVAL);
  free(lg);
  free(ls);
  kiln_engine_free(e);
}

static void test_seeded(void **st) {
  fixture *fx = *st;
  kiln_engine *e = engine_(fx, 128);
  kiln_gen_params p = kiln_gen_params_default();
  p.sampling.temperature = 0.9f;
  p.sampling.top_p = 0.95f;
  p.sampling.top_k = 50;
  p.sampling.seed = 1234;
  p.max_tokens = 25;
  p.ignore_eos = true;
  run_out a, b, c;
  run_(e, fx->tok, prompt_, 8, &p, &a);
  run_(e, fx->tok, prompt_, 8, &p, &b);
  p.sampling.seed = 1235;
  run_(e, fx->tok, prompt_, 8, &p, &c);
  assert_int_equal(a.n_ids, b.n_ids);
  assert_memory_equal(a.ids, b.ids, sizeof(int32_t) * (size_t)a.n_ids);
  assert_true(memcmp(a.ids, c.ids, sizeof(int32_t) * (size_t)a.n_ids) != 0);
  /* bad arguments */
  kiln_gen *g;
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 0, prompt_, 0, &p), KILN_EINVAL);
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 3, prompt_, 8, &p), KILN_ERANGE);
  int32_t bad = 704;
  assert_int_equal(kiln_gen_start(&g, e, fx->tok, 0, &bad, 1, &p), KILN_ERANGE);
  kiln_engine_free(e);
}

int main(void) {
  const struct CMUnitTest unit[] = {
      cmocka_unit_test(test_utf8_tail),
      cmocka_unit_test(test_utf8_sanitize),
      cmocka_unit_test(test_release),
  };
  const struct CMUnitTest model[] = {
      cmocka_unit_test(test_stream_matches_tokens), cmocka_unit_test(test_stop_strings),
      cmocka_unit_test(test_eos_and_max_tokens),    cmocka_unit_test(test_context_full),
      cmocka_unit_test(test_logprobs),              cmocka_unit_test(test_seeded),
  };
  int rc = cmocka_run_group_tests(unit, NULL, NULL);
  return rc | cmocka_run_group_tests(model, setup_, teardown_);
}
