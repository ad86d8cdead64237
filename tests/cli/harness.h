/*
 * harness.h: what the CLI tests share. They drive the built `kiln` binary (argv[1]) as a black box on small
 * checkpoints written by tiny_ckpt.c into a temporary directory, and check what a user sees: exit status, stdout,
 * stderr. Every failure must be one line on stderr that names the file and the problem, with status 1 (runtime)
 * or 2 (usage), and no crash or sanitizer report: in the ASan+UBSan build the binary under test is itself
 * instrumented, so a leak or overflow on an error path fails the test.
 */
#ifndef KILN_TEST_CLI_HARNESS_H
#define KILN_TEST_CLI_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <jansson.h>

#include "proc.h"
#include "tiny_ckpt.h"

#define TIMEOUT_S 120
#define MAX_ARGS 64

/* The fixture: the binary, the source tree, the temporary directory and the two checkpoints written there. */
typedef struct t_globals {
  const char *kiln;
  const char *src; /* source tree (KILN_SOURCE_DIR) */
  char tmp[512];
  char qwen[600], llama[600];
  tiny_info qi, li;
} t_globals;
extern t_globals T;

/* Reads argv/environment and isolates the binary's environment; returns 0, or the status main() should return. */
int t_init(int argc, char **argv);
/* cmocka group setup/teardown: writes the checkpoints (and ppl.txt), removes the directory afterwards. */
int t_setup(void **state);
int t_teardown(void **state);

/* Runs kiln with the NULL-terminated arguments and `in` on stdin (NULL: none). */
void t_kiln(proc_result *r, const char *in, ...);
void t_kiln_v(proc_result *r, const char *in, va_list ap);
/* Prints the last command and its result on stderr. */
void t_dump(const proc_result *r);

#define CHECK(r, cond)                                                          \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "check failed: %s\n", #cond);                             \
      t_dump(r);                                                                \
      fail();                                                                   \
    }                                                                           \
  } while (0)

/* Status 0, no sanitizer report. */
void t_expect_ok(const proc_result *r);
/* Status `code`, exactly one line on stderr starting "kiln" and holding each needle (NULL: none), empty stdout. */
void t_expect_fail(const proc_result *r, int code, const char *needle1, const char *needle2);
/* Runs kiln (NULL-terminated arguments) and expects that failure. */
void t_fails(int code, const char *needle1, const char *needle2, const char *in, ...);
/* stdout as exactly one line of JSON (the caller owns the value). */
json_t *t_parse_json_line(const proc_result *r);

void t_write_file(const char *path, const void *data, size_t len);
char *t_read_file(const char *path, size_t *len);
void t_copy_file(const char *from, const char *to);
/* Replaces the first occurrence of `from` in the file by `to`. */
void t_patch_file(const char *path, const char *from, const char *to);
/* Copies the checkpoint `src` to T.tmp/<name> (out: its path). */
const char *t_clone_ckpt(const char *src, const char *name, char *out, size_t cap);
/* dir/name in one of four rotating static buffers. */
char *t_path_in(const char *dir, const char *name);

/* The ids `kiln tokenize` prints for `text` (malloc'd). */
int32_t *t_tokenize(const char *model, const char *text, size_t *n);
char *t_ids_csv(const int32_t *ids, size_t n);
/* tokenize then detokenize gives each of t_texts back, byte for byte. */
extern const char *const t_texts[5];
void t_roundtrip(const char *model);

/* One `kiln run ... --json -q`, its JSON line checked field by field. */
typedef struct t_gen {
  json_t *v;
  const char *text;
  size_t text_len;
  int32_t ids[512];
  size_t n_ids;
  int prompt_tokens, completion_tokens;
} t_gen;
void t_run_json(t_gen *g, const char *model, const char *in, ...);
bool t_same_ids(const t_gen *a, const t_gen *b);

/* A deterministic English-like text of about 3 kB (also written to T.tmp/ppl.txt by t_setup). */
const char *t_ppl_text(void);
/* `kiln perplexity ... --json -q` (windows NULL: all), its JSON line checked. */
json_t *t_ppl_json(const char *model, const char *file, const char *ctx, const char *windows);

#endif /* KILN_TEST_CLI_HARNESS_H */
