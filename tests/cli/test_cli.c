/*
 * The kiln command-line tool, driven as a black box: the built binary (argv[1]) runs on small checkpoints written
 * here (tiny_ckpt.c), on the engine team's tests/data/tiny/ checkpoints and on the default model when they are
 * present, and on damaged copies for the bad-input cases. Every failure must be one line on stderr that names the
 * file and the problem, with exit status 1 (runtime) or 2 (usage), and no crash or sanitizer report: in the
 * ASan+UBSan build the binary under test is itself instrumented, so a leak or overflow on an error path fails here.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "proc.h"
#include "tiny_ckpt.h"

#define TIMEOUT_S 120
#define MAX_ARGS 64

static struct {
  const char *kiln;
  const char *src; /* source tree (KILN_SOURCE_DIR) */
  char tmp[512];
  char qwen[600], llama[600];
  tiny_info qi, li;
} G;

/* ---- helpers ----------------------------------------------------------------------------------------------- */

static char cmdline_[4096];

/* Runs kiln with the NULL-terminated arguments, `in` on stdin (NULL: none). */
static void kiln_v_(proc_result *r, const char *in, va_list ap) {
  char *argv[MAX_ARGS + 2];
  int n = 0;
  argv[n++] = (char *)G.kiln;
  size_t off = (size_t)snprintf(cmdline_, sizeof cmdline_, "kiln");
  const char *a;
  while ((a = va_arg(ap, const char *)) && n < MAX_ARGS) {
    argv[n++] = (char *)a;
    if (off < sizeof cmdline_) off += (size_t)snprintf(cmdline_ + off, sizeof cmdline_ - off, " '%s'", a);
  }
  argv[n] = NULL;
  assert_int_equal(proc_run(r, in, in ? strlen(in) : 0, TIMEOUT_S, argv), 0);
}

static void kiln_(proc_result *r, const char *in, ...) {
  va_list ap;
  va_start(ap, in);
  kiln_v_(r, in, ap);
  va_end(ap);
}

static void dump_(const proc_result *r) {
  fprintf(stderr, "  command: %s\n  status: %d%s%s\n  stdout: %.2000s\n  stderr: %.4000s\n", cmdline_, r->status,
          r->signaled ? " (signal)" : "", r->timed_out ? " (timed out)" : "", r->out, r->err);
}

#define CHECK(r, cond)                                                          \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "check failed: %s\n", #cond);                             \
      dump_(r);                                                                 \
      fail();                                                                   \
    }                                                                           \
  } while (0)

static void expect_ok_(const proc_result *r) {
  CHECK(r, !r->signaled && !r->timed_out);
  CHECK(r, r->status == 0);
  CHECK(r, !strstr(r->err, "Sanitizer") && !strstr(r->err, "runtime error"));
}

/* A failure as the contract has it: status `code`, exactly one line on stderr starting "kiln", naming each needle. */
static void expect_fail_(const proc_result *r, int code, const char *needle1, const char *needle2) {
  CHECK(r, !r->signaled && !r->timed_out);
  CHECK(r, r->status == code);
  CHECK(r, r->err_len > 0 && r->err[r->err_len - 1] == '\n');
  CHECK(r, memchr(r->err, '\n', r->err_len) == r->err + r->err_len - 1);
  CHECK(r, strncmp(r->err, "kiln", 4) == 0);
  CHECK(r, !needle1 || strstr(r->err, needle1));
  CHECK(r, !needle2 || strstr(r->err, needle2));
  CHECK(r, r->out_len == 0);
}

/* Runs kiln and expects the failure described above. */
static void fails_(int code, const char *needle1, const char *needle2, const char *in, ...) {
  proc_result r;
  va_list ap;
  va_start(ap, in);
  kiln_v_(&r, in, ap);
  va_end(ap);
  expect_fail_(&r, code, needle1, needle2);
  proc_result_free(&r);
}

static json_t *parse_json_line_(const proc_result *r) {
  CHECK(r, r->out_len > 0 && r->out[r->out_len - 1] == '\n');
  CHECK(r, memchr(r->out, '\n', r->out_len) == r->out + r->out_len - 1);
  json_error_t e;
  json_t *v = json_loadb(r->out, r->out_len, 0, &e);
  CHECK(r, v != NULL);
  return v;
}

static void write_file_(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static char *read_file_(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n >= 0);
  rewind(f);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = 0;
  fclose(f);
  if (len) *len = (size_t)n;
  return buf;
}

static void copy_file_(const char *from, const char *to) {
  size_t n;
  char *d = read_file_(from, &n);
  write_file_(to, d, n);
  free(d);
}

/* A copy of checkpoint `src` in G.tmp/<name> (config, generation config, weights, tokenizer). */
static const char *clone_ckpt_(const char *src, const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", G.tmp, name);
  assert_int_equal(mkdir(out, 0755), 0);
  const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/%s", src, files[i]);
    snprintf(b, sizeof b, "%s/%s", out, files[i]);
    copy_file_(a, b);
  }
  return out;
}

