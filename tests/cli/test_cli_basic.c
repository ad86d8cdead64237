/*
 * kiln --help/--version and dispatch; kiln tokenize and detokenize (round trips, stdin and files, KILN_MODEL, the
 * genuine Qwen3 tokenizer when present).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* ---- help, version, dispatch ------------------------------------------------------------------------------- */

static void test_help_version(void **state) {
  (void)state;
  proc_result r;
  t_kiln(&r, NULL, "--help", NULL);
  t_expect_ok(&r);
  const char *cmds[] = {"run", "tokenize", "detokenize", "perplexity", "KILN_MODEL", "exit status"};
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) CHECK(&r, strstr(r.out, cmds[i]));
  proc_result_free(&r);

  t_kiln(&r, NULL, "--version", NULL);
  t_expect_ok(&r);
  CHECK(&r, strncmp(r.out, "kiln " KILN_TEST_VERSION, strlen("kiln " KILN_TEST_VERSION)) == 0);
  proc_result_free(&r);

  const char *with_opts[][2] = {{"run", "--temp"}, {"tokenize", "--text"}, {"detokenize", "--ids"},
                                {"perplexity", "--windows"}};
  for (size_t i = 0; i < 4; i++) {
    t_kiln(&r, NULL, with_opts[i][0], "--help", NULL);
    t_expect_ok(&r);
    CHECK(&r, strstr(r.out, with_opts[i][1]) && strstr(r.out, "usage: kiln"));
    proc_result_free(&r);
    t_kiln(&r, NULL, "help", with_opts[i][0], NULL);
    t_expect_ok(&r);
    CHECK(&r, strstr(r.out, with_opts[i][1]));
    proc_result_free(&r);
  }

  t_fails(2, "no command", NULL, NULL, NULL);
  t_fails(2, "frobnicate", NULL, NULL, "frobnicate", NULL);
  t_fails(2, "--bogus", NULL, NULL, "--bogus", NULL);
  t_fails(2, "frobnicate", NULL, NULL, "help", "frobnicate", NULL);
}


/* ---- tokenize / detokenize --------------------------------------------------------------------------------- */

static void test_tokenize_roundtrip(void **state) {
  (void)state;
  t_roundtrip(T.qwen);
  t_roundtrip(T.llama);
  /* -m may name the tokenizer.json itself. */
  t_roundtrip(t_path_in(T.qwen, "tokenizer.json"));

  /* The special token is one id, and the merges apply ("the" is one token after " "). */
  size_t n;
  int32_t *ids = t_tokenize(T.qwen, "<|endoftext|>", &n);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], T.qi.eos_id);
  free(ids);
  ids = t_tokenize(T.qwen, " the", &n);
  assert_int_equal(n, 1);
  free(ids);

  /* -f FILE and stdin give what --text gives; the output of tokenize feeds detokenize --ids -. */
  const char *text = t_texts[3];
  char *file = t_path_in(T.tmp, "tok.txt");
  t_write_file(file, text, strlen(text));
  proc_result a, b, c, d;
  t_kiln(&a, NULL, "tokenize", "-m", T.qwen, "--text", text, NULL);
  t_kiln(&b, NULL, "tokenize", "-m", T.qwen, "-f", file, NULL);
  t_kiln(&c, text, "tokenize", "-m", T.qwen, "-f", "-", NULL);
  t_expect_ok(&a);
  t_expect_ok(&b);
  t_expect_ok(&c);
  CHECK(&b, strcmp(a.out, b.out) == 0);
  CHECK(&c, strcmp(a.out, c.out) == 0);
  t_kiln(&d, a.out, "detokenize", "-m", T.qwen, "--ids", "-", NULL);
  t_expect_ok(&d);
  CHECK(&d, strcmp(d.out, text) == 0);
  proc_result_free(&a);
  proc_result_free(&b);
  proc_result_free(&c);
  proc_result_free(&d);

  /* KILN_MODEL stands in for -m. */
  t_kiln(&b, NULL, "tokenize", "-m", T.llama, "--text", "the cat", NULL);
  setenv("KILN_MODEL", T.llama, 1);
  t_kiln(&a, NULL, "tokenize", "--text", "the cat", NULL);
  unsetenv("KILN_MODEL");
  t_expect_ok(&a);
  t_expect_ok(&b);
  CHECK(&a, strcmp(a.out, b.out) == 0);
  proc_result_free(&a);
  proc_result_free(&b);
}

/* The genuine Qwen3 tokenizer (fetched by scripts/deps.sh), when present: known ids and round trips. */
static void test_tokenize_qwen3(void **state) {
  (void)state;
  char *path = t_path_in(T.src, "third_party/qwen3/tokenizer.json");
  if (access(path, R_OK) != 0) skip();
  size_t n;
  int32_t *ids = t_tokenize(path, "Hello world", &n);
  assert_int_equal(n, 2);
  assert_int_equal(ids[0], 9707);
  assert_int_equal(ids[1], 1879);
  free(ids);
  ids = t_tokenize(path, "<|im_start|>user", &n);
  assert_true(n >= 2);
  assert_int_equal(ids[0], 151644);
  free(ids);
  t_roundtrip(path);
}


int main(int argc, char **argv) {
  int rc = t_init(argc, argv);
  if (rc) return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_version),
      cmocka_unit_test(test_tokenize_roundtrip),
      cmocka_unit_test(test_tokenize_qwen3),
  };
  return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
