/*
 * Tokenizer unit tests on a small tokenizer built here: byte-level vocabulary (the token of byte b has id b) plus a
 * few merges and added tokens, NFC, Split with the Qwen regex, ByteLevel. Expected ids are worked out by hand from
 * HF's rules (merge order, added-token flags, normalised added tokens). Also: decode and its U+FFFD repair, token
 * lookups, huge words and whitespace runs, and encoding from several threads at once.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/utf8.h"
#include "kiln/status.h"
#include "kiln/tokenizer.h"
#include "model/tokenizer_impl.h"

#define QWEN_RE                                                                                                   \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|" \
  "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"

/* Builds the test tokenizer's JSON; merges in pair form or legacy form. */
static char *make_json(bool legacy) {
  const tok_bytelevel *bl = tok_bytelevel_table();
  size_t cap = 64 * 1024, o = 0;
  char *j = malloc(cap);
  assert_non_null(j);
  o += (size_t)snprintf(j + o, cap - o,
                        "{\"version\":\"1.0\",\"added_tokens\":["
                        "{\"id\":260,\"content\":\"<|end|>\",\"special\":true,\"normalized\":false},"
                        "{\"id\":261,\"content\":\"<mask>\",\"special\":true,\"lstrip\":true,\"rstrip\":true,"
                        "\"normalized\":false},"
                        "{\"id\":262,\"content\":\"word\",\"special\":false,\"single_word\":true,\"normalized\":true},"
                        "{\"id\":263,\"content\":\"\\u0151\",\"special\":false,\"normalized\":true}],"
                        "\"normalizer\":{\"type\":\"NFC\"},"
                        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                        "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" QWEN_RE "\"},\"behavior\":\"Isolated\","
                        "\"invert\":false},"
                        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
                        "\"decoder\":{\"type\":\"ByteLevel\"},"
                        "\"model\":{\"type\":\"BPE\",\"vocab\":{");
  for (int b = 0; b < 256; b++) {
    char ch[3] = {bl->enc[b][0], bl->enc[b][1], 0};
    ch[bl->enc_len[b]] = 0;
    /* '"' and '\\' are printable bytes that stand for themselves: escape them for JSON. */
    const char *esc = b == '"' ? "\\\"" : b == '\\' ? "\\\\" : ch;
    o += (size_t)snprintf(j + o, cap - o, "\"%s\":%d,", esc, b);
  }
  o += (size_t)snprintf(j + o, cap - o, "\"ab\":256,\"bc\":258,\"abc\":257,\"\\u0120a\":259},\"merges\":");
  if (legacy)
    o += (size_t)snprintf(j + o, cap - o, "[\"#version: 0.2\",\"a b\",\"b c\",\"ab c\",\"\\u0120 a\"]}}");
  else
    o += (size_t)snprintf(j + o, cap - o, "[[\"a\",\"b\"],[\"b\",\"c\"],[\"ab\",\"c\"],[\"\\u0120\",\"a\"]]}}");
  assert_true(o < cap);
  return j;
}

static kiln_tokenizer *load_test(bool legacy) {
  char *j = make_json(legacy);
  kiln_tokenizer *t = NULL;
  int rc = kiln_tokenizer_load_mem(&t, j, strlen(j), "unit.json");
  if (rc) fprintf(stderr, "%s\n", kiln_last_error());
  assert_int_equal(rc, KILN_OK);
  free(j);
  return t;
}

static void expect(const kiln_tokenizer *t, const char *text, const int32_t *want, size_t n_want) {
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = kiln_tokenizer_encode(t, text, strlen(text), &ids, &n);
  if (rc) fprintf(stderr, "%s\n", kiln_last_error());
  assert_int_equal(rc, KILN_OK);
  assert_non_null(ids);
  if (n != n_want || memcmp(ids, want, n * sizeof *ids) != 0) {
    fprintf(stderr, "encode(\"%s\"):", text);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
  }
  assert_int_equal(n, n_want);
  assert_memory_equal(ids, want, n * sizeof *ids);
  free(ids);
}

#define EXPECT(t, text, ...)                                  \
  do {                                                        \
    const int32_t w_[] = {__VA_ARGS__};                       \
    expect(t, text, w_, sizeof w_ / sizeof w_[0]);            \
  } while (0)

static void test_merges(void **state) {
  (void)state;
  for (int legacy = 0; legacy < 2; legacy++) {
    kiln_tokenizer *t = load_test(legacy);
    EXPECT(t, "abc", 257);         /* a+b (rank 0), then ab+c (rank 2) */
    EXPECT(t, "bcab", 258, 256);   /* a+b first (rank 0), then b+c; bc+ab is no merge */
    EXPECT(t, "abab", 256, 256);
    EXPECT(t, " a", 259);          /* " a" is one pre-token; its space is \u0120 */
    EXPECT(t, "a a", 97, 259);
    EXPECT(t, "xyz", 120, 121, 122);
    kiln_tokenizer_free(t);
  }
}

