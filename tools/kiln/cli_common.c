/* What every kiln subcommand shares: messages, option tables, value parsing, models, JSON (see cli_common.h). */
#include "cli_common.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- messages ---------------------------------------------------------------------------------------------- */

/* Writes `s` on stderr with line breaks turned into spaces, so a message is always exactly one line. */
static void put_one_line_(const char *s) {
  for (; *s; s++) fputc(*s == '\n' || *s == '\r' ? ' ' : *s, stderr);
}

static __attribute__((format(printf, 2, 0))) void vprint_line_(const char *prefix, const char *fmt, va_list ap) {
  char msg[1024];
  if (vsnprintf(msg, sizeof msg, fmt, ap) < 0) snprintf(msg, sizeof msg, "(unprintable message)");
  fputs(prefix, stderr);
  put_one_line_(msg);
}

int cli_errorf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint_line_("kiln: ", fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return CLI_EXIT_ERROR;
}

int cli_fail(int status) {
  const char *msg = kiln_last_error();
  if (!msg || !*msg) msg = kiln_strerror(status);
  return cli_errorf("%s", msg);
}

int cli_fail_in(const char *file, int status) {
  const char *name = strcmp(file, "-") ? file : "<stdin>";
  const char *msg = kiln_last_error();
  if (!msg || !*msg) msg = kiln_strerror(status);
  if (!strncmp(msg, name, strlen(name))) return cli_errorf("%s", msg);
  return cli_errorf("%s: %s", name, msg);
}

/* ---- options ----------------------------------------------------------------------------------------------- */

static const cli_opt help_opt_ = {'h', "help", NULL, "show this help and exit"};

void cli_parser_init(cli_parser *p, const char *cmd, const char *synopsis, const char *about, const cli_opt *opts,
                     int argc, char **argv) {
  memset(p, 0, sizeof *p);
  p->cmd = cmd;
  p->synopsis = synopsis;
  p->about = about;
  p->opts = opts;
  p->argc = argc;
  p->argv = argv;
  /* ':' first: a missing argument is reported as ':' rather than '?', so the two messages can differ. */
  size_t ns = 0;
  p->shortopts[ns++] = ':';
  int n = 0;
  for (const cli_opt *o = opts; o->id && n < CLI_MAX_OPTS; o++, n++) {
    p->longopts[n] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->id};
    if (o->id < CLI_OPT_LONG && isalnum(o->id)) {
      p->shortopts[ns++] = (char)o->id;
      if (o->arg) p->shortopts[ns++] = ':';
    }
  }
  p->longopts[n++] = (struct option){help_opt_.name, no_argument, NULL, 'h'};
  p->longopts[n] = (struct option){0};
  p->shortopts[ns++] = 'h';
  p->shortopts[ns] = '\0';
  /* glibc: optind = 0 restarts the scan from scratch (main may have parsed its own options). */
  optind = 0;
  opterr = 0;
}

static const cli_opt *find_opt_(const cli_parser *p, int id) {
  for (const cli_opt *o = p->opts; o->id; o++)
    if (o->id == id) return o;
  return NULL;
}

int cli_next(cli_parser *p, const char **arg) {
  *arg = NULL;
  int c = getopt_long(p->argc, p->argv, p->shortopts, p->longopts, NULL);
  const char *given = optind > 0 && optind <= p->argc ? p->argv[optind - 1] : "?";
  switch (c) {
  case -1:
    if (optind < p->argc) {
      cli_usage(p, "unexpected argument '%s'", p->argv[optind]);
      return CLI_BAD;
    }
    return CLI_DONE;
  case 'h':
    cli_print_help(p, stdout);
    return CLI_HELP;
  case ':': {
    const cli_opt *o = find_opt_(p, optopt);
    if (o) cli_usage(p, "--%s needs an argument (%s)", o->name, o->arg);
    else cli_usage(p, "'%s' needs an argument", given);
    return CLI_BAD;
  }
  case '?':
    if (optopt && optopt < CLI_OPT_LONG && isprint(optopt)) cli_usage(p, "unknown option '-%c'", optopt);
    else cli_usage(p, "unknown option '%s'", given);
    return CLI_BAD;
  default:
    *arg = optarg;
    return c;
  }
}

/* Writes `text` wrapped at `width` columns (breaking at spaces). */
static void put_wrapped_(FILE *f, const char *text, size_t width) {
  const char *s = text;
  while (*s) {
    size_t len = strlen(s), cut = len;
    if (len > width) {
      cut = width;
      while (cut > 0 && s[cut] != ' ') cut--;
      if (cut == 0) cut = strcspn(s, " "); /* one word longer than the line */
    }
    fprintf(f, "%.*s\n", (int)cut, s);
    s += cut;
    while (*s == ' ') s++;
  }
}