static char *path_in_(const char *dir, const char *name) {
  static char buf[4][4096];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

/* The ids `kiln tokenize` prints for `text` (malloc'd). */
static int32_t *tokenize_(const char *model, const char *text, size_t *n) {
  proc_result r;
  kiln_(&r, NULL, "tokenize", "-m", model, "--text", text, NULL);
  expect_ok_(&r);
  json_t *arr = parse_json_line_(&r);
  CHECK(&r, json_is_array(arr));
  *n = json_array_size(arr);
  int32_t *ids = malloc((*n + 1) * sizeof *ids);
  assert_non_null(ids);
  for (size_t i = 0; i < *n; i++) {
    CHECK(&r, json_is_integer(json_array_get(arr, i)));
    ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
  }
  json_decref(arr);
  proc_result_free(&r);
  return ids;
}

static char *ids_csv_(const int32_t *ids, size_t n) {
  char *s = malloc(n * 12 + 1);
  assert_non_null(s);
  size_t off = 0;
  s[0] = 0;
  for (size_t i = 0; i < n; i++) off += (size_t)sprintf(s + off, i ? ",%d" : "%d", ids[i]);
  return s;
}

/* ---- help, version, dispatch ------------------------------------------------------------------------------- */

static void test_help_version(void **state) {
  (void)state;
  proc_result r;
  kiln_(&r, NULL, "--help", NULL);
  expect_ok_(&r);
  const char *cmds[] = {"run", "tokenize", "detokenize", "perplexity", "KILN_MODEL", "exit status"};
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) CHECK(&r, strstr(r.out, cmds[i]));
  proc_result_free(&r);

  kiln_(&r, NULL, "--version", NULL);
  expect_ok_(&r);
  CHECK(&r, strncmp(r.out, "kiln " KILN_TEST_VERSION, strlen("kiln " KILN_TEST_VERSION)) == 0);
  proc_result_free(&r);

  const char *with_opts[][2] = {{"run", "--temp"}, {"tokenize", "--text"}, {"detokenize", "--ids"},
                                {"perplexity", "--windows"}};
  for (size_t i = 0; i < 4; i++) {
    kiln_(&r, NULL, with_opts[i][0], "--help", NULL);
    expect_ok_(&r);
    CHECK(&r, strstr(r.out, with_opts[i][1]) && strstr(r.out, "usage: kiln"));
    proc_result_free(&r);
    kiln_(&r, NULL, "help", with_opts[i][0], NULL);
    expect_ok_(&r);
    CHECK(&r, strstr(r.out, with_opts[i][1]));
    proc_result_free(&r);
  }

  fails_(2, "no command", NULL, NULL, NULL);
  fails_(2, "frobnicate", NULL, NULL, "frobnicate", NULL);
  fails_(2, "--bogus", NULL, NULL, "--bogus", NULL);
  fails_(2, "frobnicate", NULL, NULL, "help", "frobnicate", NULL);
}

/* ---- tokenize / detokenize --------------------------------------------------------------------------------- */

static const char *const texts_[] = {
    "the cat and the dog",
    "Hello, world! 1234567 + 3.14159",
    "  leading and trailing spaces   \tand\ttabs\r\nCRLF line\n\n",
    "h\xC3\xA9llo w\xC3\xB6rld \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82 "
    "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 \xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7",
    "text with <|endoftext|> inside",
};

static void roundtrip_(const char *model) {
  for (size_t i = 0; i < sizeof texts_ / sizeof *texts_; i++) {
    size_t n;
    int32_t *ids = tokenize_(model, texts_[i], &n);
    assert_true(n > 0);
    char *csv = ids_csv_(ids, n);
    proc_result r;
    kiln_(&r, NULL, "detokenize", "-m", model, "--ids", csv, NULL);
    expect_ok_(&r);
    CHECK(&r, r.out_len == strlen(texts_[i]) && memcmp(r.out, texts_[i], r.out_len) == 0);
    proc_result_free(&r);
    free(csv);
    free(ids);
  }
}

static void test_tokenize_roundtrip(void **state) {
  (void)state;
  roundtrip_(G.qwen);
  roundtrip_(G.llama);
  /* -m may name the tokenizer.json itself. */
  roundtrip_(path_in_(G.qwen, "tokenizer.json"));

  /* The special token is one id, and the merges apply ("the" is one token after " "). */
  size_t n;
  int32_t *ids = tokenize_(G.qwen, "<|endoftext|>", &n);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], G.qi.eos_id);
  free(ids);
  ids = tokenize_(G.qwen, " the", &n);
  assert_int_equal(n, 1);
  free(ids);

  /* -f FILE and stdin give what --text gives; the output of tokenize feeds detokenize --ids -. */
  const char *text = texts_[3];
  char *file = path_in_(G.tmp, "tok.txt");
  write_file_(file, text, strlen(text));
  proc_result a, b, c, d;
  kiln_(&a, NULL, "tokenize", "-m", G.qwen, "--text", text, NULL);
  kiln_(&b, NULL, "tokenize", "-m", G.qwen, "-f", file, NULL);
  kiln_(&c, text, "tokenize", "-m", G.qwen, "-f", "-", NULL);
  expect_ok_(&a);
  expect_ok_(&b);
  expect_ok_(&c);
  CHECK(&b, strcmp(a.out, b.out) == 0);
  CHECK(&c, strcmp(a.out, c.out) == 0);
  kiln_(&d, a.out, "detokenize", "-m", G.qwen, "--ids", "-", NULL);
  expect_ok_(&d);
  CHECK(&d, strcmp(d.out, text) == 0);
  proc_result_free(&a);
  proc_result_free(&b);
  proc_result_free(&c);
  proc_result_free(&d);

  /* KILN_MODEL stands in for -m. */
  kiln_(&b, NULL, "tokenize", "-m", G.llama, "--text", "the cat", NULL);
  setenv("KILN_MODEL", G.llama, 1);
  kiln_(&a, NULL, "tokenize", "--text", "the cat", NULL);
  unsetenv("KILN_MODEL");
  expect_ok_(&a);
  expect_ok_(&b);
  CHECK(&a, strcmp(a.out, b.out) == 0);
  proc_result_free(&a);
  proc_result_free(&b);
}

