/* What every kiln subcommand shares: messages, option tables, value parsing (see cli_common.h; models are in
 * cli_model.c, input and output in cli_io.c). */
#include "cli_common.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

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
