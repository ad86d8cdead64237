/*
 * Bad input: every broken tokenizer.json and every invalid text gives a non-zero status and a one-line message that
 * names the file and the problem; nothing crashes or leaks (run under ASan in CI).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln/status.h"
#include "kiln/tokenizer.h"

#define VOCAB "{\"a\":0,\"b\":1,\"ab\":2}"
#define GOOD_MODEL "{\"type\":\"BPE\",\"vocab\":" VOCAB ",\"merges\":[[\"a\",\"b\"]]}"

static void expect_load_error(const char *json, int code, const char *needle) {
  kiln_tokenizer *t = (kiln_tokenizer *)1;
  kiln_clear_error();
  int rc = kiln_tokenizer_load_mem(&t, json, strlen(json), "bad/tokenizer.json");
  const char *msg = kiln_last_error();
  if (rc != code || !strstr(msg, needle) || !strstr(msg, "bad/tokenizer.json") || strchr(msg, '\n'))
    fprintf(stderr, "json %.80s\n -> %d '%s' (want %d, '%s')\n", json, rc, msg, code, needle);
  assert_int_equal(rc, code);
  assert_null(t);
  assert_non_null(strstr(msg, "bad/tokenizer.json"));
  assert_non_null(strstr(msg, needle));
  assert_null(strchr(msg, '\n'));
}

static void test_malformed_json(void **state) {
  (void)state;
  expect_load_error("", KILN_EFORMAT, "invalid JSON");
  expect_load_error("{", KILN_EFORMAT, "invalid JSON");
  expect_load_error("{\"model\": " GOOD_MODEL ",}", KILN_EFORMAT, "invalid JSON");
  expect_load_error("[1, 2]", KILN_EFORMAT, "not a JSON object");
  expect_load_error("{\"model\": \"\\ud800\"}", KILN_EFORMAT, "invalid JSON");
  expect_load_error("{\"version\": \"2.0\", \"model\": " GOOD_MODEL "}", KILN_EUNSUPPORTED, "version");
  /* Invalid UTF-8 inside the JSON text itself. */
  expect_load_error("{\"model\": \"\xff\"}", KILN_EFORMAT, "invalid JSON");
}

static void test_model_errors(void **state) {
  (void)state;
  expect_load_error("{}", KILN_EFORMAT, "model is missing");
  expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", KILN_EUNSUPPORTED,
                    "model type 'WordPiece' is not supported");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", KILN_EFORMAT, "model.vocab is missing");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": []}}", KILN_EFORMAT, "model.vocab is missing");
  expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": " VOCAB "}}", KILN_EFORMAT, "model.merges");
  expect_load_error("{\"model\": {\"vocab\": {\"a\": -1}, \"merges\": []}}", KILN_EFORMAT, "model.vocab['a']");
  expect_load_error("{\"model\": {\"vocab\": {\"a\": 1e3}, \"merges\": []}}", KILN_EFORMAT, "model.vocab['a']");
  expect_load_error("{\"model\": {\"vocab\": {\"a\": 2000000000}, \"merges\": []}}", KILN_EFORMAT, "model.vocab['a']");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [[\"a\", \"c\"]]}}", KILN_EFORMAT,
                    "needs 'c', which is not in the vocabulary");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [\"a c\"]}}", KILN_EFORMAT,
                    "needs 'c', which is not in the vocabulary");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [[\"b\", \"a\"]]}}", KILN_EFORMAT,
                    "needs 'ba', which is not in the vocabulary");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [\"a  b\"]}}", KILN_EFORMAT,
                    "not two tokens separated by one space");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [\"ab\"]}}", KILN_EFORMAT, "not two tokens");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [[\"a\", \"b\"], \"a b\"]}}", KILN_EFORMAT,
                    "merges[1] is not a pair");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [[\"a\"]]}}", KILN_EFORMAT, "merges[0]");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [], \"dropout\": 0.1}}", KILN_EUNSUPPORTED,
                    "dropout");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [], \"unk_token\": 3}}", KILN_EFORMAT,
                    "model.unk_token");
  expect_load_error("{\"model\": {\"vocab\": " VOCAB ", \"merges\": [], \"ignore_merges\": \"yes\"}}", KILN_EFORMAT,
                    "model.ignore_merges");
}

static void test_section_errors(void **state) {
  (void)state;
  expect_load_error("{\"model\": " GOOD_MODEL ", \"normalizer\": {\"type\": \"Lowercase\"}}", KILN_EUNSUPPORTED,
                    "normalizer type 'Lowercase'");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"normalizer\": {\"type\": \"Sequence\"}}", KILN_EFORMAT,
                    "normalizers list");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", KILN_EUNSUPPORTED,
                    "pre_tokenizer type 'Whitespace'");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                    "{\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
                    KILN_EFORMAT, "regex does not compile");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                    "{\"Regex\": \"a\"}, \"behavior\": \"Sideways\"}}",
                    KILN_EFORMAT, "behavior 'Sideways'");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": 3, "
                    "\"behavior\": \"Isolated\"}}",
                    KILN_EFORMAT, "pattern");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"decoder\": {\"type\": \"WordPiece\"}}", KILN_EUNSUPPORTED,
                    "decoder type 'WordPiece'");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"added_tokens\": {}}", KILN_EFORMAT, "added_tokens is not a list");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"added_tokens\": [{\"id\": 3}]}", KILN_EFORMAT, "has no content");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"added_tokens\": [{\"content\": \"x\"}]}", KILN_EFORMAT,
                    "has no valid id");
  expect_load_error("{\"model\": " GOOD_MODEL ", \"added_tokens\": [{\"id\": 3, \"content\": \"x\", "
                    "\"lstrip\": 1}]}",
                    KILN_EFORMAT, "added_tokens[0].lstrip");
  /* Nested Sequences: bounded depth instead of unbounded recursion. */
  char deep[4096] = "{\"model\": " GOOD_MODEL ", \"pre_tokenizer\": ";
  for (int i = 0; i < 40; i++) strcat(deep, "{\"type\": \"Sequence\", \"pretokenizers\": [");
  for (int i = 0; i < 40; i++) strcat(deep, "]}");
  strcat(deep, "}");
  expect_load_error(deep, KILN_EUNSUPPORTED, "nest too deeply");
}