/* The genuine Qwen3 tokenizer (fetched by scripts/deps.sh), when present: known ids and round trips. */
static void test_tokenize_qwen3(void **state) {
  (void)state;
  char *path = path_in_(G.src, "third_party/qwen3/tokenizer.json");
  if (access(path, R_OK) != 0) skip();
  size_t n;
  int32_t *ids = tokenize_(path, "Hello world", &n);
  assert_int_equal(n, 2);
  assert_int_equal(ids[0], 9707);
  assert_int_equal(ids[1], 1879);
  free(ids);
  ids = tokenize_(path, "<|im_start|>user", &n);
  assert_true(n >= 2);
  assert_int_equal(ids[0], 151644);
  free(ids);
  roundtrip_(path);
}

/* ---- run --------------------------------------------------------------------------------------------------- */

typedef struct gen_ {
  json_t *v;
  const char *text;
  size_t text_len;
  int32_t ids[512];
  size_t n_ids;
  int prompt_tokens, completion_tokens;
} gen_;

/* `kiln run ... --json -q` with the given extra arguments; checks the JSON line's fields and types. */
static void run_json_(gen_ *g, const char *model, const char *in, ...) {
  char *argv_extra[MAX_ARGS];
  int n = 0;
  va_list ap;
  va_start(ap, in);
  const char *a;
  while ((a = va_arg(ap, const char *)) && n < MAX_ARGS - 8) argv_extra[n++] = (char *)a;
  va_end(ap);
  char *argv[MAX_ARGS + 2];
  int k = 0;
  argv[k++] = (char *)G.kiln;
  argv[k++] = "run";
  argv[k++] = "-m";
  argv[k++] = (char *)model;
  argv[k++] = "--json";
  argv[k++] = "-q";
  for (int i = 0; i < n; i++) argv[k++] = argv_extra[i];
  argv[k] = NULL;
  snprintf(cmdline_, sizeof cmdline_, "kiln run -m %s --json -q ...", model);
  proc_result r;
  assert_int_equal(proc_run(&r, in, in ? strlen(in) : 0, TIMEOUT_S, argv), 0);
  expect_ok_(&r);
  CHECK(&r, r.err_len == 0); /* -q: nothing on stderr */
  json_t *v = parse_json_line_(&r);
  const char *keys[] = {"text", "ids", "prompt_tokens", "completion_tokens", "ttft_ms", "tpot_ms", "tok_s"};
  for (size_t i = 0; i < 7; i++) CHECK(&r, json_object_get(v, keys[i]));
  CHECK(&r, json_object_size(v) == 7);
  CHECK(&r, json_is_string(json_object_get(v, "text")) && json_is_array(json_object_get(v, "ids")));
  CHECK(&r, json_is_integer(json_object_get(v, "prompt_tokens")));
  CHECK(&r, json_is_integer(json_object_get(v, "completion_tokens")));
  CHECK(&r, json_is_number(json_object_get(v, "ttft_ms")) && json_number_value(json_object_get(v, "ttft_ms")) > 0);
  CHECK(&r, json_is_number(json_object_get(v, "tpot_ms")) && json_number_value(json_object_get(v, "tpot_ms")) >= 0);
  CHECK(&r, json_is_number(json_object_get(v, "tok_s")) && json_number_value(json_object_get(v, "tok_s")) >= 0);
  g->v = v;
  g->text = json_string_value(json_object_get(v, "text"));
  g->text_len = json_string_length(json_object_get(v, "text"));
  json_t *ids = json_object_get(v, "ids");
  g->n_ids = json_array_size(ids);
  CHECK(&r, g->n_ids <= 512);
  for (size_t i = 0; i < g->n_ids; i++) {
    json_t *x = json_array_get(ids, i);
    CHECK(&r, json_is_integer(x));
    g->ids[i] = (int32_t)json_integer_value(x);
  }
  g->prompt_tokens = (int)json_integer_value(json_object_get(v, "prompt_tokens"));
  g->completion_tokens = (int)json_integer_value(json_object_get(v, "completion_tokens"));
  CHECK(&r, (size_t)g->completion_tokens == g->n_ids);
  proc_result_free(&r);
}

static bool same_ids_(const gen_ *a, const gen_ *b) {
  return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * sizeof *a->ids) == 0;
}