void cli_print_help(const cli_parser *p, FILE *f) {
  fprintf(f, "usage: kiln %s %s\n\n", p->cmd, p->synopsis);
  if (p->about) {
    put_wrapped_(f, p->about, 100);
    fputc('\n', f);
  }
  fprintf(f, "options:\n");
  for (const cli_opt *o = p->opts;; o++) {
    const cli_opt *cur = o->id ? o : &help_opt_;
    char left[96];
    if (cur->id < CLI_OPT_LONG && isalnum(cur->id))
      snprintf(left, sizeof left, "  -%c, --%s%s%s", cur->id, cur->name, cur->arg ? " " : "", cur->arg ? cur->arg : "");
    else
      snprintf(left, sizeof left, "      --%s%s%s", cur->name, cur->arg ? " " : "", cur->arg ? cur->arg : "");
    if (strlen(left) < 30) fprintf(f, "%-30s%s\n", left, cur->help);
    else fprintf(f, "%s\n%-30s%s\n", left, "", cur->help);
    if (!o->id) break;
  }
}

int cli_usage(const cli_parser *p, const char *fmt, ...) {
  char prefix[64];
  if (p) snprintf(prefix, sizeof prefix, "kiln %s: ", p->cmd);
  else snprintf(prefix, sizeof prefix, "kiln: ");
  va_list ap;
  va_start(ap, fmt);
  vprint_line_(prefix, fmt, ap);
  va_end(ap);
  if (p) fprintf(stderr, " (see 'kiln %s --help')", p->cmd);
  fputc('\n', stderr);
  return CLI_EXIT_USAGE;
}

/* ---- values ------------------------------------------------------------------------------------------------ */

int cli_parse_int(const cli_parser *p, const char *what, const char *s, long long lo, long long hi, int *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end || isspace((unsigned char)*s))
    return cli_usage(p, "%s: '%s' is not an integer", what, s);
  if (errno == ERANGE || v < lo || v > hi || v < INT_MIN || v > INT_MAX)
    return cli_usage(p, "%s: %s is out of range [%lld, %lld]", what, s, lo, hi);
  *out = (int)v;
  return 0;
}

int cli_parse_u64(const cli_parser *p, const char *what, const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  /* strtoull accepts "-1" (as 2^64-1): a seed must be written without a sign. */
  if (!isdigit((unsigned char)*s)) return cli_usage(p, "%s: '%s' is not a non-negative integer", what, s);
  unsigned long long v = strtoull(s, &end, 10);
  if (*end) return cli_usage(p, "%s: '%s' is not a non-negative integer", what, s);
  if (errno == ERANGE) return cli_usage(p, "%s: %s does not fit 64 bits", what, s);
  *out = (uint64_t)v;
  return 0;
}

int cli_parse_float(const cli_parser *p, const char *what, const char *s, double lo, double hi, float *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || isspace((unsigned char)*s)) return cli_usage(p, "%s: '%s' is not a number", what, s);
  if (!isfinite(v) || v < lo || v > hi) return cli_usage(p, "%s: %s is out of range [%g, %g]", what, s, lo, hi);
  *out = (float)v;
  return 0;
}

int cli_parse_device(const cli_parser *p, const char *what, const char *s) {
  if (!strcmp(s, "cpu") || !strcmp(s, "cuda")) return 0;
  if (!strncmp(s, "cuda:", 5) && isdigit((unsigned char)s[5])) {
    char *end;
    errno = 0;
    long n = strtol(s + 5, &end, 10);
    if (!*end && errno == 0 && n <= 255) return 0;
  }
  return cli_usage(p, "%s: '%s' is not a device (cpu, cuda or cuda:N)", what, s);
}

