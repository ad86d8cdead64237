/*
 * Bad input: damaged checkpoints, unreadable or oversized prompts, bad option values and environment variables.
 * Each must fail with one line on stderr naming the file (or option) and the problem, status 1 or 2, no crash.
 */
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static void test_bad_checkpoints(void **state) {
  (void)state;
  char dir[1200];
  /* The checkpoint directory itself. */
  t_fails(1, "no-such-dir", NULL, NULL, "run", "-m", t_path_in(T.tmp, "no-such-dir"), "-p", "hi", NULL);
  t_fails(1, "not a directory", NULL, NULL, "run", "-m", t_path_in(T.qwen, "config.json"), "-p", "hi", NULL);
  setenv("KILN_MODEL", t_path_in(T.tmp, "no-such-dir"), 1);
  t_fails(1, "no-such-dir", NULL, NULL, "run", "-p", "hi", NULL);
  unsetenv("KILN_MODEL");

  /* Weights: missing, truncated, a header shorter than its length field, a header length past the file. */
  t_clone_ckpt(T.qwen, "no-weights", dir, sizeof dir);
  assert_int_equal(unlink(t_path_in(dir, "model.safetensors")), 0);
  t_fails(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  t_clone_ckpt(T.qwen, "truncated", dir, sizeof dir);
  struct stat st;
  assert_int_equal(stat(t_path_in(dir, "model.safetensors"), &st), 0);
  assert_int_equal(truncate(t_path_in(dir, "model.safetensors"), st.st_size / 2), 0);
  t_fails(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  t_fails(1, "model.safetensors", NULL, NULL, "perplexity", "-m", dir, "-f", t_path_in(T.tmp, "ppl.txt"), NULL);

  t_clone_ckpt(T.qwen, "tiny-file", dir, sizeof dir);
  t_write_file(t_path_in(dir, "model.safetensors"), "\x10\0\0\0", 4);
  t_fails(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  t_clone_ckpt(T.qwen, "huge-header", dir, sizeof dir);
  {
    int fd = open(t_path_in(dir, "model.safetensors"), O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff\xff\xff\xff\xff\x00\x00\x00", 8, 0), 8);
    close(fd);
  }
  t_fails(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  /* A tensor whose shape or dtype disagrees with the config. */
  t_clone_ckpt(T.qwen, "bad-shape", dir, sizeof dir);
  t_patch_file(t_path_in(dir, "model.safetensors"), "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[64]",
              "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[32]");
  t_fails(1, "model.norm.weight", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  t_clone_ckpt(T.qwen, "bad-dtype", dir, sizeof dir);
  t_patch_file(t_path_in(dir, "model.safetensors"), "\"model.norm.weight\":{\"dtype\":\"F32\"",
              "\"model.norm.weight\":{\"dtype\":\"I32\"");
  t_fails(1, "model.norm.weight", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  /* config.json: malformed, unknown model_type, missing. */
  t_clone_ckpt(T.qwen, "bad-config", dir, sizeof dir);
  t_write_file(t_path_in(dir, "config.json"), "{\"model_type\": \"qwen3\", \"hidden_size\": ", 40);
  t_fails(1, "config.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  t_clone_ckpt(T.qwen, "unknown-type", dir, sizeof dir);
  t_patch_file(t_path_in(dir, "config.json"), "\"qwen3\"", "\"gpt9\"");
  t_fails(1, "config.json", "gpt9", NULL, "run", "-m", dir, "-p", "hi", NULL);
  t_clone_ckpt(T.qwen, "no-config", dir, sizeof dir);
  assert_int_equal(unlink(t_path_in(dir, "config.json")), 0);
  t_fails(1, "config.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  /* tokenizer.json: missing, malformed. */
  t_clone_ckpt(T.qwen, "no-tokenizer", dir, sizeof dir);
  assert_int_equal(unlink(t_path_in(dir, "tokenizer.json")), 0);
  t_fails(1, "tokenizer.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  t_fails(1, "tokenizer.json", NULL, NULL, "tokenize", "-m", dir, "--text", "hi", NULL);
  t_fails(1, "tokenizer.json", NULL, NULL, "detokenize", "-m", dir, "--ids", "1,2", NULL);
  t_clone_ckpt(T.qwen, "bad-tokenizer", dir, sizeof dir);
  t_write_file(t_path_in(dir, "tokenizer.json"), "{\"model\": {\"type\": \"BPE\", \"vocab\": [", 36);
  t_fails(1, "tokenizer.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  t_fails(1, "tokenizer.json", NULL, NULL, "tokenize", "-m", dir, "--text", "hi", NULL);
}

static void test_bad_inputs(void **state) {
  (void)state;
  const char *q = T.qwen;
  char *missing = t_path_in(T.tmp, "no-such-file.txt");
  char *bad_utf8 = t_path_in(T.tmp, "bad-utf8.txt");
  t_write_file(bad_utf8, "ok \xC3\x28 \xFF end", 11);
  char *empty = t_path_in(T.tmp, "empty.txt");
  t_write_file(empty, "", 0);

  /* Prompts: longer than --ctx, longer than the default context (max_position_embeddings), empty, unreadable. */
  t_fails(1, "context", NULL, NULL, "run", "-m", q, "-p", "the cat and the dog sat on the mat in the house", "--ctx", "4",
         NULL);
  t_fails(1, "context", "ppl.txt", NULL, "run", "-m", q, "-f", t_path_in(T.tmp, "ppl.txt"), NULL);
  t_fails(1, "context", "<stdin>", t_ppl_text(), "run", "-m", q, "-p", "-", NULL);
  t_fails(1, "empty", NULL, NULL, "run", "-m", q, "-p", "", NULL);
  t_fails(1, "no-such-file.txt", NULL, NULL, "run", "-m", q, "-f", missing, NULL);
  t_fails(1, "bad-utf8.txt", NULL, NULL, "run", "-m", q, "-f", bad_utf8, NULL);
  t_fails(1, "bad-utf8.txt", NULL, NULL, "tokenize", "-m", q, "-f", bad_utf8, NULL);
  t_fails(1, "no-such-file.txt", NULL, NULL, "tokenize", "-m", q, "-f", missing, NULL);

  /* Perplexity: no file, empty text, a window past the model's positions. */
  t_fails(1, "no-such-file.txt", NULL, NULL, "perplexity", "-m", q, "-f", missing, NULL);
  t_fails(1, "empty.txt", NULL, NULL, "perplexity", "-m", q, "-f", empty, NULL);
  t_fails(1, "max_position_embeddings", NULL, NULL, "perplexity", "-m", q, "-f", t_path_in(T.tmp, "ppl.txt"), "--ctx",
         "1000", NULL);

  /* Ids out of the vocabulary. */
  t_fails(1, "tokenizer.json", "99999999", NULL, "detokenize", "-m", q, "--ids", "1,99999999", NULL);
}

static void test_bad_options(void **state) {
  (void)state;
  const char *q = T.qwen;
  static const char *const bad[][2] = {
      {"--temp", "abc"},     {"--temp", "-1"},         {"--temp", "nan"},        {"-n", "-5"},
      {"-n", "1x"},          {"--top-p", "0"},         {"--top-p", "1.5"},       {"--min-p", "2"},
      {"--top-k", "-1"},     {"--seed", "-1"},         {"--seed", "abc"},        {"-t", "abc"},
      {"--device", "tpu"},   {"--device", "cuda:x"},   {"--ctx", "0"},           {"--repeat-penalty", "0"},
      {"--presence-penalty", "3"}, {"--frequency-penalty", "x"}, {"--stop", ""}, {"--ctx", "99999999999"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    t_fails(2, bad[i][0], NULL, NULL, "run", "-m", q, "-p", "hi", bad[i][0], bad[i][1], NULL);
  t_fails(2, "--bogus", NULL, NULL, "run", "-m", q, "-p", "hi", "--bogus", NULL);
  t_fails(2, "--temp", NULL, NULL, "run", "-m", q, "-p", "hi", "--temp", NULL);
  t_fails(2, "extra", NULL, NULL, "run", "-m", q, "-p", "hi", "extra", NULL);
  t_fails(2, "-p", NULL, NULL, "run", "-m", q, NULL);
  t_fails(2, "-p", NULL, NULL, "run", "-m", q, "-p", "hi", "-f", "x.txt", NULL);
  t_fails(2, "--stop", NULL, NULL, "run", "-m", q, "-p", "hi", "--stop", "a", "--stop", "b", "--stop", "c", "--stop",
         "d", "--stop", "e", "--stop", "f", "--stop", "g", "--stop", "h", "--stop", "i", NULL);

  /* Environment fallbacks are checked like the options they stand for. */
  const char *env[][2] = {{"KILN_THREADS", "abc"}, {"KILN_DEVICE", "tpu"}, {"KILN_CTX", "0"}};
  for (size_t i = 0; i < 3; i++) {
    setenv(env[i][0], env[i][1], 1);
    t_fails(2, env[i][0], NULL, NULL, "run", "-m", q, "-p", "hi", NULL);
    unsetenv(env[i][0]);
  }

  t_fails(2, "--ids", NULL, NULL, "detokenize", "-m", q, "--ids", "1,x", NULL);
  t_fails(2, "--ids", NULL, NULL, "detokenize", "-m", q, "--ids", "-3", NULL);
  t_fails(2, "--ids", NULL, NULL, "detokenize", "-m", q, NULL);
  t_fails(2, "--text", NULL, NULL, "tokenize", "-m", q, NULL);
  t_fails(2, "--text", NULL, NULL, "tokenize", "-m", q, "--text", "a", "-f", "x.txt", NULL);
  t_fails(2, "-f", NULL, NULL, "perplexity", "-m", q, NULL);
  t_fails(2, "--ctx", NULL, NULL, "perplexity", "-m", q, "-f", "x.txt", "--ctx", "1", NULL);
  t_fails(2, "--windows", NULL, NULL, "perplexity", "-m", q, "-f", "x.txt", "--windows", "0", NULL);
}


int main(int argc, char **argv) {
  int rc = t_init(argc, argv);
  if (rc) return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_checkpoints),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_bad_options),
  };
  return cmocka_run_group_tests(tests, t_setup, t_teardown);
}