static void run_fields_(const char *model, const tiny_info *info) {
  const char *prompt = "the cat and the dog";
  size_t n_prompt;
  int32_t *pids = tokenize_(model, prompt, &n_prompt);
  free(pids);
  gen_ g;
  run_json_(&g, model, NULL, "-p", prompt, "-n", "12", "--ignore-eos", "--temp", "0.9", "--seed", "7", NULL);
  assert_int_equal(g.completion_tokens, 12);
  /* Llama's tokenizer puts <|begin_of_text|> first (its post-processor): run does too, tokenize does not. */
  assert_int_equal(g.prompt_tokens, (int)n_prompt + (info->bos_id >= 0 ? 1 : 0));
  for (size_t i = 0; i < g.n_ids; i++) assert_true(g.ids[i] >= 0 && g.ids[i] < info->n_vocab);

  /* The text is what the ids decode to. */
  char *csv = ids_csv_(g.ids, g.n_ids);
  proc_result r;
  kiln_(&r, NULL, "detokenize", "-m", model, "--ids", csv, NULL);
  expect_ok_(&r);
  CHECK(&r, r.out_len == g.text_len && memcmp(r.out, g.text, g.text_len) == 0);
  proc_result_free(&r);
  free(csv);

  /* Same seed, same tokens; another seed, other tokens. */
  gen_ g2, g3;
  run_json_(&g2, model, NULL, "-p", prompt, "-n", "12", "--ignore-eos", "--temp", "0.9", "--seed", "7", NULL);
  assert_true(same_ids_(&g, &g2));
  run_json_(&g3, model, NULL, "-p", prompt, "-n", "12", "--ignore-eos", "--temp", "0.9", "--seed", "8", NULL);
  assert_false(same_ids_(&g, &g3));
  json_decref(g.v);
  json_decref(g2.v);
  json_decref(g3.v);

  /* Greedy is the same on 1 and 2 threads, and on the prompt from -p, -f and stdin. */
  char *file = path_in_(G.tmp, "prompt.txt");
  write_file_(file, prompt, strlen(prompt));
  gen_ a, b, c, d;
  run_json_(&a, model, NULL, "-p", prompt, "-n", "16", "--ignore-eos", "-t", "1", NULL);
  run_json_(&b, model, NULL, "-p", prompt, "-n", "16", "--ignore-eos", "-t", "2", NULL);
  run_json_(&c, model, NULL, "-f", file, "-n", "16", "--ignore-eos", NULL);
  run_json_(&d, model, prompt, "-p", "-", "-n", "16", "--ignore-eos", NULL);
  assert_int_equal(a.n_ids, 16);
  assert_true(same_ids_(&a, &b));
  assert_true(same_ids_(&a, &c));
  assert_true(same_ids_(&a, &d));

  /* Without --json the streamed text is the whole text, and the timings are on stderr. */
  kiln_(&r, NULL, "run", "-m", model, "-p", prompt, "-n", "16", "--ignore-eos", NULL);
  expect_ok_(&r);
  CHECK(&r, r.out_len == a.text_len && memcmp(r.out, a.text, a.text_len) == 0);
  CHECK(&r, strstr(r.err, "TTFT") && strstr(r.err, "tok/s"));
  proc_result_free(&r);

  /* A stop string ends the text before its first occurrence (pick two printable ASCII bytes of the text). */
  for (size_t i = 1; i + 2 <= a.text_len; i++) {
    unsigned char x = (unsigned char)a.text[i], y = (unsigned char)a.text[i + 1];
    if (x > 32 && x < 127 && y > 32 && y < 127) {
      char stop[3] = {(char)x, (char)y, 0};
      const char *first = strstr(a.text, stop);
      gen_ s;
      run_json_(&s, model, NULL, "-p", prompt, "-n", "16", "--ignore-eos", "--stop", stop, NULL);
      assert_int_equal(s.text_len, (size_t)(first - a.text));
      assert_memory_equal(s.text, a.text, s.text_len);
      assert_true(s.n_ids <= a.n_ids);
      json_decref(s.v);
      break;
    }
  }
  json_decref(a.v);
  json_decref(b.v);
  json_decref(c.v);
  json_decref(d.v);
}

static void test_run_qwen3(void **state) {
  (void)state;
  run_fields_(G.qwen, &G.qi);
}

static void test_run_llama(void **state) {
  (void)state;
  run_fields_(G.llama, &G.li);
  /* --no-bos drops the BOS the tokenizer would add. */
  size_t n;
  free(tokenize_(G.llama, "the cat", &n));
  gen_ g;
  run_json_(&g, G.llama, NULL, "-p", "the cat", "-n", "2", "--no-bos", NULL);
  assert_int_equal(g.prompt_tokens, (int)n);
  json_decref(g.v);
}

/* Generation up to the end of the context stops there (finish "length"), no further. */
static void test_run_context_full(void **state) {
  (void)state;
  gen_ g;
  run_json_(&g, G.qwen, NULL, "-p", "the cat", "-n", "0", "--ignore-eos", "--ctx", "12", NULL);
  assert_true(g.prompt_tokens + g.completion_tokens <= 13);
  assert_true(g.completion_tokens >= 9);
  json_decref(g.v);
}

/* ---- perplexity -------------------------------------------------------------------------------------------- */

