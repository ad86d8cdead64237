/*
 * cli_common.h: what every kiln subcommand shares.
 *
 * - Exit statuses (contracts.md): 0 success, 1 runtime error, 2 usage error. Only main() and the cmd_* functions
 *   turn errors into statuses; the helpers here print the one line of the message and return the status.
 * - Option parsing: each subcommand describes its options once in a cli_opt table; the table drives both
 *   getopt_long and `kiln CMD --help`, so the two never disagree.
 * - Values: strict parsing of numbers (the whole string, range-checked), from options and from environment
 *   variables (KILN_THREADS, KILN_DEVICE, KILN_CTX), naming the option or variable on error.
 * - Models: resolution of the model directory (-m, else $KILN_MODEL, else the embedded default model), loading
 *   with a progress bar on a terminal, engine creation.
 * - Output: JSON lines (jansson), text that may hold invalid UTF-8 made safe for JSON, wall-clock timing.
 * Implemented in cli_common.c (messages, options, values), cli_model.c (models), cli_chat.c (chat mode) and
 * cli_io.c (input and output).
 */
#ifndef KILN_CLI_COMMON_H
#define KILN_CLI_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <getopt.h>
#include <jansson.h>

#include "base/strbuf.h"
#include "kiln/kiln.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_ERROR = 1, CLI_EXIT_USAGE = 2 };

/* ---- messages ---------------------------------------------------------------------------------------------- */