/* ignore_merges: a word that is in the vocabulary is taken whole even when merges would not build it ("cab": c+ab
 * has no merge). Expected ids checked against HF tokenizers 0.23. */
static void test_ignore_merges(void **state) {
  (void)state;
  char *j = make_json(false);
  char *cab = strstr(j, "\"\\u0120a\":259}");
  assert_non_null(cab);
  const char *tail = "\"\\u0120a\":259,\"cab\":264},\"merges\":[[\"a\",\"b\"],[\"b\",\"c\"],[\"ab\",\"c\"],"
                     "[\"\\u0120\",\"a\"]],\"ignore_merges\":%s}}";
  for (int ignore = 0; ignore < 2; ignore++) {
    char buf[70000];
    snprintf(buf, sizeof buf, "%.*s", (int)(cab - j), j);
    snprintf(buf + (cab - j), sizeof buf - (size_t)(cab - j), tail, ignore ? "true" : "false");
    kiln_tokenizer *t = NULL;
    assert_int_equal(kiln_tokenizer_load_mem(&t, buf, strlen(buf), "ignore.json"), KILN_OK);
    if (ignore)
      EXPECT(t, "cab abc", 264, 32, 257);
    else
      EXPECT(t, "cab abc", 99, 256, 32, 257);
    kiln_tokenizer_free(t);
  }
  free(j);
}

static void test_added_tokens(void **state) {
  (void)state;
  kiln_tokenizer *t = load_test(false);
  EXPECT(t, "x<|end|>y", 120, 260, 121);
  EXPECT(t, "<|end|><|end|>", 260, 260);
  EXPECT(t, "<|end|", 60, 124, 101, 110, 100, 124); /* not a token: < | end | as bytes */
  EXPECT(t, "a <mask> b", 97, 261, 98);             /* lstrip and rstrip take the spaces */
  EXPECT(t, "a word b", 97, 32, 262, 32, 98);       /* the spaces stay (the byte-level space has id 32) */
  EXPECT(t, "awordb", 97, 119, 111, 114, 100, 98); /* single_word: no match inside a word */
  EXPECT(t, "word", 262);
  EXPECT(t, "o\xcc\x8b", 263); /* NFD input is normalised, then the normalised token matches */
  EXPECT(t, "\xc5\x91", 263);
  kiln_tokenizer_free(t);
}

static void test_lookups(void **state) {
  (void)state;
  kiln_tokenizer *t = load_test(false);
  assert_int_equal(kiln_tokenizer_n_vocab(t), 264);
  assert_int_equal(kiln_tokenizer_find(t, "<|end|>"), 260);
  assert_int_equal(kiln_tokenizer_find(t, "ab"), 256);
  assert_int_equal(kiln_tokenizer_find(t, "zz"), -1);
  assert_true(kiln_tokenizer_is_special(t, 260));
  assert_true(kiln_tokenizer_is_special(t, 261));
  assert_false(kiln_tokenizer_is_special(t, 262));
  assert_false(kiln_tokenizer_is_special(t, 97));
  assert_false(kiln_tokenizer_is_special(t, -1));
  assert_false(kiln_tokenizer_is_special(t, 100000));
  const char *b;
  size_t n;
  assert_int_equal(kiln_tokenizer_token_bytes(t, 259, &b, &n), KILN_OK);
  assert_int_equal(n, 2);
  assert_memory_equal(b, " a", 2);
  assert_int_equal(kiln_tokenizer_token_bytes(t, 260, &b, &n), KILN_OK);
  assert_int_equal(n, 7);
  assert_memory_equal(b, "<|end|>", 7);
  assert_int_equal(kiln_tokenizer_token_bytes(t, 0xE4, &b, &n), KILN_OK);
  assert_int_equal(n, 1);
  assert_int_equal((unsigned char)b[0], 0xE4);
  assert_int_equal(kiln_tokenizer_token_bytes(t, 264, &b, &n), KILN_ERANGE);
  assert_non_null(strstr(kiln_last_error(), "unit.json"));
  assert_int_equal(kiln_tokenizer_token_bytes(t, -1, &b, &n), KILN_ERANGE);
  kiln_tokenizer_free(t);
}

static void test_decode(void **state) {
  (void)state;
  kiln_tokenizer *t = load_test(false);
  char *s;
  size_t n;
  const int32_t cut[] = {0xE4, 0xB8, 97}; /* the first two bytes of U+4E2D, then 'a' */
  assert_int_equal(kiln_tokenizer_decode(t, cut, 3, &s, &n), KILN_OK);
  assert_int_equal(n, 4);
  assert_string_equal(s, "\xef\xbf\xbd" "a");
  free(s);
  const int32_t whole[] = {0xE4, 0xB8, 0xAD, 259, 260, 5000, -3, 0xFF, 0x80};
  assert_int_equal(kiln_tokenizer_decode(t, whole, 9, &s, &n), KILN_OK);
  assert_string_equal(s, "\xe4\xb8\xad a<|end|>\xef\xbf\xbd\xef\xbf\xbd"); /* bad ids skipped, FF and 80 each */
  assert_int_equal(n, strlen(s));
  free(s);
  assert_int_equal(kiln_tokenizer_decode(t, NULL, 0, &s, &n), KILN_OK);
  assert_int_equal(n, 0);
  assert_string_equal(s, "");
  free(s);
  kiln_tokenizer_free(t);
}