static const char *ppl_text_(void) {
  static char buf[8192];
  if (!buf[0]) {
    const char *words[] = {"the", "cat", "and", "dog", "sat", "on", "mat", "in", "house", "we", "ran", "out"};
    size_t off = 0;
    uint32_t x = 12345;
    while (off < 3000) {
      x = x * 1103515245u + 12345u;
      off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", words[(x >> 16) % 12], (x >> 8) % 7 ? " " : ". ");
    }
  }
  return buf;
}

static json_t *ppl_json_(const char *model, const char *file, const char *ctx, const char *windows) {
  proc_result r;
  if (windows) kiln_(&r, NULL, "perplexity", "-m", model, "-f", file, "--ctx", ctx, "--windows", windows, "--json", "-q", NULL);
  else kiln_(&r, NULL, "perplexity", "-m", model, "-f", file, "--ctx", ctx, "--json", "-q", NULL);
  expect_ok_(&r);
  json_t *v = parse_json_line_(&r);
  CHECK(&r, json_object_size(v) == 4);
  CHECK(&r, json_is_integer(json_object_get(v, "tokens")));
  CHECK(&r, json_is_number(json_object_get(v, "nll")) && json_is_number(json_object_get(v, "ppl")));
  CHECK(&r, json_is_number(json_object_get(v, "bpb")));
  double nll = json_number_value(json_object_get(v, "nll")), ppl = json_number_value(json_object_get(v, "ppl"));
  CHECK(&r, nll > 0 && fabs(ppl - exp(nll)) <= 1e-9 * ppl);
  CHECK(&r, json_number_value(json_object_get(v, "bpb")) > 0);
  proc_result_free(&r);
  return v;
}

static void test_perplexity(void **state) {
  (void)state;
  const char *text = ppl_text_();
  char *file = path_in_(G.tmp, "ppl.txt");
  write_file_(file, text, strlen(text));
  size_t n;
  int32_t *ids = tokenize_(G.qwen, text, &n);
  free(ids);
  assert_true(n > 3 * 32);

  json_t *all = ppl_json_(G.qwen, file, "32", NULL);
  assert_int_equal(json_integer_value(json_object_get(all, "tokens")), (json_int_t)((n / 32) * 31));
  json_t *two = ppl_json_(G.qwen, file, "32", "2");
  assert_int_equal(json_integer_value(json_object_get(two, "tokens")), 62);
  json_t *two_again = ppl_json_(G.qwen, file, "32", "2");
  assert_true(json_number_value(json_object_get(two, "nll")) == json_number_value(json_object_get(two_again, "nll")));
  /* A text shorter than the window is one window of all its tokens. */
  const char *short_text = "the cat sat on the mat";
  char *short_file = path_in_(G.tmp, "ppl-short.txt");
  write_file_(short_file, short_text, strlen(short_text));
  ids = tokenize_(G.llama, short_text, &n);
  free(ids);
  json_t *one = ppl_json_(G.llama, short_file, "64", NULL);
  assert_int_equal(json_integer_value(json_object_get(one, "tokens")), (json_int_t)n - 1);
  json_decref(one);
  json_decref(all);
  json_decref(two);
  json_decref(two_again);

  proc_result r;
  kiln_(&r, NULL, "perplexity", "-m", G.qwen, "-f", file, "--ctx", "64", NULL);
  expect_ok_(&r);
  CHECK(&r, strstr(r.out, "perplexity") && strstr(r.out, "bits/byte"));
  proc_result_free(&r);
}

/* ---- bad input --------------------------------------------------------------------------------------------- */

/* Replaces the first occurrence of `from` in `path` by `to`. */
static void patch_file_(const char *path, const char *from, const char *to) {
  size_t n;
  char *d = read_file_(path, &n);
  char *at = memmem(d, n, from, strlen(from));
  assert_non_null(at);
  size_t head = (size_t)(at - d), fl = strlen(from), tl = strlen(to);
  char *out = malloc(n - fl + tl);
  assert_non_null(out);
  memcpy(out, d, head);
  memcpy(out + head, to, tl);
  memcpy(out + head + tl, at + fl, n - head - fl);
  write_file_(path, out, n - fl + tl);
  free(out);
  free(d);
}