/* Prints "kiln: <message>" (one line) and returns CLI_EXIT_ERROR. */
int cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "kiln: <kiln_last_error()>" (or the status's generic message when none was recorded) and returns
 * CLI_EXIT_ERROR. For a library call that returned `status` < 0. */
int cli_fail(int status);

/* As cli_fail, for a failure about the contents of `file` ("-": standard input): the message is prefixed with the
 * file's name unless it already starts with it (a library call that worked on the bytes does not know the name). */
int cli_fail_in(const char *file, int status);

/* ---- options ----------------------------------------------------------------------------------------------- */

/* Ids for options without a short letter start here (short options use their letter as id). */
#define CLI_OPT_LONG 256

typedef struct cli_opt {
  int id;           /* the short letter ('m'), or CLI_OPT_LONG + k for a long-only option; 0 ends a table */
  const char *name; /* long name without "--" */
  const char *arg;  /* placeholder of the argument ("DIR"), or NULL for a flag */
  const char *help; /* one line */
} cli_opt;

#define CLI_MAX_OPTS 48

typedef struct cli_parser {
  const char *cmd;      /* "run" */
  const char *synopsis; /* "-m DIR -p TEXT [options]" */
  const char *about;    /* a paragraph printed by --help after the synopsis; may be NULL */
  const cli_opt *opts;
  int argc;
  char **argv;
  struct option longopts[CLI_MAX_OPTS + 2];
  char shortopts[3 * CLI_MAX_OPTS + 4];
} cli_parser;

/* Results of cli_next() besides an option id. */
enum { CLI_DONE = -1, CLI_HELP = -2, CLI_BAD = -3 };

/* Prepares parsing argv[1..argc-1] (argv[0] is the subcommand's name). -h/--help is added to every table. */
void cli_parser_init(cli_parser *p, const char *cmd, const char *synopsis, const char *about, const cli_opt *opts,
                     int argc, char **argv);
/* The next option's id (and its argument in *arg, or NULL); CLI_DONE after the last; CLI_HELP when --help was
 * given (the help is printed on stdout); CLI_BAD after an unknown option, a missing argument or a stray
 * positional argument (the message is printed). */
int cli_next(cli_parser *p, const char **arg);
void cli_print_help(const cli_parser *p, FILE *f);
/* Prints "kiln CMD: <message> (see 'kiln CMD --help')" (one line) and returns CLI_EXIT_USAGE. */
int cli_usage(const cli_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict value parsers: the whole string must be the value, within [lo, hi]. `what` names the option or the
 * environment variable in the message ("--temp", "KILN_THREADS"). Return 0, or print a usage error and return
 * CLI_EXIT_USAGE. */
int cli_parse_int(const cli_parser *p, const char *what, const char *s, long long lo, long long hi, int *out);
int cli_parse_u64(const cli_parser *p, const char *what, const char *s, uint64_t *out);
int cli_parse_float(const cli_parser *p, const char *what, const char *s, double lo, double hi, float *out);
/* "cpu", "cuda" or "cuda:N". */
int cli_parse_device(const cli_parser *p, const char *what, const char *s);

/* Options shared by the commands that run a model. Values not given fall back to the environment. */
typedef struct cli_run_opts {
  const char *model;  /* -m DIR, NULL: $KILN_MODEL or the default model */
  const char *device; /* --device, NULL: $KILN_DEVICE or the library's choice */
  int n_threads;      /* -t, 0: $KILN_THREADS or all cores */
  int n_ctx;          /* --ctx, 0: $KILN_CTX or the command's default */
  bool quiet;         /* -q: no progress bar, no timings */
} cli_run_opts;

/* Fills the fields still unset from KILN_DEVICE, KILN_THREADS and KILN_CTX (validated like the options). */
int cli_run_opts_env(const cli_parser *p, cli_run_opts *o);

/* ---- models ------------------------------------------------------------------------------------------------ */

/* The model directory: `opt` (the -m argument) when given, else $KILN_MODEL, else the default model (installed
 * beside the binary in ../share/kiln/models/default, or the source tree's models/default). *dir is malloc'd.
 * Prints the error and returns CLI_EXIT_ERROR when there is none. */
int cli_model_dir(const char *opt, char **dir);
/* The tokenizer.json to use: `opt` may name the file itself or a directory holding it; otherwise as
 * cli_model_dir. *path is malloc'd. */
int cli_tokenizer_path(const char *opt, char **path);

/* Loads DIR/tokenizer.json. Prints the error and returns CLI_EXIT_ERROR on failure. */
int cli_load_tokenizer(const char *dir, kiln_tokenizer **tok);
/* Loads the checkpoint (with a progress bar on stderr when it is a terminal and !quiet) and reports the time it
 * took in *load_ms. Prints the error and returns CLI_EXIT_ERROR on failure. */
int cli_load_model(const char *dir, bool quiet, kiln_model **model, double *load_ms);
/* Creates an engine with one sequence slot. n_ctx <= 0: the library's default. */
int cli_engine_create(const kiln_model *model, const cli_run_opts *o, int n_ctx, kiln_engine **e);

/* The id of the token the tokenizer's post-processor puts before a single text (HF add_special_tokens=True; Llama
 * 3's <|begin_of_text|>), or -1 when it adds none. */
int32_t cli_tokenizer_bos(const char *tokenizer_path, const kiln_tokenizer *tok);

/* Chat mode: the prompt becomes a user message (after an optional system message) rendered with the model's chat
 * template (DIR/tokenizer_config.json, or a family by name: chatml, qwen3, llama3, llama31, llama32), with the
 * assistant turn opened. */
typedef struct cli_chat {
  bool on;
  const char *template_name; /* NULL: the model's */
  const char *system;        /* NULL: none */
  bool no_think;             /* Qwen3: enable_thinking = false */
} cli_chat;
/* *out is malloc'd; *end_of_turn is the text that closes the assistant's turn (NULL when the family has none).
 * Prints the error and returns CLI_EXIT_ERROR on failure. */
int cli_chat_prompt(const char *dir, const cli_chat *c, const char *user, char **out, size_t *len,
                    const char **end_of_turn);

/* ---- input and output -------------------------------------------------------------------------------------- */

/* Reads a whole file ("-": standard input) into a malloc'd, NUL-terminated buffer. Errors name the file; returns
 * a kiln status. */
int cli_read_file(const char *path, char **buf, size_t *len);

/* Appends to a growing byte buffer (the library's; free it with kiln_strbuf_free). Returns a kiln status, with a
 * message when out of memory. */
int cli_buf_append(kiln_strbuf *b, const void *data, size_t n);

/* A JSON string of `text`, with each invalid UTF-8 sequence replaced by U+FFFD (JSON must be valid UTF-8).
 * NULL when out of memory. */
json_t *cli_json_text(const char *text, size_t len);
/* Writes `v` as one compact line on stdout and flushes; takes the reference. Returns a CLI exit status. */
int cli_json_print(json_t *v);

/* Monotonic wall clock in milliseconds. */
double cli_now_ms(void);

#endif /* KILN_CLI_COMMON_H */
