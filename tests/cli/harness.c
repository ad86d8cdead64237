/* What the CLI tests share (see harness.h). */
#include "harness.h"

#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

t_globals T;

static char t_cmdline[4096];

/* Runs kiln with the NULL-terminated arguments, `in` on stdin (NULL: none). */
void t_kiln_v(proc_result *r, const char *in, va_list ap) {
  char *argv[MAX_ARGS + 2];
  int n = 0;
  argv[n++] = (char *)T.kiln;
  size_t off = (size_t)snprintf(t_cmdline, sizeof t_cmdline, "kiln");
  const char *a;
  while ((a = va_arg(ap, const char *)) && n < MAX_ARGS) {
    argv[n++] = (char *)a;
    if (off < sizeof t_cmdline) off += (size_t)snprintf(t_cmdline + off, sizeof t_cmdline - off, " '%s'", a);
  }
  argv[n] = NULL;
  assert_int_equal(proc_run(r, in, in ? strlen(in) : 0, TIMEOUT_S, argv), 0);
}

void t_kiln(proc_result *r, const char *in, ...) {
  va_list ap;
  va_start(ap, in);
  t_kiln_v(r, in, ap);
  va_end(ap);
}

void t_dump(const proc_result *r) {
  fprintf(stderr, "  command: %s\n  status: %d%s%s\n  stdout: %.2000s\n  stderr: %.4000s\n", t_cmdline, r->status,
          r->signaled ? " (signal)" : "", r->timed_out ? " (timed out)" : "", r->out, r->err);
}


void t_expect_ok(const proc_result *r) {
  CHECK(r, !r->signaled && !r->timed_out);
  CHECK(r, r->status == 0);
  CHECK(r, !strstr(r->err, "Sanitizer") && !strstr(r->err, "runtime error"));
}