static void test_bad_checkpoints(void **state) {
  (void)state;
  char dir[1200];
  /* The checkpoint directory itself. */
  fails_(1, "no-such-dir", NULL, NULL, "run", "-m", path_in_(G.tmp, "no-such-dir"), "-p", "hi", NULL);
  fails_(1, "not a directory", NULL, NULL, "run", "-m", path_in_(G.qwen, "config.json"), "-p", "hi", NULL);
  setenv("KILN_MODEL", path_in_(G.tmp, "no-such-dir"), 1);
  fails_(1, "no-such-dir", NULL, NULL, "run", "-p", "hi", NULL);
  unsetenv("KILN_MODEL");

  /* Weights: missing, truncated, a header shorter than its length field, a header length past the file. */
  clone_ckpt_(G.qwen, "no-weights", dir, sizeof dir);
  assert_int_equal(unlink(path_in_(dir, "model.safetensors")), 0);
  fails_(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  clone_ckpt_(G.qwen, "truncated", dir, sizeof dir);
  struct stat st;
  assert_int_equal(stat(path_in_(dir, "model.safetensors"), &st), 0);
  assert_int_equal(truncate(path_in_(dir, "model.safetensors"), st.st_size / 2), 0);
  fails_(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  fails_(1, "model.safetensors", NULL, NULL, "perplexity", "-m", dir, "-f", path_in_(G.tmp, "ppl.txt"), NULL);

  clone_ckpt_(G.qwen, "tiny-file", dir, sizeof dir);
  write_file_(path_in_(dir, "model.safetensors"), "\x10\0\0\0", 4);
  fails_(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  clone_ckpt_(G.qwen, "huge-header", dir, sizeof dir);
  {
    int fd = open(path_in_(dir, "model.safetensors"), O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff\xff\xff\xff\xff\x00\x00\x00", 8, 0), 8);
    close(fd);
  }
  fails_(1, "model.safetensors", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  /* A tensor whose shape or dtype disagrees with the config. */
  clone_ckpt_(G.qwen, "bad-shape", dir, sizeof dir);
  patch_file_(path_in_(dir, "model.safetensors"), "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[64]",
              "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[32]");
  fails_(1, "model.norm.weight", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  clone_ckpt_(G.qwen, "bad-dtype", dir, sizeof dir);
  patch_file_(path_in_(dir, "model.safetensors"), "\"model.norm.weight\":{\"dtype\":\"F32\"",
              "\"model.norm.weight\":{\"dtype\":\"I32\"");
  fails_(1, "model.norm.weight", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  /* config.json: malformed, unknown model_type, missing. */
  clone_ckpt_(G.qwen, "bad-config", dir, sizeof dir);
  write_file_(path_in_(dir, "config.json"), "{\"model_type\": \"qwen3\", \"hidden_size\": ", 40);
  fails_(1, "config.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  clone_ckpt_(G.qwen, "unknown-type", dir, sizeof dir);
  patch_file_(path_in_(dir, "config.json"), "\"qwen3\"", "\"gpt9\"");
  fails_(1, "config.json", "gpt9", NULL, "run", "-m", dir, "-p", "hi", NULL);
  clone_ckpt_(G.qwen, "no-config", dir, sizeof dir);
  assert_int_equal(unlink(path_in_(dir, "config.json")), 0);
  fails_(1, "config.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);

  /* tokenizer.json: missing, malformed. */
  clone_ckpt_(G.qwen, "no-tokenizer", dir, sizeof dir);
  assert_int_equal(unlink(path_in_(dir, "tokenizer.json")), 0);
  fails_(1, "tokenizer.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  fails_(1, "tokenizer.json", NULL, NULL, "tokenize", "-m", dir, "--text", "hi", NULL);
  fails_(1, "tokenizer.json", NULL, NULL, "detokenize", "-m", dir, "--ids", "1,2", NULL);
  clone_ckpt_(G.qwen, "bad-tokenizer", dir, sizeof dir);
  write_file_(path_in_(dir, "tokenizer.json"), "{\"model\": {\"type\": \"BPE\", \"vocab\": [", 36);
  fails_(1, "tokenizer.json", NULL, NULL, "run", "-m", dir, "-p", "hi", NULL);
  fails_(1, "tokenizer.json", NULL, NULL, "tokenize", "-m", dir, "--text", "hi", NULL);
}

static void test_bad_inputs(void **state) {
  (void)state;
  const char *q = G.qwen;
  char *missing = path_in_(G.tmp, "no-such-file.txt");
  char *bad_utf8 = path_in_(G.tmp, "bad-utf8.txt");
  write_file_(bad_utf8, "ok \xC3\x28 \xFF end", 11);
  char *empty = path_in_(G.tmp, "empty.txt");
  write_file_(empty, "", 0);

  /* Prompts: longer than --ctx, longer than the default context (max_position_embeddings), empty, unreadable. */
  fails_(1, "context", NULL, NULL, "run", "-m", q, "-p", "the cat and the dog sat on the mat in the house", "--ctx", "4",
         NULL);
  fails_(1, "context", "ppl.txt", NULL, "run", "-m", q, "-f", path_in_(G.tmp, "ppl.txt"), NULL);
  fails_(1, "context", "<stdin>", ppl_text_(), "run", "-m", q, "-p", "-", NULL);
  fails_(1, "empty", NULL, NULL, "run", "-m", q, "-p", "", NULL);
  fails_(1, "no-such-file.txt", NULL, NULL, "run", "-m", q, "-f", missing, NULL);
  fails_(1, "bad-utf8.txt", NULL, NULL, "run", "-m", q, "-f", bad_utf8, NULL);
  fails_(1, "bad-utf8.txt", NULL, NULL, "tokenize", "-m", q, "-f", bad_utf8, NULL);
  fails_(1, "no-such-file.txt", NULL, NULL, "tokenize", "-m", q, "-f", missing, NULL);

  /* Perplexity: no file, empty text, a window past the model's positions. */
  fails_(1, "no-such-file.txt", NULL, NULL, "perplexity", "-m", q, "-f", missing, NULL);
  fails_(1, "empty.txt", NULL, NULL, "perplexity", "-m", q, "-f", empty, NULL);
  fails_(1, "max_position_embeddings", NULL, NULL, "perplexity", "-m", q, "-f", path_in_(G.tmp, "ppl.txt"), "--ctx",
         "1000", NULL);

  /* Ids out of the vocabulary. */
  fails_(1, "tokenizer.json", "99999999", NULL, "detokenize", "-m", q, "--ids", "1,99999999", NULL);
}

static void test_bad_options(void **state) {
  (void)state;
  const char *q = G.qwen;
  static const char *const bad[][2] = {
      {"--temp", "abc"},     {"--temp", "-1"},         {"--temp", "nan"},        {"-n", "-5"},
      {"-n", "1x"},          {"--top-p", "0"},         {"--top-p", "1.5"},       {"--min-p", "2"},
      {"--top-k", "-1"},     {"--seed", "-1"},         {"--seed", "abc"},        {"-t", "abc"},
      {"--device", "tpu"},   {"--device", "cuda:x"},   {"--ctx", "0"},           {"--repeat-penalty", "0"},
      {"--presence-penalty", "3"}, {"--frequency-penalty", "x"}, {"--stop", ""}, {"--ctx", "99999999999"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    fails_(2, bad[i][0], NULL, NULL, "run", "-m", q, "-p", "hi", bad[i][0], bad[i][1], NULL);
  fails_(2, "--bogus", NULL, NULL, "run", "-m", q, "-p", "hi", "--bogus", NULL);
  fails_(2, "--temp", NULL, NULL, "run", "-m", q, "-p", "hi", "--temp", NULL);
  fails_(2, "extra", NULL, NULL, "run", "-m", q, "-p", "hi", "extra", NULL);
  fails_(2, "-p", NULL, NULL, "run", "-m", q, NULL);
  fails_(2, "-p", NULL, NULL, "run", "-m", q, "-p", "hi", "-f", "x.txt", NULL);
  fails_(2, "--stop", NULL, NULL, "run", "-m", q, "-p", "hi", "--stop", "a", "--stop", "b", "--stop", "c", "--stop",
         "d", "--stop", "e", "--stop", "f", "--stop", "g", "--stop", "h", "--stop", "i", NULL);

  /* Environment fallbacks are checked like the options they stand for. */
  const char *env[][2] = {{"KILN_THREADS", "abc"}, {"KILN_DEVICE", "tpu"}, {"KILN_CTX", "0"}};
  for (size_t i = 0; i < 3; i++) {
    setenv(env[i][0], env[i][1], 1);
    fails_(2, env[i][0], NULL, NULL, "run", "-m", q, "-p", "hi", NULL);
    unsetenv(env[i][0]);
  }

  fails_(2, "--ids", NULL, NULL, "detokenize", "-m", q, "--ids", "1,x", NULL);
  fails_(2, "--ids", NULL, NULL, "detokenize", "-m", q, "--ids", "-3", NULL);
  fails_(2, "--ids", NULL, NULL, "detokenize", "-m", q, NULL);
  fails_(2, "--text", NULL, NULL, "tokenize", "-m", q, NULL);
  fails_(2, "--text", NULL, NULL, "tokenize", "-m", q, "--text", "a", "-f", "x.txt", NULL);
  fails_(2, "-f", NULL, NULL, "perplexity", "-m", q, NULL);
  fails_(2, "--ctx", NULL, NULL, "perplexity", "-m", q, "-f", "x.txt", "--ctx", "1", NULL);
  fails_(2, "--windows", NULL, NULL, "perplexity", "-m", q, "-f", "x.txt", "--windows", "0", NULL);
}

/* ---- shipped models ---------------------------------------------------------------------------------------- */

static bool is_ckpt_(const char *dir) {
  return access(path_in_(dir, "config.json"), R_OK) == 0 && access(path_in_(dir, "tokenizer.json"), R_OK) == 0;
}

static void smoke_(const char *model) {
  gen_ g;
  run_json_(&g, model, NULL, "-p", "In the beginning", "-n", "8", "--ignore-eos", NULL);
  assert_int_equal(g.completion_tokens, 8);
  json_decref(g.v);
  roundtrip_(model);
  char *file = path_in_(G.tmp, "smoke.txt");
  write_file_(file, ppl_text_(), strlen(ppl_text_()));
  json_t *v = ppl_json_(model, file, "64", "2");
  json_decref(v);
}

/* The checkpoint's golden.json (tools/make_tiny_models.py, recorded with transformers, model upcast to f32): the
 * CLI must give the same token ids for tests/data/tiny/eval.txt, the same perplexities (relative error <= 1e-5)
 * and the same greedy continuations. */
static void golden_(const char *dir) {
  json_error_t e;
  json_t *g = json_load_file(path_in_(dir, "golden.json"), 0, &e);
  if (!g) return;
  char eval[1500];
  snprintf(eval, sizeof eval, "%s/tests/data/tiny/eval.txt", G.src);
  proc_result r;
  if (json_object_get(g, "text_ids") && access(eval, R_OK) == 0) {
    kiln_(&r, NULL, "tokenize", "-m", dir, "-f", eval, NULL);
    expect_ok_(&r);
    json_t *ids = parse_json_line_(&r);
    CHECK(&r, json_equal(ids, json_object_get(g, "text_ids")));
    json_decref(ids);
    proc_result_free(&r);

    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(g, "perplexity"), i, p) {
      char ctx[32], win[32];
      snprintf(ctx, sizeof ctx, "%d", (int)json_integer_value(json_object_get(p, "ctx")));
      snprintf(win, sizeof win, "%d", (int)json_integer_value(json_object_get(p, "windows")));
      json_t *v = ppl_json_(dir, eval, ctx, strcmp(win, "0") ? win : NULL);
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
    char *csv = ids_csv_(ids, np);
    free(ids);
    kiln_(&r, NULL, "detokenize", "-m", dir, "--ids", csv, NULL);
    free(csv);
    expect_ok_(&r);
    /* The CLI takes text: use the prompt only when its text encodes back to the same ids. */
    size_t n2;
    int32_t *back = tokenize_(dir, r.out, &n2);
    bool same = n2 == np;
    for (size_t k = 0; same && k < np; k++) same = back[k] == json_integer_value(json_array_get(pids, k));
    free(back);
    if (same) {
      char n[32];
      snprintf(n, sizeof n, "%zu", json_array_size(want));
      gen_ out;
      run_json_(&out, dir, NULL, "-p", r.out, "-n", n, "--ignore-eos", "--no-bos", NULL);
      assert_int_equal(out.prompt_tokens, (int)np);
      assert_int_equal(out.n_ids, json_array_size(want));
      for (size_t k = 0; k < out.n_ids; k++) assert_int_equal(out.ids[k], json_integer_value(json_array_get(want, k)));
      json_decref(out.v);
    }
    proc_result_free(&r);
  }
  json_decref(g);
}

/* The engine team's tiny checkpoints (tests/data/tiny/<name>/) and the embedded default model, when present. */
static void test_shipped_models(void **state) {
  (void)state;
  int found = 0;
  char base[1200];
  snprintf(base, sizeof base, "%s/tests/data/tiny", G.src);
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
  snprintf(def, sizeof def, "%s/models/default", G.src);
  if (is_ckpt_(def)) {
    found++;
    /* No -m and no KILN_MODEL: the embedded default model. */
    proc_result r;
    kiln_(&r, NULL, "run", "-p", "In the beginning", "-n", "8", "--ignore-eos", "--json", "-q", NULL);
    expect_ok_(&r);
    json_t *v = parse_json_line_(&r);
    CHECK(&r, json_integer_value(json_object_get(v, "completion_tokens")) == 8);
    json_decref(v);
    proc_result_free(&r);
    smoke_(def);
  }
  if (!found) skip();
}

/* ---- fixture ----------------------------------------------------------------------------------------------- */

static int rm_entry_(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int setup_(void **state) {
  (void)state;
  const char *tmpdir = getenv("TMPDIR");
  snprintf(G.tmp, sizeof G.tmp, "%s/kiln-cli-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
  if (!mkdtemp(G.tmp)) {
    perror("mkdtemp");
    return -1;
  }
  snprintf(G.qwen, sizeof G.qwen, "%s/qwen3", G.tmp);
  snprintf(G.llama, sizeof G.llama, "%s/llama", G.tmp);
  if (tiny_ckpt_write(G.qwen, TINY_QWEN3, &G.qi) || tiny_ckpt_write(G.llama, TINY_LLAMA, &G.li)) return -1;
  /* Written here so the bad-input cases can point at it in any order. */
  FILE *f = fopen(path_in_(G.tmp, "ppl.txt"), "wb");
  if (!f || fputs(ppl_text_(), f) < 0 || fclose(f)) return -1;
  return 0;
}

static int teardown_(void **state) {
  (void)state;
  if (getenv("KILN_TEST_KEEP")) fprintf(stderr, "kept %s\n", G.tmp);
  else nftw(G.tmp, rm_entry_, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-KILN\n", argv[0]);
    return 2;
  }
  G.kiln = argv[1];
  G.src = getenv("KILN_SOURCE_DIR") ? getenv("KILN_SOURCE_DIR") : ".";
  if (access(G.kiln, X_OK) != 0) {
    fprintf(stderr, "%s: not an executable\n", G.kiln);
    return 1;
  }
  /* The binary under test sees only what each case sets; one thread keeps parallel ctest runs fair. */
  unsetenv("KILN_MODEL");
  unsetenv("KILN_DEVICE");
  unsetenv("KILN_CTX");
  setenv("KILN_THREADS", "1", 1);
  /* In sanitizer builds a report must show as a distinct status, not as the CLI's own exit status 1. */
  setenv("ASAN_OPTIONS", "exitcode=86:detect_leaks=1", 0);
  setenv("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1", 0);
  setenv("LSAN_OPTIONS", "exitcode=87", 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_version),     cmocka_unit_test(test_tokenize_roundtrip),
      cmocka_unit_test(test_tokenize_qwen3),   cmocka_unit_test(test_run_qwen3),
      cmocka_unit_test(test_run_llama),        cmocka_unit_test(test_run_context_full),
      cmocka_unit_test(test_perplexity),       cmocka_unit_test(test_bad_checkpoints),
      cmocka_unit_test(test_bad_inputs),       cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_shipped_models),
  };
  if (getenv("KILN_TEST_FILTER")) cmocka_set_test_filter(getenv("KILN_TEST_FILTER")); /* e.g. "test_run_*" */
  return cmocka_run_group_tests(tests, setup_, teardown_);
}