static const char *env_(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

int cli_run_opts_env(const cli_parser *p, cli_run_opts *o) {
  const char *v;
  int rc;
  if (!o->device && (v = env_("KILN_DEVICE"))) {
    if ((rc = cli_parse_device(p, "KILN_DEVICE", v))) return rc;
    o->device = v;
  }
  if (o->n_threads < 0) {
    o->n_threads = 0;
    if ((v = env_("KILN_THREADS")) && (rc = cli_parse_int(p, "KILN_THREADS", v, 0, 4096, &o->n_threads)))
      return rc;
  }
  if (o->n_ctx <= 0 && (v = env_("KILN_CTX")) && (rc = cli_parse_int(p, "KILN_CTX", v, 1, 1 << 24, &o->n_ctx)))
    return rc;
  return 0;
}

/* ---- models ------------------------------------------------------------------------------------------------ */

static bool is_file_(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join_(const char *dir, const char *name) {
  size_t n = strlen(dir) + 1 + strlen(name) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s/%s", dir, name);
  return s;
}

/* Directory of the running executable (malloc'd), or NULL. */
static char *exe_dir_(void) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return NULL;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (!slash) return NULL;
  *slash = '\0';
  return strdup(buf);
}

/* The first default model directory that holds `marker` (malloc'd), or NULL. */
static char *default_model_(const char *marker) {
  char *found = NULL;
  char *exe = exe_dir_();
  if (exe) {
    char *d = join_(exe, "../share/kiln/models/default");
    char *f = d ? join_(d, marker) : NULL;
    if (f && is_file_(f)) found = realpath(d, NULL); /* PREFIX/share/..., not PREFIX/bin/../share/... in messages */
    free(d);
    free(f);
    free(exe);
  }
#ifdef KILN_DEFAULT_MODEL_DIR
  if (!found) {
    char *f = join_(KILN_DEFAULT_MODEL_DIR, marker);
    if (f && is_file_(f)) found = strdup(KILN_DEFAULT_MODEL_DIR);
    free(f);
  }
#endif
  return found;
}

static int no_model_(const char *marker) {
  return cli_errorf("no model: pass -m DIR or set KILN_MODEL (the default model, models/default/%s, is not "
                    "installed)", marker);
}

int cli_model_dir(const char *opt, char **dir) {
  *dir = NULL;
  const char *given = opt && *opt ? opt : env_("KILN_MODEL");
  if (!given) {
    *dir = default_model_("config.json");
    return *dir ? 0 : no_model_("config.json");
  }
  struct stat st;
  if (stat(given, &st) != 0) return cli_errorf("%s: %s", given, strerror(errno));
  if (!S_ISDIR(st.st_mode)) return cli_errorf("%s: not a directory (a model is a checkpoint directory)", given);
  *dir = strdup(given);
  if (!*dir) return cli_errorf("out of memory");
  /* "ckpt/" names the same directory as "ckpt"; messages then read ckpt/config.json rather than ckpt//config.json. */
  for (size_t n = strlen(*dir); n > 1 && (*dir)[n - 1] == '/'; n--) (*dir)[n - 1] = '\0';
  return 0;
}

int cli_tokenizer_path(const char *opt, char **path) {
  *path = NULL;
  const char *given = opt && *opt ? opt : env_("KILN_MODEL");
  char *dir = NULL;
  if (!given) {
    if (!(dir = default_model_("tokenizer.json"))) return no_model_("tokenizer.json");
    given = dir;
  }
  struct stat st;
  if (stat(given, &st) != 0) {
    int rc = cli_errorf("%s: %s", given, strerror(errno));
    free(dir);
    return rc;
  }
  *path = S_ISDIR(st.st_mode) ? join_(given, "tokenizer.json") : strdup(given);
  free(dir);
  return *path ? 0 : cli_errorf("out of memory");
}

int cli_load_tokenizer(const char *dir, kiln_tokenizer **tok) {
  char *path = join_(dir, "tokenizer.json");
  if (!path) return cli_errorf("out of memory");
  int rc = kiln_tokenizer_load(tok, path);
  free(path);
  return rc < 0 ? cli_fail(rc) : 0;
}

/* The progress bar drawn on stderr while weights load: redrawn only when a whole percent passes. */
typedef struct progress_ {
  int last_pct;
} progress_;

static void progress_draw_(void *user, uint64_t done, uint64_t total) {
  progress_ *pr = user;
  if (!total) return;
  int pct = (int)(done >= total ? 100 : done * 100 / total);
  if (pct == pr->last_pct) return;
  pr->last_pct = pct;
  char bar[41];
  int fill = pct * 40 / 100;
  memset(bar, '#', (size_t)fill);
  memset(bar + fill, '.', (size_t)(40 - fill));
  bar[40] = '\0';
  fprintf(stderr, "\rloading [%s] %3d%% %.1f/%.1f MB", bar, pct, done / 1e6, total / 1e6);
  fflush(stderr);
}

int cli_load_model(const char *dir, bool quiet, kiln_model **model, double *load_ms) {
  progress_ pr = {-1};
  bool bar = !quiet && isatty(STDERR_FILENO);
  double t0 = cli_now_ms();
  int rc = kiln_model_load(model, dir, bar ? progress_draw_ : NULL, &pr);
  if (bar && pr.last_pct >= 0) fputs("\r\033[K", stderr); /* erase the bar: the line is for what follows */
  if (load_ms) *load_ms = cli_now_ms() - t0;
  return rc < 0 ? cli_fail(rc) : 0;
}

int cli_engine_create(const kiln_model *model, const cli_run_opts *o, int n_ctx, kiln_engine **e) {
  kiln_engine_opts eo = {.device = o->device, .n_threads = o->n_threads, .n_ctx = n_ctx, .n_seqs = 1};
  int rc = kiln_engine_create(e, model, &eo);
  return rc < 0 ? cli_fail(rc) : 0;
}

/* The special token a TemplateProcessing puts before the text of a single sequence, or -1. */
static int32_t template_bos_(const json_t *proc, const kiln_tokenizer *tok) {
  const char *type = json_string_value(json_object_get(proc, "type"));
  if (!type) return -1;
  if (!strcmp(type, "Sequence")) {
    size_t i;
    json_t *sub;
    json_array_foreach(json_object_get(proc, "processors"), i, sub) {
      int32_t id = template_bos_(sub, tok);
      if (id >= 0) return id;
    }
    return -1;
  }
  if (strcmp(type, "TemplateProcessing")) return -1;
  const json_t *first = json_array_get(json_object_get(proc, "single"), 0);
  const char *name = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
  if (!name) return -1;
  /* special_tokens maps the template's name to the ids it stands for; the name is usually the token itself. */
  const json_t *ids = json_object_get(json_object_get(json_object_get(proc, "special_tokens"), name), "ids");
  if (json_array_size(ids) == 1 && json_is_integer(json_array_get(ids, 0))) {
    json_int_t id = json_integer_value(json_array_get(ids, 0));
    return id >= 0 && id < kiln_tokenizer_n_vocab(tok) ? (int32_t)id : -1;
  }
  return kiln_tokenizer_find(tok, name);
}

int32_t cli_tokenizer_bos(const char *tokenizer_path, const kiln_tokenizer *tok) {
  json_t *root = json_load_file(tokenizer_path, 0, NULL);
  if (!root) return -1; /* the tokenizer itself loaded from this file, so this is not the place to complain */
  int32_t id = template_bos_(json_object_get(root, "post_processor"), tok);
  json_decref(root);
  return id;
}

/* ---- input and output -------------------------------------------------------------------------------------- */

int cli_buf_append(cli_buf *b, const void *data, size_t n) {
  if (n > SIZE_MAX - b->len - 1) return kiln_error(KILN_ENOMEM, "buffer: size overflow");
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
    char *d = realloc(b->data, cap);
    if (!d) return kiln_error(KILN_ENOMEM, "out of memory (%zu bytes)", cap);
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

void cli_buf_free(cli_buf *b) {
  free(b->data);
  *b = (cli_buf){0};
}

int cli_read_file(const char *path, char **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  bool is_stdin = !strcmp(path, "-");
  const char *name = is_stdin ? "<stdin>" : path;
  FILE *f = is_stdin ? stdin : fopen(path, "rb");
  if (!f) return kiln_error(KILN_EIO, "%s: %s", name, strerror(errno));
  cli_buf b = {0};
  char chunk[65536];
  int rc = cli_buf_append(&b, "", 0); /* an empty file still gives a NUL-terminated buffer */
  size_t n;
  while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0) rc = cli_buf_append(&b, chunk, n);
  if (rc == 0 && ferror(f)) rc = kiln_error(KILN_EIO, "%s: %s", name, strerror(errno ? errno : EIO));
  if (!is_stdin) fclose(f);
  if (rc < 0) {
    cli_buf_free(&b);
    return rc;
  }
  *buf = b.data;
  *len = b.len;
  return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid or cut short; *bad is then the length of
 * the maximal invalid subpart to replace by one U+FFFD (Unicode's recommended practice, as Python decodes). */
static size_t utf8_seq_(const unsigned char *s, size_t n, size_t *bad) {
  unsigned char c = s[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F; /* nothing past U+10FFFF */
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; k++) {
    bool ok = k < n && (k == 1 ? s[k] >= lo && s[k] <= hi : s[k] >= 0x80 && s[k] <= 0xBF);
    if (!ok) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}

json_t *cli_json_text(const char *text, size_t len) {
  cli_buf b = {0};
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0;
  int rc = cli_buf_append(&b, "", 0);
  while (rc == 0 && i < len) {
    size_t bad = 0, n = utf8_seq_(s + i, len - i, &bad);
    if (n) {
      rc = cli_buf_append(&b, s + i, n);
      i += n;
    } else {
      rc = cli_buf_append(&b, "\xEF\xBF\xBD", 3);
      i += bad;
    }
  }
  json_t *v = rc == 0 ? json_stringn(b.data, b.len) : NULL;
  cli_buf_free(&b);
  return v;
}

int cli_json_print(json_t *v) {
  if (!v) return cli_errorf("out of memory building the JSON output");
  int rc = json_dumpf(v, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(v);
  if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0 || ferror(stdout))
    return cli_errorf("<stdout>: write failed: %s", strerror(errno ? errno : EIO));
  return CLI_EXIT_OK;
}

double cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
