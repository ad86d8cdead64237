/* Models for the kiln subcommands: where the checkpoint is, loading it with a progress bar, the engine, BOS
 * (see cli_common.h). */
#include "cli_common.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *env_(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

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