static void round_trip(const kiln_tokenizer *t, const char *text, size_t len) {
  int32_t *ids = NULL;
  size_t n = 0;
  assert_int_equal(kiln_tokenizer_encode(t, text, len, &ids, &n), KILN_OK);
  char *s = NULL;
  size_t sl = 0;
  assert_int_equal(kiln_tokenizer_decode(t, ids, n, &s, &sl), KILN_OK);
  assert_int_equal(sl, len);
  assert_memory_equal(s, text, len);
  free(s);
  free(ids);
}

static void test_long_runs(void **state) {
  (void)state;
  kiln_tokenizer *t = load_test(false);
  size_t n = 1u << 20;
  char *buf = malloc(n);
  assert_non_null(buf);
  /* One huge word (BPE over a million symbols), a huge whitespace run (the regex's lookahead), newlines, and
   * alternating "ab" (a million merge candidates). */
  const char fills[] = {'a', ' ', '\n', '\t'};
  for (size_t k = 0; k < sizeof fills; k++) {
    memset(buf, fills[k], n);
    round_trip(t, buf, n);
  }
  for (size_t i = 0; i < n; i++) buf[i] = "ab"[i & 1];
  int32_t *ids = NULL;
  size_t ni = 0;
  assert_int_equal(kiln_tokenizer_encode(t, buf, n, &ids, &ni), KILN_OK);
  assert_int_equal(ni, n / 2);
  for (size_t i = 0; i < ni; i++) assert_int_equal(ids[i], 256);
  free(ids);
  free(buf);
  round_trip(t, "", 0);
  kiln_tokenizer_free(t);
}

typedef struct job {
  const kiln_tokenizer *t;
  const char *text;
  size_t len;
  int32_t *ids;
  size_t n;
  int rc;
} job;

static void *encode_job(void *arg) {
  job *j = arg;
  for (int rep = 0; rep < 20 && !j->rc; rep++) {
    free(j->ids);
    j->ids = NULL;
    j->rc = kiln_tokenizer_encode(j->t, j->text, j->len, &j->ids, &j->n);
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  kiln_tokenizer *t = load_test(false);
  const char *text = "abc bcab <|end|> a word b e\xcc\x81 \xe4\xb8\xad\xe6\x96\x87 12345 a <mask> b\r\n\tx";
  job jobs[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (job){t, text, strlen(text), NULL, 0, 0};
    assert_int_equal(pthread_create(&th[i], NULL, encode_job, &jobs[i]), 0);
  }
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(jobs[i].rc, KILN_OK);
    assert_int_equal(jobs[i].n, jobs[0].n);
    assert_memory_equal(jobs[i].ids, jobs[0].ids, jobs[0].n * sizeof(int32_t));
  }
  for (int i = 0; i < 4; i++) free(jobs[i].ids);
  kiln_tokenizer_free(t);
}

static void test_utf8_helpers(void **state) {
  (void)state;
  /* Validation: overlongs, surrogates, beyond U+10FFFF and truncation are rejected at the offending lead byte. */
  assert_int_equal(tok_utf8_check("abc", 3), 3);
  assert_int_equal(tok_utf8_check("a\xc0\x80", 3), 1);
  assert_int_equal(tok_utf8_check("ab\xed\xa0\x80", 5), 2);
  assert_int_equal(tok_utf8_check("\xf4\x90\x80\x80", 4), 0);
  assert_int_equal(tok_utf8_check("\xe4\xb8", 2), 0);
  assert_int_equal(tok_utf8_check("\xf0\x9f\x99\x82", 4), 4);
  assert_int_equal(tok_utf8_check("0123456789\xff", 11), 10);
  /* Lossy repair, one U+FFFD per maximal ill-formed subsequence (as Rust's from_utf8_lossy). */
  char out[64];
  size_t n = kiln_utf8_sanitize(out, sizeof out, "\xf0\x9f\x99" "a\x80\xe4\xb8\xad", 8);
  assert_int_equal(n, 3 + 1 + 3 + 3);
  assert_memory_equal(out, "\xef\xbf\xbd" "a\xef\xbf\xbd\xe4\xb8\xad", n);
  n = kiln_utf8_sanitize(out, sizeof out, "\xf0\x80", 2); /* F0 80: 80 cannot follow F0, so two pieces */
  assert_int_equal(n, 6);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_merges),   cmocka_unit_test(test_ignore_merges), cmocka_unit_test(test_added_tokens), cmocka_unit_test(test_lookups),
      cmocka_unit_test(test_decode),   cmocka_unit_test(test_long_runs),    cmocka_unit_test(test_threads),
      cmocka_unit_test(test_utf8_helpers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