/* A failure as the contract has it: status `code`, exactly one line on stderr starting "kiln", naming each needle. */
void t_expect_fail(const proc_result *r, int code, const char *needle1, const char *needle2) {
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
void t_fails(int code, const char *needle1, const char *needle2, const char *in, ...) {
  proc_result r;
  va_list ap;
  va_start(ap, in);
  t_kiln_v(&r, in, ap);
  va_end(ap);
  t_expect_fail(&r, code, needle1, needle2);
  proc_result_free(&r);
}

json_t *t_parse_json_line(const proc_result *r) {
  CHECK(r, r->out_len > 0 && r->out[r->out_len - 1] == '\n');
  CHECK(r, memchr(r->out, '\n', r->out_len) == r->out + r->out_len - 1);
  json_error_t e;
  json_t *v = json_loadb(r->out, r->out_len, 0, &e);
  CHECK(r, v != NULL);
  return v;
}

void t_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

char *t_read_file(const char *path, size_t *len) {
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

void t_copy_file(const char *from, const char *to) {
  size_t n;
  char *d = t_read_file(from, &n);
  t_write_file(to, d, n);
  free(d);
}

/* A copy of checkpoint `src` in T.tmp/<name> (config, generation config, weights, tokenizer). */
const char *t_clone_ckpt(const char *src, const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", T.tmp, name);
  assert_int_equal(mkdir(out, 0755), 0);
  const char *files[] = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/%s", src, files[i]);
    snprintf(b, sizeof b, "%s/%s", out, files[i]);
    t_copy_file(a, b);
  }
  return out;
}

char *t_path_in(const char *dir, const char *name) {
  static char buf[4][4096];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

/* The ids `kiln tokenize` prints for `text` (malloc'd). */
int32_t *t_tokenize(const char *model, const char *text, size_t *n) {
  proc_result r;
  t_kiln(&r, NULL, "tokenize", "-m", model, "--text", text, NULL);
  t_expect_ok(&r);
  json_t *arr = t_parse_json_line(&r);
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

char *t_ids_csv(const int32_t *ids, size_t n) {
  char *s = malloc(n * 12 + 1);
  assert_non_null(s);
  size_t off = 0;
  s[0] = 0;
  for (size_t i = 0; i < n; i++) off += (size_t)sprintf(s + off, i ? ",%d" : "%d", ids[i]);
  return s;
}


const char *const t_texts[5] = {
    "the cat and the dog",
    "Hello, world! 1234567 + 3.14159",
    "  leading and trailing spaces   \tand\ttabs\r\nCRLF line\n\n",
    "h\xC3\xA9llo w\xC3\xB6rld \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82 "
    "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 \xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7",
    "text with <|endoftext|> inside",
};

void t_roundtrip(const char *model) {
  for (size_t i = 0; i < sizeof t_texts / sizeof *t_texts; i++) {
    size_t n;
    int32_t *ids = t_tokenize(model, t_texts[i], &n);
    assert_true(n > 0);
    char *csv = t_ids_csv(ids, n);
    proc_result r;
    t_kiln(&r, NULL, "detokenize", "-m", model, "--ids", csv, NULL);
    t_expect_ok(&r);
    CHECK(&r, r.out_len == strlen(t_texts[i]) && memcmp(r.out, t_texts[i], r.out_len) == 0);
    proc_result_free(&r);
    free(csv);
    free(ids);
  }
}


/* `kiln run ... --json -q` with the given extra arguments; checks the JSON line's fields and types. */
void t_run_json(t_gen *g, const char *model, const char *in, ...) {
  char *argv_extra[MAX_ARGS];
  int n = 0;
  va_list ap;
  va_start(ap, in);
  const char *a;
  while ((a = va_arg(ap, const char *)) && n < MAX_ARGS - 8) argv_extra[n++] = (char *)a;
  va_end(ap);
  char *argv[MAX_ARGS + 2];
  int k = 0;
  argv[k++] = (char *)T.kiln;
  argv[k++] = "run";
  argv[k++] = "-m";
  argv[k++] = (char *)model;
  argv[k++] = "--json";
  argv[k++] = "-q";
  for (int i = 0; i < n; i++) argv[k++] = argv_extra[i];
  argv[k] = NULL;
  snprintf(t_cmdline, sizeof t_cmdline, "kiln run -m %s --json -q ...", model);
  proc_result r;
  assert_int_equal(proc_run(&r, in, in ? strlen(in) : 0, TIMEOUT_S, argv), 0);
  t_expect_ok(&r);
  CHECK(&r, r.err_len == 0); /* -q: nothing on stderr */
  json_t *v = t_parse_json_line(&r);
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

bool t_same_ids(const t_gen *a, const t_gen *b) {
  return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * sizeof *a->ids) == 0;
}


const char *t_ppl_text(void) {
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

json_t *t_ppl_json(const char *model, const char *file, const char *ctx, const char *windows) {
  proc_result r;
  if (windows) t_kiln(&r, NULL, "perplexity", "-m", model, "-f", file, "--ctx", ctx, "--windows", windows, "--json", "-q", NULL);
  else t_kiln(&r, NULL, "perplexity", "-m", model, "-f", file, "--ctx", ctx, "--json", "-q", NULL);
  t_expect_ok(&r);
  json_t *v = t_parse_json_line(&r);
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


void t_patch_file(const char *path, const char *from, const char *to) {
  size_t n;
  char *d = t_read_file(path, &n);
  char *at = memmem(d, n, from, strlen(from));
  assert_non_null(at);
  size_t head = (size_t)(at - d), fl = strlen(from), tl = strlen(to);
  char *out = malloc(n - fl + tl);
  assert_non_null(out);
  memcpy(out, d, head);
  memcpy(out + head, to, tl);
  memcpy(out + head + tl, at + fl, n - head - fl);
  t_write_file(path, out, n - fl + tl);
  free(out);
  free(d);
}


static int t_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

int t_setup(void **state) {
  (void)state;
  const char *tmpdir = getenv("TMPDIR");
  snprintf(T.tmp, sizeof T.tmp, "%s/kiln-cli-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
  if (!mkdtemp(T.tmp)) {
    perror("mkdtemp");
    return -1;
  }
  snprintf(T.qwen, sizeof T.qwen, "%s/qwen3", T.tmp);
  snprintf(T.llama, sizeof T.llama, "%s/llama", T.tmp);
  if (tiny_ckpt_write(T.qwen, TINY_QWEN3, &T.qi) || tiny_ckpt_write(T.llama, TINY_LLAMA, &T.li)) return -1;
  /* Written here so the bad-input cases can point at it in any order. */
  FILE *f = fopen(t_path_in(T.tmp, "ppl.txt"), "wb");
  if (!f || fputs(t_ppl_text(), f) < 0 || fclose(f)) return -1;
  return 0;
}

int t_teardown(void **state) {
  (void)state;
  if (getenv("KILN_TEST_KEEP")) fprintf(stderr, "kept %s\n", T.tmp);
  else nftw(T.tmp, t_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}


int t_init(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-KILN\n", argv[0]);
    return 2;
  }
  T.kiln = argv[1];
  T.src = getenv("KILN_SOURCE_DIR") ? getenv("KILN_SOURCE_DIR") : ".";
  if (access(T.kiln, X_OK) != 0) {
    fprintf(stderr, "%s: not an executable\n", T.kiln);
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
  if (getenv("KILN_TEST_FILTER")) cmocka_set_test_filter(getenv("KILN_TEST_FILTER")); /* e.g. "test_run_*" */
  return 0;
}