static void test_file_errors(void **state) {
  (void)state;
  kiln_tokenizer *t = (kiln_tokenizer *)1;
  assert_int_equal(kiln_tokenizer_load(&t, "no/such/dir/tokenizer.json"), KILN_ENOTFOUND);
  assert_null(t);
  assert_non_null(strstr(kiln_last_error(), "no/such/dir/tokenizer.json"));
  assert_int_not_equal(kiln_tokenizer_load(&t, "."), KILN_OK); /* a directory */
  assert_non_null(strstr(kiln_last_error(), "."));
  assert_int_equal(kiln_tokenizer_load(NULL, "x"), KILN_EINVAL);
  assert_int_equal(kiln_tokenizer_load_mem(&t, NULL, 5, "x"), KILN_EINVAL);
}

static void test_bad_text(void **state) {
  (void)state;
  const char *json = "{\"model\": " GOOD_MODEL "}";
  kiln_tokenizer *t = NULL;
  assert_int_equal(kiln_tokenizer_load_mem(&t, json, strlen(json), "ok/tokenizer.json"), KILN_OK);
  static const struct {
    const char *s;
    size_t n;
    size_t at;
  } bad[] = {{"ab\xff", 3, 2},         {"\xc0\x80", 2, 0},          {"a\xed\xa0\x80", 4, 1},
             {"\xf4\x90\x80\x80", 4, 0}, {"abc\xe4\xb8", 5, 3},       {"\x80", 1, 0},
             {"ok\xf0\x9f\x99", 5, 2},  {"\xc2", 1, 0}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    assert_int_equal(kiln_tokenizer_encode(t, bad[i].s, bad[i].n, &ids, &n), KILN_EINVAL);
    assert_null(ids);
    assert_int_equal(n, 0);
    char want[64];
    snprintf(want, sizeof want, "(byte %zu)", bad[i].at);
    assert_non_null(strstr(kiln_last_error(), "ok/tokenizer.json: text is not valid UTF-8"));
    assert_non_null(strstr(kiln_last_error(), want));
  }
  int32_t *ids;
  size_t n;
  assert_int_equal(kiln_tokenizer_encode(t, NULL, 3, &ids, &n), KILN_EINVAL);
  assert_int_equal(kiln_tokenizer_encode(NULL, "a", 1, &ids, &n), KILN_EINVAL);
  /* Characters with no token are dropped, as HF does without unk_token. */
  assert_int_equal(kiln_tokenizer_encode(t, "abz", 3, &ids, &n), KILN_OK);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], 2);
  free(ids);
  kiln_tokenizer_free(t);
  kiln_tokenizer_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_malformed_json), cmocka_unit_test(test_model_errors), cmocka_unit_test(test_section_errors),
      cmocka_unit_test(test_file_errors),    cmocka_unit_test(test_bad_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
